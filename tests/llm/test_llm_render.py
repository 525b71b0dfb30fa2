"""Prompt rendering: chat template, answer slot, truncation in tokens, labelled spans."""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")

from rerankcli.core.errors import UserError  # noqa: E402
from rerankcli.llm.render import Renderer, _water_fill  # noqa: E402
from rerankcli.llm.requests import Passage, Probe, Prompt  # noqa: E402

# The shape of Qwen3's template: a thinking block opens the assistant turn unless the caller
# passes enable_thinking=False, in which case an empty, closed block is written instead.
THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer(smollm_folder):
    return transformers.AutoTokenizer.from_pretrained(smollm_folder)


def yes_no(passage: str) -> Prompt:
    return Prompt.of("Passage: ", Passage(passage), "\nQuery: capital of france\nRelevant? Answer Yes or No.",
                     answer_prefix="Answer:")


def test_the_answer_slot_follows_a_closed_thinking_block(tokenizer):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = THINKING_TEMPLATE
    renderer = Renderer(tokenizer, max_length=512)
    text = tokenizer.decode(renderer.render(yes_no("Paris is the capital of France.")).ids)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nAnswer:")


def test_the_chat_template_is_used_when_the_tokenizer_has_one(tokenizer):
    text = tokenizer.decode(Renderer(tokenizer, 512).render(yes_no("Paris.")).ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\nAnswer:")


def test_a_system_turn_replaces_the_templates_default(tokenizer):
    prompt = Prompt.of("Hi", system="You rank passages.")
    text = tokenizer.decode(Renderer(tokenizer, 512).render(prompt).ids)
    assert text.startswith("<|im_start|>system\nYou rank passages.<|im_end|>")


def test_without_chat_the_prompt_is_the_plain_text(tokenizer):
    renderer = Renderer(tokenizer, 512, chat=False)
    assert tokenizer.decode(renderer.render(yes_no("Paris.")).ids) == (
        "Passage: Paris.\nQuery: capital of france\nRelevant? Answer Yes or No.Answer:")


def test_chat_on_a_tokenizer_without_template_is_refused(tokenizer):
    plain = transformers.AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    plain.chat_template = None
    with pytest.raises(UserError, match="has no chat template"):
        Renderer(plain, 512, chat=True)


def test_long_passages_share_the_room_and_the_short_one_is_kept_whole(tokenizer):
    renderer = Renderer(tokenizer, max_length=200, chat=False)
    long_a, long_b, short = "alpha " * 300, "beta " * 300, "gamma delta"
    prompt = Prompt.of("Q: x\n", Passage(long_a, label="a"), "\n", Passage(short, label="s"), "\n",
                       Passage(long_b, label="b"), "\nAnswer:")
    rendered = renderer.render(prompt, reserve=10)
    assert len(rendered.ids) <= 190
    assert rendered.truncated == 2
    lengths = {k: b - a for k, (a, b) in rendered.spans.items()}
    assert lengths["s"] == len(renderer.encode(short))
    assert abs(lengths["a"] - lengths["b"]) <= 1  # one common cap
    assert tokenizer.decode(rendered.ids).endswith("\nAnswer:")


def test_a_per_passage_cap_is_applied_in_tokens(tokenizer):
    renderer = Renderer(tokenizer, max_length=4096, chat=False)
    rendered = renderer.render(Prompt.of(Passage("word " * 100, label="p", max_tokens=12)))
    start, end = rendered.spans["p"]
    assert end - start == 12 and rendered.truncated == 1


def test_a_prompt_whose_fixed_text_cannot_fit_is_refused(tokenizer):
    renderer = Renderer(tokenizer, max_length=8, chat=False)
    with pytest.raises(UserError, match="fixed text alone is longer than max_length"):
        renderer.render(Prompt.of("a long instruction that cannot fit in eight tokens at all", Passage("x")))


def test_spans_cover_exactly_the_passage_tokens(tokenizer):
    renderer = Renderer(tokenizer, max_length=512, chat=False)
    rendered = renderer.render(Prompt.of("[1] ", Passage("Paris is in France.", label="d1"), " [2] ",
                                         Passage("Bananas are yellow.", label="d2")))
    a, b = rendered.spans["d2"]
    assert tokenizer.decode(rendered.ids[a:b]).strip() == "Bananas are yellow."


def test_probes_share_one_prefix_and_their_rows_are_their_own_tokens(tokenizer):
    renderer = Renderer(tokenizer, max_length=512)
    prompt = Prompt.of("Documents: [1] ", Passage("Paris is in France.", label="d1"), "\nQuery: ", Probe())
    rendered = renderer.render_probes(prompt, ("capital of france", "N/A"))
    for suffix, rows, probe in zip(rendered.suffixes, rendered.probe_rows, ("capital of france", "N/A")):
        assert tokenizer.decode([suffix[r] for r in rows]) == probe
    assert tokenizer.decode(rendered.prefix.ids).endswith("\nQuery: ")


@pytest.mark.parametrize("lengths, budget, expected", [
    ([5, 5], 20, [5, 5]),
    ([100, 3, 100], 43, [20, 3, 20]),
    ([10, 10], 0, [0, 0]),
])
def test_water_fill_finds_the_largest_common_cap(lengths, budget, expected):
    assert _water_fill(lengths, budget) == expected


# -- raw prompts: a trained reranker's exact input ----------------------------------------------

RAW = Prompt.of("<|im_start|>user\nQuery: capital of france\nPassage: ", Passage("Paris is the capital."),
                "<|im_end|>\n<|im_start|>assistant\n", raw=True)
RAW_TEXT = ("<|im_start|>user\nQuery: capital of france\nPassage: Paris is the capital.<|im_end|>\n"
            "<|im_start|>assistant\n")


@pytest.mark.parametrize("chat", [None, False])
def test_a_raw_prompt_is_its_text_with_no_frame_and_no_special_tokens_added(tokenizer, chat):
    # with the chat template on (None: SmolLM2 has one) no frame is added; with it off, no BOS
    rendered = Renderer(tokenizer, 512, chat=chat).render(RAW)
    assert rendered.ids == tokenizer(RAW_TEXT, add_special_tokens=False)["input_ids"]
    assert rendered.ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 2  # markers are one token each


def test_a_raw_prompt_is_cut_only_in_its_passage(tokenizer):
    prompt = Prompt.of("<|im_start|>user\nQ: x\nD: ", Passage("word " * 500), "<|im_end|>\n<|im_start|>assistant\n",
                       raw=True)
    rendered = Renderer(tokenizer, max_length=64).render(prompt, reserve=1)
    assert len(rendered.ids) <= 63 and rendered.truncated == 1
    assert tokenizer.decode(rendered.ids).endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_a_raw_prompt_with_a_system_turn_is_refused(tokenizer):
    prompt = Prompt.of("<|im_start|>user\nHi<|im_end|>\n", system="You rank.", raw=True)
    with pytest.raises(UserError, match="write its system turn into the text"):
        Renderer(tokenizer, 512).render(prompt)


def test_a_raw_prompt_with_a_marker_the_tokenizer_does_not_know_is_refused(tokenizer):
    prompt = Prompt.of("<|start_header_id|>user<|end_header_id|>\n", Passage("x"), raw=True)  # Llama 3's markers
    with pytest.raises(UserError, match="'<\\|start_header_id\\|>', which this model's tokenizer does not know"):
        Renderer(tokenizer, 512).render(prompt)


def test_the_common_cap_is_reported_when_passages_were_cut(tokenizer):
    renderer = Renderer(tokenizer, max_length=200, chat=False)
    prompt = Prompt.of("Q: x\n", Passage("alpha " * 300, label="a"), "\n", Passage("gamma", label="s"), "\n",
                       Passage("beta " * 300, label="b"))
    rendered = renderer.render(prompt, reserve=10)
    assert rendered.cap > 0 and abs(rendered.cap - max(b - a for a, b in rendered.spans.values())) <= 1
    assert renderer.render(Prompt.of("Q: x\n", Passage("gamma"))).cap is None


# DeepSeek-R1's distills: the generation prompt itself opens the think block, whatever the caller asks
R1_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


def with_template(tokenizer, template: str):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = template
    return tokenizer


def test_a_think_block_the_template_forces_open_is_closed_before_the_answer_slot(tokenizer):
    tokenizer = with_template(tokenizer, R1_TEMPLATE)
    text = tokenizer.decode(Renderer(tokenizer, 512).render(yes_no("Paris.")).ids)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nAnswer:")


@pytest.mark.parametrize("template", [THINKING_TEMPLATE, R1_TEMPLATE], ids=["qwen3", "r1-distill"])
def test_a_reasoning_prompt_opens_exactly_one_think_block(tokenizer, template):
    tokenizer = with_template(tokenizer, template)
    prompt = Prompt.of("Which passage?", answer_prefix="So far.", thinking=True)
    text = tokenizer.decode(Renderer(tokenizer, 512).render(prompt).ids)
    assert text.endswith("<|im_start|>assistant\n<think>\nSo far.") and text.count("<think>") == 1


def test_a_plain_or_raw_reasoning_prompt_opens_its_block_unless_the_text_did(tokenizer):
    plain = Renderer(tokenizer, 512, chat=False)
    assert tokenizer.decode(plain.render(Prompt.of("Q?", thinking=True)).ids).endswith("Q?<think>\n")
    raw = Prompt.of("Query: q\n<think>", raw=True, thinking=True, answer_prefix="Hm.")
    assert tokenizer.decode(plain.render(raw).ids) == "Query: q\n<think>Hm."
