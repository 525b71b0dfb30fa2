"""The Typer app every command module registers on, and the options they share."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from rerankcli import __version__
from rerankcli.core.errors import shown
from rerankcli.core.paths import expand_path, file_above

app = typer.Typer(
    help="Retrieval and reranking pipelines declared in YAML; TREC runs in, TREC runs out.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class Format(str, Enum):
    table = "table"
    markdown = "markdown"
    latex = "latex"
    csv = "csv"
    json = "json"


class Test(str, Enum):
    student = "student"
    fisher = "fisher"
    permutation = "permutation"


class Correction(str, Enum):
    holm = "holm"
    bonferroni = "bonferroni"
    none = "none"


DEFAULT_METRICS = ["ndcg@10", "mrr@10", "recall@100", "map"]


def path_value(text: str) -> Path:
    """A path option or argument (``parser=path_value``): ``~`` and ``$VAR`` expanded as in a
    pipeline file; an empty path, which would quietly mean the current folder, is refused.

    Typer turns the ``ValueError`` into one line naming the option.
    """
    try:
        path = Path(expand_path(text))
    except ValueError as exc:
        raise ValueError(f"{shown(text)}: {exc}") from None
    blocker = file_above(path)
    if blocker is not None:
        raise ValueError(f"{shown(text)}: {blocker} is a file, not a folder")
    return path


def run_value(text: str) -> str:
    """A run of ``compare`` (``PATH`` or ``NAME=PATH``, or a run's name for ``--baseline``):
    the path expanded as ``path_value`` does; a file whose name holds '=' is taken whole."""
    if text and Path(text).exists():
        return text
    name, sep, rest = text.partition("=")
    if sep and name:
        if not rest:
            raise ValueError(f"{shown(text)}: NAME=PATH needs a path after '='")
        return f"{name}={path_value(rest)}"
    return str(path_value(text))


def _version(value: bool) -> None:
    if value:
        print(f"rerank {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version,
                                                     is_eager=True, help="Print the version.")] = None,
) -> None:
    """rerank: retrieve, rerank, evaluate."""
