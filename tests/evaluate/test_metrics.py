"""Our metrics equal trec_eval's (pytrec_eval) to 1e-9 on real runs, and ranx's where it agrees."""

import numpy as np
import pytest
import pytrec_eval

from rerankcli.core.errors import UserError
from rerankcli.core.formats import read_qrels
from rerankcli.core.runs import Run, read_run
from rerankcli.evaluate.metrics import Metric, evaluate, parse_metric
from tests.conftest import shared

# our name -> trec_eval measure (recip_rank has no cutoff in trec_eval: compared on a top-k run)
TREC_EVAL = {
    "ndcg@10": "ndcg_cut_10", "ndcg@100": "ndcg_cut_100", "ndcg": "ndcg", "map": "map",
    "map@100": "map_cut_100", "recall@10": "recall_10", "recall@100": "recall_100",
    "p@10": "P_10", "rprec": "Rprec", "mrr": "recip_rank",
}


def trec_eval_means(run: Run, qrels, level: int) -> dict[str, float]:
    measures = {"ndcg_cut.10", "ndcg_cut.100", "ndcg", "map", "map_cut.100", "recall.10",
                "recall.100", "P.10", "Rprec", "recip_rank"}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, measures, relevance_level=level)
    per_query = evaluator.evaluate(run.scores)
    means = {ours: float(np.mean([v[theirs] for v in per_query.values()]))
             for ours, theirs in TREC_EVAL.items()}
    top10 = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}, relevance_level=level)
    means["mrr@10"] = float(np.mean([v["recip_rank"] for v in top10.evaluate(run.top(10).scores).values()]))
    return means


@pytest.mark.parametrize("run_file", ["bm25.top100.trec", "splade-pp-ed.top100.trec"])
@pytest.mark.parametrize("level", [1, 2])
def test_dl19_metrics_equal_trec_eval(run_file: str, level: int) -> None:
    run = read_run(shared("trec-dl19-passage", run_file))
    qrels = read_qrels(shared("trec-dl19-passage", "qrels.txt"))
    expected = trec_eval_means(run, qrels, level)
    ours = evaluate(run, qrels, [parse_metric(m) for m in expected], relevance_level=level).means
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-9), name


def test_dl19_bm25_ndcg10_is_the_published_0_5058() -> None:
    run = read_run(shared("trec-dl19-passage", "bm25.top100.trec"))
    qrels = read_qrels(shared("trec-dl19-passage", "qrels.txt"))
    assert round(evaluate(run, qrels, [Metric("ndcg", 10)]).means["ndcg@10"], 4) == 0.5058


def test_ties_are_evaluated_in_trec_eval_order() -> None:
    qrels = {"q": {"a": 1}}
    run = Run({"q": {"a": 1.0, "b": 1.0, "c": 1.0}})  # trec_eval ranks c, b, a
    expected = trec_eval_means(run, qrels, 1)["mrr"]
    assert expected == pytest.approx(1 / 3)
    assert evaluate(run, qrels, [Metric("mrr")]).means["mrr"] == pytest.approx(expected)


def test_negative_judgements_give_no_gain() -> None:
    qrels = {"q": {"a": 1, "b": 2, "d": -1}}
    run = Run({"q": {"a": 3.0, "d": 2.5, "b": 2.0}})
    expected = trec_eval_means(run, qrels, 1)
    ours = evaluate(run, qrels, [Metric("ndcg", 10), Metric("map")]).means
    assert ours["ndcg@10"] == pytest.approx(expected["ndcg@10"])
    assert ours["map"] == pytest.approx(expected["map"])


def test_missing_zero_counts_absent_judged_queries() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = Run({"q1": {"a": 1.0}})
    assert evaluate(run, qrels, [Metric("mrr")]).means["mrr"] == 1.0
    result = evaluate(run, qrels, [Metric("mrr")], missing="zero")
    assert result.means["mrr"] == 0.5
    assert result.qrels_only == ["q2"]


def test_ranx_agrees_on_dl19() -> None:
    ranx = pytest.importorskip("ranx")
    run = read_run(shared("trec-dl19-passage", "bm25.top100.trec"))
    qrels = read_qrels(shared("trec-dl19-passage", "qrels.txt"))
    names = ["ndcg@10", "recall@100", "map", "mrr@10", "precision@10"]
    theirs = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run.scores), names)
    ours = evaluate(run, qrels, [parse_metric(n) for n in names]).means
    for name in names:
        assert ours[str(parse_metric(name))] == pytest.approx(theirs[name], abs=1e-6), name


@pytest.mark.parametrize("text", ["ndgc@10", "p", "rprec@5", "ndcg@0", ""])
def test_bad_metric_names_are_user_errors(text: str) -> None:
    with pytest.raises(UserError):
        parse_metric(text)


def test_metric_aliases() -> None:
    assert str(parse_metric("recip_rank")) == "mrr"
    assert str(parse_metric("ndcg_cut_10")) == "ndcg@10"
    assert str(parse_metric("P@5")) == "p@5"
    assert str(parse_metric("R@100")) == "recall@100"
