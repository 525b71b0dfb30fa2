"""Setwise, algorithms first: scripted and perfect judges, counts worked out by hand.

A scripted model answers each set by a rule over the values of its passages ("doc 3" has the
value ``values[3]``) and records every set it was shown, so the sets a sort asks can be traced
by hand. A perfect judge from the DL19 qrels must give the ideal top-k on shuffled candidates
with both strategies, several set sizes and both scoring modes.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from rerankcli.core.errors import UserError
from rerankcli.llm.backend import Backend
from rerankcli.llm.requests import Generate, Generated, NextToken, Passage, TokenLogprobs
from rerankcli.rerank import pairwise
from rerankcli.rerank.candidates import Candidate, Query, merge
from rerankcli.rerank.setwise import LETTERS, SetwiseStage, heap_top, read_label, winner
from tests.fake_llm import QrelsBackend, queries_of, rerank_with, shuffled


def stage_of(**fields) -> SetwiseStage:
    return SetwiseStage(**{"name": "set", "type": "rerank", "method": "setwise", "model": "judge",
                           "depth": 100, **fields})


def highest(values: list[float]) -> int:
    """The position of the highest value; the first on a tie."""
    return max(range(len(values)), key=lambda p: (values[p], -p))


class Scripted(Backend):
    """Answers a set by ``choose`` over its passages' values; keeps every set it was shown."""

    name = "scripted"
    answers = frozenset({NextToken, Generate})
    batch_size = 64

    def __init__(self, values: list[float], choose=highest, text: str | None = None) -> None:
        self.values, self.choose, self.text = values, choose, text
        self.asked: list[tuple[int, ...]] = []

    def single_tokens(self, texts):
        return list(texts)

    def _answer(self, requests):
        out = []
        for request in requests:
            shown = tuple(int(p.text.split()[1]) for p in request.prompt.parts if isinstance(p, Passage))
            self.asked.append(shown)
            label = LETTERS[self.choose([self.values[i] for i in shown])]
            if isinstance(request, Generate):
                out.append(Generated(1, 0, self.text if self.text is not None else f" {label}", 1))
            else:
                out.append(TokenLogprobs(1, 0, {c: 0.0 if c.strip() == label else -5.0 for c in request.candidates}))
        return out


def docs(n: int, qid: str = "q") -> Query:
    return Query(qid, "which doc?", tuple(Candidate(f"d{i}", f"doc {i}") for i in range(n)))


def ranking(scores: dict[str, float]) -> list[int]:
    return [int(d[1:]) for d in sorted(scores, key=lambda d: -scores[d])]


def scripted(stage: SetwiseStage, n: int, backend: Scripted):
    """(ranking as input positions, per-query record, calls) of one query of ``n`` docs."""
    scores, accounting, state = rerank_with(stage, [docs(n)], backend)
    record = stage.method_details(state)["per_query"]["q"]
    return ranking(scores["q"]), record, accounting.manifest()["calls"]


# -- counts worked out by hand ----------------------------------------------------------------

def test_heapsort_asks_the_sets_worked_out_by_hand():
    # n = 7, c = 3 (binary heap: node i has children 2i+1, 2i+2), k = 2, the judge picks the
    # highest value. values: d0=1 d1=5 d2=2 d3=7 d4=0 d5=3 d6=6; heap = positions [0..6].
    # build, i = 7//2 = 3 … 0:
    #   heapify(3): no child (7 ≥ 7), no call
    #   heapify(2): (2,5,6) → C (d6)  swap pos 2↔6: [0,1,6,3,4,5,2]; pos 6 has no child
    #   heapify(1): (1,3,4) → B (d3)  swap pos 1↔3: [0,3,6,1,4,5,2]; pos 3 has no child
    #   heapify(0): (0,3,6) → B (d3)  swap pos 0↔1: [3,0,6,1,4,5,2]
    #            → (0,1,4) → B (d1)  swap pos 1↔3: [3,1,6,0,4,5,2]
    # extraction 1: d3 out, root ↔ last: [2,1,6,0,4,5 | 3], size 6
    #   heapify(0): (2,1,6) → C (d6)  swap pos 0↔2: [6,1,2,0,4,5]
    #            → (2,5) (pos 6 is outside size 6) → B (d5)  swap pos 2↔5
    # extraction 2 = k: d6 out, no heapify.  6 calls; top [d3, d6], then d0 d1 d2 d4 d5.
    backend = Scripted([1, 5, 2, 7, 0, 3, 6])
    stage = stage_of(set_size=3, top_k=2)
    order, record, calls = scripted(stage, 7, backend)
    assert backend.asked == [(2, 5, 6), (1, 3, 4), (0, 3, 6), (0, 1, 4), (2, 1, 6), (2, 5)]
    assert calls == record["prompts"] == record["sets"] == 6 and record["cache_hits"] == 0
    assert order == [3, 6, 0, 1, 2, 4, 5]
    # least: 3 nodes with children + 1 root heapify = 4; most: heights 0+1+1+2 + height 2 at size 6
    assert stage.planned_calls(7) == (4, 6)


def test_bubblesort_asks_the_windows_worked_out_by_hand_and_reuses_a_repeated_set():
    # n = 5, c = 3 (windows of 3 moving up by 2), k = 2; values d0=5 d1=0 d2=4 d3=2 d4=1.
    # pass 0: [2,5) (2,3,4) → A, nothing moves; [0,3) (0,1,2) → A; start 0 = i: done
    # pass 1: [2,5) (2,3,4) again in the same order: the memo answers (no call);
    #         start 0 clamps to 1: [1,3) (1,2) → B (d2) moves up: [0,2,1,3,4]; done
    # 4 sets, 3 prompts, 1 cache hit; top [d0, d2], then d1 d3 d4 in input order.
    backend = Scripted([5, 0, 4, 2, 1])
    stage = stage_of(strategy="bubblesort", set_size=3, top_k=2)
    order, record, calls = scripted(stage, 5, backend)
    assert backend.asked == [(2, 3, 4), (0, 1, 2), (1, 2)]
    assert (record["sets"], record["prompts"], record["cache_hits"], calls) == (4, 3, 1, 3)
    assert order == [0, 2, 1, 3, 4]
    # most: 2 windows a pass; least: pass 1's top window is clamped (1 is not a start 2 − 2j)
    assert stage.planned_calls(5) == (3, 4)


def test_bubblesort_moves_the_winner_to_the_top_of_its_window():
    # n = 4, c = 3, k = 1; the lowest position always wins (the carried passage keeps winning)
    # pass 0: [1,4) (1,2,3) → C: d3 to position 1 → [0,3,1,2]; [0,2)… clamps to [0,2): (0,3) → B
    backend = Scripted([0, 0, 0, 0], choose=lambda values: len(values) - 1)
    order, record, _ = scripted(stage_of(strategy="bubblesort", set_size=3, top_k=1), 4, backend)
    assert backend.asked == [(1, 2, 3), (0, 3)]
    assert order == [3, 0, 1, 2]  # d3 on top, the others in input order


# -- a perfect judge on DL19 ------------------------------------------------------------------

class SetJudge(QrelsBackend):
    """The qrels judge; a generated answer names the best passage of the set (the first on a tie)."""

    def _answer(self, requests):
        sets = [r for r in requests if isinstance(r, Generate)]
        rest = iter(super()._answer([r for r in requests if not isinstance(r, Generate)]) if len(sets) < len(requests)
                    else [])
        out = []
        for request in requests:
            if isinstance(request, Generate):
                out.append(Generated(1, 0, f" {LETTERS[highest(self.grades(request.prompt))]}", 1))
            else:
                out.append(next(rest))
        return out


@pytest.fixture(scope="module")
def judged(dl19):
    """The shuffled top-20 of the judged DL19 queries."""
    return shuffled(dl19[3].top(20), dl19[2])


def top_is_ideal(scores, run, qrels, k: int) -> bool:
    for qid in run.qids:
        got = [qrels[qid].get(d, 0) for d in sorted(scores[qid], key=lambda d: -scores[qid][d])[:k]]
        if got != sorted((qrels[qid].get(d, 0) for d in run.scores[qid]), reverse=True)[:k]:
            return False
    return True


def judge_rerank(stage, run, dl19, backend=None):
    texts, queries, qrels, _ = dl19
    backend = backend or SetJudge(qrels, queries, texts, batch_size=64)
    scores, accounting, state = rerank_with(stage, queries_of(run, texts, queries), backend)
    return scores, accounting, stage.method_details(state)


@pytest.mark.parametrize("scoring", ["logits", "generate"])
@pytest.mark.parametrize("set_size", [2, 3, 4])
@pytest.mark.parametrize("strategy", ["heapsort", "bubblesort"])
def test_a_perfect_judge_gives_the_ideal_top_k(dl19, judged, strategy, set_size, scoring):
    stage = stage_of(strategy=strategy, set_size=set_size, top_k=5, scoring=scoring, depth=20)
    scores, accounting, details = judge_rerank(stage, judged, dl19)
    assert top_is_ideal(scores, judged, dl19[2], 5)
    kind = "NextToken" if scoring == "logits" else "Generate"
    assert accounting.manifest()["requests"] == {kind: details["prompts"]}
    assert details["unparsed"] == 0
    least, most = stage.planned_calls(20)
    for record in details["per_query"].values():
        assert least <= record["prompts"] <= most
        assert record["prompts"] == record["sets"] - record["cache_hits"]
        if strategy == "heapsort":
            assert record["cache_hits"] == 0


def test_both_orders_with_a_perfect_judge_ask_every_set_twice(dl19, judged):
    stage = stage_of(set_size=3, top_k=5, both_orders=True, scoring="generate", depth=20)
    scores, accounting, details = judge_rerank(stage, judged, dl19)
    assert top_is_ideal(scores, judged, dl19[2], 5)
    assert details["prompts"] == 2 * details["sets"] == accounting.manifest()["calls"]
    least, most = stage.planned_calls(20)
    assert least % 2 == most % 2 == 0
    assert all(least <= r["prompts"] <= most for r in details["per_query"].values())


class Biased(QrelsBackend):
    """A judge with a strong primacy bias: label A gets 1.5 more log-probability than its grade."""

    def _answer(self, requests):
        self.calls.append(len(requests))
        return [TokenLogprobs(1, 0, {c: self.grades(r.prompt)[ord(c.strip()) - ord("A")] + 1.5 * (c.strip() == "A")
                                     for c in r.candidates}) for r in requests]


@pytest.mark.parametrize("strategy", ["heapsort", "bubblesort"])
def test_both_orders_cancel_a_position_bias_in_pairs(dl19, judged, strategy):
    # for a pair, P(x first) + P(x second) > 1 exactly when x has the higher grade, whatever the bias
    texts, queries, qrels, _ = dl19
    single = stage_of(strategy=strategy, set_size=2, top_k=5, depth=20)
    scores, _, _ = judge_rerank(single, judged, dl19, Biased(qrels, queries, texts))
    assert not top_is_ideal(scores, judged, qrels, 5)  # the bias wins some comparisons
    both = stage_of(strategy=strategy, set_size=2, top_k=5, depth=20, both_orders=True)
    scores, _, details = judge_rerank(both, judged, dl19, Biased(qrels, queries, texts))
    assert top_is_ideal(scores, judged, qrels, 5)
    assert details["prompts"] == 2 * details["sets"] - details["cache_hits"]


# -- position bias, ties, parsing ---------------------------------------------------------------

def always(label: str):
    return lambda values: LETTERS.index(label) if LETTERS.index(label) < len(values) else 0


@pytest.mark.parametrize("both_orders", [False, True])
@pytest.mark.parametrize("scoring", ["logits", "generate"])
def test_a_model_that_always_answers_a_leaves_bubblesort_in_input_order(scoring, both_orders):
    # both orders: the first and the last passage get one A each, a tie, which the first wins
    stage = stage_of(strategy="bubblesort", set_size=4, top_k=5, scoring=scoring, both_orders=both_orders)
    order, record, _ = scripted(stage, 12, Scripted([0] * 12, choose=always("A")))
    assert order == list(range(12))
    assert record["prompts"] == stage.planned_calls(12)[0]  # nothing moves: the fewest calls


@pytest.mark.parametrize("scoring", ["logits", "generate"])
def test_a_model_that_always_answers_a_makes_heapsort_pick_the_input_bottom(scoring):
    # llm-rankers' heap: nothing moves while building, so the first extraction takes d0; each
    # extraction then puts the last leaf on the root, and "A" keeps it there: d11, d10, d9, ...
    stage = stage_of(set_size=3, top_k=4, scoring=scoring)
    order, record, _ = scripted(stage, 12, Scripted([0] * 12, choose=always("A")))
    assert order == [0, 11, 10, 9, *range(1, 9)]
    assert record["prompts"] == stage.planned_calls(12)[0]


def test_unreadable_answers_let_the_first_passage_win_and_are_counted():
    stage = stage_of(strategy="bubblesort", set_size=3, top_k=3, scoring="generate")
    order, record, calls = scripted(stage, 9, Scripted(list(range(9)), text="I cannot tell."))
    assert order == list(range(9))  # "I" labels no passage of a set of 3: the first one wins
    assert record["unparsed"] == record["prompts"] == calls > 0


def test_unreadable_answers_fail_the_stage_above_max_repair_rate():
    stage = stage_of(strategy="bubblesort", set_size=3, top_k=2, scoring="generate", max_repair_rate=0.2)
    with pytest.raises(UserError, match="named no passage of their set"):
        scripted(stage, 9, Scripted(list(range(9)), text="Both are relevant."))


@pytest.mark.parametrize("text, size, position", [
    (" B", 3, 1), (" C.", 3, 2), ("Passage B", 3, 1), ("passage c is the most relevant", 3, 2),
    (" (A) because it mentions the query", 3, 0), ("<think>A or B? A seems off</think> B", 3, 1),
    (":C", 3, 2), ("\nA\n", 2, 0), ("Passage: B", 2, 1), ("Passage (D)", 4, 3),
    ("I think B", 3, 1), ("Passage E", 3, None), (" E", 3, None), ("passages are alike", 3, None),
    ("<think>clearly B", 3, None), (" Both are relevant", 3, None), ("", 2, None), (" a passage about", 3, None),
    (" W", 23, 22),
])
def test_read_label_finds_the_named_passage(text, size, position):
    assert read_label(text, size) == position


def test_winner_adds_both_orders_and_gives_ties_to_the_first_of_the_set():
    shown = [(4, 7, 9), (9, 7, 4)]
    assert winner([[0.5, 0.2, 0.3], [0.5, 0.2, 0.3]], shown, [4, 7, 9]) == 0  # 4 and 9 tie at 0.8
    assert winner([[0.4, 0.35, 0.25], [0.2, 0.45, 0.35]], shown, [4, 7, 9]) == 1  # 7: 0.8
    assert winner([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]], shown, [4, 7, 9]) == 1  # one unread order, one vote
    assert winner([[0.0, 0.0, 0.0]], shown[:1], [4, 7, 9]) == 0  # nobody voted: the parent stays


# -- structure and plan ------------------------------------------------------------------------

def drain(steps):
    """Run a sort whose judge never yields; its return value."""
    try:
        while True:
            next(steps)
    except StopIteration as stop:
        return stop.value


@pytest.mark.parametrize("n", [10, 31])
def test_sets_of_three_make_the_binary_heap_of_pairwise_heapsort(n):
    # PRP's heap asks (right child, left child), then (winning child, parent) per level; a set of
    # three asks the same level at once. PRP re-heapifies after its last extraction, setwise not,
    # so PRP with k extractions asks what setwise asks with k + 1.
    values = random.Random(n).sample(range(1000), n)
    prp: list[tuple[int, int]] = []
    expected: list[tuple[int, int]] = []

    def beats(i, j):
        prp.append((i, j))
        return values[i] > values[j]
        yield

    def best(members):
        if len(members) == 3:
            expected.append((members[2], members[1]))
        kids = members[1:]
        expected.append((kids[highest([values[i] for i in kids])], members[0]))
        return highest([values[i] for i in members])
        yield

    k = 5
    assert drain(heap_top(n, k + 1, 3, best))[:k] == drain(pairwise.heap_top(n, k, beats))[:k]
    assert prp == expected


@pytest.mark.parametrize("strategy", ["heapsort", "bubblesort"])
@pytest.mark.parametrize("set_size", [2, 3, 4, 7])
def test_real_counts_lie_in_the_plan_and_reach_its_bounds(strategy, set_size):
    for n in (2, 3, 5, 8, 13):
        for k in (1, 3, 13):
            stage = stage_of(strategy=strategy, set_size=set_size, top_k=k)
            least, most = stage.planned_calls(n)
            _, record, _ = scripted(stage, n, Scripted([0] * n, choose=always("A")))
            assert record["prompts"] == least, (n, k)
            if strategy == "heapsort":  # B is the first child: every sift goes down its deepest path
                _, record, _ = scripted(stage, n, Scripted([0] * n, choose=always("B")))
                assert record["prompts"] == most, (n, k)
            for seed in range(3):
                rng = random.Random(f"{n}:{k}:{seed}")
                values = [rng.random() for _ in range(n)]
                for choose in (highest, lambda v, r=random.Random(seed): r.randrange(len(v))):
                    order, record, calls = scripted(stage, n, Scripted(values, choose=choose))
                    assert least <= record["prompts"] == calls <= most, (n, k, seed)
                    assert sorted(order) == list(range(n))
                order, _, _ = scripted(stage, n, Scripted(values))  # a consistent judge: the true top-k
                assert order[:k] == sorted(range(n), key=lambda i: -values[i])[:k]


def test_bubblesort_finds_the_top_k_of_a_consistent_judge():
    values = random.Random(5).sample(range(100), 30)
    for set_size in (3, 5):
        order, _, _ = scripted(stage_of(strategy="bubblesort", set_size=set_size, top_k=6), 30, Scripted(values))
        assert order[:6] == sorted(range(30), key=lambda i: -values[i])[:6]


def test_sets_of_queries_batched_together_equal_one_query_at_a_time(dl19, judged):
    texts, queries, qrels, _ = dl19
    stage = stage_of(set_size=3, top_k=5, depth=20)
    together, _, _ = judge_rerank(stage, judged, dl19, SetJudge(qrels, queries, texts, batch_size=64))
    for query in queries_of(judged, texts, queries)[:5]:
        alone, _, _ = rerank_with(stage, [query], SetJudge(qrels, queries, texts, batch_size=1))
        assert alone[query.qid] == together[query.qid]
    run = merge(judged, together, 20)
    assert set(run.qids) == set(judged.qids)


def test_the_prompt_is_the_paper_question_with_labelled_passages():
    template = stage_of().template(Path("."))
    prompt = template.list_prompt("what is x", ["one", "two"], ["A", "B"])
    text = "".join(p if isinstance(p, str) else f"<{p.text}>" for p in prompt.parts)
    assert text == ('Given a query "what is x", which of the following passages is the most relevant one to '
                    'the query?\n\nPassage A: "<one>"\n\nPassage B: "<two>"\n\nOutput only the passage label '
                    'of the most relevant passage:')
    assert prompt.answer_prefix == "Passage" and prompt.system is None


def test_a_tokenizer_that_splits_a_label_is_refused_before_compute():
    class Split(Scripted):
        def single_tokens(self, texts):
            return [t for t in texts if "D" not in t]

        def _answer(self, requests):
            raise AssertionError("no compute expected")

    with pytest.raises(UserError, match="no single token for the label.s. D"):
        scripted(stage_of(set_size=4), 6, Split([0] * 6))
    order, _, _ = scripted(stage_of(set_size=4, scoring="generate"), 6, Scripted([0] * 6))
    assert len(order) == 6


@pytest.mark.parametrize("set_size", [1, 24])
def test_set_size_outside_the_labels_is_refused(set_size):
    with pytest.raises(ValidationError, match="set_size"):
        stage_of(set_size=set_size)
