"""The transformers backend answers every request kind as plain transformers would, unbatched.

References are computed in the test with plain transformers on one unpadded sequence at a time
(attention: ``output_attentions=True`` on the whole prompt, no cache reuse), on a tiny random
Llama; the same request kinds then run on the real SmolLM2-135M-Instruct and Gemma-3-270M.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rerankcli.core.errors import UserError  # noqa: E402
from rerankcli.llm.hf import HFBackend, HFConfig  # noqa: E402
from rerankcli.llm.requests import (  # noqa: E402
    Attention,
    Continuation,
    Generate,
    NextToken,
    Passage,
    Probe,
    Prompt,
)

PASSAGES = [
    "The Manhattan Project produced the first nuclear weapons during World War II.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Paris is the capital and most populous city of France, on the Seine.",
]
QUERY = "what is the capital of france"


def relevance_prompt(passage: str) -> Prompt:
    return Prompt.of("Passage: ", Passage(passage), f"\nQuery: {QUERY}\n"
                     "Does the passage answer the query? Answer Yes or No.", answer_prefix="Answer:")


def icr_prompt() -> Prompt:
    parts: list = ["Here are some documents.\n"]
    for i, text in enumerate(PASSAGES, 1):
        parts += [f"[{i}] ", Passage(text, label=f"d{i}"), "\n"]
    return Prompt.of(*parts, "Query: ", Probe())


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    backend = HFBackend(HFConfig(batch_size=2, attn_implementation="sdpa"), tiny_llama, log=lambda m: None)
    yield backend
    backend.close()



def plain_logprobs(model, ids: list[int]):
    with torch.inference_mode():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)


def test_next_token_logprobs_equal_an_unbatched_forward(tiny, tiny_eager):
    requests = [NextToken(relevance_prompt(p), (" Yes", " No")) for p in PASSAGES]
    answers = tiny.answer(requests)  # batch_size 2: one padded batch of two, one of one
    for request, answer in zip(requests, answers):
        ids = tiny.renderer.render(request.prompt, reserve=1).ids
        last = plain_logprobs(tiny_eager, ids)[-1]
        for candidate in request.candidates:
            token = tiny.renderer.single_token(candidate)
            assert answer.logprobs[candidate] == pytest.approx(float(last[token]), abs=1e-5)
        assert answer.prompt_tokens == len(ids)


def test_continuation_logprobs_equal_an_unbatched_forward(tiny, tiny_eager):
    requests = [Continuation(Prompt.of("Passage: ", Passage(p), "\nPlease write a question based "
                                       "on this passage.\nQuestion:"), " " + QUERY) for p in PASSAGES]
    for request, answer in zip(requests, tiny.answer(requests)):
        prompt = tiny.renderer.render(request.prompt).ids
        tail = tiny.renderer.encode(request.continuation)
        rows = plain_logprobs(tiny_eager, prompt + tail)
        expected = [float(rows[len(prompt) - 1 + j][t]) for j, t in enumerate(tail)]
        assert answer.logprobs == pytest.approx(expected, abs=1e-5)
        assert len(answer.logprobs) == len(tail)


def test_generation_equals_unpadded_greedy_decoding(tiny, tiny_eager):
    requests = [Generate(relevance_prompt(p), max_new_tokens=6) for p in PASSAGES]
    for request, answer in zip(requests, tiny.answer(requests)):
        ids = tiny.renderer.render(request.prompt, reserve=6).ids
        with torch.inference_mode():
            out = tiny_eager.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False,
                                     pad_token_id=tiny.pad_id)[0, len(ids):].tolist()
        eos = tiny.tokenizer.eos_token_id
        out = out[: out.index(eos)] if eos in out else out
        assert answer.text == tiny.tokenizer.decode(out, skip_special_tokens=True)
        assert answer.new_tokens == len(out)


def brute_force_attention(model, ids: list[int], rows: list[int], prefix: int) -> list[float]:
    """Attention each prefix token receives from ``rows``: all layers and heads, full matrices."""
    with torch.inference_mode():
        attentions = model(torch.tensor([ids]), output_attentions=True).attentions
    total = sum(layer[0].float().sum(dim=0) for layer in attentions)  # [query, key]
    return total[rows, :prefix].mean(dim=0).tolist()


def test_attention_equals_brute_force_without_cache_reuse(tiny, tiny_eager):
    request = Attention(icr_prompt(), (QUERY, "N/A"))
    (answer,) = tiny.answer([request])
    rendered = tiny.renderer.render_probes(request.prompt, request.probes)
    prefix = rendered.prefix.ids
    for k, (suffix, rows) in enumerate(zip(rendered.suffixes, rendered.probe_rows)):
        expected = brute_force_attention(tiny_eager, prefix + suffix, [len(prefix) + r for r in rows], len(prefix))
        assert answer.received[k] == pytest.approx(expected, abs=1e-4)
    assert set(answer.spans) == {"d1", "d2", "d3"}
    assert all(math.isfinite(v) for v in answer.per_label(0).values())


def test_attention_of_selected_layers_only(tiny, tiny_eager):
    request = Attention(icr_prompt(), (QUERY,), layers=(1,))
    (answer,) = tiny.answer([request])
    rendered = tiny.renderer.render_probes(request.prompt, request.probes)
    prefix, suffix, rows = rendered.prefix.ids, rendered.suffixes[0], rendered.probe_rows[0]
    with torch.inference_mode():
        layer = tiny_eager(torch.tensor([prefix + suffix]), output_attentions=True).attentions[1]
    expected = layer[0].float().sum(dim=0)[[len(prefix) + r for r in rows], : len(prefix)].mean(dim=0)
    assert answer.received[0] == pytest.approx(expected.tolist(), abs=1e-4)


def test_batched_answers_do_not_depend_on_batch_company(tiny):
    requests = [NextToken(relevance_prompt(p), (" Yes", " No")) for p in PASSAGES]
    together = tiny.answer(requests)
    alone = [tiny.answer([r])[0] for r in requests]
    for a, b in zip(together, alone):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


def test_a_passage_longer_than_max_length_is_cut_in_tokens_and_counted(tiny_llama):
    backend = HFBackend(HFConfig(max_length=96), tiny_llama, log=lambda m: None)
    long = " ".join(PASSAGES * 20)
    (answer,) = backend.answer([NextToken(relevance_prompt(long), (" Yes", " No"))])
    assert answer.truncated == 1
    assert answer.prompt_tokens <= 95  # one token kept for the answer
    rendered = backend.renderer.render(relevance_prompt(long), reserve=1)
    text = backend.tokenizer.decode(rendered.ids)
    assert text.endswith("Answer:")  # the answer slot survives truncation
    assert f"Query: {QUERY}" in text  # and so does the question


def test_an_answer_of_several_tokens_is_refused_clearly(tiny):
    with pytest.raises(UserError, match=r"'Absolutely-not' is \d+ tokens"):
        tiny.answer([NextToken(relevance_prompt(PASSAGES[0]), ("Absolutely-not", " No"))])


# -- real models -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm(smollm_folder):
    backend = HFBackend(HFConfig(batch_size=4), smollm_folder, log=lambda m: None)
    yield backend
    backend.close()


def test_smollm_answers_every_request_kind(smollm):
    yes_no, question, generated, attention = smollm.answer([
        NextToken(relevance_prompt(PASSAGES[2]), (" Yes", " No")),
        Continuation(Prompt.of(Passage(PASSAGES[2]), "\nPlease write a question based on this "
                               "passage.\nQuestion:"), " " + QUERY),
        Generate(Prompt.of("Reply with one word: what colour is the sky on a clear day?"), max_new_tokens=8),
        Attention(icr_prompt(), (QUERY, "N/A")),
    ])
    probabilities = {k: math.exp(v) for k, v in yes_no.logprobs.items()}
    assert 0.05 < sum(probabilities.values()) <= 1.0  # Yes/No are likely answers at the slot
    assert all(v < 0 for v in question.logprobs) and math.isfinite(question.mean)
    assert generated.text.strip() and 0 < generated.new_tokens <= 8
    calibrated = {d: attention.per_label(0)[d] - attention.per_label(1)[d] for d in attention.spans}
    assert all(math.isfinite(v) for v in calibrated.values())


def test_smollm_attention_is_finite_in_bfloat16(smollm_folder):
    backend = HFBackend(HFConfig(dtype="bfloat16"), smollm_folder, log=lambda m: None)
    (answer,) = backend.answer([Attention(icr_prompt(), (QUERY, "N/A"))])
    assert all(math.isfinite(v) for row in answer.received for v in row)


def test_gemma_answers_every_request_kind(gemma_folder):
    backend = HFBackend(HFConfig(batch_size=4, chat=False), gemma_folder, log=lambda m: None)
    yes_no, question, generated, attention = backend.answer([
        NextToken(relevance_prompt(PASSAGES[2]), (" Yes", " No")),
        Continuation(Prompt.of(Passage(PASSAGES[2]), "\nQuestion:"), " " + QUERY),
        Generate(Prompt.of("The capital of France is"), max_new_tokens=4),
        Attention(icr_prompt(), (QUERY, "N/A")),
    ])
    assert all(v < 0 for v in yes_no.logprobs.values())
    assert math.isfinite(question.mean)
    assert generated.new_tokens > 0
    assert all(math.isfinite(v) for row in attention.received for v in row)


def test_gemma_attention_beyond_its_sliding_window_equals_brute_force(gemma_folder):
    """Gemma 3 caches only the last ``sliding_window`` keys in most layers: rows must still align,
    with two prompts of different lengths left-padded into one batch."""
    backend = HFBackend(HFConfig(dtype="float32", chat=False), gemma_folder, log=lambda m: None)
    window = backend.model.config.get_text_config().sliding_window
    requests = []
    for count in (40, 33):
        parts: list = ["Here are some documents.\n"]
        for i in range(count):
            parts += [f"[{i}] ", Passage(" ".join(PASSAGES), label=f"d{i}"), "\n"]
        requests.append(Attention(Prompt.of(*parts, "Query: ", Probe()), (QUERY, "N/A")))
    answers = backend.answer(requests)
    eager = transformers.AutoModelForCausalLM.from_pretrained(
        gemma_folder, dtype=torch.float32, attn_implementation="eager").eval()
    for request, answer in zip(requests, answers):
        rendered = backend.renderer.render_probes(request.prompt, request.probes)
        prefix = rendered.prefix.ids
        assert len(prefix) > window + 100
        for k, (suffix, rows) in enumerate(zip(rendered.suffixes, rendered.probe_rows)):
            expected = brute_force_attention(eager, prefix + suffix, [len(prefix) + r for r in rows], len(prefix))
            assert answer.received[k] == pytest.approx(expected, abs=1e-4)
        assert answer.received[0][0] > 0  # beyond the window of most layers, not of the full ones


def test_generation_ends_at_its_stop_string_and_counts_only_the_tokens_it_generated(tiny, tiny_eager):
    prompt = relevance_prompt(PASSAGES[0])
    free = tiny.answer([Generate(prompt, max_new_tokens=12)])[0]
    assert len(free.text) > 6 and free.new_tokens == 12
    stop = free.text[4:7]  # a piece of what the model writes (the random tiny model: "::::…")
    stopped = tiny.answer([Generate(prompt, max_new_tokens=12, stop=(stop,))])[0]
    assert stopped.stopped_by == stop and stopped.text == free.text[: free.text.index(stop)]
    assert stopped.new_tokens < free.new_tokens  # generation ended there: no tokens past the stop
    assert free.stopped_by is None


def test_a_stop_in_one_request_does_not_end_another_in_the_same_batch(tiny):
    prompt = relevance_prompt(PASSAGES[1])
    free = tiny.answer([Generate(prompt, max_new_tokens=10)])[0]
    stop = free.text[4:7]
    both = tiny.answer([Generate(prompt, max_new_tokens=10, stop=(stop,)), Generate(prompt, max_new_tokens=10)])
    assert both[0].stopped_by == stop and both[1] == free


def test_sampled_generation_is_reproducible_by_seed_whatever_the_batch(tiny):
    prompt = relevance_prompt(PASSAGES[0])
    sampled = Generate(prompt, max_new_tokens=8, temperature=1.0, seed=7)
    alone = tiny.answer([sampled])[0]
    with_others = tiny.answer([Generate(relevance_prompt(PASSAGES[1]), max_new_tokens=8, temperature=1.0, seed=3),
                               sampled])[1]
    assert alone == with_others
    greedy = tiny.answer([Generate(prompt, max_new_tokens=8)])[0]
    assert any(tiny.answer([Generate(prompt, max_new_tokens=8, temperature=1.0, seed=s)])[0].text != greedy.text
               for s in range(3))
