"""The exceptions that reach the user as one line, and the exit codes they end with.

The exit-code contract every ``rerank`` command keeps (written in the README):

* 0   done;
* 1   a check failed (``doctor --require``, ``cache verify``): the answer is "no", not an error;
* 2   bad input: a malformed file, an unknown field, a missing model; the line names the file
      and line, or the stage and field, or the option;
* 75  a resource fault (``EX_TEMPFAIL``): disk full, permission denied, read-only folder, I/O
      error, out of memory; the line names the path and the errno; rerunning after the fault is
      fixed resumes;
* 130 interrupted (SIGINT or SIGTERM): the line says what was saved and how to resume.

Anything else is a bug and keeps its traceback. In every case nothing is left half-written.
"""

from __future__ import annotations

import errno as errnos
import os
from pathlib import Path

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_RESOURCE = 75
EXIT_INTERRUPTED = 130

# errnos that mean "the machine cannot do this now", not "the input is wrong"
RESOURCE_ERRNOS = frozenset({errnos.ENOSPC, errnos.EDQUOT, errnos.EACCES, errnos.EPERM, errnos.EROFS,
                             errnos.EIO, errnos.ENOMEM, errnos.EMFILE, errnos.ENFILE, errnos.EFBIG})


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""

    exit_code = EXIT_BAD_INPUT


class CheckFailed(Exception):
    """A check the user asked for did not pass (``doctor --require``, ``cache verify``): exit 1."""

    exit_code = EXIT_CHECK_FAILED


class ResourceError(Exception):
    """The machine refused: disk full, permission, read-only, I/O error, memory. Exit 75."""

    exit_code = EXIT_RESOURCE


class Interrupted(BaseException):
    """SIGINT or SIGTERM; ``saved`` says what a rerun will reuse (exit 130).

    A BaseException like KeyboardInterrupt, so no ``except Exception`` swallows it, but not a
    KeyboardInterrupt: click and Typer turn those into a bare exit status and lose the message.
    """

    exit_code = EXIT_INTERRUPTED

    def __init__(self, signal_name: str = "SIGINT", saved: str = "") -> None:
        super().__init__(signal_name)
        self.signal_name, self.saved = signal_name, saved


def is_resource_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is the machine refusing (exit 75) rather than a bug."""
    if isinstance(exc, (MemoryError, ResourceError)):
        return True
    return isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS


def resource_line(exc: BaseException) -> str:
    """One line for a resource fault: the path, what happened and the errno's name."""
    if isinstance(exc, MemoryError):
        return "out of memory (MemoryError); free memory or lower batch_size, depth or the number of workers"
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errnos.errorcode.get(exc.errno, str(exc.errno))
        reason = exc.strerror or os.strerror(exc.errno)
        path = exc.filename if exc.filename is not None else "(no path)"
        if exc.filename2 is not None:
            path = f"{path} -> {exc.filename2}"
        return f"{path}: {reason} ({name})"
    return str(exc)


def where(path: str | Path, line: int | None = None) -> str:
    """``file`` or ``file:line``, the prefix of every message about a file."""
    return f"{path}:{line}" if line is not None else str(path)


def shown(value: object, limit: int = 60) -> str:
    """``repr`` of a value from a user's file, cut to ``limit`` characters.

    Error messages quote what they found; a 10 MB token must not become a 10 MB line.
    """
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} characters)"
