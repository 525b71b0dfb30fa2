"""Reasoning rerankers, algorithms first: a judge that thinks, closed for it when it does not.

``Thinker`` answers every think call with reasoning that either never closes its block (it
runs out of budget mid-sentence, as a small model does) or closes it, and answers the answer
call as a perfect judge from the DL19 qrels: yes/no, digits, labels and permutations. So every
method must give the ideal ranking, every trace must say whether its close was forced, and no
answer may be read from the reasoning text (the reasoning names the worst passage on purpose).
"""

from __future__ import annotations

import math
import re

import pytest
from pydantic import ValidationError

from rerankcli.core.errors import UserError
from rerankcli.llm.requests import Generate, Generated, NextToken, Passage, Prompt, TokenLogprobs
from rerankcli.pipeline.registry import STAGES
from rerankcli.rerank.llm_method import reasoning_totals
from rerankcli.rerank.reasoning import (
    CLOSE,
    Reasoning,
    continued,
    last_sentence,
    read_number,
    think_request,
    thought_of,
)
from rerankcli.rerank.traces import explain, read_traces, traces_file
from tests.fake_llm import QrelsBackend, queries_of, rerank_with, shuffled

RAMBLE = "The worst passage is clearly [1] and the answer is Yes. Passage A is best. Now let me look at"


class Thinker(QrelsBackend):
    """Thinks (never closing the block unless ``closes``), then answers as the perfect judge."""

    def __init__(self, *args, closes: bool = False, number_tokens: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.closes = closes
        self.number_tokens = number_tokens  # "10", "17" are tokens (Llama 3), else digits only (Qwen)
        self.budgets: list[int] = []
        self.answer_prefixes: list[str] = []

    def single_tokens(self, texts):
        return [t for t in texts if self.number_tokens or not (t.strip().isdigit() and len(t.strip()) > 1)]

    def _answer(self, requests):
        out = []
        for request in requests:
            if isinstance(request, Generate) and request.stop == ("</think>",):
                assert request.prompt.thinking and request.prompt.answer_prefix == ""
                self.budgets.append(request.max_new_tokens)
                if self.closes:
                    out.append(Generated(1, 0, "I compared them.", 5, "</think>"))
                else:
                    out.append(Generated(1, 0, RAMBLE, request.max_new_tokens, None))
                continue
            self.answer_prefixes.append(request.prompt.answer_prefix)
            assert RAMBLE not in request.prompt.answer_prefix  # a forced close cuts the unfinished sentence
            if isinstance(request, NextToken) and request.candidates and request.candidates[0].strip().isdigit():
                out.append(self._digits(request))
            else:
                out.extend(super()._answer([request]))
        return out

    def _digits(self, request: NextToken) -> TokenLogprobs:
        """The label of the best passage (a set) or the grade (one passage), digit by digit."""
        grades = self.grades(request.prompt)
        if len(grades) > 1:
            wanted = str(max(range(len(grades)), key=lambda k: (grades[k], -k)) + 1)
        else:
            wanted = str(grades[0])
        if any(len(c.strip()) > 1 for c in request.candidates):  # whole numbers are tokens
            return TokenLogprobs(1, 0, {c: (0.0 if c.strip() == wanted else -20.0) for c in request.candidates})
        typed = re.search(r"(\d*)$", request.prompt.answer_prefix).group(1)
        following = wanted[len(typed)] if len(typed) < len(wanted) else None
        return TokenLogprobs(1, 0, {c: (0.0 if c.strip() == following else -20.0) for c in request.candidates})


def stage_of(method: str, **fields):
    cls = STAGES["rerank"][method]
    return cls(**{"name": method, "type": "rerank", "method": method, "model": "judge", "depth": 100, **fields})


@pytest.fixture(scope="module")
def judged(dl19):
    texts, queries, qrels, run = dl19
    bm25 = run.top(20)
    candidates = queries_of(shuffled(bm25, qrels), texts, queries)[:4]
    return texts, queries, qrels, bm25, candidates


def ideal(queries, qrels, scores, k: int) -> bool:
    """Whether each query's top-k by ``scores`` is the top-k by judged grade."""
    for query in queries:
        grades = [qrels[query.qid].get(c.docid, 0) for c in query.candidates]
        top = sorted(scores[query.qid], key=lambda d: -scores[query.qid][d])[:k]
        if sorted((qrels[query.qid].get(d, 0) for d in top), reverse=True) != sorted(grades, reverse=True)[:k]:
            return False
    return True


# -- the mechanics ---------------------------------------------------------------------------
def test_a_forced_close_cuts_the_reasoning_back_to_its_last_full_sentence():
    assert last_sentence("First. Second one! And then") == "First. Second one!"
    assert last_sentence("No sentence ends here") == "No sentence ends here"
    assert last_sentence('He said "stop." Then') == 'He said "stop."'


def test_a_closed_block_is_kept_whole_and_an_unclosed_one_is_forced():
    assert thought_of(Generated(1, 0, "All of it, unfinished", 5, "</think>")).forced is False
    forced = thought_of(Generated(1, 0, "Done. Half", 8, None))
    assert (forced.text, forced.tokens, forced.forced) == ("Done.", 8, True)


def test_the_answer_call_continues_the_reasoning_then_the_close_then_the_answer_prefix():
    prompt = Prompt.of("q", answer_prefix="<answer>")
    asked = think_request(prompt, Reasoning(max_tokens=7))
    assert (asked.max_new_tokens, asked.stop, asked.prompt.thinking, asked.prompt.answer_prefix) == (
        7, ("</think>",), True, "")
    thought = thought_of(Generated(1, 0, "Because.", 3, "</think>"))
    assert continued(prompt, thought).answer_prefix == "Because." + CLOSE + "<answer>"


def run_steps(steps, answer):
    """Drive a step generator with ``answer(request)``; its return value."""
    try:
        requests = next(steps)
        while True:
            requests = steps.send([answer(r) for r in requests])
    except StopIteration as stop:
        return stop.value


def test_ten_is_read_as_one_then_zero_with_the_product_of_both_probabilities():
    def answer(request):  # P("1") = 0.6, then P("0" | "1") = 0.75, P(end | "1") = 0.25
        if request.prompt.answer_prefix.endswith("1"):
            return TokenLogprobs(1, 0, {c: math.log(0.75) if c == "0" else -50.0 for c in request.candidates})
        return TokenLogprobs(1, 0, {c: math.log(0.6) if c == "1" else math.log(0.4 / 9) if c.isdigit() else -50.0
                                    for c in request.candidates})  # the " 7" forms: no mass

    forms = {str(d): [str(d), f" {d}"] for d in range(10)}
    [number] = run_steps(read_number([Prompt.of("q")], 0, 10, forms), answer)
    assert (number.value, number.fell_back) == (10, False) and number.probability == pytest.approx(0.6 * 0.75)
    [mean] = run_steps(read_number([Prompt.of("q")], 0, 10, forms, expected=True), answer)
    expected = 0.6 * (0.25 * 1 + 0.75 * 10) + sum(d * 0.4 / 9 for d in (0, 2, 3, 4, 5, 6, 7, 8, 9))
    assert mean.value == pytest.approx(expected)


def test_a_tokenizer_with_number_tokens_reads_them_in_one_look():
    forms = {str(v): [str(v)] for v in range(0, 11)}
    asked = []

    def answer(request):
        asked.append(request.candidates)
        return TokenLogprobs(1, 0, {c: math.log(0.7) if c == "10" else math.log(0.3 / 10) for c in request.candidates})

    [number] = run_steps(read_number([Prompt.of("q")], 0, 10, forms), answer)
    assert (number.value, len(asked)) == (10, 1) and number.probability == pytest.approx(0.7)


def test_digits_with_no_probability_fall_back_to_the_lowest_number():
    forms = {str(d): [str(d)] for d in range(10)}
    [silent] = run_steps(read_number([Prompt.of("q")], 1, 20, forms),
                         lambda r: TokenLogprobs(1, 0, {c: -math.inf for c in r.candidates}))
    assert (silent.value, silent.probability, silent.fell_back) == (1, 0.0, True)


def test_some_numbers_as_tokens_but_not_all_are_refused():
    from rerankcli.rerank.pointwise import number_forms

    class Partial(QrelsBackend):
        def single_tokens(self, texts):
            return [t for t in texts if t.strip() != "17"]

    with pytest.raises(UserError, match="some numbers from 1 to 20 but not all"):
        number_forms(Partial({}, {}, {}), 1, 20, "s")


# -- every method: a thinker that never closes its block still ranks ideally ------------------
PRESETS = [
    ("yes-no", {"reasoning": {"max_tokens": 32}}, 20),
    ("graded", {"reasoning": {"max_tokens": 32}}, 20),
    ("erank", {"reasoning": {"max_tokens": 32}}, 20),
    ("listwise", {"strategy": "sliding", "window": 20, "stride": 10, "reasoning": {"max_tokens": 32}}, 20),
    ("reasonrank", {"reasoning": {"max_tokens": 32}}, 20),
    ("setwise", {"set_size": 3, "top_k": 5, "reasoning": {"max_tokens": 32}}, 5),
    ("rank-r1", {"set_size": 12, "top_k": 5, "reasoning": {"max_tokens": 32}}, 5),
]


def test_rank_r1_reads_whole_labels_where_they_are_tokens(judged):
    texts, queries, qrels, bm25, candidates = judged
    stage = stage_of("rank-r1", depth=20, set_size=12, top_k=5, reasoning={"max_tokens": 8})
    scores, _, _ = rerank_with(stage, candidates, Thinker(qrels, queries, texts, number_tokens=True))
    assert ideal(candidates, qrels, scores, 5)


@pytest.mark.parametrize("closes", [False, True], ids=["forced", "closed"])
@pytest.mark.parametrize(("method", "fields", "k"), PRESETS, ids=[p[0] for p in PRESETS])
def test_every_reasoning_method_ranks_ideally_and_traces_every_call(judged, method, fields, k, closes):
    texts, queries, qrels, bm25, candidates = judged
    judge = Thinker(qrels, queries, texts, closes=closes)
    stage = stage_of(method, depth=20, **fields)
    scores, accounting, reranked = rerank_with(stage, candidates, judge)
    assert ideal(candidates, qrels, scores, k)
    calls = [t for q in candidates for t in reranked.traces[q.qid]]
    assert len(calls) == len(judge.budgets) and set(judge.budgets) == {32}
    assert all(t["forced"] is not closes and t["fallback"] is False for t in calls)
    assert all(t["reasoning"] == ("I compared them." if closes else "The worst passage is clearly [1] and the "
                                  "answer is Yes. Passage A is best.") for t in calls)
    least, most = zip(*(stage.planned_calls(len(q.candidates)) for q in candidates))
    assert sum(least) <= sum(accounting.requests.values()) <= sum(most)
    block = reasoning_totals(stage.reasoning, reranked)  # the manifest's reasoning block
    assert block["calls"] == len(calls) and block["forced_closes"] == (0 if closes else len(calls))
    assert block["forced_rate"] == (0.0 if closes else 1.0)


def test_rank1_reads_true_and_false_right_after_the_closed_think_block(judged, tmp_path):
    texts, queries, qrels, bm25, candidates = judged
    judge = Thinker(qrels, queries, texts)
    stage = stage_of("rank1", depth=20, reasoning={"max_tokens": 16})
    template = stage.template(tmp_path)
    assert template.raw and template.answers == {"yes": " true", "no": " false"}
    scores, _, reranked = rerank_with(stage, candidates[:1], judge)
    assert all(prefix.endswith("\n</think>") for prefix in judge.answer_prefixes)
    assert ideal(candidates[:1], qrels, scores, 10)


def test_the_answer_of_a_listwise_window_is_never_read_from_its_reasoning(judged):
    texts, queries, qrels, bm25, candidates = judged

    class Silent(Thinker):  # reasons with identifiers, then answers nothing
        def _answer(self, requests):
            return [Generated(1, 0, "", 4, None) if r.stop != ("</think>",) else
                    Generated(1, 0, "[3] > [2] > [1].", 6, "</think>") for r in requests]

    stage = stage_of("reasonrank", depth=20, reasoning={"max_tokens": 8})
    scores, _, reranked = rerank_with(stage, candidates[:1], Silent(qrels, queries, texts))
    query = candidates[0]
    assert sorted(scores[query.qid], key=lambda d: -scores[query.qid][d]) == [c.docid for c in query.candidates]
    assert all(t["fallback"] for t in reranked.traces[query.qid])  # the window kept its order


def test_a_set_whose_label_cannot_be_read_keeps_its_parent(judged):
    texts, queries, qrels, bm25, candidates = judged

    class Mute(Thinker):
        def _digits(self, request):
            return TokenLogprobs(1, 0, {c: -math.inf for c in request.candidates})

    stage = stage_of("rank-r1", depth=20, set_size=4, top_k=3, reasoning={"max_tokens": 8})
    scores, _, reranked = rerank_with(stage, candidates[:1], Mute(qrels, queries, texts))
    query = candidates[0]
    best = max(scores[query.qid], key=lambda d: scores[query.qid][d])
    assert best == query.candidates[0].docid  # the root was never displaced: no set was won by a child
    assert all(t["fallback"] for t in reranked.traces[query.qid])


def test_reasoning_is_refused_where_a_method_cannot_think():
    with pytest.raises(ValidationError, match="does not reason"):
        stage_of("query-likelihood", reasoning={"max_tokens": 8})
    with pytest.raises(ValidationError, match="strategy first"):
        stage_of("listwise", strategy="first", reasoning={"max_tokens": 8})
    with pytest.raises(ValidationError, match="greater than 0"):
        stage_of("rank1", reasoning={"max_tokens": 0})


def test_numbered_sets_are_read_from_logits_only():
    with pytest.raises(ValidationError, match="labels: numbers"):
        stage_of("setwise", labels="numbers", scoring="generate")


def test_without_reasoning_a_stage_keeps_its_key_and_writes_no_traces():
    plain = stage_of("listwise")
    assert "reasoning" not in plain.identity()
    assert plain.output_files(None) == {}  # type: ignore[arg-type]
    assert "reasoning" in stage_of("listwise", reasoning={"max_tokens": 8}).identity()


def test_reasonrank_writes_bracketed_numbers_in_texts_as_parentheses():
    assert stage_of("reasonrank").shown_text("see [2] and [10]") == "see (2) and (10)"
    assert stage_of("listwise").shown_text("see [2]") == "see [2]"


# -- traces ----------------------------------------------------------------------------------
def test_the_traces_file_is_the_same_bytes_for_the_same_traces(tmp_path):
    traces = {"q2": [{"docs": ["d1"], "reasoning": "r", "reasoning_tokens": 1, "forced": True, "fallback": False,
                      "answer": 0.5}], "q1": [{"docs": ["d9", "d1"], "reasoning": "é", "reasoning_tokens": 2,
                                               "forced": False, "fallback": False, "answer": "A"}]}
    data = traces_file(traces)
    assert data == traces_file(dict(reversed(list(traces.items()))))
    path = tmp_path / "s.traces.jsonl.gz"
    path.write_bytes(data)
    calls = read_traces(path)
    assert [(c["qid"], c["call"]) for c in calls] == [("q1", 0), ("q2", 0)]
    text = explain(calls, "q1", "d1")
    assert "[d1]" in text and "é" in text and "answer: \"A\"" in text


def test_explain_names_what_it_cannot_find(tmp_path):
    path = tmp_path / "t.gz"
    path.write_bytes(traces_file({"q1": [{"docs": ["d1"], "reasoning": "", "reasoning_tokens": 0,
                                          "forced": False, "fallback": False, "answer": 1}]}))
    with pytest.raises(UserError, match="traced queries: q1"):
        explain(read_traces(path), "q7")
    with pytest.raises(UserError, match="not shown to the model"):
        explain(read_traces(path), "q1", "d5")
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(UserError, match="not a readable traces file"):
        read_traces(tmp_path / "bad.gz")


def test_a_passage_part_is_still_a_passage_after_the_close():
    """The answer call keeps the structured prompt, so passages are truncated as before."""
    prompt = Prompt.of("q ", Passage("long text", max_tokens=3), answer_prefix="A:")
    again = continued(prompt, thought_of(Generated(1, 0, "Yes.", 2, "</think>")))
    assert again.parts == prompt.parts and again.answer_prefix.endswith("A:")


# -- the think guard: a model that thinks where an answer is expected ------------------------
class Unbidden(QrelsBackend):
    """The perfect judge, but every generated answer starts with a think block."""

    def _answer(self, requests):
        out = []
        for request in requests:
            text = "".join(p for p in request.prompt.parts if isinstance(p, str))
            if isinstance(request, Generate) and "passage label" in text:  # setwise: the best letter
                grades = self.grades(request.prompt)
                answer = Generated(1, 0, " " + "ABCDEFGH"[max(range(len(grades)), key=lambda k: (grades[k], -k))], 1)
            else:
                answer = super()._answer([request])[0]
            if isinstance(answer, Generated):
                answer = Generated(1, 0, "<think>The worst is [1]. Passage A. 0</think>" + answer.text, 9)
            out.append(answer)
        return out


GUARDED = [("listwise", {"strategy": "sliding", "window": 20, "stride": 10}, 20),
           ("pairwise", {"strategy": "heapsort", "mode": "generate", "top_k": 5}, 5),
           ("setwise", {"scoring": "generate", "top_k": 5}, 5)]


@pytest.mark.parametrize(("method", "fields", "k"), GUARDED, ids=[g[0] for g in GUARDED])
def test_a_think_block_where_an_answer_is_expected_is_dropped_and_counted(judged, method, fields, k):
    texts, queries, qrels, bm25, candidates = judged
    stage = stage_of(method, depth=20, **fields)
    scores, accounting, _ = rerank_with(stage, candidates, Unbidden(qrels, queries, texts))
    assert ideal(candidates, qrels, scores, k)
    assert accounting.repairs["think_block"] == sum(accounting.requests.values()) > 0
