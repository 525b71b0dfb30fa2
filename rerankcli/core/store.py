"""The cache: a content-addressed folder of stage outputs and artefacts (indexes, embeddings).

Layout under the cache folder:
  stages/<key>/run.trec | metrics.json, manifest.json, seal.json   one folder per stage key
  artifacts/<kind>/<key>/..., seal.json                  e.g. a BM25 index, corpus embeddings
  journals/<key>[.<i>-of-<N>].jsonl                      per-query results of a stage being computed
  locks/<key>.lock                                       held by the process computing a stage
  locks/<name>.use                                       shared by the processes reading an entry
  tmp/entry-<pid>-*                                      staging, renamed into place when complete
  CACHEDIR.TAG, file-digests.json                        the cache's tag; remembered file digests
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

The first entry published into a cache folder (or read from one) tags it with ``CACHEDIR.TAG``
(``cache_tag.py``): the mark ``rerank cache`` needs before it deletes anything there. A cache
folder whose own folders (``stages``, ``locks``, ...) are files, or where no folder can be made
(``/proc/self``), is refused in one line (exit 2) instead of failing deep inside ``mkdir``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rerankcli.core.atomic import publish_dir, write_text
from rerankcli.core.cache_tag import TAG, TEXT, is_rerank_cache
from rerankcli.core.entries import (Entry, Leftover, entry_at, leftover_locks, list_entries, list_foreign,
                                    list_leftovers, staging_writer)
from rerankcli.core.errors import UserError, is_resource_fault, shown
from rerankcli.core.hashing import use_memo
from rerankcli.core.locks import (claim_all, hold_excluding_readers, hold_exclusive, hold_shared, release_one_shared,
                                  release_shared)
from rerankcli.core.paths import expand_path, file_above
from rerankcli.core.seal import SEAL, Damaged, check_sealed, read_seal, write_seal
from rerankcli.core.user_files import kind_of

FOLDERS = ("stages", "artifacts", "journals", "locks", "tmp")  # the cache folder's own folders


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


def check_cache_layout(root: Path) -> None:
    """Refuse a cache folder whose own folders (``stages``, ``locks``, ``tmp``, ...) are files,
    before anything is computed: ``mkdir`` would fail only when the first result is stored."""
    for name in FOLDERS:
        blocking = _in_the_way(root, root / name)
        if blocking is not None:
            raise UserError(_not_a_folder(root, blocking))


def _in_the_way(root: Path, folder: Path) -> Path | None:
    """The first part of ``folder`` (below ``root``) that exists and is not a folder, if any."""
    current = root
    for name in folder.relative_to(root).parts:
        current = current / name
        if not os.path.lexists(current):
            return None
        if not current.is_dir():
            return current
    return None


def _not_a_folder(root: Path, path: Path) -> str:
    try:
        mode = path.stat().st_mode
        what = "a file" if stat.S_ISREG(mode) else f"a {kind_of(mode)}"
    except OSError:
        what = "a broken link"
    return f"cache folder {root}: {path.relative_to(root).as_posix()} is {what}, not a folder"


# -- what this process holds: verified entries, its stagings ------------------------------------

_verified: set[tuple[str, str]] = set()  # (entry folder, seal text) whose digests matched here
_touched: set[str] = set()  # entries whose use this process has recorded
_warned: set[str] = set()  # damaged entries already reported by this process
_stagings: set[Path] = set()  # staging folders made by this process and not yet published
_marked: set[str] = set()  # cache folders this process has tagged (or found tagged, or left untagged)


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
        check_cache_layout(root)
        use_memo(root / "file-digests.json", warn=self.warn, before_write=self._mark)

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
        path = self._folder(self.root / "locks") / f"{key}.lock"
        with contextlib.suppress(FileNotFoundError):
            mode = os.stat(path).st_mode
            if not stat.S_ISREG(mode):
                raise UserError(f"cache folder {self.root}: locks/{path.name} is a {kind_of(mode)}, not a lock "
                                "file; remove it")
        with hold_exclusive(path, on_wait):
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
        folder = Path(tempfile.mkdtemp(prefix=f"entry-{os.getpid()}-", dir=self._folder(self.root / "tmp")))
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
        entry = entry_at(self.root, final)
        try:
            text = write_seal(staging)
            self._folder(final.parent)
            self._mark()
            excluding = replace and entry is not None and os.path.lexists(final)
            with self._excluding_readers(entry) if excluding else contextlib.nullcontext():
                if os.path.lexists(final) and (replace or self.problem(final) is not None):
                    self.remove(final)  # publish_dir keeps what is there: a damaged entry must go first
                published = publish_dir(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            _stagings.discard(staging)
        if published:
            _verified.add((str(final), text))
        if entry is not None:
            self._hold_for_reading(entry)
        return final

    def _excluding_readers(self, entry: Entry) -> contextlib.AbstractContextManager[None]:
        """The entry's reading lock held exclusively: waits until no other command reads the entry,
        so ``--force`` never deletes an entry another command is about to copy (one line if it waits)."""
        return hold_excluding_readers(self.root / "locks" / entry.locks[-1], lambda: self.warn(
            f"[cache] {entry.label}: waiting for the commands that read it to end before replacing it"))

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
        self._hold_for_reading(entry)  # waits while `cache prune` is removing it, or `--force` replacing it
        if not os.path.lexists(entry.path):
            self._stop_reading(entry)
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
        self._stop_reading(entry)  # a `--force` waiting for readers must not wait for this one
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
        self._mark(reading=True)
        hold_shared(self.root / "locks" / entry.locks[-1])

    def _stop_reading(self, entry: Entry) -> None:
        release_one_shared(self.root / "locks" / entry.locks[-1])

    # -- the cache folder itself ------------------------------------------------------------------

    def _folder(self, folder: Path) -> Path:
        """``folder``, one of the cache's, made if need be; one line (exit 2) when a file of the
        user's is in the way or no folder can be made there (``/proc/self``)."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if is_resource_fault(exc):
                raise
            blocking = _in_the_way(self.root, folder) if folder.is_relative_to(self.root) else None
            if blocking is not None:
                raise UserError(_not_a_folder(self.root, blocking)) from None
            name = folder.relative_to(self.root).as_posix() if folder.is_relative_to(self.root) else str(folder)
            raise UserError(f"cache folder {self.root}: cannot make its folder {name} "
                            f"({exc.strerror or exc})") from None
        return folder

    def _mark(self, reading: bool = False) -> None:
        """Tag the cache folder (``CACHEDIR.TAG``) before its first entry lands, once per process.

        Not a folder holding files rerank did not write: the tag would make backup tools skip
        them; one warning instead, and `rerank cache` keeps refusing that folder. ``reading``: the
        cache may be read-only; a tag that cannot be written there is no error.
        """
        if str(self.root) in _marked:
            return
        try:
            if not is_rerank_cache(self.root):
                foreign = [] if os.path.lexists(self.root / TAG) else list_foreign(self.root)
                if not foreign and not os.path.lexists(self.root / TAG):
                    write_text(self.root / TAG, TEXT)
                else:
                    what = (f"has a {TAG} that is not rerank's" if not foreign else "holds files rerank did not write ("
                            + ", ".join(p.relative_to(self.root).as_posix() for p in foreign[:2])
                            + (", ..." if len(foreign) > 2 else "") + "; a tag would keep backups from saving them)")
                    self.warn(f"[cache] {self.root} {what}, so it is not tagged as a rerank cache and `rerank cache` "
                              "refuses it: give the cache a folder of its own")
        except OSError as exc:
            if not reading and is_resource_fault(exc):
                raise
            if not reading:
                raise UserError(f"cache folder {self.root}: cannot write {TAG} there ({exc.strerror or exc})") from None
        _marked.add(str(self.root))

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

    def foreign(self) -> list[Path]:
        """What the cache folder holds that rerank did not write: listed, never removed."""
        return list_foreign(self.root)

    def leftover_locks(self, leftover: Leftover) -> list[str]:
        """The locks to claim before removing ``leftover``: those of whoever could still be writing it."""
        return leftover_locks(leftover)

    def writer_of(self, leftover: Leftover, newest: float, now: float) -> int | None:
        """The pid of a live process that may still be writing a staging folder (``entries.staging_writer``)."""
        return staging_writer(leftover.path, newest, now) if leftover.what == "staging folder" else None

    def remove_leftover(self, leftover: Leftover) -> None:
        """Delete it; a lock file goes by itself when its claim is let go."""
        if leftover.what != "lock file":
            _remove_tree(leftover.path)
