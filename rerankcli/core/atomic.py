"""The one write layer: atomic files, durable appends, atomic publication of folders.

Every output goes to a temporary name in the destination's folder (same filesystem) and is
renamed into place, so a crash or SIGKILL never leaves a file that looks complete; a failed
write (disk full, permission, I/O error, an interrupt) removes its temporary file before the
error goes on. Because every writer comes through here, ``rerankcli.core.faults`` can inject
those faults at each write point, and tests prove that nothing half-written survives them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from rerankcli.core import faults
from rerankcli.core.errors import UserError


def _umask() -> int:
    """The process's umask: from /proc where it can be read, else by setting and restoring it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success."""
    path = Path(path)
    refuse_special(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        _name(exc, path)
        raise
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600: give the file the mode open() would
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            faults.point(f"write:{path}", path)  # the data is partly on disk when a fault strikes
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _name(exc, path)
        raise


def refuse_special(path: Path) -> None:
    """Refuse to replace anything but a regular file: renaming over /dev/null, a FIFO or a
    folder would destroy it (as root, even a device node)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError:
        return  # ENOTDIR, ELOOP, EACCES: the write itself reports them with the path
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a device, FIFO or socket)"
        raise UserError(f"{path}: is {kind}; rerank writes its outputs by replacing regular files")


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path) as handle:
        handle.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def copy_file(source: str | Path, target: str | Path) -> None:
    """Copy ``source`` to ``target`` atomically (the target never appears half-copied)."""
    with open(source, "rb") as src, atomic_open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def append_line(path: Path, line: bytes, create: bool = False) -> None:
    """Append one whole line to ``path`` durably (flushed and fsync'd), or ``create`` it with it.

    Used by journals, whose readers drop a torn last line: an injected fault writes half the
    line first, as a disk filling up mid-write would.
    """
    try:
        with open(path, "wb" if create else "ab") as handle:
            if faults.armed():
                handle.write(line[: len(line) // 2])
                handle.flush()
                faults.point(f"journal:{path}", path)
                handle.write(line[len(line) // 2:])
            else:
                handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        _name(exc, path)
        raise


def _name(exc: BaseException, path: Path) -> None:
    """The one error line names the file the user asked for: a failed write() or fsync() names
    no file, and mkstemp() or rename() name our temporary sibling, which the user never saw."""
    if not isinstance(exc, OSError):
        return
    temporary = exc.filename is not None and Path(str(exc.filename)).name.startswith(f".{path.name}.")
    if exc.filename is None or temporary:
        exc.filename, exc.filename2 = str(path), None


@contextlib.contextmanager
def library_writes(folder: Path) -> Iterator[None]:
    """A library writing files of its own into ``folder`` (bm25s saving an index, transformers a
    model): its OSError names ``folder``, and a short write without an errno (numpy's "14638
    requested and 992 written") becomes ENOSPC when the disk is full, else EIO: exit 75, not a
    traceback. The folder is a staging folder, so nothing it holds is published on failure."""
    try:
        faults.point(f"write:{folder}/", folder)
        yield
    except OSError as exc:
        if exc.errno is None:
            code = errno.ENOSPC if _full(folder) else errno.EIO
            raise OSError(code, f"{os.strerror(code)} ({exc})", str(folder)) from exc
        if exc.filename is None:
            exc.filename = str(folder)
        raise


def _full(folder: Path) -> bool:
    try:
        info = os.statvfs(folder)
    except OSError:
        return False
    return info.f_bavail * info.f_frsize < 1 << 20


def publish_dir(staging: Path, final: Path) -> bool:
    """Move a fully written ``staging`` folder to ``final``; False if another writer won the race.

    Two processes computing the same cache entry produce the same content, so the loser
    simply drops its copy: the published folder is never replaced while someone reads it.
    """
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        faults.point(f"publish:{final}", final)
        os.rename(staging, final)
        return True
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if final.exists():
            return False
        raise
    except BaseException:  # an interrupt: the unpublished entry goes, the next run recomputes it
        shutil.rmtree(staging, ignore_errors=True)
        raise
