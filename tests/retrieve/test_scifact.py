"""SciFact end to end (the issue's acceptance numbers), run once per test session.

BM25 (bm25s) must reach nDCG@10 >= 0.670 (Lucene: 0.6789), all-MiniLM-L6-v2 must be within
0.01 of MTEB's 0.6451; every metric must equal trec_eval's on the produced runs; re-running
must recompute nothing; changing only the dense stage's k must recompute dense, fusion and
evaluation but not BM25.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval

from rerankcli.core.formats import read_qrels
from rerankcli.core.runs import read_run
from tests.conftest import bundled_pipeline, shared
from tests.pipeline.test_pipeline import states

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scifact(tmp_path_factory):
    """The bundled SciFact pipeline copied next to a private cache, run once."""
    shared("scifact")
    work = tmp_path_factory.mktemp("scifact")
    bundled_pipeline("scifact", work)
    return work


@pytest.fixture(scope="module")
def first_run(scifact):
    """Run the pipeline once; return a caller that reuses the same cache, and the first result."""
    env = {**os.environ, "RERANK_CACHE_DIR": str(scifact / "cache")}

    def call(*args):
        return subprocess.run([sys.executable, "-m", "rerankcli", *map(str, args)],
                              capture_output=True, text=True, env=env, timeout=1800)

    proc = call("run", scifact / "scifact.yaml")
    assert proc.returncode == 0, proc.stderr
    return call, proc


def metrics(scifact: Path) -> dict:
    return json.loads((scifact / "out" / "metrics.json").read_text())


def test_bm25_reaches_lucene_level(scifact, first_run) -> None:
    assert metrics(scifact)["bm25"]["ndcg@10"] >= 0.670


def test_dense_minilm_matches_mteb(scifact, first_run) -> None:
    assert abs(metrics(scifact)["minilm"]["ndcg@10"] - 0.6451) <= 0.01


def test_rrf_is_reported_and_beats_both(scifact, first_run) -> None:
    m = metrics(scifact)
    assert m["rrf"]["ndcg@10"] > max(m["bm25"]["ndcg@10"], m["minilm"]["ndcg@10"])


@pytest.mark.parametrize("stage", ["bm25", "minilm", "rrf"])
def test_metrics_equal_trec_eval(scifact, first_run, stage: str) -> None:
    run = read_run(scifact / "out" / f"{stage}.trec")
    qrels = read_qrels(shared("scifact", "qrels", "test.tsv"))
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "recall.1000", "map"})
    per_query = evaluator.evaluate(run.scores)
    mean = lambda name: float(np.mean([v[name] for v in per_query.values()]))  # noqa: E731
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run.top(10).scores)
    ours = metrics(scifact)[stage]
    assert ours["ndcg@10"] == pytest.approx(mean("ndcg_cut_10"), abs=1e-9)
    assert ours["recall@100"] == pytest.approx(mean("recall_100"), abs=1e-9)
    assert ours["recall@1000"] == pytest.approx(mean("recall_1000"), abs=1e-9)
    assert ours["map"] == pytest.approx(mean("map"), abs=1e-9)
    assert ours["mrr@10"] == pytest.approx(float(np.mean([v["recip_rank"] for v in rr.values()])), abs=1e-9)


def test_rerun_recomputes_nothing(scifact, first_run) -> None:
    call, _ = first_run
    before = {p.name: p.read_bytes() for p in (scifact / "out").glob("*.trec")}
    start = time.perf_counter()
    again = call("run", scifact / "scifact.yaml")
    print(f"\nre-run of the unchanged SciFact pipeline: {time.perf_counter() - start:.2f} s wall")
    assert again.returncode == 0, again.stderr
    assert set(states(again.stderr).values()) == {"cached"}
    assert {p.name: p.read_bytes() for p in (scifact / "out").glob("*.trec")} == before


def test_changing_dense_k_recomputes_dense_fusion_and_evaluation_only(scifact, first_run) -> None:
    call, _ = first_run
    edited = scifact / "edited.yaml"
    text = (scifact / "scifact.yaml").read_text()
    edited.write_text(text.replace("all-MiniLM-L6-v2, k: 1000", "all-MiniLM-L6-v2, k: 500")
                      .replace("output: out", "output: out-edited"))
    assert edited.read_text() != text.replace("output: out", "output: out-edited")
    result = call("run", edited)
    assert result.returncode == 0, result.stderr
    assert states(result.stderr) == {"bm25": "cached", "minilm": "running", "rrf": "running", "eval": "running"}
    shutil.rmtree(scifact / "out-edited")
