"""``rerank cache ls | verify | prune``: what the cache holds, whether it is intact, and room.

Entries are the sealed folders of ``rerankcli.core.store``: stage outputs and artefacts. "Last
used" is the seal's mtime, which a run touches when it reuses an entry; prune goes by it. Prune
never removes an entry a running command computes or has read (it takes the entry's locks
without waiting, and skips the entry when it cannot), and removes what killed processes left
(staging folders, journals, lock files) only when it is older than ``--older-than``.

These commands work only in a folder tagged as a rerank cache (``CACHEDIR.TAG``, written by the
store), or an empty or absent one: ``--cache-dir ~`` must not delete a user's ``tmp/`` folder.
Even in a cache, only names of the shapes rerank writes are touched (``core/entries.py``).
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from rerankcli.cli.app import app, path_value
from rerankcli.core.cache_tag import TAG, is_rerank_cache
from rerankcli.core.entries import ABANDONED_AFTER_S, Entry, Leftover, list_foreign
from rerankcli.core.errors import CheckFailed, UserError, shown
from rerankcli.core.store import Store, check_cache_folder, default_cache_dir

cache_app = typer.Typer(
    help="Inspect the cache: list entries, verify their seals, prune by age, size or damage.",
    no_args_is_help=True, rich_markup_mode=None,
)
app.add_typer(cache_app, name="cache")

CacheDir = Annotated[Optional[Path], typer.Option(
    "--cache-dir", metavar="DIR", parser=path_value,
    help="Cache folder (default: $RERANK_CACHE_DIR, else $XDG_CACHE_HOME/rerankcli, else ~/.cache/rerankcli).")]

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
POWERS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MANIFEST_BYTES = 1 << 20  # a manifest larger than this is not read just to show a stage name


class ListFormat(str, Enum):
    table = "table"
    json = "json"


def _store(cache_dir: Path | None, command: str) -> Store:
    """The cache named by ``--cache-dir`` (``~`` and ``$VARS`` expanded, empty refused), else the
    default one; refused in one line unless it is tagged as a rerank cache, empty or absent."""
    root = cache_dir if cache_dir is not None else default_cache_dir()
    check_cache_folder(root)
    if not is_rerank_cache(root) and root.is_dir() and not _holds_no_file(root):
        raise UserError(f"{root} is not a rerank cache (no {TAG}), so `rerank cache {command}` leaves it alone; "
                        f"a cache made by a rerank older than the tag gets it from its next `rerank run` or "
                        "`rerank index`")
    return Store(root)


def _holds_no_file(root: Path) -> bool:
    """Whether ``root`` holds nothing but empty folders of rerank's (``tmp/``, ``locks/``): what a
    first run stopped before its first entry leaves, untagged; an empty cache, not a user's folder."""
    if list_foreign(root):
        return False
    for _, _, files in os.walk(root):
        if files:
            return False
    return True


# -- sizes, ages, durations --------------------------------------------------------------------

def parse_duration(text: str, option: str = "--older-than") -> float:
    """Seconds in ``30d``, ``12h``, ``90m``, ``45s``, ``2w`` (a number and one unit)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text, re.IGNORECASE)
    if not match:
        raise UserError(f"{option} {shown(text, 40)}: not a duration; write a number and a unit "
                        "(s, m, h, d, w), e.g. 90m, 12h, 30d")
    return float(match.group(1)) * UNITS[match.group(2).lower()]


def parse_size(text: str, option: str = "--max-size") -> int:
    """Bytes in ``10G``, ``500M``, ``1.5GiB``, ``64k``, ``1000`` (K, M, G, T: powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not match:
        raise UserError(f"{option} {shown(text, 40)}: not a size; write a number and a unit "
                        "(K, M, G, T: powers of 1024), e.g. 500M, 10G")
    return int(float(match.group(1)) * POWERS[match.group(2).lower()])


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def human_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, length in (("d", UNITS["d"]), ("h", UNITS["h"]), ("m", UNITS["m"])):
        if seconds >= length:
            return f"{int(seconds // length)}{unit}"
    return f"{int(seconds)}s"


def plural(count: int, noun: str) -> str:
    """``1 entry``, ``2 entries``, ``0 leftovers``."""
    many = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{count} {noun if count == 1 else many}"


def _tree(path: Path) -> tuple[int, float] | None:
    """Bytes below ``path`` and its newest mtime (a folder being written is as young as its newest
    file); None if it is gone (a lock file goes with its holder, or with a journal's claim)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    if not path.is_dir() or path.is_symlink():
        return info.st_size, info.st_mtime
    size, newest = 0, info.st_mtime
    for root, _, files in os.walk(path):
        for name in files:
            try:
                found = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            size, newest = size + found.st_size, max(newest, found.st_mtime)
    return size, newest


# -- describing entries --------------------------------------------------------------------------

def _stage_of(entry: Entry) -> tuple[str, str]:
    """The stage's name and type from its manifest; ``?`` when it cannot be read."""
    path = entry.path / "manifest.json"
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > MANIFEST_BYTES:  # a FIFO would block
            return "?", "?"
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError, RecursionError):
        return "?", "?"  # RecursionError: "[[[[..." nested deeper than the parser goes
    if not isinstance(manifest, dict):
        return "?", "?"
    return str(manifest.get("stage", "?")), str(manifest.get("type", "?"))


def describe(store: Store, entry: Entry, now: float, problem: str | None) -> dict[str, Any]:
    """One entry as ``ls`` shows it (and prune reports it)."""
    size, _ = _tree(entry.path) or (0, 0.0)
    used = store.last_used(entry)
    row: dict[str, Any] = {"kind": "stage" if entry.kind == "stage" else "artifact", "key": entry.key}
    if entry.kind == "stage":
        name, kind = _stage_of(entry)
        row |= {"name": name, "type": kind, "what": f"{name} ({kind})"}
    else:
        row |= {"name": entry.kind, "type": entry.kind, "what": entry.kind}
    return row | {
        "label": entry.label, "path": str(entry.path), "size": size,
        "last_used": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(used)), "age_s": round(max(0.0, now - used)),
        "state": "ok" if problem is None else "damaged", "problem": problem,
    }


def _table(rows: list[dict[str, Any]]) -> str:
    header = ("KIND", "KEY", "STAGE / ARTEFACT", "SIZE", "LAST USED", "STATE")
    lines = [(r["kind"], r["key"][:12], r["what"], human_size(r["size"]), f"{human_age(r['age_s'])} ago",
              r["state"] if r["problem"] is None else f"damaged: {r['problem']}") for r in rows]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header) - 1)]
    return "".join("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)) + f"  {line[-1]}\n"
                   for line in [header, *lines])


# -- the commands ---------------------------------------------------------------------------------

@cache_app.command("ls")
def ls_command(
    cache_dir: CacheDir = None,
    fmt: Annotated[ListFormat, typer.Option("--format", "-f", help="table or json.")] = ListFormat.table,
) -> None:
    """List the entries: kind, key, stage or artefact, size, last use and state (sizes checked, not digests)."""
    store = _store(cache_dir, "ls")
    now = time.time()
    rows = [describe(store, e, now, store.problem(e.path, digests=False)) for e in store.entries()]
    foreign = [path.relative_to(store.root).as_posix() for path in store.foreign()]
    rows.sort(key=lambda r: (r["kind"] != "stage", r["what"], r["key"]))
    total = sum(r["size"] for r in rows)
    damaged = sum(r["problem"] is not None for r in rows)
    if fmt == ListFormat.json:
        print(json.dumps({"cache": str(store.root), "entries": rows, "not_rerank": foreign,
                          "total": {"entries": len(rows), "size": total, "damaged": damaged}}, indent=2))
        return
    if rows:
        print(_table(rows), end="")
    line = f"{plural(len(rows), 'entry')}, {human_size(total)} in {store.root}"
    if damaged:
        line += f"; {damaged} damaged (`rerank cache prune --damaged` removes {'it' if damaged == 1 else 'them'})"
    leftovers = [(_tree(item.path) or (0, 0.0))[0] for item in store.leftovers() if item.what != "lock file"]
    if leftovers:
        line += f"; {plural(len(leftovers), 'leftover')} of interrupted runs, {human_size(sum(leftovers))}"
    if foreign:
        line += (f"; {plural(len(foreign), 'item')} not rerank's, left alone: {', '.join(foreign[:3])}"
                 + (", ..." if len(foreign) > 3 else ""))
    calls = store.root / "llm-calls.sqlite"
    if calls.is_file():
        line += f"; LLM call cache {human_size(calls.stat().st_size)}"
    print(line)


@cache_app.command("verify")
def verify_command(cache_dir: CacheDir = None) -> None:
    """Check every file of every entry against its seal (size and sha256); exit 1 if any is damaged."""
    store = _store(cache_dir, "verify")
    entries = store.entries()
    now, bad, total = time.time(), 0, 0
    for entry in entries:
        problem = store.problem(entry.path, digests=True)
        row = describe(store, entry, now, problem)
        total += row["size"]
        if problem is not None:
            bad += 1
            print(f"damaged {entry.label} {row['what']}: {problem}")
    if bad:
        raise CheckFailed(f"{bad} of {len(entries)} cache entries in {store.root} are damaged; a run recomputes "
                          "them, `rerank cache prune --damaged` removes them")
    print(f"{plural(len(entries), 'entry')} verified, {human_size(total)} in {store.root}: every file matches its seal")


@cache_app.command("prune")
def prune_command(
    older_than: Annotated[Optional[str], typer.Option(
        "--older-than", metavar="DURATION",
        help="Remove entries last used longer ago than this (90m, 12h, 30d, 2w), and leftovers of "
             "interrupted runs older than this.")] = None,
    max_size: Annotated[Optional[str], typer.Option(
        "--max-size", metavar="SIZE",
        help="Then remove least recently used entries until the entries total at most this (500M, 10G).")] = None,
    damaged: Annotated[bool, typer.Option("--damaged", help="Remove entries that fail verification.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")] = False,
    cache_dir: CacheDir = None,
) -> None:
    """Remove entries by age, total size or damage; never one a running command computes or has read."""
    age_limit = parse_duration(older_than) if older_than is not None else None
    size_limit = parse_size(max_size) if max_size is not None else None
    if age_limit is None and size_limit is None and not damaged:
        raise UserError("rerank cache prune: say what to remove: --older-than DURATION, --max-size SIZE "
                        "and/or --damaged")
    store = _store(cache_dir, "prune")
    pruner = _Pruner(store, dry_run)
    now = time.time()
    rows = {e: describe(store, e, now, None) for e in store.entries()}
    kept = dict(rows)
    for entry, row in rows.items():
        problem = store.problem(entry.path, digests=True) if damaged else None
        if problem is not None:
            pruner.entry(entry, row, f"damaged: {problem}", kept)
        elif age_limit is not None and row["age_s"] > age_limit:
            pruner.entry(entry, row, f"last used {human_age(row['age_s'])} ago", kept)
    if size_limit is not None:
        total = sum(r["size"] for r in kept.values())
        for entry, row in sorted(kept.items(), key=lambda item: -item[1]["age_s"]):  # least recently used first
            if total <= size_limit:
                break
            if pruner.entry(entry, row, f"least recently used ({human_age(row['age_s'])} ago), over "
                                        f"--max-size {max_size}", kept):
                total -= row["size"]
    if age_limit is not None:
        for leftover in store.leftovers():
            found = _tree(leftover.path)
            if found is not None and now - found[1] > age_limit:  # None: gone with an earlier claim
                pruner.leftover(leftover, found[0], found[1], now)
    remain = sum(r["size"] for r in kept.values())
    verb = "would free" if dry_run else "freed"
    print(f"{verb} {human_size(pruner.freed)}: {plural(pruner.entries, 'entry')} and "
          f"{plural(pruner.leftovers, 'leftover')}{' would be' if dry_run else ''} removed; "
          f"{plural(len(kept), 'entry')} ({human_size(remain)}) {'remains' if len(kept) == 1 else 'remain'}"
          + (f", over --max-size {max_size}: the rest is in use" if size_limit is not None and remain > size_limit
             else ""))


class _Pruner:
    """Removes (or, in a dry run, names) entries and leftovers, each under its locks, and counts."""

    def __init__(self, store: Store, dry_run: bool) -> None:
        self.store, self.dry_run = store, dry_run
        self.freed, self.entries, self.leftovers = 0, 0, 0
        self.verb = "would remove" if dry_run else "removed"

    def entry(self, entry: Entry, row: dict[str, Any], why: str, kept: dict[Entry, dict[str, Any]]) -> bool:
        """Remove the entry unless another process holds one of its locks; whether it went."""
        with self.store.claim(entry.locks, keep_files=self.dry_run) as ours:
            if not ours:
                print(f"skipped {entry.label} {row['what']}: in use by another process")
                return False
            if not self.dry_run:
                self.store.remove(entry.path)
        print(f"{self.verb} {entry.label} {row['what']}, {human_size(row['size'])}: {why}")
        self.freed, self.entries = self.freed + row["size"], self.entries + 1
        kept.pop(entry, None)
        return True

    def leftover(self, leftover: Leftover, size: int, newest: float, now: float) -> None:
        """Remove it unless whoever could still be writing it holds its lock, or may be writing a
        staging folder (``Store.writer_of``: a live process with its pid, for at most a day)."""
        label = leftover.path.relative_to(self.store.root).as_posix()
        writer = self.store.writer_of(leftover, newest, now)
        if writer is not None:
            print(f"skipped {leftover.what} {label}: process {writer} may still be writing it (a staging folder "
                  f"counts as abandoned once untouched for {human_age(ABANDONED_AFTER_S)})")
            return
        if not os.path.lexists(leftover.path):  # gone meanwhile: its holder let go, or a journal's claim took it
            return
        with self.store.claim(self.store.leftover_locks(leftover), keep_files=self.dry_run) as ours:
            if not ours:
                if leftover.what != "lock file":  # a held lock is no leftover: nothing to say
                    print(f"skipped {leftover.what} {label}: in use by another process")
                return
            if not self.dry_run:
                self.store.remove_leftover(leftover)
        print(f"{self.verb} {leftover.what} {label}, {human_size(size)}: {human_age(now - newest)} old")
        self.freed, self.leftovers = self.freed + size, self.leftovers + 1
