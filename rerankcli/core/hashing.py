"""Content hashes of files and folders, remembered by (path, size, mtime) between runs.

Stage keys hash every input file; re-hashing a multi-GB corpus or a model's weights on each
run would make "nothing changed" slow, so digests are memoised in a small JSON file in the
cache folder and recomputed only when a file's size or modification time changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from stat import S_ISREG

from rerankcli.core.atomic import write_text
from rerankcli.core.errors import UserError
from rerankcli.core.user_files import kind_of

_memo_path: Path | None = None
_memo: dict[str, str] = {}
_dirty = False


def use_memo(path: Path) -> None:
    """Remember digests in ``path`` (called once the cache folder is known)."""
    global _memo_path, _memo
    _memo_path = path
    try:
        _memo = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        _memo = {}


def save_memo() -> None:
    global _dirty
    if _memo_path is not None and _dirty:
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
