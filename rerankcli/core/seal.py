"""An entry's seal: ``seal.json``, written last, with the size and sha256 of each of its files.

Publishing an entry by renaming its folder into place proves that it was whole when it was
published, not that it still is: a disk error, a truncating copy or a hand edit can damage it
later. So the store seals every entry and checks the seal before reading the entry as data.
Entries written before seals existed have none, and count as damaged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

from rerankcli.core.atomic import write_text
from rerankcli.core.errors import RESOURCE_ERRNOS, shown

SEAL = "seal.json"
SEAL_FORMAT = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_SEAL_BYTES = 16 << 20  # a seal lists files, a few hundred bytes each: more is not a seal


class Damaged(Exception):
    """Why an entry cannot be used, as a short phrase: ``run.trec: 812 bytes, sealed 1623``."""


def _sealed_files(folder: Path) -> list[str]:
    """Every file below ``folder`` except the seal, as sorted POSIX paths relative to it."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [(Path(root) / name).relative_to(folder).as_posix() for name in files]
    return sorted(name for name in found if name != SEAL)


def sha256_of(path: Path) -> str:
    """The file's sha256, as the seal records it (hex)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_seal(folder: Path) -> str:
    """Write ``folder``'s seal, every file's size and sha256, as its last file; return its text."""
    files = {name: {"size": (folder / name).stat().st_size, "sha256": sha256_of(folder / name)}
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
    except (ValueError, RecursionError):  # "[[[[..." deeper than the parser goes is no seal either
        raise Damaged(f"{SEAL} is not valid JSON") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("format") != SEAL_FORMAT or not isinstance(files, dict) or not files:
        raise Damaged(f"{SEAL} is not a seal of format {SEAL_FORMAT} listing the entry's files")
    sealed = {}
    for name, item in files.items():
        size = item.get("size") if isinstance(item, dict) else None
        digest = item.get("sha256") if isinstance(item, dict) else None
        if (type(size) is not int or size < 0 or not isinstance(digest, str) or not _SHA256.fullmatch(digest)
                or not name or name.startswith("/") or ".." in name.split("/") or name == SEAL
                or any(ord(c) < 32 for c in name)):  # NUL, a newline: no file rerank writes
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
        except OSError as exc:  # a name too long, a loop of links: damage; EACCES and EIO propagate
            if exc.errno in RESOURCE_ERRNOS:
                raise
            raise Damaged(f"{shown(name, 40)}: {exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):
            raise Damaged(f"{name}: not a regular file")
        if info.st_size != size:
            raise Damaged(f"{name}: {info.st_size} bytes, sealed {size}")
    if digests:
        for name, (_, digest) in sealed.items():
            try:
                found = sha256_of(folder / name)
            except (FileNotFoundError, NotADirectoryError):
                raise Damaged(f"{name}: missing") from None
            if found != digest:
                raise Damaged(f"{name}: content differs from its sealed sha256 {digest[:12]}")
