"""Content hashes of files and folders, remembered by (path, size, mtime) between runs.

Stage keys hash every input file; re-hashing a multi-GB corpus or a model's weights on each
run would make "nothing changed" slow, so digests are memoised in a small JSON file in the
cache folder and recomputed only when a file's size or modification time changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from stat import S_ISREG

from rerankcli.core.atomic import write_text
from rerankcli.core.errors import UserError
from rerankcli.core.user_files import kind_of

_memo_path: Path | None = None
_memo: dict[str, str] = {}
_dirty = False
_before_write: Callable[[], None] | None = None
MAX_MEMO_BYTES = 64 << 20  # ~300k remembered files; a larger memo is not one rerank wrote
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def use_memo(path: Path, warn: Callable[[str], None] | None = None,
             before_write: Callable[[], None] | None = None) -> None:
    """Remember digests in ``path`` (called once the cache folder is known).

    The memo only saves time, so a damaged one is treated like a damaged cache entry: ignored
    and rewritten. Damaged: torn or edited, larger than ``MAX_MEMO_BYTES``, not a JSON object
    of stamps and ``sha256:`` digests (records of another shape are dropped), or nested deeper
    than Python's parser goes (a RecursionError, not a ValueError). Something that is not a
    regular file in its place (a folder, a FIFO: opening a FIFO would hang every command) is
    never read nor replaced: ``warn`` says so once, and digests are not remembered.
    ``before_write``: called before the memo is first written (the store tags its folder then).
    """
    global _memo_path, _memo, _dirty, _before_write
    _memo_path, _memo, _before_write = path, {}, before_write
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError:  # unreadable: rewritten (replacing a file needs only its folder to be writable)
        _dirty = True
        return
    try:
        info = os.fstat(fd)
        if not S_ISREG(info.st_mode):
            _memo_path = None
            (warn or _stderr)(f"[cache] {path} is a {kind_of(info.st_mode)}, not the file rerank remembers "
                              "file digests in: left alone, and digests are not remembered until it is removed")
            return
        blocks, size = [], 0
        while size <= MAX_MEMO_BYTES and (block := os.read(fd, 1 << 20)):  # at most this much is read
            blocks.append(block)
            size += len(block)
        data = b"".join(blocks)
    except OSError:
        data = b""
    finally:
        os.close(fd)
    try:
        loaded = json.loads(data.decode("utf-8")) if len(data) <= MAX_MEMO_BYTES else None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        loaded = None
    if isinstance(loaded, dict):
        _memo = {stamp: digest for stamp, digest in loaded.items()
                 if isinstance(digest, str) and _DIGEST.fullmatch(digest)}
    if not isinstance(loaded, dict) or len(_memo) != len(loaded):
        _dirty = True  # rewritten whole at the end of the run


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def save_memo() -> None:
    global _dirty
    if _memo_path is not None and _dirty:
        if _before_write is not None:
            _before_write()
        write_text(_memo_path, json.dumps(_memo, sort_keys=True))
        _dirty = False


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, as ``sha256:<hex>``."""
    global _dirty
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    if not S_ISREG(stat.st_mode):  # /dev/zero behind a link, a FIFO: reading would never end
        raise UserError(f"{path}: expected a regular file, found a {kind_of(stat.st_mode)}")
    stamp = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    if stamp in _memo:
        return _memo[stamp]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    _memo[stamp] = f"sha256:{digest.hexdigest()}"
    _dirty = True
    return _memo[stamp]


def tree_digest(folder: Path) -> str:
    """Digest of every file below ``folder`` (names and contents), for model directories."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(file_digest(path).encode())
    return f"sha256:{digest.hexdigest()}"


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
