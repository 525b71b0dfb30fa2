"""Fault injection: a full disk, a refused permission, an I/O error or a signal at every write point.

Every writer of rerankcli goes through one write layer (rerankcli/core/atomic.py), and the
runner marks each stage's start and end; ``$RERANK_FAULTS`` (rerankcli/core/faults.py) arms one
of those points in the real ``rerank`` process: the write raises the OSError the kernel would
raise, or the process receives a real SIGINT or SIGTERM. For each fault the test asserts:

* the exit code of the contract (75 for a resource fault, 130 for an interrupt) and exactly one
  last line: the path and the errno's name, or the signal and what was saved; no traceback;
* nothing half-written: no temporary file in the output folder and no staging folder or lock in
  the cache; every output file present is byte-identical to the undisturbed run's; every cache
  entry verifies (``rerank cache verify`` exits 0);
* a rerun without the fault exits 0 and its outputs are byte-identical to the undisturbed run's
  (manifests compared without their start time and wall-clock seconds).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DEMO

ERRNOS = ["ENOSPC", "EACCES", "EIO"]
LLM_QUERIES = 6  # the LLM pipeline reranks the first six demo queries: enough for mid-stage points
SIGNALS = ["SIGINT", "SIGTERM"]

DATASET = "dataset: {corpus: data/corpus.jsonl, queries: data/queries.tsv, qrels: data/qrels.txt}\n"
RETRIEVAL = ("name: faults\n" + DATASET + "output: out\ncache: cache\nstages:\n"
             "  - {name: bm25, type: retrieve, method: bm25, k: 10}\n"
             "  - {name: bm25b, type: retrieve, method: bm25, k: 10, k1: 1.2, b: 0.75}\n"
             "  - {name: eval, type: evaluate, inputs: [bm25, bm25b], baseline: bm25, metrics: [ndcg@10, mrr@10],"
             " permutations: 1000}\n")
LLM = ("name: faults\n" + DATASET + "output: out\ncache: cache\nstages:\n"
       "  - {name: bm25, type: retrieve, method: bm25, k: 10}\n"
       "  - {name: llm, type: rerank, method: query-likelihood, model: MODEL, depth: 2,"
       " backend: {type: hf, chat: false}}\n"
       "  - {name: eval, type: evaluate, inputs: [bm25, llm], metrics: [ndcg@10]}\n")

#: every write point of a retrieval pipeline: cache entries (their files, their seal, their
#: publication), the BM25 index artefact, the output runs, manifests, metrics and reports
RETRIEVAL_WRITES = {
    "entry run": "write:*/cache/tmp/entry-*/run.trec",
    "entry manifest": "write:*/cache/tmp/entry-*/manifest.json",
    "entry metrics": "write:*/cache/tmp/entry-*/metrics.json",
    "entry seal": "write:*/cache/tmp/entry-*/seal.json",
    "entry published": "publish:*/cache/stages/*",
    "index file": "write:*/cache/tmp/entry-*/docids.json",
    "index published": "publish:*/cache/artifacts/*",
    "output run": "write:*/out/bm25b.trec",
    "output manifest": "write:*/out/bm25.manifest.json",
    "output metrics": "write:*/out/metrics.json",
    "comparison table": "write:*/out/eval.comparison.md",
    "comparison data": "write:*/out/eval.comparison.json",
    "plot": "write:*/out/eval.comparison.png",
    "file digests": "write:*/cache/file-digests.json",
}
#: the LLM stage's own write points: the per-query journal (mid-stage, every errno) and the
#: entry's query log (one errno: it is written like the entry files of the retrieval cases)
LLM_WRITES = [
    ("journal, third query", "journal:*/cache/journals/*#5", "ENOSPC"),
    ("journal, third query", "journal:*/cache/journals/*#5", "EACCES"),
    ("journal, third query", "journal:*/cache/journals/*#5", "EIO"),
    ("entry query log", "write:*/cache/tmp/entry-*/queries.jsonl", "ENOSPC"),
]
RETRIEVAL_SIGNAL_POINTS = {
    "before the first stage": "stage-start:bm25",
    "between retrieval stages": "stage-end:bm25",
    "before evaluation": "stage-start:eval",
    "mid-stage, building the index": "write:*/cache/tmp/entry-*/docids.json",
    "mid-stage, writing the run": "write:*/cache/tmp/entry-*/run.trec#2",
    "after the last stage": "stage-end:eval",
}
LLM_SIGNAL_POINTS = {  # the stage boundaries are the runner's, tested with the retrieval pipeline
    "mid-stage, after two queries": "journal:*/cache/journals/*#5",
}
#: what a manifest records about this process's work, not about the result: when and how long,
#: how requests were batched, whether the index was reused, how many queries came from the journal
PROCESS_ONLY = {"started_at", "wall_s", "batches", "batch_size", "restored_queries", "index_cached"}


class Workspace:
    """The demo data, one pipeline, its output and cache folders, and the CLI run on them."""

    def __init__(self, root: Path, pipeline: str, queries: int | None = None) -> None:
        self.root = root
        (root / "data").mkdir(parents=True)
        shutil.copy(DEMO / "corpus.jsonl", root / "data" / "corpus.jsonl")
        kept = (DEMO / "queries.tsv").read_text().splitlines(keepends=True)[:queries]
        (root / "data" / "queries.tsv").write_text("".join(kept))
        qids = {line.split("\t")[0] for line in kept}
        judged = [line for line in (DEMO / "qrels.txt").read_text().splitlines(keepends=True)
                  if line.split()[0] in qids]
        (root / "data" / "qrels.txt").write_text("".join(judged))
        (root / "p.yaml").write_text(pipeline)

    def rerank(self, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "RERANK_FAULTS"}
        if fault:
            env["RERANK_FAULTS"] = fault
        command = [sys.executable, "-m", "rerankcli", *(args or ("run", "p.yaml", "-q"))]
        return subprocess.run(command, cwd=self.root, env=env, capture_output=True, text=True, timeout=600)

    def outputs(self) -> dict[str, bytes]:
        """The output folder's files, manifests without their start time and wall-clock seconds."""
        found = {}
        for path in sorted((self.root / "out").rglob("*")):
            if path.is_file():
                data = path.read_bytes()
                if path.name.endswith("manifest.json"):
                    data = json.dumps(without_process_fields(json.loads(data)), indent=2).encode()
                found[str(path.relative_to(self.root / "out"))] = data
        return found


def without_process_fields(item):
    if isinstance(item, dict):
        return {k: without_process_fields(v) for k, v in item.items() if k not in PROCESS_ONLY}
    return [without_process_fields(v) for v in item] if isinstance(item, list) else item


def undisturbed(root: Path, pipeline: str, queries: int | None = None) -> dict[str, bytes]:
    space = Workspace(root, pipeline, queries)
    proc = space.rerank()
    assert proc.returncode == 0, proc.stderr
    return space.outputs()


@pytest.fixture(scope="module")
def retrieval_reference(tmp_path_factory) -> dict[str, bytes]:
    return undisturbed(tmp_path_factory.mktemp("reference"), RETRIEVAL)


@pytest.fixture(scope="module")
def llm_pipeline(tiny_llama) -> str:
    return LLM.replace("MODEL", str(tiny_llama))


@pytest.fixture(scope="module")
def llm_reference(tmp_path_factory, llm_pipeline) -> dict[str, bytes]:
    return undisturbed(tmp_path_factory.mktemp("reference"), llm_pipeline, LLM_QUERIES)


def last_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines, "no line at all"
    return lines[-1]


def assert_nothing_half_written(space: Workspace, reference: dict[str, bytes]) -> None:
    cache, out = space.root / "cache", space.root / "out"
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    leftovers += [p for p in (cache / "tmp").rglob("*")] if (cache / "tmp").exists() else []
    leftovers += list((cache / "locks").glob("*")) if (cache / "locks").exists() else []
    assert not leftovers, f"left behind: {leftovers}"
    for name, data in space.outputs().items():
        assert data == reference[name], f"{name} differs from the undisturbed run's"
    if cache.exists():
        verify = space.rerank("cache", "verify", "--cache-dir", "cache")
        assert verify.returncode == 0, verify.stdout + verify.stderr


def assert_rerun_is_identical(space: Workspace, reference: dict[str, bytes]) -> None:
    proc = space.rerank()
    assert proc.returncode == 0, proc.stderr
    assert space.outputs() == reference


def check_resource_fault(space: Workspace, reference: dict[str, bytes], code: str, point: str) -> None:
    proc = space.rerank(fault=f"{code}@{point}")
    line = last_line(proc)
    assert proc.returncode == 75, (proc.returncode, proc.stderr)
    assert line.startswith("error: ") and line.endswith(f"({code})"), line
    assert str(space.root) in line, f"the line does not name the path: {line}"
    assert_nothing_half_written(space, reference)
    assert_rerun_is_identical(space, reference)


def check_interrupt(space: Workspace, reference: dict[str, bytes], signal: str, point: str) -> str:
    proc = space.rerank(fault=f"{signal}@{point}")
    line = last_line(proc)
    assert proc.returncode == 130, (proc.returncode, proc.stderr)
    assert line.startswith(f"interrupted ({signal}): "), line
    assert_nothing_half_written(space, reference)
    assert_rerun_is_identical(space, reference)
    return line


@pytest.mark.parametrize("code", ERRNOS)
@pytest.mark.parametrize("where", sorted(RETRIEVAL_WRITES))
def test_a_write_fault_in_a_retrieval_pipeline(tmp_path, retrieval_reference, where, code) -> None:
    space = Workspace(tmp_path, RETRIEVAL)
    check_resource_fault(space, retrieval_reference, code, RETRIEVAL_WRITES[where])


@pytest.mark.parametrize(("where", "point", "code"), LLM_WRITES, ids=[f"{w}-{e}" for w, _, e in LLM_WRITES])
def test_a_write_fault_in_an_llm_stage(tmp_path, llm_pipeline, llm_reference, where, point, code) -> None:
    space = Workspace(tmp_path, llm_pipeline, LLM_QUERIES)
    check_resource_fault(space, llm_reference, code, point)


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("when", sorted(RETRIEVAL_SIGNAL_POINTS))
def test_a_signal_in_a_retrieval_pipeline(tmp_path, retrieval_reference, when, signal) -> None:
    space = Workspace(tmp_path, RETRIEVAL)
    check_interrupt(space, retrieval_reference, signal, RETRIEVAL_SIGNAL_POINTS[when])


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("when", sorted(LLM_SIGNAL_POINTS))
def test_a_signal_in_an_llm_stage(tmp_path, llm_pipeline, llm_reference, when, signal) -> None:
    space = Workspace(tmp_path, llm_pipeline, LLM_QUERIES)
    line = check_interrupt(space, llm_reference, signal, LLM_SIGNAL_POINTS[when])
    if "mid-stage" in when:  # the rerun computed only the queries the journal lacked
        assert "stage 'llm': 2 queries journaled" in line, line
        manifest = json.loads((space.root / "out" / "llm.manifest.json").read_text())
        assert manifest["details"]["restored_queries"] == 2


def test_ctrl_c_from_outside_during_an_llm_stage(tmp_path, llm_pipeline, llm_reference) -> None:
    """A real SIGINT from another process (a user's Ctrl-C) once the first query is journaled."""
    space = Workspace(tmp_path, llm_pipeline, LLM_QUERIES)
    env = {k: v for k, v in os.environ.items() if k != "RERANK_FAULTS"}
    proc = subprocess.Popen([sys.executable, "-m", "rerankcli", "run", "p.yaml", "-q"], cwd=space.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        journals = list((space.root / "cache" / "journals").glob("*.jsonl"))
        if journals and journals[0].read_text().count('"qid"') >= 2:
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.005)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    line = last_line(subprocess.CompletedProcess([], 130, "", err))
    assert line.startswith("interrupted (SIGINT): stages done and cached: bm25; stage 'llm': "), line
    assert line.endswith("queries journaled; rerun the same command to resume from there"), line
    assert_nothing_half_written(space, llm_reference)
    assert_rerun_is_identical(space, llm_reference)


# -- the other commands that write: compare's plot, schema, index ---------------------------------

def other_command(space: Workspace, reference: dict[str, bytes], command: str) -> tuple[tuple[str, ...], str]:
    """The arguments of a writing command other than `run`, and the file it writes."""
    for name in ("bm25.trec", "bm25b.trec"):
        (space.root / name).write_bytes(reference[name])
    return {
        "compare --plot": (("compare", "bm25.trec", "bm25b.trec", "--qrels", "data/qrels.txt", "--plot",
                            "deltas.png"), "deltas.png"),
        "schema -o": (("schema", "-o", "pipeline.schema.json"), "pipeline.schema.json"),
    }[command]


@pytest.mark.parametrize("fault", ["ENOSPC", "EIO", "SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", ["compare --plot", "schema -o"])
def test_a_fault_while_another_command_writes(tmp_path, retrieval_reference, command, fault) -> None:
    space = Workspace(tmp_path, RETRIEVAL)
    args, written = other_command(space, retrieval_reference, command)
    undisturbed_output = space.rerank(*args)
    assert undisturbed_output.returncode == 0, undisturbed_output.stderr
    expected = (space.root / written).read_bytes()
    (space.root / written).unlink()
    proc = space.rerank(*args, fault=f"{fault}@write:*{written}")
    line = last_line(proc)
    if fault.startswith("SIG"):
        assert proc.returncode == 130 and line == f"interrupted ({fault}): nothing was half-written", line
    else:
        reason = os.strerror(getattr(errno, fault))
        assert proc.returncode == 75 and line.startswith("error: ") and line.endswith(f"{written}: {reason} ({fault})")
    assert not (space.root / written).exists() and not list(space.root.glob(".*.tmp"))
    assert space.rerank(*args).returncode == 0
    assert (space.root / written).read_bytes() == expected


@pytest.mark.parametrize("fault", ["ENOSPC", "SIGTERM"])
def test_a_fault_while_rerank_index_builds(tmp_path, retrieval_reference, fault) -> None:
    space = Workspace(tmp_path, RETRIEVAL)
    proc = space.rerank("index", "p.yaml", "-q", fault=f"{fault}@write:*/cache/tmp/entry-*/docids.json")
    assert proc.returncode == (130 if fault == "SIGTERM" else 75), proc.stderr
    last_line(proc)
    assert not list((space.root / "cache" / "tmp").rglob("*")) and not list((space.root / "cache").glob("artifacts/*/*"))
    assert space.rerank("index", "p.yaml", "-q").returncode == 0
    assert_rerun_is_identical(space, retrieval_reference)
