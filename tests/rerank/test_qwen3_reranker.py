"""``prompt: qwen3-reranker`` for ``method: yes-no``: Qwen3-Reranker's exact input and answer tokens.

No Qwen3-Reranker weights are at hand, so a 2-layer Qwen3 with random weights stands in, with
SmolLM2's tokenizer (it knows <|im_start|> and <|im_end|>) plus Qwen3's <think> and </think>;
"yes" and "no" are single tokens of it. What is checked is what a real Qwen3-Reranker would be
fed and read: the ids are the tokenizer's encoding of the exact string of the Qwen3-Embedding
README's Transformers snippet, nothing added; a long document is cut, never the suffix; the
score is P(yes) over exactly {yes, no}, equal to a direct forward pass.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from rerankcli.core.errors import UserError
from rerankcli.llm.render import Renderer
from rerankcli.llm.requests import NextToken, TokenLogprobs
from rerankcli.rerank.candidates import Candidate, Query
from rerankcli.rerank.pointwise import YesNoStage
from tests.conftest import QIDS, check_reranked, shared

transformers = pytest.importorskip("transformers")

#: the README's prefix, format_instruction and suffix, written out by hand
PREFIX = ('<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the '
          'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n')
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT = "Given a web search query, retrieve relevant passages that answer the query"


def exact(query: str, doc: str, instruction: str = DEFAULT) -> str:
    return f"{PREFIX}<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}{SUFFIX}"


@pytest.fixture(scope="module")
def tokenizer(tiny_qwen3):
    return transformers.AutoTokenizer.from_pretrained(tiny_qwen3)


def stage(**fields) -> YesNoStage:
    return YesNoStage(**{"name": "qwen3", "type": "rerank", "method": "yes-no", "model": "x",
                         "prompt": "qwen3-reranker", **fields})


def test_the_rendered_ids_are_the_exact_string_with_nothing_added(tokenizer):
    assert tokenizer.chat_template  # the template is there, and a raw prompt must not use it
    template = stage().template(Path("."))
    query, doc = "what is the capital of china", "The capital of China is Beijing."
    encoded = Renderer(tokenizer, 512).encode_request(NextToken(template.prompt(query, doc), ("yes", "no")))
    expected = tokenizer(exact(query, doc), add_special_tokens=False)["input_ids"]
    assert encoded.ids == expected
    # the README's way, prefix + middle + suffix tokenized apart, gives the same ids
    middle = f"<Instruct>: {DEFAULT}\n<Query>: {query}\n<Document>: {doc}"
    pieces = [tokenizer.encode(t, add_special_tokens=False) for t in (PREFIX, middle, SUFFIX)]
    assert encoded.ids == pieces[0] + pieces[1] + pieces[2]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>", "<think>", "</think>")}
    # each marker one token, and no BOS (SmolLM2's is <|im_start|>: a fourth one would show it)
    assert [encoded.ids.count(i) for i in ids.values()] == [3, 2, 1, 1]
    tail = tokenizer.encode("</think>\n\n", add_special_tokens=False)
    assert encoded.ids[0] == ids["<|im_start|>"] and encoded.ids[-len(tail):] == tail
    assert encoded.targets == [tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")]


def test_a_long_document_is_cut_and_the_suffix_survives(tokenizer):
    template = stage().template(Path("."))
    prompt = template.prompt("which enzyme digests starch", "amylase breaks starch into sugars. " * 200)
    rendered = Renderer(tokenizer, max_length=160).render(prompt, reserve=1)
    text = tokenizer.decode(rendered.ids)
    assert len(rendered.ids) <= 159 and rendered.truncated == 1
    assert text.startswith(PREFIX) and text.endswith(SUFFIX)
    assert "<Query>: which enzyme digests starch\n<Document>: amylase breaks starch" in text


def test_the_read_tokens_are_exactly_yes_and_no_and_the_score_is_their_softmax():
    query = Query("q", "capital of china", (Candidate("d1", "Beijing."), Candidate("d2", "Paris.")))
    template = stage().template(Path("."))
    surface = {"yes": ["Yes", " Yes", "yes", " yes"], "no": ["No", " No", "no", " no"]}  # prepare_method's
    program = stage().program(query, template, surface)
    requests = next(program)
    assert [r.candidates for r in requests] == [("yes", "no")] * 2
    answers = [TokenLogprobs(10, 0, {"yes": -0.1, "no": -2.5}), TokenLogprobs(10, 0, {"yes": -3.0, "no": -0.2})]
    with pytest.raises(StopIteration) as done:
        program.send(answers)
    scores, _ = done.value.value
    assert scores["d1"] == pytest.approx(math.exp(-0.1) / (math.exp(-0.1) + math.exp(-2.5)))
    assert scores["d2"] == pytest.approx(1 / (1 + math.exp(2.8)))


def test_the_stage_instruction_replaces_the_templates_default():
    template = stage(instruction="Given a claim, retrieve documents that support or refute it").template(Path("."))
    text = "".join(p if isinstance(p, str) else p.text for p in template.prompt("q", "d").parts)
    assert text == exact("q", "d", "Given a claim, retrieve documents that support or refute it")


@pytest.mark.parametrize("fields, message", [
    ({"prompt": None, "instruction": "x"}, "template yes-no has no {instruction} placeholder"),
    ({"yes": "Oui"}, "fixes the answer tokens ('yes', 'no'); leave out yes"),
])
def test_settings_that_contradict_the_template_are_refused(fields, message):
    with pytest.raises(UserError, match=re.escape(message)):
        stage(**fields).template(Path("."))


def test_an_answer_that_is_not_one_token_is_refused(tokenizer, tmp_path):
    (tmp_path / "mine.yaml").write_text('raw: true\nuser: "<|im_start|>user\\n{query} {passage}<|im_end|>\\n"\n'
                                        'answers: {"yes": "absolutelyyes", "no": "no"}\n')
    template = stage(prompt="mine.yaml").template(tmp_path)
    program = stage(prompt="mine.yaml").program(Query("q", "x", (Candidate("d", "y"),)), template, {})
    request = next(program)[0]
    with pytest.raises(UserError, match="answer 'absolutelyyes' is [0-9]+ tokens"):
        Renderer(tokenizer, 512).encode_request(request)


def test_a_yaml_pipeline_with_prompt_qwen3_reranker(run_pipeline, mini_dl19, tiny_qwen3, tokenizer):
    import torch

    from rerankcli.core.formats import read_corpus, read_queries
    from rerankcli.core.runs import read_run

    out = run_pipeline(mini_dl19, [{"name": "qwen3", "type": "rerank", "method": "yes-no", "model": str(tiny_qwen3),
                                    "prompt": "qwen3-reranker", "depth": 10, "max_passage_tokens": 64}])
    bm25 = read_run(mini_dl19 / "bm25.trec")
    details = check_reranked(out, "qwen3", bm25)["details"]
    assert details["answer_tokens"] == {"yes": ["yes"], "no": ["no"]} and details["instruction"] == DEFAULT
    assert details["prompt"] == "qwen3-reranker" and details["llm"]["requests"] == {"NextToken": 30}

    # the score of one document equals P(yes | {yes, no}) of a direct forward pass over the exact string
    corpus = read_corpus(shared("trec-dl19-passage", "corpus.jsonl"))
    qid, (docid, score) = QIDS[0], read_run(out / "qwen3.trec").ranked(QIDS[0])[0]
    i = corpus.ids.index(docid)
    text = " ".join(p for p in (corpus.titles[i], corpus.texts[i]) if p)
    tokens = tokenizer.encode(text, add_special_tokens=False)
    passage = text if len(tokens) <= 64 else tokenizer.decode(tokens[:64])  # max_passage_tokens
    ids = tokenizer(exact(read_queries(mini_dl19 / "queries.tsv")[qid], passage), add_special_tokens=False)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32).eval()
    with torch.inference_mode():
        logits = model(torch.tensor([ids["input_ids"]])).logits[0, -1]
    yes, no = (tokenizer.convert_tokens_to_ids(t) for t in ("yes", "no"))
    assert score == pytest.approx(float(torch.softmax(logits[[no, yes]], dim=0)[1]), abs=1e-4)
    assert json.loads((out / "metrics.json").read_text()).keys() == {"bm25", "qwen3"}
