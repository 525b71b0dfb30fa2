"""Content-addressed cache of stage outputs and artefacts (indexes, embeddings), each entry sealed.

Layout under the cache folder:
  stages/<key>/run.trec | metrics.json, manifest.json, seal.json   one folder per stage key
  artifacts/<kind>/<key>/..., seal.json                  e.g. a BM25 index, corpus embeddings
  journals/<key>[.<i>-of-<N>].jsonl                      per-query results of a stage being computed
  locks/<key>.lock                                       held by the process computing a stage
  locks/<name>.use                                       shared by the processes reading an entry
  tmp/entry-<pid>-*                                      staging, renamed into place when complete
An entry exists only once its folder is renamed into place, so a crash leaves no entry
that looks complete, and two processes computing the same key cannot corrupt it. A process
computing a stage also holds the key's lock, so a second ``rerank run`` on the same cache
waits for the entry instead of computing it again beside the first (and sharing its journal).

Renaming proves that an entry was whole when it was published, not that it still is: a disk
error, a truncating copy or a hand edit can damage it later. So every entry carries
``seal.json``, written last, with the size and sha256 of each of its files. Before an entry is
used its files' sizes are checked (stat calls, every time) and their digests once per process
(a run does not read a multi-GB index twice to check it). An entry that fails is never read as
data: one warning line, then it is moved aside, deleted and computed again. Entries written
before seals existed count as damaged.

Using an entry touches its seal's mtime: that is "last used" for ``rerank cache ls`` and
``prune``. A process that used an entry holds a shared lock on ``locks/<name>.use`` until it
exits, and ``prune`` removes only entries whose locks it can take without waiting, so it never
deletes an entry a running command reads or computes. A lock file goes with its last holder;
staging folders a process made and did not publish go when it exits.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from rerankcli.core.atomic import publish_dir, write_text
from rerankcli.core.errors import shown
from rerankcli.core.hashing import use_memo

SEAL = "seal.json"
SEAL_FORMAT = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
_STAGING = re.compile(r"entry-(\d+)-")
MAX_SEAL_BYTES = 16 << 20  # a seal lists files, a few hundred bytes each: more is not a seal


def default_cache_dir() -> Path:
    """``$RERANK_CACHE_DIR``, else ``$XDG_CACHE_HOME/rerankcli``, else ``~/.cache/rerankcli``."""
    if os.environ.get("RERANK_CACHE_DIR"):
        return Path(os.environ["RERANK_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rerankcli"


class Damaged(Exception):
    """Why an entry cannot be used, as a short phrase: ``run.trec: 812 bytes, sealed 1623``."""


# -- the seal ------------------------------------------------------------------------------

def _sealed_files(folder: Path) -> list[str]:
    """Every file below ``folder`` except the seal, as sorted POSIX paths relative to it."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [(Path(root) / name).relative_to(folder).as_posix() for name in files]
    return sorted(name for name in found if name != SEAL)


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_seal(folder: Path) -> str:
    """Write ``folder``'s seal, every file's size and sha256, as its last file; return its text."""
    files = {name: {"size": (folder / name).stat().st_size, "sha256": _sha256(folder / name)}
             for name in _sealed_files(folder)}
    text = json.dumps({"format": SEAL_FORMAT, "files": files}, indent=1, sort_keys=True) + "\n"
    write_text(folder / SEAL, text)
    return text


def read_seal(folder: Path) -> tuple[str, dict[str, tuple[int, str]]]:
    """The seal's text and ``{file: (size, sha256)}``; Damaged if missing or not a seal.

    Permission and I/O errors are not damage (the entry may be fine): they propagate.
    """
    try:
        info = os.stat(folder / SEAL)
    except (FileNotFoundError, NotADirectoryError):
        raise Damaged(f"no {SEAL}: written by an older rerankcli, or never finished") from None
    if not stat.S_ISREG(info.st_mode):  # a folder, a FIFO: never opened (a FIFO would block)
        raise Damaged(f"{SEAL} is not a regular file")
    if info.st_size > MAX_SEAL_BYTES:
        raise Damaged(f"{SEAL} is {info.st_size} bytes, too large for a seal")
    try:
        text = (folder / SEAL).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise Damaged(f"no {SEAL}: written by an older rerankcli, or never finished") from None
    except UnicodeDecodeError:
        raise Damaged(f"{SEAL} is not text") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise Damaged(f"{SEAL} is not valid JSON") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("format") != SEAL_FORMAT or not isinstance(files, dict) or not files:
        raise Damaged(f"{SEAL} is not a seal of format {SEAL_FORMAT} listing the entry's files")
    sealed = {}
    for name, item in files.items():
        size = item.get("size") if isinstance(item, dict) else None
        digest = item.get("sha256") if isinstance(item, dict) else None
        if (type(size) is not int or size < 0 or not isinstance(digest, str) or not _SHA256.fullmatch(digest)
                or not name or name.startswith("/") or ".." in name.split("/") or name == SEAL):
            raise Damaged(f"{SEAL}: the record of {shown(name, 40)} is malformed")
        sealed[name] = (size, digest)
    return text, sealed


def check_sealed(folder: Path, sealed: dict[str, tuple[int, str]], digests: bool) -> None:
    """Raise Damaged unless every sealed file is there with its size (and, if asked, its sha256)."""
    for name, (size, _) in sealed.items():
        try:
            info = os.stat(folder / name)
        except (FileNotFoundError, NotADirectoryError):
            raise Damaged(f"{name}: missing") from None
        if not stat.S_ISREG(info.st_mode):
            raise Damaged(f"{name}: not a regular file")
        if info.st_size != size:
            raise Damaged(f"{name}: {info.st_size} bytes, sealed {size}")
    if digests:
        for name, (_, digest) in sealed.items():
            try:
                found = _sha256(folder / name)
            except (FileNotFoundError, NotADirectoryError):
                raise Damaged(f"{name}: missing") from None
            if found != digest:
                raise Damaged(f"{name}: content differs from its sealed sha256 {digest[:12]}")


# -- locks whose files go with their last holder --------------------------------------------

def _acquire(path: Path, mode: int, wait: bool = True, on_wait: Callable[[], None] | None = None) -> int | None:
    """An ``flock`` (``mode``: LOCK_SH or LOCK_EX) on ``path``, created if need be; its fd.

    None when ``wait`` is False and another process holds it. The classic race: between our
    open and our flock, the last holder may unlink the file, and a lock on an unlinked file
    excludes nobody; so once locked, check that the path still names the inode we hold, and
    start again if not.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    os.close(fd)
                    return None
                if on_wait is not None:
                    on_wait()
                    on_wait = None
                fcntl.flock(fd, mode)
            held = os.fstat(fd)
            try:
                named = os.stat(path)
                if (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
                    return fd
            except FileNotFoundError:
                pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _release(path: Path, fd: int, unlink: bool = True) -> None:
    """Let go of a lock from ``_acquire``; the last holder unlinks the file, before unlocking.

    Only a holder of the exclusive lock may unlink (so nobody holds a lock on a file that no
    longer has its name): a shared holder tries to upgrade without waiting, and leaves the
    file to the others if it cannot.
    """
    try:
        if unlink:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            with contextlib.suppress(OSError):
                held, named = os.fstat(fd), os.stat(path)
                if (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
                    os.unlink(path)
    finally:
        os.close(fd)


# -- what this process holds: verified entries, its stagings, its reading locks ----------------

_verified: set[tuple[str, str]] = set()  # (entry folder, seal text) whose digests matched here
_touched: set[str] = set()  # entries whose use this process has recorded
_warned: set[str] = set()  # damaged entries already reported by this process
_stagings: set[Path] = set()  # staging folders made by this process and not yet published
_reading: dict[Path, int] = {}  # lock file -> fd of the shared lock this process holds
_reading_guard = threading.Lock()  # one shared lock per file, whichever thread asks first


def _tidy_up_at_exit(pid: int = os.getpid()) -> None:
    """Unpublished stagings go and reading locks are let go when the process ends.

    ``pid``: a forked child that ends through ``atexit`` leaves its parent's state alone.
    """
    if os.getpid() != pid:
        return
    for folder in list(_stagings):
        shutil.rmtree(folder, ignore_errors=True)
    _stagings.clear()
    for path in list(_reading):
        _release(path, _reading.pop(path))


atexit.register(_tidy_up_at_exit)


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


# -- what the cache holds --------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """A published entry: ``kind`` is ``stage`` or the artefact kind (``bm25s-index``, ...)."""

    path: Path
    kind: str
    key: str

    @property
    def label(self) -> str:
        """How messages name it: ``stages/ab12cd34ef56`` or ``artifacts/bm25s-index/ab12cd34ef56``."""
        if self.kind == "stage":
            return f"stages/{self.key[:12]}"
        return f"artifacts/{self.kind}/{self.key[:12]}"

    @property
    def locks(self) -> list[str]:
        """Lock files (in ``locks/``) held by whoever computes or reads the entry."""
        if self.kind == "stage":
            return [f"{self.key}.lock", f"{self.key}.use"]
        return [f"{self.kind}.{self.key}.use"]


@dataclass(frozen=True)
class Leftover:
    """Something a process leaves behind only when killed: a staging folder, a journal, a lock file."""

    path: Path
    what: str  # "staging folder", "journal", "lock file", "entry being deleted"


def _subfolders(folder: Path) -> list[Path]:
    try:
        children = sorted(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [child for child in children if not child.name.startswith(".") and child.is_dir()]


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


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
        folder = self.root / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # no flock (Windows): atomic publishing still keeps entries whole
            yield
            return
        path = folder / f"{key}.lock"
        fd = _acquire(path, fcntl.LOCK_EX, on_wait=on_wait)
        assert fd is not None
        try:
            yield
        finally:
            _release(path, fd)

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
        entry = self._entry_at(final)
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
        path = self.root / "locks" / entry.locks[-1]
        if fcntl is None:
            return
        with _reading_guard:
            if path in _reading:
                return
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = _acquire(path, fcntl.LOCK_SH)
            except OSError:  # a read-only cache: nobody can prune it either
                return
            if fd is not None:
                _reading[path] = fd

    def close(self) -> None:
        """Let go of the reading locks this process holds in this cache (also done at exit)."""
        with _reading_guard:
            for path in [p for p in _reading if p.parent == self.root / "locks"]:
                _release(path, _reading.pop(path))

    @contextlib.contextmanager
    def claim(self, locks: list[str], keep_files: bool = False) -> Iterator[bool]:
        """Hold the named locks exclusively without waiting: True, or False if another process holds one.

        What `cache prune` does before removing anything. ``keep_files``: lock files that were
        there before stay (a dry run changes nothing).
        """
        folder = self.root / "locks"
        if fcntl is None or not folder.is_dir():  # no lock folder: nobody holds a lock
            yield True
            return
        held: list[tuple[Path, int, bool]] = []
        try:
            for name in locks:
                path = folder / name
                existed = path.exists()
                fd = _acquire(path, fcntl.LOCK_EX, wait=False)
                if fd is None:
                    break
                held.append((path, fd, not (keep_files and existed)))
            yield len(held) == len(locks)
        finally:
            for path, fd, unlink in reversed(held):
                _release(path, fd, unlink)

    # -- listing ------------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        """Every published entry, stages first, each in name order."""
        found = [Entry(path, "stage", path.name) for path in _subfolders(self.root / "stages")]
        for kind in _subfolders(self.root / "artifacts"):
            found += [Entry(path, kind.name, path.name) for path in _subfolders(kind)]
        return found

    def _entry_at(self, folder: Path) -> Entry | None:
        if folder.parent == self.root / "stages":
            return Entry(folder, "stage", folder.name)
        if folder.parent.parent == self.root / "artifacts":
            return Entry(folder, folder.parent.name, folder.name)
        return None

    def leftovers(self) -> list[Leftover]:
        """What killed processes left: staging folders, journals, lock files, half-deleted entries."""
        found = [Leftover(path, "staging folder") for path in _children(self.root / "tmp")]
        found += [Leftover(path, "journal") for path in _children(self.root / "journals")]
        found += [Leftover(path, "lock file") for path in _children(self.root / "locks")]
        for folder in [self.root / "stages", *_subfolders(self.root / "artifacts")]:
            found += [Leftover(path, "entry being deleted") for path in _children(folder)
                      if path.name.startswith(".") and ".deleting-" in path.name]
        return found

    def leftover_locks(self, leftover: Leftover) -> list[str] | None:
        """The locks to claim before removing ``leftover``; None if a live process owns it."""
        if leftover.what == "journal":
            return [leftover.path.name.removesuffix(".jsonl") + ".lock"]
        if leftover.what == "lock file":
            return [leftover.path.name]
        if leftover.what == "staging folder":
            match = _STAGING.match(leftover.path.name)
            if match and int(match.group(1)) != os.getpid() and _pid_alive(int(match.group(1))):
                return None  # being written: a live process on this machine made it
        return []

    def remove_leftover(self, leftover: Leftover) -> None:
        """Delete it; a lock file goes by itself when its claim is let go."""
        if leftover.what != "lock file":
            _remove_tree(leftover.path)
