"""The ``rerank`` command: thin Typer commands over the library.

Imports of anything heavy happen inside the commands, so ``rerank --help`` and ``rerank eval``
start fast. Every failure becomes one line on stderr and an exit code of the contract in
``rerankcli.core.errors`` (0, 1, 2, 75, 130).
"""

from __future__ import annotations

import contextlib
import signal
import sys

from rerankcli.cli import pipeline_commands, eval_commands, describe_commands, cache_commands, explain_command  # noqa: F401  isort: skip (they register the commands, in this order)
from rerankcli.cli.app import app
from rerankcli.core import faults
from rerankcli.core.errors import (EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_INTERRUPTED, EXIT_RESOURCE,
                                   CheckFailed, Interrupted, UserError, is_resource_fault, resource_line)

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


def _on_sigterm(signum, frame) -> None:
    """SIGTERM (a batch scheduler's kill, `timeout`) ends a run as Ctrl-C does: cleanly, exit 130.

    Further SIGTERMs are ignored while the first one unwinds, so cleaning up is not cut short
    (a scheduler that insists sends SIGKILL, and atomic writes make that safe too).
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted("SIGTERM")


def _interrupted(exc: BaseException) -> None:
    """One line for an interrupt: which signal, what was saved, how to resume; exit 130."""
    signal_name = getattr(exc, "signal_name", "SIGINT")
    saved = getattr(exc, "saved", "") or "nothing was half-written"
    print(f"interrupted ({signal_name}): {saved}", file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)


def main() -> None:
    """Entry point keeping the exit-code contract of ``rerankcli.core.errors``.

    0 done, 1 a check failed, 2 bad input, 75 a resource fault, 130 interrupted; each failure
    is one line on stderr, never a traceback (only a bug keeps its traceback).
    """
    with contextlib.suppress(ValueError):  # not the main thread (embedded): keep the default
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        faults.check()
        code = app(standalone_mode=False, prog_name="rerank")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except CheckFailed as exc:
        print(f"failed: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (Interrupted, KeyboardInterrupt) as exc:
        _interrupted(exc)
    except SystemExit:
        raise
    except Exception as exc:
        if type(exc).__name__ == "Abort":  # click turns Ctrl-C (and our SIGTERM) into Abort
            if isinstance(exc.__cause__, KeyboardInterrupt):
                _interrupted(exc.__cause__)
            sys.exit(EXIT_CHECK_FAILED)  # Abort at a prompt
        if is_resource_fault(exc):
            print(f"error: {resource_line(exc)}", file=sys.stderr)
            sys.exit(EXIT_RESOURCE)
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain `rerank`: the help, as click prints it
            print(exc.format_message(), file=sys.stderr)  # type: ignore[attr-defined]
            sys.exit(EXIT_BAD_INPUT)
        line = _usage_error(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    if code == EXIT_INTERRUPTED:  # Typer turned a Ctrl-C outside a pipeline run into exit status 130
        _interrupted(KeyboardInterrupt())
    if isinstance(code, int) and code != 0:  # typer.Exit(code) comes back as a return value
        sys.exit(code)
