"""SciFact with Lucene BM25 through pyserini: the published numbers, and an index built once.

pyserini's BEIR regression for SciFact (flat index of title + text) is nDCG@10 0.6789 and
R@100 0.9253; our bm25s backend must stay within 0.005 nDCG@10 of it.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import bundled_pipeline, shared

pytestmark = pytest.mark.slow
pytest.importorskip("pyserini", reason="the Lucene tests need rerankcli[lucene]")


@pytest.fixture(scope="module")
def scifact(tmp_path_factory):
    """pipelines/scifact-lucene.yaml with absolute data paths, run once with a private cache."""
    shared("scifact")
    work = tmp_path_factory.mktemp("scifact-lucene")
    pipeline = bundled_pipeline("scifact-lucene", work)
    env = {**os.environ, "RERANK_CACHE_DIR": str(work / "cache")}

    def run(*args):
        proc = subprocess.run([sys.executable, "-m", "rerankcli", "run", pipeline, *args],
                              capture_output=True, text=True, env=env, timeout=1800)
        assert proc.returncode == 0, proc.stderr
        manifest = json.loads((work / "out" / "lucene.manifest.json").read_text())
        return manifest, (work / "out" / "lucene.trec").read_bytes()

    first = run()
    metrics = json.loads((work / "out" / "metrics.json").read_text())
    return {"run": run, "first": first, "metrics": metrics}


def test_lucene_reproduces_pyserinis_regression_numbers(scifact) -> None:
    lucene = scifact["metrics"]["lucene"]
    assert round(lucene["ndcg@10"], 4) == 0.6789, lucene
    assert round(lucene["recall@100"], 4) == 0.9253, lucene
    assert round(lucene["recall@1000"], 4) == 0.9767, lucene


def test_default_backend_is_within_0005_of_lucene(scifact) -> None:
    metrics = scifact["metrics"]
    assert abs(metrics["bm25s"]["ndcg@10"] - metrics["lucene"]["ndcg@10"]) <= 0.005, metrics


def test_the_index_is_built_once_and_reused(scifact) -> None:
    first_manifest, first_run = scifact["first"]
    assert first_manifest["details"]["index_cached"] is False
    again_manifest, again_run = scifact["run"]("--force", "lucene")
    assert again_manifest["details"]["index_cached"] is True
    assert again_manifest["details"]["index"] == first_manifest["details"]["index"]
    assert again_run == first_run
