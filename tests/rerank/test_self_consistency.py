"""Permutation self-consistency on listwise stages: M orders of each window, one ranking back.

A judge that is right on two of every three prompts and reverses the third must still give the
ideal order once the three are aggregated; the M prompts of a window travel in one step.
"""

from __future__ import annotations

import pytest

from rerankcli.llm.requests import Generated
from rerankcli.rerank.listwise import ListwiseStage
from tests.fake_llm import QrelsBackend, queries_of, rerank_with, shuffled


def stage_of(**fields) -> ListwiseStage:
    return ListwiseStage(**{"name": "psc", "type": "rerank", "method": "listwise", "model": "judge",
                            "depth": 20, "window": 10, "stride": 5, **fields})


class ThirdLiar(QrelsBackend):
    """Right on two prompts in three; the third gets the ideal order reversed."""

    seen = 0

    def _answer(self, requests):
        answers = super()._answer(requests)
        out = []
        for answer in answers:
            ThirdLiar.seen += 1
            if ThirdLiar.seen % 3 == 0:
                ids = answer.text.split(" > ")[::-1]
                answer = Generated(answer.prompt_tokens, 0, " > ".join(ids), answer.new_tokens)
            out.append(answer)
        return out


def top_grades(scores, run, qrels, k=10):
    for qid in run.qids:
        ranked = sorted(scores[qid], key=lambda d: -scores[qid][d])[:k]
        yield [qrels[qid].get(d, 0) for d in ranked], sorted(
            (qrels[qid].get(d, 0) for d in run.scores[qid]), reverse=True)[:k]


@pytest.mark.parametrize("aggregation", ["kemeny", "borda"])
def test_three_orders_outvote_one_reversed_answer(dl19, aggregation):
    """Kemeny follows every majority, so a reversed third answer cannot move a pair; Borda's
    mean rank can be dragged by it, so Borda is held to a judge that is always right (its
    answers differ only in how they order equally relevant passages)."""
    texts, queries, qrels, bm25 = dl19
    run = shuffled(bm25.top(20), qrels)
    ThirdLiar.seen = 0
    judge = ThirdLiar if aggregation == "kemeny" else QrelsBackend
    backend = judge(qrels, queries, texts, batch_size=3)
    stage = stage_of(permutations=3, aggregation=aggregation)
    scores, accounting, state = rerank_with(stage, queries_of(run, texts, queries), backend)
    for got, best in top_grades(scores, run, qrels, k=5):  # one pass of w10/s5 carries the best 5 up
        assert got == best
    details = stage.method_details(state)
    windows = 3 * len(run.qids)  # 20 candidates, window 10, stride 5
    assert details["windows"] == windows and details["prompts"] == 3 * windows
    assert accounting.manifest()["calls"] == 3 * windows == stage.planned_calls(20)[0] * len(run.qids)
    assert set(backend.calls) == {3}  # each window's three orders in one step
    assert details["approximate_windows"] == 0


def test_one_permutation_is_plain_listwise(dl19):
    texts, queries, qrels, bm25 = dl19
    run = shuffled(bm25.top(20), qrels)
    plain, psc1 = stage_of(), stage_of(permutations=1, aggregation="borda")
    assert plain.identity() == psc1.identity()
    ThirdLiar.seen = 0
    a, _, _ = rerank_with(plain, queries_of(run, texts, queries), ThirdLiar(qrels, queries, texts))
    ThirdLiar.seen = 0
    b, _, _ = rerank_with(psc1, queries_of(run, texts, queries), ThirdLiar(qrels, queries, texts))
    assert a == b


def test_the_shuffles_are_seeded(dl19):
    texts, queries, qrels, bm25 = dl19
    run = shuffled(bm25.top(20), qrels)

    class Recorder(QrelsBackend):
        prompts: list = []

        def _answer(self, requests):
            Recorder.prompts.append([r.prompt for r in requests])
            return [Generated(1, 0, "[1] > [2]", 2) for _ in requests]

    def prompts(seed):
        Recorder.prompts = []
        rerank_with(stage_of(permutations=4, seed=seed), queries_of(run, texts, queries)[:2],
                    Recorder(qrels, queries, texts))
        return Recorder.prompts

    assert prompts(1) == prompts(1) and prompts(1) != prompts(2)


def test_self_consistency_works_with_first_and_tdpart(dl19):
    texts, queries, qrels, bm25 = dl19
    run = shuffled(bm25.top(20), qrels)
    for stage in (stage_of(strategy="first", permutations=2), stage_of(strategy="tdpart", top_k=5, budget=10,
                                                                        permutations=2)):
        scores, accounting, state = rerank_with(stage, queries_of(run, texts, queries),
                                                QrelsBackend(qrels, queries, texts))
        for got, best in top_grades(scores, run, qrels, k=5):
            assert got == best
        low, high = stage.planned_calls(20)
        assert all(low <= 2 * r["windows"] <= high for r in state.records.values())
