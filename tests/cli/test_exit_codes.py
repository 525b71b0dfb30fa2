"""The exit-code contract on real faults: 0 done, 1 a check failed, 2 bad input, 75 a resource fault, 130 interrupted.

The faults here are the machine's own, not injected: a tmpfs too small for the outputs (the
kernel's ENOSPC), a read-only mount (EROFS), a broken library install, a FIFO where an output
file should go. Mounting needs privileges; those cases skip where the test cannot mount.
(tests/cli/test_faults.py injects the same faults at every write point.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import DEMO, snapshot

PIPELINE = ("name: codes\n"
            "dataset: {corpus: data/corpus.jsonl, queries: data/queries.tsv, qrels: data/qrels.txt}\n"
            "output: OUT\ncache: CACHE\nstages:\n"
            "  - {name: bm25, type: retrieve, method: bm25, k: 10}\n"
            "  - {name: eval, type: evaluate, metrics: [ndcg@10]}\n")


def workspace(root: Path, out: Path, cache: Path) -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.tsv", "qrels.txt"):
        shutil.copy(DEMO / name, root / "data" / name)
    pipeline = root / "p.yaml"
    pipeline.write_text(PIPELINE.replace("OUT", str(out)).replace("CACHE", str(cache)))
    return pipeline


@contextmanager
def tmpfs(folder: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A real, small (or read-only) filesystem at ``folder``; skips where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def one_line(result, code: int, *fragments: str) -> str:
    assert result.code == code, (result.code, result.err)
    assert "Traceback" not in result.err, result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


def test_a_full_disk_under_the_output_folder_exits_75_and_a_rerun_with_room_finishes(rerank, tmp_path) -> None:
    reference = tmp_path / "reference"
    assert rerank("run", workspace(reference, reference / "out", reference / "cache"), "-q").code == 0
    root = tmp_path / "space"
    with tmpfs(tmp_path / "small", "12k") as small:
        pipeline = workspace(root, small / "out", root / "cache")
        line = one_line(rerank("run", pipeline, "-q"), 75, f"{small}/out/", "(ENOSPC)")
        assert line.startswith("error: ") and "No space left on device" in line
        assert not [p for p in small.rglob("*") if p.name.endswith(".tmp")], "a temporary file was left"
        assert not list((root / "cache" / "tmp").rglob("*")) and not list((root / "cache" / "locks").glob("*"))
        assert rerank("cache", "verify", "--cache-dir", root / "cache").code == 0
        subprocess.run(["mount", "-o", "remount,size=1m", str(small)], check=True)  # room again
        assert rerank("run", pipeline, "-q").code == 0
        for name in ("bm25.trec", "metrics.json"):
            assert (small / "out" / name).read_bytes() == (reference / "out" / name).read_bytes()


def test_a_read_only_cache_folder_exits_75_and_names_it(rerank, tmp_path) -> None:
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as read_only:
        pipeline = workspace(tmp_path, tmp_path / "out", read_only / "cache")
        before = snapshot(tmp_path / "data")
        line = one_line(rerank("run", pipeline, "-q"), 75, f"{read_only}/cache", "(EROFS)")
        assert "Read-only file system" in line
        assert snapshot(tmp_path / "data") == before and not (tmp_path / "out" / "bm25.trec").exists()


def test_a_read_only_output_folder_exits_75_and_keeps_the_cache_whole(rerank, tmp_path) -> None:
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as read_only:
        pipeline = workspace(tmp_path, read_only / "out", tmp_path / "cache")
        one_line(rerank("run", pipeline, "-q"), 75, f"{read_only}/out", "(EROFS)")
        assert not list((tmp_path / "cache" / "tmp").rglob("*"))
        assert rerank("cache", "verify", "--cache-dir", tmp_path / "cache").code == 0


def test_doctor_require_exits_1_when_the_backend_is_unusable(rerank, tmp_path) -> None:
    """A broken install (transformers that cannot be imported) makes hf unusable: a check failed."""
    shadow = tmp_path / "shadow" / "transformers"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('transformers is broken on purpose')\n")
    path = os.pathsep.join(filter(None, [str(shadow.parent), os.environ.get("PYTHONPATH")]))
    result = rerank("doctor", "--require", "hf", env={"PYTHONPATH": path})
    line = one_line(result, 1, "--require", "hf")
    assert line == "failed: --require: hf is unusable here"
    assert any(row.startswith("hf") and "unusable" in row for row in result.out.splitlines())


def test_doctor_require_exits_0_when_the_backend_works(rerank) -> None:
    result = rerank("doctor", "--require", "bm25s")
    assert result.code == 0 and result.err == "", result.err


def test_an_output_file_that_is_a_fifo_is_refused_not_replaced(rerank, tmp_path) -> None:
    fifo = tmp_path / "schema.json"
    os.mkfifo(fifo)
    one_line(rerank("schema", "-o", fifo), 2, str(fifo), "not a regular file")
    assert fifo.is_fifo()


def test_an_output_file_that_is_a_folder_is_refused(rerank, tmp_path) -> None:
    (tmp_path / "schema.json").mkdir()
    one_line(rerank("schema", "-o", tmp_path / "schema.json"), 2, f"{tmp_path}/schema.json", "is a folder")
    assert (tmp_path / "schema.json").is_dir()


def test_a_full_disk_while_bm25s_saves_its_index_exits_75(rerank, tmp_path) -> None:
    """bm25s writes the index files itself (numpy's short write has no errno): still ENOSPC, one line."""
    with tmpfs(tmp_path / "small", "64k") as small:
        pipeline = workspace(tmp_path, tmp_path / "out", small / "cache")
        line = one_line(rerank("run", pipeline, "-q"), 75, f"{small}/cache/tmp/entry-", "(ENOSPC)")
        assert line.startswith("error: ")
        assert not list((small / "cache" / "tmp").rglob("*")) and not list((small / "cache").glob("artifacts/*/*"))
