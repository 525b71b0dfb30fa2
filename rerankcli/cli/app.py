"""The Typer app every command module registers on, and the options they share."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from rerankcli import __version__

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
