"""The cache: a content-addressed folder of stage outputs and artefacts (indexes, embeddings).

Layout under the cache folder:
  stages/<key>/run.trec | metrics.json, manifest.json, seal.json   one folder per stage key
  artifacts/<kind>/<key>/..., seal.json                  e.g. a BM25 index, corpus embeddings
  journals/<key>[.<i>-of-<N>].jsonl                      per-query results of a stage being computed
  locks/<key>.lock                                       held by the process computing a stage
  locks/<name>.use                                       shared by the processes reading an entry
  tmp/entry-<pid>-*                                      staging, renamed into place when complete
An entry exists only once its folder is renamed into place, so a crash leaves no entry
that looks complete, and two processes computing the same key cannot corrupt it. Its locks
(``locks.py``) keep a second run from computing it again beside the first, and ``rerank
cache prune`` from deleting it under a command that uses it.

Every entry carries a seal (``seal.py``): the size and sha256 of each of its files. Before an
entry is used its files' sizes are checked (stat calls, every time) and their digests once per
process (a run does not read a multi-GB index twice to check it). An entry that fails is never
read as data: one warning line, then it is moved aside, deleted and computed again.

Using an entry touches its seal's mtime: that is "last used" for ``rerank cache ls`` and
``prune``. Staging folders a process made and did not publish go when it exits.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rerankcli.core.atomic import publish_dir
from rerankcli.core.entries import Entry, Leftover, entry_at, leftover_locks, list_entries, list_leftovers
from rerankcli.core.errors import UserError, shown
from rerankcli.core.hashing import use_memo
from rerankcli.core.locks import claim_all, hold_exclusive, hold_shared, release_shared
from rerankcli.core.paths import expand_path, file_above
from rerankcli.core.seal import SEAL, Damaged, check_sealed, read_seal, write_seal


def default_cache_dir() -> Path:
    """``$RERANK_CACHE_DIR``, else ``$XDG_CACHE_HOME/rerankcli``, else ``~/.cache/rerankcli``."""
    for variable, below in (("RERANK_CACHE_DIR", ""), ("XDG_CACHE_HOME", "rerankcli")):
        value = os.environ.get(variable)
        if value:
            try:
                return Path(expand_path(value)) / below
            except ValueError as exc:
                raise UserError(f"${variable} {shown(value)}: {exc}") from None
    return Path.home() / ".cache" / "rerankcli"


def check_cache_folder(root: Path) -> None:
    """Refuse a cache "folder" that is a file, or lies below one, before anything is written."""
    if root.exists() and not root.is_dir():
        raise UserError(f"cache folder {root}: is a file, not a folder")
    blocking = file_above(root)
    if blocking is not None:
        raise UserError(f"cache folder {root}: {blocking} is a file, not a folder")


# -- what this process holds: verified entries, its stagings ------------------------------------

_verified: set[tuple[str, str]] = set()  # (entry folder, seal text) whose digests matched here
_touched: set[str] = set()  # entries whose use this process has recorded
_warned: set[str] = set()  # damaged entries already reported by this process
_stagings: set[Path] = set()  # staging folders made by this process and not yet published


def _tidy_up_at_exit(pid: int = os.getpid()) -> None:
    """Unpublished stagings go when the process ends (its reading locks go next, in ``locks.py``).

    ``pid``: a forked child that ends through ``atexit`` leaves its parent's state alone.
    """
    if os.getpid() != pid:
        return
    for folder in list(_stagings):
        shutil.rmtree(folder, ignore_errors=True)
    _stagings.clear()


atexit.register(_tidy_up_at_exit)


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Store:
    """The cache folder ``root``; ``warn`` receives the one line about each damaged entry."""

    def __init__(self, root: Path, warn: Callable[[str], None] | None = None) -> None:
        self.root = root
        self.warn = warn or _stderr
        use_memo(root / "file-digests.json")

    # -- stage entries ------------------------------------------------------------------------

    def stage_dir(self, key: str) -> Path:
        return self.root / "stages" / key

    def has_stage(self, key: str) -> bool:
        """Whether the stage entry is there and intact; a damaged one is removed (and reported)."""
        return self._usable(Entry(self.stage_dir(key), "stage", key))

    def journal_path(self, key: str, shard: Any = None) -> Path:
        """Where a per-query stage journals its finished queries (one file per key and shard)."""
        suffix = f".{shard.index}-of-{shard.count}" if shard is not None else ""
        return self.root / "journals" / f"{key}{suffix}.jsonl"

    @contextlib.contextmanager
    def lock(self, key: str, on_wait: Callable[[], None] = lambda: None) -> Iterator[None]:
        """Hold the key's exclusive lock (``flock``: released by the kernel if the process dies).

        The lock file is removed on release, so a finished or failed command leaves none.
        """
        with hold_exclusive(self.root / "locks" / f"{key}.lock", on_wait):
            yield

    # -- artefact entries ---------------------------------------------------------------------

    def artifact_dir(self, kind: str, key: str) -> Path:
        return self.root / "artifacts" / kind / key

    def has_artifact(self, kind: str, key: str) -> bool:
        """Whether the artefact is there and intact; a damaged one is removed (and reported)."""
        return self._usable(Entry(self.artifact_dir(kind, key), kind, key))

    # -- writing ------------------------------------------------------------------------------

    def staging(self) -> Path:
        """A fresh private folder to write an entry into before publishing it.

        Removed when the process exits if it was not published (an error on the way).
        """
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"entry-{os.getpid()}-", dir=self.root / "tmp"))
        _stagings.add(folder)
        return folder

    @contextlib.contextmanager
    def building(self) -> Iterator[Path]:
        """A staging folder for an entry built inside the block; removed if the block fails
        (disk full, an interrupt), so no half-built entry outlives the error."""
        staging = self.staging()
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def publish(self, staging: Path, final: Path) -> Path:
        """Seal ``staging`` and rename it to ``final``; if an intact ``final`` exists (another writer), keep it."""
        return self._publish(staging, final, replace=False)

    def replace(self, staging: Path, final: Path) -> Path:
        """Publish ``staging`` over an existing entry (``--force``): old entry moved aside first."""
        return self._publish(staging, final, replace=True)

    def _publish(self, staging: Path, final: Path, replace: bool) -> Path:
        try:
            text = write_seal(staging)
            if os.path.lexists(final) and (replace or self.problem(final) is not None):
                self.remove(final)  # publish_dir keeps what is there: a damaged entry must go first
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            _stagings.discard(staging)
        if publish_dir(staging, final):
            _verified.add((str(final), text))
        entry = entry_at(self.root, final)
        if entry is not None:
            self._hold_for_reading(entry)
        return final

    def remove(self, folder: Path) -> None:
        """Move ``folder`` aside in one rename (a reader sees all of it or nothing), then delete it."""
        aside = folder.with_name(f".{folder.name}.deleting-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.rename(folder, aside)
        except FileNotFoundError:
            return
        _remove_tree(aside)

    # -- checking -----------------------------------------------------------------------------

    def problem(self, folder: Path, digests: bool | None = None) -> str | None:
        """Why the entry at ``folder`` cannot be used, or None when it is intact.

        ``digests``: True checks every sha256, False only sizes, None (the default) checks the
        digests the first time this process looks at this seal.
        """
        try:
            if not folder.is_dir():
                raise Damaged("not a folder")
            text, sealed = read_seal(folder)
            if folder.parent.name == "stages" and ("manifest.json" not in sealed or
                                                   not {"run.trec", "metrics.json"} & set(sealed)):
                raise Damaged(f"{SEAL} lists no manifest.json and run.trec or metrics.json")
            full = digests if digests is not None else (str(folder), text) not in _verified
            check_sealed(folder, sealed, full)
        except Damaged as exc:
            return str(exc)
        if full:
            _verified.add((str(folder), text))
        return None

    def _usable(self, entry: Entry) -> bool:
        if not os.path.lexists(entry.path):
            return False
        self._hold_for_reading(entry)  # waits while `cache prune` is removing it
        if not os.path.lexists(entry.path):
            return False
        problem = self.problem(entry.path)
        if problem is None:
            self._record_use(entry.path)
            return True
        if str(entry.path) not in _warned:
            _warned.add(str(entry.path))
            self.warn(f"[cache] entry {entry.label} is damaged ({problem}); recomputing it")
        with contextlib.suppress(OSError):  # a read-only cache: publishing will say so
            self.remove(entry.path)
        return False

    def _record_use(self, folder: Path) -> None:
        """Touch the seal's mtime, once per process: the entry's "last used" time."""
        if str(folder) in _touched:
            return
        _touched.add(str(folder))
        with contextlib.suppress(OSError):  # a read-only cache keeps its times
            os.utime(folder / SEAL)

    def last_used(self, entry: Entry) -> float:
        """When a command last used the entry (its seal's mtime; the folder's if unsealed)."""
        for path in (entry.path / SEAL, entry.path):
            with contextlib.suppress(OSError):
                return path.stat().st_mtime
        return 0.0

    # -- reading locks --------------------------------------------------------------------------

    def _hold_for_reading(self, entry: Entry) -> None:
        """Share the entry's ``.use`` lock until the process ends, so `cache prune` leaves it be."""
        hold_shared(self.root / "locks" / entry.locks[-1])

    def close(self) -> None:
        """Let go of the reading locks this process holds in this cache (also done at exit)."""
        release_shared(self.root / "locks")

    @contextlib.contextmanager
    def claim(self, locks: list[str], keep_files: bool = False) -> Iterator[bool]:
        """Hold the named locks exclusively without waiting: True, or False if another process holds one.

        What `cache prune` does before removing anything. ``keep_files``: lock files that were
        there before stay (a dry run changes nothing).
        """
        with claim_all(self.root / "locks", locks, keep_files) as ours:
            yield ours

    # -- listing ------------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        """Every published entry, stages first, each in name order."""
        return list_entries(self.root)

    def leftovers(self) -> list[Leftover]:
        """What killed processes left: staging folders, journals, lock files, half-deleted entries."""
        return list_leftovers(self.root)

    def leftover_locks(self, leftover: Leftover) -> list[str] | None:
        """The locks to claim before removing ``leftover``; None if a live process owns it."""
        return leftover_locks(leftover)

    def remove_leftover(self, leftover: Leftover) -> None:
        """Delete it; a lock file goes by itself when its claim is let go."""
        if leftover.what != "lock file":
            _remove_tree(leftover.path)
