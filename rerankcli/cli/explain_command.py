"""``rerank explain``: read why a reasoning stage placed a document where it did."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rerankcli.cli.app import app, path_value
from rerankcli.core.errors import UserError


@app.command("explain")
def explain_command(
    source: Annotated[Path, typer.Argument(help="A pipeline YAML file, or its output folder.", parser=path_value,
                                           metavar="OUTPUT_OR_PIPELINE")],
    stage: Annotated[str, typer.Argument(help="A rerank stage that had reasoning:.")],
    qid: Annotated[str, typer.Argument(help="The query.")],
    docid: Annotated[Optional[str], typer.Argument(help="Only the calls that showed this document.")] = None,
    width: Annotated[int, typer.Option("--width", min=40, help="Wrap the reasoning at this many characters.")] = 100,
) -> None:
    """Print a reasoning stage's calls for one query: the candidates each call saw, the model's
    reasoning (and whether its close was forced), and its answer."""
    from rerankcli.rerank.traces import explain, read_traces

    print(explain(read_traces(_traces_path(source, stage)), qid, docid, width), end="")


def _traces_path(source: Path, stage: str) -> Path:
    """``<output>/<stage>.traces.jsonl.gz`` of an output folder or of a pipeline's output."""
    if source.is_dir():
        return source / f"{stage}.traces.jsonl.gz"
    if not source.exists():
        raise UserError(f"{source}: no such pipeline file or output folder")
    from rerankcli.pipeline.config import load_pipeline

    pipeline = load_pipeline(source)
    if stage not in {s.name for s in pipeline.stages}:
        raise UserError(f"{source}: no stage named {stage!r}; stages: {', '.join(s.name for s in pipeline.stages)}")
    return pipeline.output / f"{stage}.traces.jsonl.gz"
