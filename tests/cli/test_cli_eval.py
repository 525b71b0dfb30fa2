"""``rerank eval`` from the shell: the published DL19 number, formats, and bad input."""

import json

from tests.conftest import assert_user_error, shared


def test_eval_dl19_bm25_prints_0_5058(rerank) -> None:
    run = shared("trec-dl19-passage", "bm25.top100.trec")
    qrels = shared("trec-dl19-passage", "qrels.txt")
    result = rerank("eval", run, "--qrels", qrels, "-m", "ndcg@10")
    assert result.code == 0, result.err
    assert "0.5058" in result.out


def test_eval_json_has_one_entry_per_run(rerank) -> None:
    folder = shared("trec-dl19-passage")
    result = rerank("eval", folder / "bm25.top100.trec", folder / "splade-pp-ed.top100.trec",
                    "--qrels", folder / "qrels.txt", "-m", "ndcg@10", "-m", "map", "-l", "2",
                    "--format", "json")
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    assert set(rows) == {"bm25.top100.trec", "splade-pp-ed.top100.trec"}
    assert round(rows["splade-pp-ed.top100.trec"]["ndcg@10"], 4) == 0.7308
    assert round(rows["bm25.top100.trec"]["map"], 4) == 0.2476


def test_eval_unknown_metric_exits_2(rerank) -> None:
    folder = shared("trec-dl19-passage")
    result = rerank("eval", folder / "bm25.top100.trec", "--qrels", folder / "qrels.txt", "-m", "ndcg@ten")
    assert_user_error(result, "unknown metric 'ndcg@ten'")


def test_eval_missing_run_file_exits_2(rerank, tmp_path) -> None:
    folder = shared("trec-dl19-passage")
    result = rerank("eval", tmp_path / "nope.trec", "--qrels", folder / "qrels.txt")
    assert_user_error(result, "nope.trec", "run file not found")


def test_eval_malformed_run_names_the_line(rerank, tmp_path) -> None:
    folder = shared("trec-dl19-passage")
    bad = tmp_path / "bad.trec"
    bad.write_text("19335 Q0 d1 1 3.0 t\n19335 Q0 d2 2 x t\n")
    assert_user_error(rerank("eval", bad, "--qrels", folder / "qrels.txt"),
                      "bad.trec:2", "score 'x' is not a number")


def test_eval_run_with_no_judged_query_exits_2(rerank, tmp_path) -> None:
    folder = shared("trec-dl19-passage")
    run = tmp_path / "other.trec"
    run.write_text("nope Q0 d1 1 3.0 t\n")
    assert_user_error(rerank("eval", run, "--qrels", folder / "qrels.txt"), "no query of the run")
