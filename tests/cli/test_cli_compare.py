"""``rerank compare`` and ``rerank diff`` on the DL19 runs, checked against pytrec_eval and scipy."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval
from PIL import Image
from scipy import stats

from rerankcli.core.runs import Run, read_run, write_run
from rerankcli.retrieve.fusion import rrf
from tests.conftest import assert_user_error, shared

# rerank's metric name -> pytrec_eval's measure (DL19: graded nDCG, binary measures at level 2)
MEASURES = {"ndcg@10": "ndcg_cut_10", "map": "map", "recall@100": "recall_100", "mrr@10": "recip_rank"}


@pytest.fixture(scope="module")
def dl19_runs(tmp_path_factory) -> dict[str, Path]:
    """BM25 and SPLADE++ as shipped, and their RRF written by rerankcli's fusion."""
    folder = shared("trec-dl19-passage")
    runs = {"bm25": folder / "bm25.top100.trec", "splade": folder / "splade-pp-ed.top100.trec"}
    fused = rrf([read_run(p) for p in runs.values()], [1.0, 1.0]).top(100)
    runs["rrf"] = tmp_path_factory.mktemp("runs") / "rrf.trec"
    write_run(fused, runs["rrf"], "rrf")
    return runs


def trec_eval_per_query(path: Path, measure: str) -> dict[str, float]:
    """pytrec_eval (trec_eval's C code) per query, with -l 2; recip_rank cut at 10 by hand."""
    folder = shared("trec-dl19-passage")
    with open(folder / "qrels.txt") as handle:
        qrels = pytrec_eval.parse_qrel(handle)
    run = read_run(path)
    if measure == "recip_rank":
        run = run.top(10)
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {measure}, relevance_level=2)
    return {q: values[measure] for q, values in evaluator.evaluate(run.scores).items()}


def compare_args(runs: dict[str, Path], *extra: str) -> list:
    folder = shared("trec-dl19-passage")
    named = [f"{name}={path}" for name, path in runs.items()]
    metrics = [arg for m in MEASURES for arg in ("-m", m)]
    return ["compare", *named, "--qrels", folder / "qrels.txt", "-l", "2", *metrics, *extra]


def test_compare_means_equal_trec_eval_and_p_values_equal_scipy(rerank, dl19_runs) -> None:
    result = rerank(*compare_args(dl19_runs, "--format", "json"))
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["baseline"] == "bm25" and report["queries"] == 43
    raw = {}
    for metric, measure in MEASURES.items():
        reference = {name: trec_eval_per_query(path, measure) for name, path in dl19_runs.items()}
        qids = sorted(reference["bm25"])
        for name in dl19_runs:
            assert report["means"][name][metric] == pytest.approx(np.mean(list(reference[name].values())),
                                                                  abs=1e-9)
        base = np.array([reference["bm25"][q] for q in qids])
        for name in ("splade", "rrf"):
            values = np.array([reference[name][q] for q in qids])
            tested = report["tests"][name][metric]
            raw[(metric, name)] = stats.ttest_rel(values, base).pvalue
            assert tested["p"] == pytest.approx(raw[(metric, name)], rel=1e-6)
            assert tested["wins"] + tested["ties"] + tested["losses"] == 43
            assert tested["wins"] == int(np.sum(values > base + 1e-12))
    for metric in MEASURES:  # Holm over the two runs compared with the baseline
        low, high = sorted([raw[(metric, "splade")], raw[(metric, "rrf")]])
        adjusted = sorted(report["tests"][name][metric]["p_adjusted"] for name in ("splade", "rrf"))
        assert adjusted == pytest.approx([min(1, 2 * low), min(1, max(2 * low, high))], rel=1e-6)
    assert round(report["means"]["splade"]["ndcg@10"], 4) == 0.7308


def test_per_query_csv_holds_trec_eval_values_and_the_plot_is_a_png(rerank, dl19_runs, tmp_path) -> None:
    plot = tmp_path / "diff.png"
    result = rerank(*compare_args(dl19_runs, "--per-query", "--format", "csv", "--plot", plot))
    assert result.code == 0, result.err
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert len(rows) == 43 * len(MEASURES)
    reference = trec_eval_per_query(dl19_runs["splade"], "ndcg_cut_10")
    for row in rows:
        if row["metric"] == "ndcg@10":
            assert float(row["splade"]) == pytest.approx(reference[row["query"]], abs=1e-4)
    with Image.open(plot) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 300


def test_table_marks_the_significant_runs(rerank, dl19_runs) -> None:
    result = rerank(*compare_args(dl19_runs, "--test", "fisher"))
    assert result.code == 0, result.err
    splade = next(line for line in result.out.splitlines() if line.startswith("splade "))
    assert "0.7308▲" in splade
    assert "Fisher's randomisation test, holm-adjusted" in result.out


def test_runs_are_named_by_file_stem(rerank, dl19_runs) -> None:
    folder = shared("trec-dl19-passage")
    result = rerank("compare", dl19_runs["bm25"], dl19_runs["rrf"], "--qrels", folder / "qrels.txt",
                    "-m", "ndcg@10", "--format", "json")
    assert result.code == 0, result.err
    assert list(json.loads(result.out)["means"]) == ["bm25.top100", "rrf"]


def test_a_baseline_file_joins_the_runs(rerank, dl19_runs) -> None:
    folder = shared("trec-dl19-passage")
    result = rerank("compare", dl19_runs["splade"], "--baseline", f"bm25={dl19_runs['bm25']}",
                    "--qrels", folder / "qrels.txt", "-m", "ndcg@10", "--format", "json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["baseline"] == "bm25" and list(report["means"]) == ["bm25", "splade-pp-ed.top100"]


def test_runs_with_different_queries_are_compared_on_the_shared_ones(rerank, dl19_runs, tmp_path) -> None:
    folder = shared("trec-dl19-passage")
    run = read_run(dl19_runs["splade"])
    dropped = run.qids[:3]
    write_run(Run({q: docs for q, docs in run.scores.items() if q not in dropped}), tmp_path / "part.trec")
    result = rerank("compare", dl19_runs["bm25"], tmp_path / "part.trec", "--qrels", folder / "qrels.txt",
                    "-m", "ndcg@10", "--format", "json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["queries"] == 40
    assert json.loads(result.out)["left_out_queries"] == {"bm25.top100": dropped}
    assert "bm25.top100: 3 of its judged queries are missing from another run" in result.err


def test_diff_of_bm25_and_splade(rerank, dl19_runs) -> None:
    result = rerank("diff", dl19_runs["bm25"], dl19_runs["splade"], "--format", "json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["queries"] == 43 and len(report["per_query"]) == 43
    rbos = [q["rbo"] for q in report["per_query"]]
    assert rbos == sorted(rbos)  # the queries that changed most come first
    assert 0.0 < report["mean"]["overlap@10"] < 1.0 and -1.0 < report["mean"]["kendall_tau"] < 1.0


def test_diff_of_a_run_with_itself_agrees_fully(rerank, dl19_runs) -> None:
    result = rerank("diff", dl19_runs["rrf"], dl19_runs["rrf"], "--depth", "20", "--format", "json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["mean"] == pytest.approx(
        {"overlap@20": 1.0, "rbo@20": 1.0, "kendall_tau": 1.0})


def test_diff_table_lists_the_queries_that_changed_most(rerank, dl19_runs) -> None:
    result = rerank("diff", dl19_runs["bm25"], dl19_runs["rrf"], "--top", "3")
    assert result.code == 0, result.err
    assert "43 queries in both" in result.out
    assert "the 3 queries that changed most (lowest RBO):" in result.out


@pytest.mark.parametrize("extra, fragment", [
    (["--plot", "out.jpg"], "the plot is a PNG"),
    (["--alpha", "1.5"], "--alpha 1.5: must lie between 0 and 1"),
    (["--baseline", "bm52"], "--baseline 'bm52': neither a run named here"),
    (["-m", "ndcg@ten"], "unknown metric 'ndcg@ten'"),
])
def test_compare_bad_arguments_exit_2(rerank, dl19_runs, extra, fragment) -> None:
    assert_user_error(rerank(*compare_args(dl19_runs, *extra)), fragment)


def test_compare_two_runs_with_one_name_exit_2(rerank, dl19_runs) -> None:
    folder = shared("trec-dl19-passage")
    result = rerank("compare", f"x={dl19_runs['bm25']}", f"x={dl19_runs['rrf']}", "--qrels", folder / "qrels.txt")
    assert_user_error(result, "two runs are named 'x'", "NAME=PATH")
