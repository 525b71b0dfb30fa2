"""What a cache folder holds, named and listed: published entries, and what killed processes left.

``rerank cache ls | verify | prune`` work from these lists; the store reads and writes entries.
Leftovers (staging folders, journals, lock files, half-deleted entries) are what processes that
did not finish left behind; prune removes one only once it holds the locks of whoever could
still be writing it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_STAGING = re.compile(r"entry-(\d+)-")  # the name Store.staging gives: entry-<pid>-...


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def list_entries(root: Path) -> list[Entry]:
    """Every published entry in the cache folder ``root``, stages first, each in name order."""
    found = [Entry(path, "stage", path.name) for path in _subfolders(root / "stages")]
    for kind in _subfolders(root / "artifacts"):
        found += [Entry(path, kind.name, path.name) for path in _subfolders(kind)]
    return found


def entry_at(root: Path, folder: Path) -> Entry | None:
    """The entry whose folder is ``folder`` in the cache folder ``root``; None if not an entry's place."""
    if folder.parent == root / "stages":
        return Entry(folder, "stage", folder.name)
    if folder.parent.parent == root / "artifacts":
        return Entry(folder, folder.parent.name, folder.name)
    return None


def list_leftovers(root: Path) -> list[Leftover]:
    """What killed processes left: staging folders, journals, lock files, half-deleted entries."""
    found = [Leftover(path, "staging folder") for path in _children(root / "tmp")]
    found += [Leftover(path, "journal") for path in _children(root / "journals")]
    found += [Leftover(path, "lock file") for path in _children(root / "locks")]
    for folder in [root / "stages", *_subfolders(root / "artifacts")]:
        found += [Leftover(path, "entry being deleted") for path in _children(folder)
                  if path.name.startswith(".") and ".deleting-" in path.name]
    return found


def leftover_locks(leftover: Leftover) -> list[str] | None:
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
