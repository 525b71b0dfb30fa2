"""What a cache folder holds, named and listed: published entries, and what killed processes left.

``rerank cache ls | verify | prune`` work from these lists; the store reads and writes entries.
Leftovers (staging folders, journals, lock files, half-deleted entries) are what processes that
did not finish left behind; prune removes one only once it holds the locks of whoever could
still be writing it.

Only names of the shapes rerank writes are entries or leftovers: entry folders named by a key
(64 hex digits), staging folders ``tmp/entry-<pid>-<8 characters>``, journals
``<key>[.<i>-of-<N>].jsonl``, lock files ``[<kind>.]<key>[.<i>-of-<N>].lock|.use``. Anything else
in a cache folder is listed as not rerank's (``list_foreign``) and never deleted, so a
``--cache-dir`` pointed at the wrong folder cannot cost a user their files.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

KEY = r"(?:parts-)?[0-9a-f]{64}"  # a stage or artefact key; a GGUF joined from parts: parts-<sha256>
_ENTRY = re.compile(KEY)
_KIND = re.compile(r"[a-z0-9][a-z0-9-]*")  # bm25s-index, dense-embeddings, hf-from-gguf, ...
_STAGING = re.compile(r"entry-(\d+)-[a-z0-9_]{8}")  # tempfile.mkdtemp(prefix="entry-<pid>-") in Store.staging
_DELETING = re.compile(rf"\.{KEY}\.deleting-\d+-[0-9a-f]{{8}}")  # Store.remove's name for an entry going
_JOURNAL = re.compile(rf"{KEY}(?:\.\d+-of-\d+)?\.jsonl")
_LOCK = re.compile(rf"(?:[a-z0-9-]+\.)?{KEY}(?:\.\d+-of-\d+)?\.(?:lock|use)")
_ROOT_TEMPORARY = re.compile(r"\.(?:file-digests\.json|CACHEDIR\.TAG)\.[a-z0-9_]{8}\.tmp")  # atomic_open's
ROOT_NAMES = frozenset({  # what rerank keeps at the top of a cache folder (.DS_Store: macOS's Finder)
    "stages", "artifacts", "journals", "locks", "tmp", "file-digests.json", "CACHEDIR.TAG", ".DS_Store",
    "llm-calls.sqlite", "llm-calls.sqlite-wal", "llm-calls.sqlite-shm", "llm-calls.sqlite-journal"})
ABANDONED_AFTER_S = 86400.0  # a staging folder nothing wrote for a day is abandoned, whatever its pid


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
    what: str  # "staging folder", "journal", "lock file", "entry being deleted", "temporary file"


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _is_folder(path: Path) -> bool:
    """A folder itself, not a link to one (a link is never followed into, so never emptied)."""
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def _is_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _is_entry(path: Path) -> bool:
    return _ENTRY.fullmatch(path.name) is not None and _is_folder(path)


def _kinds(root: Path) -> list[Path]:
    """The ``artifacts/<kind>`` folders (a link to a folder counts: converted models may be shared so)."""
    return [kind for kind in _children(root / "artifacts") if _KIND.fullmatch(kind.name) and kind.is_dir()]


#: what processes leave behind, where, and the shape of its name: lock files first, because
#: removing a journal (or an entry) claims its lock, which removes that lock file too
_LEFTOVERS = (("lock file", "locks", _LOCK, _is_file), ("journal", "journals", _JOURNAL, _is_file),
              ("staging folder", "tmp", _STAGING, _is_folder))


def list_entries(root: Path) -> list[Entry]:
    """Every published entry in the cache folder ``root``, stages first, each in name order."""
    found = [Entry(path, "stage", path.name) for path in _children(root / "stages") if _is_entry(path)]
    for kind in _kinds(root):
        found += [Entry(path, kind.name, path.name) for path in _children(kind) if _is_entry(path)]
    return found


def entry_at(root: Path, folder: Path) -> Entry | None:
    """The entry whose folder is ``folder`` in the cache folder ``root``; None if not an entry's place."""
    if folder.parent == root / "stages":
        return Entry(folder, "stage", folder.name)
    if folder.parent.parent == root / "artifacts":
        return Entry(folder, folder.parent.name, folder.name)
    return None


def list_leftovers(root: Path) -> list[Leftover]:
    """What killed processes left: lock files, journals, staging folders, half-deleted entries,
    temporary files of the digest memo or the cache tag."""
    found = []
    for what, folder, pattern, test in _LEFTOVERS:
        found += [Leftover(path, what) for path in _children(root / folder)
                  if pattern.fullmatch(path.name) and test(path)]
    for folder in [root / "stages", *_kinds(root)]:
        found += [Leftover(path, "entry being deleted") for path in _children(folder) if _DELETING.fullmatch(path.name)]
    found += [Leftover(path, "temporary file") for path in _children(root)
              if _ROOT_TEMPORARY.fullmatch(path.name) and _is_file(path)]
    return found


def list_foreign(root: Path) -> list[Path]:
    """What the cache folder holds that rerank did not write, by name and type: never removed."""
    found = [path for path in _children(root)
             if path.name not in ROOT_NAMES and not _ROOT_TEMPORARY.fullmatch(path.name)]
    kinds = _kinds(root)
    found += [kind for kind in _children(root / "artifacts") if kind not in kinds]
    for folder in [root / "stages", *kinds]:
        found += [path for path in _children(folder) if not (_is_entry(path) or _DELETING.fullmatch(path.name))]
    for _, folder, pattern, test in _LEFTOVERS:
        found += [path for path in _children(root / folder) if not (pattern.fullmatch(path.name) and test(path))]
    return sorted(found)


def leftover_locks(leftover: Leftover) -> list[str]:
    """The locks to claim before removing ``leftover``: those of whoever could still be writing it."""
    if leftover.what == "journal":
        return [leftover.path.name.removesuffix(".jsonl") + ".lock"]
    if leftover.what == "lock file":
        return [leftover.path.name]
    return []


def staging_writer(path: Path, newest: float, now: float) -> int | None:
    """The pid of a live process that may still be writing the staging folder ``path``, or None.

    A staging folder is named after the process that made it (``entry-<pid>-``), but a pid says
    little: pids are reused, and a cache shared between machines or containers holds other
    machines' pids. So a folder nothing has written for ``ABANDONED_AFTER_S`` (a day) is
    abandoned whatever its pid; a younger one is left alone while a process with its pid runs
    that started before the folder's newest write (a process started later cannot have made it).
    ``newest``: the latest mtime of the folder and its files.
    """
    match = _STAGING.fullmatch(path.name)
    if match is None or now - newest > ABANDONED_AFTER_S:
        return None
    pid = int(match.group(1))
    if pid == os.getpid() or not _pid_alive(pid):
        return None
    started = _started(pid)
    if started is not None and started > newest + 2:  # 2 s: boot time is known to the second
        return None
    return pid


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except (OverflowError, ValueError):  # not a pid at all
        return False
    return True


def _started(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since the epoch (Linux's /proc); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime, in clock ticks
    except (OSError, ValueError, IndexError, StopIteration):
        return None
