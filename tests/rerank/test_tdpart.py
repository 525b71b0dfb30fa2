"""Top-down partitioning as an algorithm: a ranker that sorts by a known value drives it.

The hand-worked case below is traced step by step in its test; the DL19 cases drive TDPart
through ``ListwiseStage`` with a perfect judge.
"""

from __future__ import annotations

import pytest

from rerankcli.evaluate.metrics import evaluate, parse_metric
from rerankcli.rerank.candidates import merge
from rerankcli.rerank.listwise import ListwiseStage
from rerankcli.rerank.tdpart import planned_range, tdpart
from tests.fake_llm import QrelsBackend, ideal, queries_of, rerank_with, shuffled

NDCG = parse_metric("ndcg@10")


def drive(order, values, window, k, budget):
    """Run tdpart with a ranker that sorts by ``values``; (result, lists ranked per step)."""
    steps = []

    def rank_many(lists):
        steps.append([list(x) for x in lists])
        return (yield from _ranked(lists, values))

    program = tdpart(order, window, k, budget, rank_many)
    try:
        asked = next(program)
        while True:
            asked = program.send(asked)
    except StopIteration as stop:
        return stop.value, steps


def _ranked(lists, values):
    answered = yield lists
    return [sorted(x, key=lambda i: -values[i]) for x in answered]


def test_hand_worked_case_n10_w4_k2_budget3():
    values = [3, 9, 1, 7, 0, 8, 2, 6, 5, 4]  # candidate i is worth values[i]
    result, steps = drive(list(range(10)), values, window=4, k=2, budget=3)
    # round 1: rank [0,1,2,3] -> [1,3,0,2]; pivot 3 (k=2), C=[1], Bk=[0,2]
    # blocks of w-1=3 with the pivot, asked together: [3,4,5,6] -> [5,3,6,4]: 5 joins C;
    #                                                 [3,7,8,9] -> [3,7,8,9]: none
    # C=[1,5] (within budget 3): backfill = [] + [3] + [0,2,6,4,7,8,9]; round 2 ranks [1,5]
    assert steps == [[[0, 1, 2, 3]], [[3, 4, 5, 6], [3, 7, 8, 9]], [[1, 5]]]
    assert result == [1, 5, 3, 0, 2, 6, 4, 7, 8, 9]
    calls = sum(len(step) for step in steps)
    assert calls == 4 and planned_range(10, 4, 2, 3) == (3, 4)


def test_no_block_beating_the_pivot_ends_after_the_blocks():
    values = list(range(10, 0, -1))  # already in order: nothing below beats the pivot
    result, steps = drive(list(range(10)), values, window=4, k=2, budget=3)
    assert result == list(range(10)) and sum(len(s) for s in steps) == 3 == planned_range(10, 4, 2, 3)[0]


def test_the_worst_case_stays_within_the_planned_range():
    for n in (5, 20, 37, 100):
        values = list(range(n))  # reversed input: every block document beats the pivot
        _, steps = drive(list(range(n)), values, window=8, k=3, budget=10)
        low, high = planned_range(n, 8, 3, 10)
        assert low <= sum(len(s) for s in steps) <= high


def stage_of(**fields) -> ListwiseStage:
    return ListwiseStage(**{"name": "td", "type": "rerank", "method": "listwise", "model": "judge",
                            "depth": 100, "strategy": "tdpart", **fields})


def judged_rerank(dl19, stage):
    texts, queries, qrels, bm25 = dl19
    run = shuffled(bm25, qrels)
    backend = QrelsBackend(qrels, queries, texts, batch_size=16)
    scores, accounting, state = rerank_with(stage, queries_of(run, texts, queries), backend)
    got = evaluate(merge(run, scores, 100), qrels, [NDCG]).means["ndcg@10"]
    best = evaluate(ideal(run, qrels), qrels, [NDCG]).means["ndcg@10"]
    return run, scores, accounting, state, got, best


def test_a_perfect_judge_with_an_unbounded_budget_puts_the_ideal_top10_first(dl19):
    """With a budget as large as the list nothing better than the pivot is ever dropped."""
    qrels = dl19[2]
    run, scores, _, _, got, best = judged_rerank(dl19, stage_of(budget=100))
    for qid in run.qids:
        top = sorted(scores[qid], key=lambda d: -scores[qid][d])[:10]
        grades = sorted((qrels[qid].get(d, 0) for d in run.scores[qid]), reverse=True)[:10]
        assert [qrels[qid].get(d, 0) for d in top] == grades, qid
    assert got == pytest.approx(best, abs=1e-12)


def test_the_papers_budget_costs_at_most_7_calls_a_query_at_depth_100(dl19):
    """Budget 20 keeps only the first 20 documents that beat the pivot (in block order), the
    paper's trade: on shuffled lists, where a weak pivot lets many through, a few good ones land
    below; the calls stay at 6-7 against sliding w20/s10's 9."""
    stage = stage_of()
    _, _, accounting, state, got, best = judged_rerank(dl19, stage)
    per_query = [r["windows"] for r in state.records.values()]
    assert stage.planned_calls(100) == (6, 7) and set(per_query) <= {6, 7}
    assert accounting.manifest()["calls"] == sum(per_query)
    assert 0.9 * best < got < best


def test_tdpart_options_are_checked():
    with pytest.raises(ValueError, match="top_k .* must be at most window"):
        stage_of(window=5, top_k=6)
    with pytest.raises(ValueError, match="budget .* must be at least top_k"):
        stage_of(top_k=10, budget=5)
