"""The cache's locks (``flock`` on files in ``locks/``), whose files go with their last holder.

Two kinds, both released by the kernel if the process dies:
  <key>.lock   exclusive, held by the process computing a stage, so a second ``rerank run`` on
               the same cache waits for the entry instead of computing it again beside the first
               (and sharing its journal)
  <name>.use   shared, held from an entry's first use until the process exits, so that
               ``rerank cache prune`` (which claims every lock of an entry without waiting, and
               skips the entry when it cannot) never deletes an entry a running command reads
A lock file is removed by its last holder, so a finished or failed command leaves none; the
race this opens (a waiter locking a file just unlinked) is closed in ``acquire``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def acquire(path: Path, mode: int, wait: bool = True, on_wait: Callable[[], None] | None = None) -> int | None:
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


def release(path: Path, fd: int, unlink: bool = True) -> None:
    """Let go of a lock from ``acquire``; the last holder unlinks the file, before unlocking.

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


@contextlib.contextmanager
def hold_exclusive(path: Path, on_wait: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Hold ``path``'s exclusive lock, waiting for it (``on_wait`` is called once if it must)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # no flock (Windows): atomic publishing still keeps entries whole
        yield
        return
    fd = acquire(path, fcntl.LOCK_EX, on_wait=on_wait)
    assert fd is not None
    try:
        yield
    finally:
        release(path, fd)


@contextlib.contextmanager
def claim_all(folder: Path, names: list[str], keep_files: bool = False) -> Iterator[bool]:
    """Hold the locks ``names`` in ``folder`` exclusively without waiting: True, or False if
    another process holds one. ``keep_files``: lock files that were there before stay."""
    if fcntl is None or not folder.is_dir():  # no lock folder: nobody holds a lock
        yield True
        return
    held: list[tuple[Path, int, bool]] = []
    try:
        for name in names:
            path = folder / name
            existed = path.exists()
            try:
                fd = acquire(path, fcntl.LOCK_EX, wait=False)
            except (IsADirectoryError, NotADirectoryError):  # not a lock file rerank made: not ours to take
                fd = None
            if fd is None:
                break
            held.append((path, fd, not (keep_files and existed)))
        yield len(held) == len(names)
    finally:
        for path, fd, unlink in reversed(held):
            release(path, fd, unlink)


# -- shared locks this process holds until it exits -------------------------------------------

_shared: dict[Path, int] = {}  # lock file -> fd of the shared lock this process holds
_shared_guard = threading.Lock()  # one shared lock per file, whichever thread asks first


def hold_shared(path: Path) -> None:
    """Share ``path``'s lock until the process ends (or ``release_shared``); once per process."""
    if fcntl is None:
        return
    with _shared_guard:
        if path in _shared:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = acquire(path, fcntl.LOCK_SH)
        except OSError:  # a read-only cache: nobody can prune it either
            return
        if fd is not None:
            _shared[path] = fd


def release_shared(folder: Path) -> None:
    """Let go of the shared locks this process holds in ``folder``."""
    with _shared_guard:
        for path in [p for p in _shared if p.parent == folder]:
            release(path, _shared.pop(path))


def release_one_shared(path: Path) -> None:
    """Let go of this process's shared lock on ``path`` (an entry it found damaged or gone)."""
    with _shared_guard:
        fd = _shared.pop(path, None)
        if fd is not None:
            release(path, fd)


@contextlib.contextmanager
def hold_excluding_readers(path: Path, on_wait: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Hold ``path``'s lock exclusively, waiting until every process sharing it has let go; then
    keep sharing it until the process ends, as a reader of what the block wrote.

    What replacing an entry needs (``rerank run --force``): a reader holds the shared lock from
    the moment it decides to use an entry, so the entry cannot vanish under it. If this process
    shares the lock already, its own lock is converted (a second open file would wait for
    itself); flock drops the shared lock before taking the exclusive one, so two converting
    processes cannot deadlock, and the path is checked again in case a pruner removed the file
    meanwhile.
    """
    if fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with _shared_guard:
        fd = _shared.pop(path, None)
    if fd is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            on_wait = lambda: None  # noqa: E731 - said once
            fcntl.flock(fd, fcntl.LOCK_EX)
        if not _names(path, fd):  # removed while we converted: start on the file the path names
            os.close(fd)
            fd = None
    if fd is None:
        fd = acquire(path, fcntl.LOCK_EX, on_wait=on_wait)
        assert fd is not None
    try:
        yield
    except BaseException:
        release(path, fd)
        raise
    fcntl.flock(fd, fcntl.LOCK_SH)  # downgraded, never unlocked: no pruner slips in between
    with _shared_guard:
        if path in _shared:  # another thread took a shared lock of its own meanwhile
            os.close(fd)
        else:
            _shared[path] = fd


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        named, held = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _release_shared_at_exit(pid: int = os.getpid()) -> None:
    """``pid``: a forked child that ends through ``atexit`` leaves its parent's locks alone."""
    if os.getpid() != pid:
        return
    for path in list(_shared):
        release(path, _shared.pop(path))


atexit.register(_release_shared_at_exit)
