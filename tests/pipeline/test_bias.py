"""``rerank bias``: a stage rerun on reversed and shuffled candidates, and what it measures.

The measures are checked on two made-up methods whose behaviour is known: one that returns
the candidates in the order it was shown them (all position), one that ignores the order
(none). The command runs once end to end on a small random-weight model.
"""

from __future__ import annotations

import json

import pytest

from rerankcli.core.runs import Run
from rerankcli.pipeline.bias import measure, render, variants
from rerankcli.rerank.listwise import ListwiseStage
from rerankcli.rerank.orders import presented
from tests.conftest import QIDS, assert_user_error, pipeline

DOCS = [f"d{i}" for i in range(6)]


def stage() -> ListwiseStage:
    return ListwiseStage(name="lw", type="rerank", method="listwise", model="m", depth=6, window=6, stride=3)


def input_run() -> Run:
    return Run({q: {d: float(10 - i) for i, d in enumerate(DOCS)} for q in ("q1", "q2")})


def outputs(made, follow: bool) -> dict[str, Run]:
    runs = {}
    for v in made:
        run = Run()
        for qid in ("q1", "q2"):
            order = presented(len(DOCS), v.stage.order, v.stage.shuffle_seed, qid) if follow else [2, 0, 1, 5, 4, 3]
            for rank, i in enumerate(order):
                run.add(qid, DOCS[i], float(len(DOCS) - rank))
        runs[v.stage.name] = run
    return runs


def test_variants_are_the_stage_reversed_and_shuffled_under_their_own_names():
    made = variants(stage(), 2)
    assert [v.label for v in made] == ["as configured", "reverse", "shuffle-1", "shuffle-2"]
    assert [v.stage.name for v in made] == ["lw", "lw.reverse", "lw.shuffle-1", "lw.shuffle-2"]
    assert [(v.stage.order, v.stage.shuffle_seed) for v in made[1:]] == [("reverse", 0), ("shuffle", 1), ("shuffle", 2)]
    assert all(v.stage.seed == 0 for v in made)  # the method's own shuffles stay as they were
    reversed_stage = stage().model_copy(update={"order": "reverse"})
    assert [v.label for v in variants(reversed_stage, 1)] == ["as configured", "shuffle-1"]  # no duplicate


def test_a_method_that_returns_the_order_shown_is_all_position():
    made = variants(stage(), 2)
    qrels = {"q1": {"d5": 3}, "q2": {"d0": 1}}
    report = measure(made, outputs(made, follow=True), input_run(), 6, qrels)
    by_qid = {q.qid: q for q in report.queries}
    assert report.tau["reverse"] == pytest.approx(-1.0) and report.tau["as configured"] == 1.0
    assert report.position_wins == 1.0 and by_qid["q1"].unstable_pairs == 15  # every pair moves
    assert by_qid["q1"].ndcg["reverse"] == pytest.approx(1.0) and by_qid["q1"].ndcg["as configured"] < 1.0
    assert set(report.ndcg) == set(report.variants)
    text = render(report)
    assert "position wins 1.000" in text and "reverse" in text and "q2" in text


def test_a_method_blind_to_the_order_has_tau_one_and_no_position_effect():
    made = variants(stage(), 3)
    report = measure(made, outputs(made, follow=False), input_run(), 6, None)
    assert all(q.tau_mean == 1.0 and q.unstable_pairs == 0 for q in report.queries)
    assert report.position_wins is None and report.ndcg == {}
    assert "nDCG@10" not in render(report) and json.loads(report.to_json())["position_wins"] is None


@pytest.fixture
def bias_pipeline(tmp_path, mini_dl19, tiny_llama):
    return pipeline(tmp_path, mini_dl19, [
        {"name": "lw", "type": "rerank", "method": "listwise", "model": str(tiny_llama), "depth": 4,
         "window": 4, "stride": 2, "max_new_tokens": 8, "max_passage_tokens": 16},
        {"name": "yn", "type": "rerank", "method": "yes-no", "model": str(tiny_llama), "depth": 4}])


def test_rerank_bias_runs_each_order_as_a_cached_stage(rerank, bias_pipeline, tmp_path):
    result = rerank("bias", bias_pipeline, "--stage", "lw", "--shuffles", "1", "-q")
    assert result.code == 0, result.err
    assert "rerank bias: stage 'lw' (listwise), 3 queries, top 4 candidates" in result.out
    assert all(qid in result.out for qid in QIDS) and "position wins" in result.out
    folder = tmp_path / "out" / "bias-lw"
    assert {p.name for p in folder.glob("*.trec")} == {"bm25.trec", "lw.trec", "lw.reverse.trec", "lw.shuffle-1.trec"}
    again = rerank("bias", bias_pipeline, "--stage", "lw", "--shuffles", "1", "--format", "json")
    assert again.code == 0 and "cached" in again.err and "running" not in again.err
    assert json.loads(again.out)["variants"] == ["as configured", "reverse", "shuffle-1"]


def test_rerank_bias_refuses_a_stage_that_is_not_an_llm_reranker(rerank, bias_pipeline):
    assert_user_error(rerank("bias", bias_pipeline, "--stage", "bm25"),
                      "--stage bm25: rerank bias reorders the candidates of an LLM rerank stage; 'bm25' is a load stage")
    assert_user_error(rerank("bias", bias_pipeline, "--stage", "eval"), "'eval' is an evaluate stage")
    assert_user_error(rerank("bias", bias_pipeline, "--stage", "nope"), "--stage: no stage named 'nope'")
    assert_user_error(rerank("bias", bias_pipeline, "--stage", "yn"),
                      "--stage yn: yes-no scores each passage on its own, so the order")
