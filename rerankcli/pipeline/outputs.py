"""What a pipeline leaves in its output folder: each stage's run and manifest, metrics, reports.

The cache holds every stage's output under its key; these functions copy a stage's entry into
``<output>/`` (atomically, file by file), show an evaluate stage's table, and make sure no
output file would overwrite one of the pipeline's own input files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from rerankcli.core.atomic import copy_file, write_text
from rerankcli.core.errors import UserError
from rerankcli.core.stage import StageConfig
from rerankcli.evaluate.compare import Comparison
from rerankcli.evaluate.evaluate_stage import EvaluateStage
from rerankcli.pipeline.config import Pipeline


#: files a stage's cache entry may hold beside its run (``StageOutput.files``)
EXTRA_FILES = ("traces.jsonl.gz",)


def export(stage: StageConfig, entry: Path, pipeline: Pipeline, inputs: list[str],
           metrics: dict[str, dict[str, float]], log: Callable[[str], None]) -> list[Path]:
    """Copy the stage's cache ``entry`` into the output folder; the files written.

    An evaluate stage's means are added to ``metrics`` (for ``metrics.json``) and its table
    is printed, with its comparison reports when it has a baseline.
    """
    out = pipeline.output
    manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
    manifest.update({"stage": stage.name, "pipeline": str(pipeline.source), "input_stages": inputs})
    manifest_path = out / f"{stage.name}.manifest.json"
    written = [manifest_path]
    if stage.produces == "run":
        copy_file(entry / "run.trec", out / f"{stage.name}.trec")
        written.insert(0, out / f"{stage.name}.trec")
        for name in manifest.get("files", []):  # a reasoning stage's traces
            copy_file(entry / name, out / f"{stage.name}.{name}")
            written.insert(1, out / f"{stage.name}.{name}")
        for name in sorted(set(EXTRA_FILES) - set(manifest.get("files", []))):
            (out / f"{stage.name}.{name}").unlink(missing_ok=True)  # left by an earlier config of the stage
    else:
        results = json.loads((entry / "metrics.json").read_text(encoding="utf-8"))["runs"]
        for name, result in zip(inputs, results):
            metrics.setdefault(name, {}).update(result["means"])
        comparison = stage.comparison(inputs, results) if isinstance(stage, EvaluateStage) else None
        show_metrics(stage, inputs, results, comparison, log)
        if isinstance(stage, EvaluateStage) and comparison is not None:
            written += stage.write_reports(comparison, out)
    write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return written


def show_metrics(stage: StageConfig, inputs: list[str], results: list[dict], comparison: Comparison | None,
                 log: Callable[[str], None]) -> None:
    """The evaluate stage's table on stdout; notes (skipped queries, ...) through ``log``."""
    from rerankcli.evaluate.report import render, render_comparison

    rows = {name: result["means"] for name, result in zip(inputs, results)}
    log(f"[{stage.name}] {results[0]['queries']} queries evaluated")
    if comparison is None:
        print(render(rows, "table"), end="", flush=True)
    else:
        print(render_comparison(comparison, "table"), end="", flush=True)
        for note in comparison.notes():
            log(f"[{stage.name}] note: {note}")
    for name, result in zip(inputs, results):
        if result["queries_missing_from_run"]:
            log(f"[{stage.name}] note: {result['queries_missing_from_run']} judged queries "
                f"have no results in '{name}' (skipped; missing: zero counts them as 0)")


def check_outputs_do_not_overwrite_inputs(pipeline: Pipeline) -> None:
    """Refuse a pipeline whose output folder would overwrite its corpus, queries, qrels or a loaded run."""
    out = pipeline.output
    planned = {out / "metrics.json"}
    for stage in pipeline.stages:
        planned |= {out / f"{stage.name}.trec", out / f"{stage.name}.manifest.json"}
        if isinstance(stage, EvaluateStage):
            planned |= set(stage.report_files(out))
    sources = [getattr(pipeline.dataset, p) for p in ("corpus", "queries", "qrels")]
    sources += [getattr(s, "run", None) for s in pipeline.stages]
    sources += [getattr(s, "qrels", None) for s in pipeline.stages]
    resolved = {p.resolve() for p in planned}
    folded = {str(p).casefold(): p for p in resolved}
    for source in sources:
        if not isinstance(source, Path):
            continue
        if source.resolve() in resolved:
            raise UserError(f"{pipeline.source}: output would overwrite the input file {source}")
        twin = folded.get(str(source.resolve()).casefold())
        if twin is not None:  # one file on macOS and Windows
            raise UserError(f"{pipeline.source}: output {twin.name} would overwrite the input file {source} on a "
                            "case-insensitive file system (macOS, Windows); rename the stage or move the file")
