"""The ``rerank`` command: thin Typer commands over the library.

Imports of anything heavy happen inside the commands, so ``rerank --help`` and ``rerank eval``
start fast. Every ``UserError`` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys

from rerankcli.cli import pipeline_commands, eval_commands, describe_commands  # noqa: F401  isort: skip (they register the commands, in this order)
from rerankcli.cli.app import app
from rerankcli.core.errors import UserError

__all__ = ["app", "main"]


def _usage_error(exc: Exception) -> str | None:
    """One line for a command-line usage error (click's, or the click that typer vendors), else None.

    Matched by shape, not class: typer >= 0.23 raises its own copy of click's exceptions.
    """
    if not (callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int)):
        return None
    ctx = getattr(exc, "ctx", None)
    command = f"{ctx.command_path}: " if ctx is not None else ""
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"{command}{exc.format_message().replace('Value error, ', '')}{hint}"


def main() -> None:
    """Entry point: one line and exit 2 for user errors, never a traceback for them."""
    try:
        app(standalone_mode=False, prog_name="rerank")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:
        if type(exc).__name__ == "Abort":  # click's Abort (Ctrl-C at a prompt)
            sys.exit(1)
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain `rerank`: the help, as click prints it
            print(exc.format_message(), file=sys.stderr)  # type: ignore[attr-defined]
            sys.exit(2)
        line = _usage_error(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
