"""A cache that proves its entries, and `rerank cache ls | verify | prune`, through the real CLI.

Each damage case breaks one entry of a cache filled by a real run (BM25 and evaluation over the
demo data), runs the pipeline again, and asserts: exit 0, exactly one `[cache]` warning line that
names the entry and what is wrong, no traceback, the run and metrics byte-equal to those of a
fresh cache, and no other file of the workspace or cache changed except the repaired entry
and the run's own manifests and log. The command cases assert the exit code, the lines, no
traceback, and the snapshot of the workspace and cache except what the command is meant to change.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import DEMO, Result, assert_user_error, snapshot

DATASET = "dataset: {corpus: data/corpus.jsonl, queries: data/queries.tsv, qrels: data/qrels.txt}\n"
BM25 = "  - {name: bm25, type: retrieve, method: bm25, k: 10}\n"
EVAL = "  - {name: eval, type: evaluate, metrics: [ndcg@10]}\n"
RETRIEVE = "name: cached\n" + DATASET + "output: out\nstages:\n" + BM25 + EVAL
RETRIEVE_ONLY = "name: cached\n" + DATASET + "output: out\nstages:\n" + BM25
RESULTS = ("out/bm25.trec", "out/metrics.json")  # what must equal a fresh cache's
# rewritten by every run: its manifests, its log, and the memo of data digests (keyed by path: a copied
# workspace's paths are new)
RUN_WRITES = ("out/bm25.manifest.json", "out/eval.manifest.json", "out/rerank.log", "cache/file-digests.json")
DAY = 86400


def workspace(root: Path, pipeline: str = RETRIEVE) -> None:
    (root / "data").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.tsv", "qrels.txt"):
        (root / "data" / name).write_bytes((DEMO / name).read_bytes())
    (root / "p.yaml").write_text(pipeline)


@pytest.fixture
def root(tmp_path: Path, cache_dir: Path) -> Path:
    """A workspace whose cache (``root/cache``, the `rerank` fixture's) a run has filled."""
    root = tmp_path.resolve()
    assert cache_dir.resolve() == root / "cache"
    workspace(root)
    return root


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A workspace and cache filled by one real run, copied by each test that needs one."""
    folder = tmp_path_factory.mktemp("filled")
    workspace(folder)
    result = subprocess.run([sys.executable, "-m", "rerankcli", "run", str(folder / "p.yaml"), "-q"], cwd=folder,
                            env={**os.environ, "RERANK_CACHE_DIR": str(folder / "cache")}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture
def filled(root: Path, template: Path) -> Path:
    """``root`` with a copy of the filled workspace and cache (stage keys do not depend on the folder)."""
    shutil.copytree(template, root, dirs_exist_ok=True)
    return root


def entry(root: Path, kind: str) -> Path:
    """The one stage entry of stage ``kind`` (by its manifest), or the one artefact of that kind."""
    if kind in ("bm25", "eval"):
        found = [p for p in (root / "cache" / "stages").iterdir()
                 if json.loads((p / "manifest.json").read_text())["stage"] == kind]
    else:
        found = list((root / "cache" / "artifacts" / kind).iterdir())
    assert len(found) == 1, found
    return found[0]


def label(path: Path) -> str:
    kind = "stages" if path.parent.name == "stages" else f"artifacts/{path.parent.name}"
    return f"{kind}/{path.name[:12]}"


def no_traceback(result) -> None:
    assert "Traceback" not in result.err + result.out, result.err


def nothing_left_behind(root: Path) -> None:
    """No lock file and no staging folder once a command has ended."""
    for folder in ("locks", "tmp"):
        path = root / "cache" / folder
        assert not path.exists() or os.listdir(path) == [], (folder, os.listdir(path))


def cache_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("[cache]")]


def set_last_used(path: Path, days_ago: float) -> None:
    when = time.time() - days_ago * DAY
    os.utime(path / "seal.json", (when, when))


# -- damage: a run recomputes the entry, with one warning line ----------------------------------

def _truncate(name: str) -> Callable[[Path], str]:
    def damage(folder: Path) -> str:
        size = (folder / name).stat().st_size
        with open(folder / name, "r+b") as handle:
            handle.truncate(size // 2)
        return f"{name}: {size // 2} bytes, sealed {size}"
    return damage


def _delete(name: str) -> Callable[[Path], str]:
    def damage(folder: Path) -> str:
        (folder / name).unlink()
        return f"{name}: missing" if name != "seal.json" else "no seal.json: written by an older rerankcli, or never finished"
    return damage


def _same_size_edit(name: str) -> Callable[[Path], str]:
    def damage(folder: Path) -> str:
        content = bytearray((folder / name).read_bytes())
        content[len(content) // 2] ^= 0x01  # one bit, as a failing disk flips it
        (folder / name).write_bytes(bytes(content))
        sealed = json.loads((folder / "seal.json").read_text())["files"][name]["sha256"]
        return f"{name}: content differs from its sealed sha256 {sealed[:12]}"
    return damage


def _nested_seal(folder: Path) -> str:
    (folder / "seal.json").write_text("[" * 100_000)  # a RecursionError in the parser, not a ValueError
    return "seal.json is not valid JSON"


def _garbage_seal(folder: Path) -> str:
    (folder / "seal.json").write_bytes(bytes(range(256)))
    return "seal.json is not text"


@dataclass
class Damage:
    entry: str  # "bm25", "eval" (stage entries) or an artefact kind
    make: Callable[[Path], str]  # damages the entry's folder; returns what the warning must say
    force: tuple[str, ...] = ()  # artefacts are read only when their stage computes


DAMAGES = {
    "stage run truncated": Damage("bm25", _truncate("run.trec")),
    "stage manifest torn": Damage("bm25", _truncate("manifest.json")),
    "stage run file deleted": Damage("bm25", _delete("run.trec")),
    "stage run with one bit flipped": Damage("bm25", _same_size_edit("run.trec")),
    "stage seal is garbage": Damage("bm25", _garbage_seal),
    "stage entry from before seals (unsealed)": Damage("bm25", _delete("seal.json")),
    "stage seal nested 100000 deep": Damage("bm25", _nested_seal),
    "evaluate entry's metrics with one bit flipped": Damage("eval", _same_size_edit("metrics.json")),
    "BM25 index: docids truncated": Damage("bm25s-index", _truncate("docids.json"), ("--force", "bm25")),
    "BM25 index: a matrix file deleted": Damage("bm25s-index", _delete("data.csc.index.npy"), ("--force", "bm25")),
    "BM25 index from before seals (unsealed)": Damage("bm25s-index", _delete("seal.json"), ("--force", "bm25")),
}


@pytest.mark.parametrize("name", sorted(DAMAGES))
def test_a_damaged_entry_is_recomputed_with_one_warning(rerank, filled: Path, name: str) -> None:
    case = DAMAGES[name]
    root = filled
    fresh = snapshot(root)
    folder = entry(root, case.entry)
    why = case.make(folder)
    result = rerank("run", root / "p.yaml", *case.force, cwd=root)
    assert result.code == 0, result.err
    no_traceback(result)
    assert cache_lines(result.err) == [f"[cache] entry {label(folder)} is damaged ({why}); recomputing it"], result.err
    after = snapshot(root)
    assert set(fresh) <= set(after) and set(after) - set(fresh) <= {str(root / "out" / "rerank.log")}, \
        set(after) ^ set(fresh)
    for path in RESULTS:
        assert after[str(root / path)] == fresh[str(root / path)], path
    recomputed = {folder} | ({entry(root, "bm25")} if case.force else set())  # --force rewrites the stage too
    rewritten = {str(root / p) for p in RUN_WRITES} | {
        str(f / name) for f in recomputed for name in ("manifest.json", "seal.json")}
    changed = {path for path in after if after[path] != fresh.get(path)}
    assert changed <= rewritten, changed - rewritten
    nothing_left_behind(root)


def test_a_truncated_cached_run_is_never_evaluated(rerank, root: Path, tmp_path_factory) -> None:
    """The issue's case: a torn run in the cache evaluated as data gave nDCG 0.31 instead of 0.64."""
    workspace(root, RETRIEVE_ONLY)
    assert rerank("run", root / "p.yaml", "-q", cwd=root).code == 0
    why = _truncate("run.trec")(entry(root, "bm25"))
    (root / "p.yaml").write_text(RETRIEVE)
    result = rerank("run", root / "p.yaml", cwd=root)
    assert result.code == 0, result.err
    no_traceback(result)
    assert cache_lines(result.err) == [f"[cache] entry {label(entry(root, 'bm25'))} is damaged ({why}); "
                                       "recomputing it"]
    elsewhere = tmp_path_factory.mktemp("fresh")
    workspace(elsewhere)
    assert rerank("run", elsewhere / "p.yaml", "-q", cwd=elsewhere,
                  env={"RERANK_CACHE_DIR": str(elsewhere / "cache")}).code == 0
    for path in RESULTS:
        assert (root / path).read_bytes() == (elsewhere / path).read_bytes(), path
    assert json.loads((root / "out" / "metrics.json").read_text())["bm25"]["ndcg@10"] == pytest.approx(0.6408, abs=1e-4)
    nothing_left_behind(root)


def test_a_write_fault_while_sealing_leaves_no_entry_no_lock_no_staging(rerank, root: Path) -> None:
    """Disk full as the seal is written: exit 75, one line, nothing published; a rerun completes."""
    before = snapshot(root)
    result = rerank("run", root / "p.yaml", "-q", cwd=root, env={"RERANK_FAULTS": "ENOSPC@write:*/seal.json"})
    assert result.code == 75, result.err
    no_traceback(result)
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "seal.json" in lines[0] and "ENOSPC" in lines[0]
    after = snapshot(root)
    assert {p for p in after if p not in before} <= {str(root / "cache" / "file-digests.json")}
    assert not list((root / "cache").glob("stages/*")) and not list((root / "cache").glob("artifacts/*/*"))
    nothing_left_behind(root)
    assert rerank("run", root / "p.yaml", "-q", cwd=root).code == 0
    assert json.loads((root / "out" / "metrics.json").read_text())["bm25"]["ndcg@10"] == pytest.approx(0.6408, abs=1e-4)
    nothing_left_behind(root)


# -- rerank cache ls ------------------------------------------------------------------------------

def test_ls_lists_every_entry_and_a_total(rerank, filled: Path) -> None:
    root = filled
    before = snapshot(root)
    result = rerank("cache", "ls", cwd=root)
    assert result.code == 0 and result.err == "", result.err
    lines = result.out.splitlines()
    assert lines[0].split() == ["KIND", "KEY", "STAGE", "/", "ARTEFACT", "SIZE", "LAST", "USED", "STATE"]
    rows = [line.split() for line in lines[1:-1]]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("stage", entry(root, "bm25").name[:12], "bm25"), ("stage", entry(root, "eval").name[:12], "eval"),
        ("artifact", entry(root, "bm25s-index").name[:12], "bm25s-index")]
    assert all(r[-1] == "ok" for r in rows)
    assert re.fullmatch(rf"3 entries, [\d.]+ KiB in {re.escape(str(root / 'cache'))}", lines[-1]), lines[-1]
    assert snapshot(root) == before
    nothing_left_behind(root)


def test_ls_json_gives_sizes_ages_and_states(rerank, filled: Path) -> None:
    root = filled
    _truncate("run.trec")(entry(root, "bm25"))
    before = snapshot(root)
    result = rerank("cache", "ls", "--format", "json", cwd=root)
    assert result.code == 0 and result.err == "", result.err
    listing = json.loads(result.out)
    by_name = {e["name"]: e for e in listing["entries"]}
    assert sorted(by_name) == ["bm25", "bm25s-index", "eval"]
    assert by_name["bm25"]["state"] == "damaged" and by_name["bm25"]["problem"].startswith("run.trec: ")
    assert by_name["eval"] == by_name["eval"] | {"kind": "stage", "type": "evaluate", "state": "ok", "problem": None}
    assert by_name["bm25s-index"]["kind"] == "artifact"
    sizes = {name: sum(f.stat().st_size for f in Path(e["path"]).rglob("*") if f.is_file()) for name, e in by_name.items()}
    assert {name: e["size"] for name, e in by_name.items()} == sizes
    assert all(0 <= e["age_s"] < 600 for e in listing["entries"])
    assert listing["total"] == {"entries": 3, "size": sum(sizes.values()), "damaged": 1}
    assert snapshot(root) == before


def test_ls_cache_dir_expands_variables_and_home(rerank, filled: Path, tmp_path_factory) -> None:
    """`--cache-dir '$WORK/cache'` or `~/cache`, quoted so that no shell expanded them."""
    root = filled
    before = snapshot(root)
    elsewhere = tmp_path_factory.mktemp("cwd")
    for option in ("$WORK/cache", "${WORK}/cache", "~/cache"):
        result = rerank("cache", "ls", "--cache-dir", option, cwd=elsewhere,
                        env={"WORK": str(root), "HOME": str(root), "RERANK_CACHE_DIR": str(elsewhere / "unused")})
        assert result.code == 0 and result.err == "", (option, result.err)
        assert result.out.splitlines()[-1].startswith("3 entries, "), (option, result.out)
        assert result.out.splitlines()[-1].endswith(f" in {root / 'cache'}"), (option, result.out)
    assert snapshot(root) == before and os.listdir(elsewhere) == []


def test_ls_of_an_empty_cache_creates_nothing(rerank, root: Path) -> None:
    before = snapshot(root)
    result = rerank("cache", "ls", cwd=root)
    assert result.code == 0 and result.out == f"0 entries, 0 B in {root / 'cache'}\n", result
    assert snapshot(root) == before and not (root / "cache").exists()


# -- rerank cache verify ---------------------------------------------------------------------------

def test_verify_passes_an_intact_cache(rerank, filled: Path) -> None:
    root = filled
    before = snapshot(root)
    result = rerank("cache", "verify", cwd=root)
    assert result.code == 0 and result.err == "", result.err
    assert re.fullmatch(rf"3 entries verified, [\d.]+ KiB in {re.escape(str(root / 'cache'))}: every file "
                        r"matches its seal\n", result.out), result.out
    assert snapshot(root) == before
    nothing_left_behind(root)


def test_verify_fails_and_lists_each_damaged_entry(rerank, filled: Path) -> None:
    """A one-bit change passes a size check; verify reads every digest and finds it."""
    root = filled
    bm25, index = entry(root, "bm25"), entry(root, "bm25s-index")
    flipped = _same_size_edit("run.trec")(bm25)
    unsealed = _delete("seal.json")(index)
    before = snapshot(root)
    result = rerank("cache", "verify", cwd=root)
    assert result.code == 1, result.err
    no_traceback(result)
    assert result.out.splitlines() == [f"damaged {label(bm25)} bm25 (retrieve): {flipped}",
                                       f"damaged {label(index)} bm25s-index: {unsealed}"]
    assert result.err.splitlines() == [
        f"failed: 2 of 3 cache entries in {root / 'cache'} are damaged; a run recomputes them, "
        "`rerank cache prune --damaged` removes them"]
    assert snapshot(root) == before


# -- rerank cache prune ----------------------------------------------------------------------------

def removed(before: dict[str, bytes], after: dict[str, bytes], *folders: Path) -> None:
    """``after`` is ``before`` without the files of ``folders``, every other file unchanged."""
    gone = {p for p in before if any(p.startswith(f"{folder}/") for folder in folders)}
    assert gone and after == {p: c for p, c in before.items() if p not in gone}


def test_prune_older_than_removes_entries_last_used_before(rerank, filled: Path) -> None:
    root = filled
    bm25 = entry(root, "bm25")
    set_last_used(bm25, 40)
    before = snapshot(root)
    result = rerank("cache", "prune", "--older-than", "30d", cwd=root)
    assert result.code == 0 and result.err == "", result.err
    lines = result.out.splitlines()
    assert re.fullmatch(rf"removed {label(bm25)} bm25 \(retrieve\), [\d.]+ KiB: last used 40d ago", lines[0]), lines
    assert re.fullmatch(r"freed [\d.]+ KiB: 1 entry and 0 leftovers removed; 2 entries \([\d.]+ KiB\) remain",
                        lines[1]), lines
    assert len(lines) == 2
    removed(before, snapshot(root), bm25)
    nothing_left_behind(root)
    rerun = rerank("run", root / "p.yaml", cwd=root)  # a pruned stage is simply computed again
    assert rerun.code == 0 and "[bm25] running" in rerun.err and cache_lines(rerun.err) == []


def test_prune_max_size_removes_least_recently_used_first(rerank, filled: Path) -> None:
    root = filled
    bm25, evaluate, index = entry(root, "bm25"), entry(root, "eval"), entry(root, "bm25s-index")
    for folder, days in ((index, 3), (bm25, 2), (evaluate, 1)):
        set_last_used(folder, days)
    sizes = {f: sum(p.stat().st_size for p in f.rglob("*") if p.is_file()) for f in (bm25, evaluate, index)}
    limit = sizes[bm25] + sizes[evaluate]  # the index, least recently used, must go; the others fit
    before = snapshot(root)
    result = rerank("cache", "prune", "--max-size", str(limit), cwd=root)
    assert result.code == 0 and result.err == "", result.err
    lines = result.out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"removed {label(index)} bm25s-index, "), lines
    assert lines[0].endswith(f": least recently used (3d ago), over --max-size {limit}")
    removed(before, snapshot(root), index)
    nothing_left_behind(root)


def test_prune_dry_run_changes_nothing(rerank, filled: Path) -> None:
    root = filled
    for kind in ("bm25", "eval", "bm25s-index"):
        set_last_used(entry(root, kind), 10)
    before = snapshot(root)
    result = rerank("cache", "prune", "--older-than", "1w", "--dry-run", cwd=root)
    assert result.code == 0 and result.err == "", result.err
    lines = result.out.splitlines()
    assert len(lines) == 4 and all(line.startswith("would remove ") for line in lines[:3])
    assert re.fullmatch(r"would free [\d.]+ KiB: 3 entries and 0 leftovers would be removed; 0 entries \(0 B\) remain",
                        lines[3]), lines[3]
    assert snapshot(root) == before
    assert len(list((root / "cache" / "stages").iterdir())) == 2
    nothing_left_behind(root)


def test_prune_damaged_removes_only_what_fails_verification(rerank, filled: Path) -> None:
    root = filled
    bm25 = entry(root, "bm25")
    why = _same_size_edit("run.trec")(bm25)
    before = snapshot(root)
    result = rerank("cache", "prune", "--damaged", cwd=root)
    assert result.code == 0 and result.err == "", result.err
    lines = result.out.splitlines()
    assert re.fullmatch(rf"removed {label(bm25)} bm25 \(retrieve\), [\d.]+ KiB: damaged: {re.escape(why)}",
                        lines[0]), lines
    assert len(lines) == 2
    removed(before, snapshot(root), bm25)
    nothing_left_behind(root)


@pytest.mark.parametrize("lock, mode", [("lock", fcntl.LOCK_EX), ("use", fcntl.LOCK_SH)],
                         ids=["being computed", "read by a running process"])
def test_prune_skips_an_entry_another_process_holds(rerank, filled: Path, lock: str, mode: int) -> None:
    root = filled
    bm25, evaluate = entry(root, "bm25"), entry(root, "eval")
    for folder in (bm25, evaluate):
        set_last_used(folder, 40)
    (root / "cache" / "locks").mkdir(exist_ok=True)
    held = root / "cache" / "locks" / f"{bm25.name}.{lock}"
    with open(held, "a") as handle:
        fcntl.flock(handle, mode)
        before = snapshot(root)
        result = rerank("cache", "prune", "--older-than", "30d", cwd=root)
    assert result.code == 0 and result.err == "", result.err
    lines = result.out.splitlines()
    assert lines[0] == f"skipped {label(bm25)} bm25 (retrieve): in use by another process", lines
    assert lines[1].startswith(f"removed {label(evaluate)} eval (evaluate), ") and len(lines) == 3
    removed(before, snapshot(root), evaluate)
    assert bm25.is_dir() and held.exists()
    held.unlink()  # ours
    nothing_left_behind(root)


def test_prune_removes_leftovers_of_killed_runs_only_when_old(rerank, filled: Path) -> None:
    """A SIGKILL leaves a staging folder, a journal, a lock file or a half-deleted entry behind."""
    root = filled
    cache = root / "cache"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = dead.stdout.strip()
    files = {cache / "tmp" / f"entry-{pid}-old_0000" / "run.trec": "q1 Q0 d1 1",
             cache / "journals" / f"{'a' * 64}.jsonl": '{"qid": "q01"}\n', cache / "locks" / f"{'b' * 64}.lock": "",
             cache / "stages" / f".{'0' * 64}.deleting-{pid}-ab12cd34" / "run.trec": "q1 Q0 d2"}
    fresh = {cache / "journals" / f"{'c' * 64}.jsonl": '{"qid": "q02"}\n',
             cache / "tmp" / f"entry-{pid}-new_0000" / "run.trec": "q1 Q0 d3 1"}
    old = time.time() - 40 * DAY
    for path, text in {**files, **fresh}.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for path in files:
        os.utime(path, (old, old))
        if path.parent.name.startswith((".", "entry-")):
            os.utime(path.parent, (old, old))
    before = snapshot(root)
    result = rerank("cache", "prune", "--older-than", "30d", cwd=root)
    assert result.code == 0 and result.err == "", result.err
    assert sorted(result.out.splitlines()[:-1]) == sorted([
        f"removed staging folder tmp/entry-{pid}-old_0000, 10 B: 40d old",
        f"removed entry being deleted stages/.{'0' * 64}.deleting-{pid}-ab12cd34, 8 B: 40d old",
        f"removed journal journals/{'a' * 64}.jsonl, 15 B: 40d old", f"removed lock file locks/{'b' * 64}.lock, 0 B: 40d old"])
    assert result.out.splitlines()[-1].startswith("freed 33 B: 0 entries and 4 leftovers removed; 3 entries")
    assert snapshot(root) == {p: c for p, c in before.items() if p not in {str(f) for f in files}}
    assert not any(path.parent.exists() for path in files if path.parent.name.startswith((".", "entry-")))
    assert all(path.exists() for path in fresh)  # younger than 30 days: perhaps a run still writing it


def test_prune_reports_a_killed_stages_journal_and_lock_file_once_each(rerank, filled: Path) -> None:
    """Removing the journal claims its stage lock, which took the lock file with it: it was reported as
    "removed lock file ..., 0 B: 20789d old" (an mtime of 0) on top of the lock file's own line."""
    root, key = filled, "d" * 64
    journal, lock = root / "cache" / "journals" / f"{key}.jsonl", root / "cache" / "locks" / f"{key}.lock"
    journal.parent.mkdir(exist_ok=True)
    journal.write_text('{"qid": "q01"}\n')
    lock.write_text("")
    for path in (journal, lock):
        os.utime(path, (time.time() - 2 * DAY,) * 2)
    before = snapshot(root)
    result = rerank("cache", "prune", "--older-than", "1d", cwd=root)
    assert result.code == 0 and result.err == "", result.err
    assert result.out.splitlines() == [
        f"removed lock file locks/{key}.lock, 0 B: 2d old", f"removed journal journals/{key}.jsonl, 15 B: 2d old",
        result.out.splitlines()[-1]]
    assert result.out.splitlines()[-1].startswith("freed 15 B: 0 entries and 2 leftovers removed; 3 entries")
    assert snapshot(root) == {p: c for p, c in before.items() if p not in {str(journal), str(lock)}}
    nothing_left_behind(root)


def test_prune_goes_by_age_and_process_start_for_staging_folders(rerank, filled: Path) -> None:
    """A pid in a staging folder's name is trusted only while a process with that pid runs that
    started before the folder's last write, and for a day at most (pids are reused; a cache shared
    between machines holds other machines' pids). Pid 1 is always alive: that kept its folders forever."""
    root = filled
    for kind in ("bm25", "eval", "bm25s-index"):
        set_last_used(entry(root, kind), -1)  # used "tomorrow": only leftovers are older than --older-than 1s
    tmp = root / "cache" / "tmp"
    tmp.mkdir(exist_ok=True)
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        time.sleep(0.2)
        being_written = tmp / f"entry-{writer.pid}-live_000"  # made after its process started
        reused = tmp / f"entry-{writer.pid}-reused00"  # last written before that process started
        abandoned = tmp / "entry-1-abandon0"  # untouched for two days
        for folder, age in ((being_written, 0), (reused, 3600), (abandoned, 2 * DAY)):
            (folder / "run.trec").parent.mkdir()
            (folder / "run.trec").write_text("q1 Q0 d1 1")
            when = time.time() - age
            os.utime(folder / "run.trec", (when, when))
            os.utime(folder, (when, when))
        time.sleep(2.1)
        before = snapshot(root)
        result = rerank("cache", "prune", "--older-than", "1s", cwd=root)
    finally:
        writer.kill()
        writer.wait()
    assert result.code == 0 and result.err == "", result.err
    assert result.out.splitlines()[:3] == [
        f"removed staging folder tmp/{abandoned.name}, 10 B: 2d old",
        f"skipped staging folder tmp/{being_written.name}: process {writer.pid} may still be writing it (a staging "
        "folder counts as abandoned once untouched for 1d)",
        f"removed staging folder tmp/{reused.name}, 10 B: 1h old"]
    gone = {str(abandoned / "run.trec"), str(reused / "run.trec")}
    assert snapshot(root) == {p: c for p, c in before.items() if p not in gone}
    assert being_written.is_dir() and not abandoned.exists() and not reused.exists()


# -- a folder that is not a rerank cache: refused, nothing deleted ----------------------------------

def user_folder(folder: Path) -> Path:
    """The issue's case: a user's folder that happens to hold tmp/, stages/, journals/ and locks/."""
    for name, text in {"tmp/project/notes.txt": "x\n", "stages/thesis/draft.tex": "x\n", "journals/2025.md": "y\n",
                       "locks/gpg.lock": "z\n"}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    old = time.time() - 10 * DAY
    for path in folder.rglob("*"):
        os.utime(path, (old, old))
    return folder


NOT_A_CACHE = {
    "ls": ("cache", "ls"),
    "ls --format json": ("cache", "ls", "--format", "json"),
    "verify": ("cache", "verify"),
    "prune --older-than": ("cache", "prune", "--older-than", "1d"),
    "prune --max-size 0": ("cache", "prune", "--max-size", "0"),
    "prune --damaged": ("cache", "prune", "--damaged"),
    "prune --dry-run": ("cache", "prune", "--older-than", "1d", "--dry-run"),
}


@pytest.mark.parametrize("name", sorted(NOT_A_CACHE))
def test_cache_commands_refuse_a_folder_that_is_not_a_rerank_cache(rerank, root: Path, name: str) -> None:
    folder = user_folder(root / "F")
    before = snapshot(root)
    result = rerank(*NOT_A_CACHE[name], "--cache-dir", folder, cwd=root)
    assert_user_error(result, f"{folder} is not a rerank cache (no CACHEDIR.TAG)", f"`rerank {' '.join(NOT_A_CACHE[name][:2])}`",
                      "gets it from its next `rerank run` or `rerank index`")
    assert result.out == "" and snapshot(root) == before


def test_prune_dry_run_of_the_root_folder_is_refused(rerank, root: Path) -> None:
    """`--cache-dir /` listed every child of /tmp as a leftover to remove."""
    result = rerank("cache", "prune", "--older-than", "1d", "--dry-run", "--cache-dir", "/", cwd=root)
    assert_user_error(result, "/ is not a rerank cache (no CACHEDIR.TAG)")
    assert result.out == ""


@pytest.mark.parametrize("folders", [(), ("tmp", "locks", "artifacts/bm25s-index")],
                         ids=["empty", "only empty folders of rerank's (a first run stopped before its first entry)"])
@pytest.mark.parametrize("command", [("ls",), ("verify",), ("prune", "--older-than", "1d")])
def test_cache_commands_in_an_empty_folder_find_0_entries(rerank, root: Path, command: tuple[str, ...],
                                                          folders: tuple[str, ...]) -> None:
    for name in ("", *folders):
        (root / "empty" / name).mkdir(parents=True, exist_ok=True)
    result = rerank("cache", *command, "--cache-dir", root / "empty", cwd=root)
    assert result.code == 0 and result.err == "", result.err
    assert result.out.splitlines()[-1] in (
        f"0 entries, 0 B in {root / 'empty'}", f"0 entries verified, 0 B in {root / 'empty'}: every file matches its seal",
        "freed 0 B: 0 entries and 0 leftovers removed; 0 entries (0 B) remain"), result.out
    assert sorted(os.listdir(root / "empty")) == sorted({name.split("/")[0] for name in folders})


def test_prune_in_a_cache_leaves_what_rerank_did_not_write_alone(rerank, filled: Path) -> None:
    """Defence in depth: a tagged cache holding a user's files (or a future version's) loses none of them."""
    root = filled
    entries = [entry(root, kind) for kind in ("bm25", "eval", "bm25s-index")]
    user_folder(root / "cache")
    (root / "cache" / "artifacts" / "photos").mkdir()
    (root / "cache" / "artifacts" / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    for folder in entries:
        set_last_used(folder, 0)
    before = snapshot(root)
    result = rerank("cache", "prune", "--older-than", "1d", cwd=root)
    assert result.code == 0 and result.err == "", result.err
    assert result.out.startswith("freed 0 B: 0 entries and 0 leftovers removed; 3 entries"), result.out
    assert snapshot(root) == before
    listing = rerank("cache", "ls", cwd=root)
    assert listing.code == 0 and listing.err == "", listing.err
    assert listing.out.splitlines()[-1].endswith("; 5 items not rerank's, left alone: artifacts/photos/cat.jpg, "
                                                 "journals/2025.md, locks/gpg.lock, ..."), listing.out
    assert json.loads(rerank("cache", "ls", "-f", "json", cwd=root).out)["not_rerank"] == [
        "artifacts/photos/cat.jpg", "journals/2025.md", "locks/gpg.lock", "stages/thesis", "tmp/project"]


# -- the cache folder's own folders, and where none can be made -----------------------------------

SUBFOLDER_FILES = {
    "stages": "stages is a file, not a folder", "locks": "locks is a file, not a folder",
    "tmp": "tmp is a file, not a folder", "journals": "journals is a file, not a folder",
    "artifacts": "artifacts is a file, not a folder",
    "artifacts/bm25s-index": "artifacts/bm25s-index is a file, not a folder",
}


@pytest.mark.parametrize("name", sorted(SUBFOLDER_FILES))
def test_run_with_a_cache_folder_of_its_own_that_is_a_file_exits_2(rerank, root: Path, name: str) -> None:
    (root / "cache" / name).parent.mkdir(parents=True, exist_ok=True)
    (root / "cache" / name).write_text("x\n")
    before = snapshot(root)
    result = rerank("run", root / "p.yaml", "-q", cwd=root)
    assert_user_error(result, f"cache folder {root / 'cache'}: {SUBFOLDER_FILES[name]}")
    assert snapshot(root) == before


@pytest.mark.parametrize("command", [("ls",), ("verify",), ("prune", "--damaged")])
def test_cache_commands_with_stages_a_file_exit_2(rerank, filled: Path, command: tuple[str, ...]) -> None:
    root = filled
    shutil.rmtree(root / "cache" / "stages")
    (root / "cache" / "stages").write_text("x\n")
    before = snapshot(root)
    result = rerank("cache", *command, cwd=root)
    assert_user_error(result, f"cache folder {root / 'cache'}: stages is a file, not a folder")
    assert result.out == "" and snapshot(root) == before


def test_run_with_a_cache_folder_where_no_folder_can_be_made_exits_2(rerank, root: Path) -> None:
    before = snapshot(root)
    result = rerank("run", root / "p.yaml", "-q", "--cache-dir", "/proc/self", cwd=root)
    assert_user_error(result, "cache folder /proc/self: cannot make its folder locks (No such file or directory)")
    assert snapshot(root) == before


@pytest.mark.parametrize("command", [("ls",), ("verify",), ("prune", "--damaged")])
def test_cache_commands_with_xdg_cache_home_a_file_exit_2(rerank, root: Path, command: tuple[str, ...]) -> None:
    """They said "0 entries ... in afile/rerankcli"; `rerank run` refuses the same folder."""
    (root / "afile").write_text("x\n")
    before = snapshot(root)
    result = rerank("cache", *command, cwd=root, env={"RERANK_CACHE_DIR": "", "XDG_CACHE_HOME": "afile"})
    assert_user_error(result, "cache folder afile/rerankcli: afile is a file, not a folder")
    assert result.out == "" and snapshot(root) == before


# -- the file digest memo, and nested JSON ------------------------------------------------------------

def rerank_within(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI with a short timeout: a FIFO opened for reading would hang it."""
    return subprocess.run([sys.executable, "-m", "rerankcli", *args], cwd=root, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "RERANK_CACHE_DIR": str(root / "cache")})


MEMOS = {"a JSON list": "[]\n", "nested 100000 deep": "[" * 100_000 + "\n", "a folder": None, "a FIFO": None}


@pytest.mark.parametrize("name", sorted(MEMOS))
def test_a_bad_digest_memo_never_stops_a_run(filled: Path, name: str) -> None:
    """Damaged, it is ignored and rewritten; not a file (a folder, a FIFO), it is left alone with one line."""
    root = filled
    memo = root / "cache" / "file-digests.json"
    memo.unlink()
    if name == "a folder":
        memo.mkdir()
    elif name == "a FIFO":
        os.mkfifo(memo)
    else:
        memo.write_text(MEMOS[name])
    before = snapshot(root)
    result = rerank_within(root, "run", "p.yaml", "-q")
    assert result.returncode == 0, result.stderr
    no_traceback(Result(result.returncode, result.stdout, result.stderr))
    after = snapshot(root)
    for path in RESULTS:
        assert after[str(root / path)] == before[str(root / path)], path
    if MEMOS[name] is not None:
        assert cache_lines(result.stderr) == []
        assert isinstance(json.loads(memo.read_text()), dict) and json.loads(memo.read_text())
    else:
        kind = "directory" if name == "a folder" else "FIFO (named pipe)"
        assert cache_lines(result.stderr) == [
            f"[cache] {memo} is a {kind}, not the file rerank remembers file digests in: left alone, and digests "
            "are not remembered until it is removed"]
        assert memo.is_dir() if name == "a folder" else stat.S_ISFIFO(memo.stat().st_mode)
    changed = {p for p in after if after[p] != before.get(p)} | (set(before) - set(after))
    assert changed <= {str(root / p) for p in RUN_WRITES}, changed


def test_ls_survives_a_manifest_nested_deeper_than_the_parser_goes(rerank, filled: Path) -> None:
    root = filled
    bm25 = entry(root, "bm25")
    (bm25 / "manifest.json").write_text("[" * 100_000)
    before = snapshot(root)
    result = rerank("cache", "ls", "--format", "json", cwd=root)
    assert result.code == 0 and result.err == "", result.err
    row = next(e for e in json.loads(result.out)["entries"] if e["key"] == bm25.name)
    assert (row["name"], row["state"]) == ("?", "damaged") and row["problem"].startswith("manifest.json: 100000 bytes")
    assert snapshot(root) == before


# -- warnings with -q; --force and the commands reading an entry --------------------------------------

def test_a_damaged_entry_is_reported_even_with_quiet(rerank, filled: Path) -> None:
    root = filled
    folder = entry(root, "bm25")
    why = _truncate("run.trec")(folder)
    result = rerank("run", root / "p.yaml", "-q", cwd=root)
    assert result.code == 0, result.err
    no_traceback(result)
    assert cache_lines(result.err) == [f"[cache] entry {label(folder)} is damaged ({why}); recomputing it"]


def test_force_waits_for_a_command_reading_the_entry_before_replacing_it(filled: Path) -> None:
    """`run --force bm25` deleted the entry another command was about to copy (it ignored the reading lock)."""
    root = filled
    bm25 = entry(root, "bm25")
    original = (bm25 / "run.trec").read_bytes()
    reading = root / "cache" / "locks" / f"{bm25.name}.use"
    reading.parent.mkdir(exist_ok=True)
    waiting = f"[cache] {label(bm25)}: waiting for the commands that read it to end before replacing it"
    with open(reading, "a") as reader:
        fcntl.flock(reader, fcntl.LOCK_SH)  # as a running `rerank run` that has decided to use the entry
        forced = subprocess.Popen([sys.executable, "-m", "rerankcli", "run", "p.yaml", "-q", "--force", "bm25"],
                                  cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "RERANK_CACHE_DIR": str(root / "cache")})
        lines: list[str] = []
        collecting = threading.Thread(target=lambda: lines.extend(forced.stderr), daemon=True)
        collecting.start()
        deadline = time.time() + 120
        while waiting + "\n" not in lines and forced.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        assert forced.poll() is None, lines  # it waits for the reader,
        assert (bm25 / "run.trec").read_bytes() == original  # which can still copy the entry
    forced.wait(120)
    collecting.join(10)
    err = "".join(lines)
    assert forced.returncode == 0, err
    assert "Traceback" not in err and cache_lines(err) == [waiting], err
    assert (bm25 / "run.trec").read_bytes() == original  # recomputed: the same run
    nothing_left_behind(root)


# -- bad arguments: exit 2, one line, nothing touched ----------------------------------------------

BAD_ARGUMENTS = {
    "prune with nothing to prune by": (("cache", "prune"), ("say what to remove", "--older-than")),
    "prune --older-than without a unit": (("cache", "prune", "--older-than", "30"), ("--older-than '30'", "not a duration")),
    "prune --older-than with an unknown unit": (("cache", "prune", "--older-than", "3x"), ("--older-than '3x'",)),
    "prune --max-size that is not a size": (("cache", "prune", "--max-size", "10Q"), ("--max-size '10Q'", "not a size")),
    "prune --max-size negative": (("cache", "prune", "--max-size", "-5G"), ("--max-size '-5G'", "not a size")),
    "prune --cache-dir empty": (("cache", "prune", "--damaged", "--cache-dir", ""), ("'--cache-dir'", "an empty path names no file")),
    "ls --cache-dir empty": (("cache", "ls", "--cache-dir", ""), ("'--cache-dir'", "an empty path names no file")),
    "verify --cache-dir empty": (("cache", "verify", "--cache-dir", " "), ("'--cache-dir'", "only white space")),
    "ls --cache-dir with an unset variable": (("cache", "ls", "--cache-dir", "$RERANK_UNSET_CACHE/x"),
                                              ("'--cache-dir'", "$RERANK_UNSET_CACHE is not set")),
    "ls --cache-dir names a file": (("cache", "ls", "--cache-dir", "{root}/p.yaml"), ("{root}/p.yaml: is a file",)),
    "ls --format unknown": (("cache", "ls", "--format", "xml"), ("--format", "xml")),
}


@pytest.mark.parametrize("name", sorted(BAD_ARGUMENTS))
def test_bad_arguments_exit_2_with_one_line(rerank, filled: Path, name: str) -> None:
    root = filled
    args, fragments = BAD_ARGUMENTS[name]
    set_last_used(entry(root, "bm25"), 400)  # an entry a wrongly read argument could remove
    before = snapshot(root)
    result = rerank(*(a.replace("{root}", str(root)) for a in args), cwd=root)
    assert_user_error(result, *(f.replace("{root}", str(root)) for f in fragments))
    assert result.out == ""
    assert snapshot(root) == before
    nothing_left_behind(root)
