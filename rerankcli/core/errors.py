"""The one exception type that reaches the user as a single line and exit code 2.

Anything the user can fix (a malformed file, an unknown field, a missing model) raises
``UserError`` with a message that names the file and line or the stage and field. The CLI
prints it without a traceback; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""

    exit_code = 2


def where(path: str | Path, line: int | None = None) -> str:
    """``file`` or ``file:line``, the prefix of every message about a file."""
    return f"{path}:{line}" if line is not None else str(path)


def shown(value: object, limit: int = 60) -> str:
    """``repr`` of a value from a user's file, cut to ``limit`` characters.

    Error messages quote what they found; a 10 MB token must not become a 10 MB line.
    """
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} characters)"
