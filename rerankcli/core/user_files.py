"""Opening the files a user names: regular files only, read in bounded pieces.

Every reader of a user's file (corpus, queries, qrels, run files, the pipeline YAML, prompt
templates, shard files) opens it here, because the ways such a file goes wrong are the same
for all of them and each must end with one line naming the path:

- a FIFO blocks ``open()`` until some writer appears, and a terminal or ``/dev/zero`` never
  ends: anything that is not a regular file (after following symbolic links) is refused by
  its kind, before it is opened for reading;
- a 10 GB file without a line break, or a gzip bomb, has no line end: lines are read in
  blocks and a line longer than ``MAX_LINE_BYTES`` stops the read, so memory stays bounded
  whatever the input;
- readers that must hold a whole file (YAML) read at most a small cap and say so when the
  file is larger.

Faults of the machine rather than the input (permission denied, an I/O error) propagate as the
``OSError`` with its path and errno: the CLI prints them as one line and exits 75.
"""

from __future__ import annotations

import codecs
import errno as errnos
import gzip
import os
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from rerankcli.core.errors import RESOURCE_ERRNOS, UserError, shown, where

MiB = 1 << 20
#: the longest line any reader accepts: far above a real record (a 10 MB JSON line is fine),
#: far below what a missing line break in a multi-GB file would cost in memory
MAX_LINE_BYTES = 32 * MiB
#: the largest file a whole-file reader holds (pipeline YAML, prompt templates)
MAX_TEXT_BYTES = 4 * MiB
#: bytes read (or decompressed) per step
BLOCK_BYTES = 1 * MiB

_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO (named pipe)"),
          (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
          (stat.S_ISSOCK, "socket"))


def kind_of(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words ("regular file", "FIFO (named pipe)", ...)."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "regular file" if stat.S_ISREG(mode) else "special file"


def check_regular(path: str | Path, what: str) -> os.stat_result:
    """The ``stat`` of ``path`` (links followed) if it is a regular file; else one ``UserError`` line.

    ``what`` names the file's role ("run", "qrels", "pipeline"): messages read
    "<path>: run file not found" or "<path>: expected a run file, found a FIFO (named pipe)".
    Resource faults (permission denied on a folder above it, an I/O error) propagate as ``OSError``.
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{path}: {what} file not found{_dangling(path)}") from None
    except NotADirectoryError:
        raise UserError(f"{path}: {what} file not found (a folder in the path is a file)") from None
    except OSError as exc:
        raise _refused(path, what, exc) from None
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{path}: expected a {what} file, found a {kind_of(info.st_mode)}")
    return info


def file_problem(path: str | Path, what: str) -> str | None:
    """``check_regular``'s message as text, or None for a regular file: for validators that
    must raise their own exception type (pydantic's ``ValueError``) to keep the YAML line."""
    try:
        check_regular(path, what)
    except UserError as exc:
        return str(exc)
    return None


def _dangling(path: Path) -> str:
    """`` (a symbolic link to X, which does not exist)`` for a dangling link, else nothing."""
    try:
        target = os.readlink(path)
    except OSError:
        return ""
    return f" (a symbolic link to {shown(target, 120)}, which does not exist)"


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` with ``path`` as its file name when it had none (reads report no path)."""
    if exc.filename is None:
        exc.filename = str(path)
    return exc


def _refused(path: Path, what: str, exc: OSError) -> Exception:
    """The exception for an ``OSError`` of stat/open: the OSError itself when it is a resource fault."""
    if exc.errno in RESOURCE_ERRNOS:
        return _named(exc, path)
    if exc.errno == errnos.ELOOP:
        return UserError(f"{path}: expected a {what} file, found a symbolic link loop")
    if exc.errno == errnos.ENAMETOOLONG:
        return UserError(f"{shown(str(path), 120)}: the {what} file name is too long")
    return UserError(f"{path}: cannot read {what} file ({exc.strerror or exc})")


def open_regular(path: str | Path, what: str) -> BinaryIO:
    """Open a regular file for reading in binary, never blocking on a FIFO swapped in meanwhile.

    ``check_regular`` refuses special files before they are opened (opening some devices has
    effects); opening with ``O_NONBLOCK`` and checking the open file again closes the gap
    between the two, so no path makes this call wait.
    """
    path = Path(path)
    check_regular(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise UserError(f"{path}: {what} file not found") from None
    except OSError as exc:
        raise _refused(path, what, exc) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{path}: expected a {what} file, found a {kind_of(info.st_mode)}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def numbered_lines(path: str | Path, what: str, max_line: int = MAX_LINE_BYTES) -> Iterator[tuple[int, str]]:
    """Every line of a UTF-8 text file, numbered from 1, without its line end (``\\n`` or ``\\r\\n``).

    Gzip when the name ends in ``.gz``. A byte-order mark is dropped. Memory is one block plus
    one line, whatever the file: a line longer than ``max_line`` bytes, or bytes that are not
    UTF-8, stop with the file and line. Blank lines are yielded too (callers skip them, and
    line numbers stay those of an editor).
    """
    for first, lines in line_blocks(path, what, max_line):
        yield from enumerate(lines, start=first)


def line_blocks(path: str | Path, what: str, max_line: int = MAX_LINE_BYTES) -> Iterator[tuple[int, list[str]]]:
    """The lines of ``numbered_lines`` a block at a time: (number of the first, the lines).

    For readers of million-line files (runs) that parse a block with a few C-level passes
    instead of a Python step per line.
    """
    path = Path(path)
    with open_regular(path, what) as raw:
        try:
            if path.name.endswith(".gz"):
                with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                    yield from _gzip_guard(path, _split(unzipped, path, what, max_line))
            else:
                yield from _split(raw, path, what, max_line)
        except OSError as exc:  # an I/O error mid-read: name the file in its one line
            raise _named(exc, path)


def _gzip_guard(path: Path, blocks: Iterator[tuple[int, list[str]]]) -> Iterator[tuple[int, list[str]]]:
    """Blocks of a gzip stream; a stream that is not gzip, or is truncated, is one line."""
    try:
        yield from blocks
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: not a readable gzip file ({exc or type(exc).__name__})") from None
    except OSError as exc:
        if exc.errno in RESOURCE_ERRNOS:
            raise
        raise UserError(f"{path}: not a readable gzip file ({exc})") from None


def _split(handle: BinaryIO, path: Path, what: str, max_line: int) -> Iterator[tuple[int, list[str]]]:
    """Lines of ``handle``, read ``BLOCK_BYTES`` (at most ``max_line``) at a time.

    Each block is decoded before any of its lines is handed out, so a binary file reads as "not
    valid UTF-8" rather than as a malformed first line. The block's length in bytes tracks the
    open line's length (a line break is one byte, never inside a multi-byte character).
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    size = min(BLOCK_BYTES, max_line)  # so that a line inside one block is never over the cap
    number, offset, open_bytes = 1, 0, 0  # the line being read; bytes before this block; its length so far
    pending: list[str] = []
    started = False
    while True:
        block = handle.read(size)
        held = len(decoder.getstate()[0])  # bytes of a character split by the last block
        try:
            text = decoder.decode(block, final=not block)
        except UnicodeDecodeError as exc:
            at = exc.start - held  # within ``block``; negative when the bad bytes were held
            line = number + block[:max(at, 0)].count(b"\n")
            raise UserError(f"{where(path, line)}: not valid UTF-8 text (byte {offset + at})") from None
        if not started and text:
            started = True
            text = text.removeprefix("\ufeff")
        first_break = block.find(b"\n")
        if open_bytes + (len(block) if first_break < 0 else first_break) > max_line:
            raise UserError(f"{where(path, number)}: line {number} is longer than {max_line / MiB:g} MiB; "
                            f"a {what} file holds one record per line")
        if first_break < 0:
            if text:
                pending.append(text)
            open_bytes += len(block)
        else:
            lines = text.split("\n")
            tail = lines.pop()
            if pending:  # the line open since earlier blocks ends here
                lines[0] = "".join(pending) + lines[0]
            if "\r" in text or pending:
                lines = [line[:-1] if line.endswith("\r") else line for line in lines]
            yield number, lines
            number += len(lines)
            pending = [tail] if tail else []
            open_bytes = len(block) - block.rfind(b"\n") - 1
        if not block:
            break
        offset += len(block)
    if pending:
        last = "".join(pending)
        yield number, [last[:-1] if last.endswith("\r") else last]


def read_text(path: str | Path, what: str, limit: int = MAX_TEXT_BYTES) -> str:
    """A whole UTF-8 text file of at most ``limit`` bytes (byte-order mark dropped), or one line why not."""
    path = Path(path)
    with open_regular(path, what) as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise _named(exc, path)
    if len(data) > limit:
        raise UserError(f"{path}: the {what} file is larger than {limit / MiB:g} MiB; "
                        "is this the right file?")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(f"{where(path, line)}: not valid UTF-8 text (byte {exc.start})") from None
