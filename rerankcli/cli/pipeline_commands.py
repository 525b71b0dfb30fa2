"""Commands over a pipeline file: run, merge, plan, validate, index; and doctor."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from rerankcli.cli.app import Format, app, path_value
from rerankcli.core.errors import CheckFailed, ResourceError, UserError
from rerankcli.core.library_output import library_output, terminal


class Executor(str, Enum):
    local = "local"
    ray = "ray"


@app.command("run")
def run_command(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file.", parser=path_value)],
    force: Annotated[Optional[list[str]], typer.Option(
        "--force", help="Recompute STAGE (repeatable); '--force all' recomputes every stage.",
        metavar="STAGE")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(
        "--cache-dir", parser=path_value, help="Cache folder (default: pipeline 'cache:', $RERANK_CACHE_DIR, "
                                                   "~/.cache/rerankcli).")] = None,
    shard: Annotated[Optional[str], typer.Option(
        "--shard", metavar="I/N", help="Rerank only shard I of N of the queries (0-based); "
                                       "join the shards with `rerank merge`.")] = None,
    executor: Annotated[Optional[Executor], typer.Option(
        "--executor", help="Where LLM rerank stages compute (default: the pipeline's 'executor:', else local).")] = None,
    address: Annotated[Optional[str], typer.Option(
        "--address", help="Ray cluster to join ('auto', 'ray://head:10001'); default: a local Ray instance.")] = None,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", min=1, help="Ray actors, one model each.")] = None,
    gpus: Annotated[Optional[float], typer.Option(
        "--gpus-per-worker", min=0, help="GPUs each Ray actor reserves.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Run a pipeline: each stage's run is cached; unchanged stages are reused; a killed run resumes."""
    from rerankcli.execution.shard import Shard
    from rerankcli.pipeline.config import load_pipeline

    chosen_shard = Shard.parse(shard) if shard is not None else None
    config = load_pipeline(pipeline)
    kind = executor.value if executor else config.executor.type
    given = {"address": address, "workers": workers, "num_gpus": gpus}
    options = {"--address": address, "--workers": workers, "--gpus-per-worker": gpus}
    extra = [option for option, value in options.items() if value is not None]
    if extra and kind != "ray":
        raise UserError(f"{extra[0]} only applies to --executor ray")
    overrides = {"type": kind, **{k: v for k, v in given.items() if v is not None}}
    chosen = config.executor.model_copy(update=overrides)
    _run_pipeline(config, cache_dir, force, quiet, shard=chosen_shard, executor=chosen)


@app.command("merge")
def merge_command(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file whose shards to join.", parser=path_value)],
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Cache folder.", parser=path_value)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Join the shard results of `rerank run --shard i/N` into the full runs, then finish the pipeline.

    Every shard 0..N-1 of each LLM rerank stage must be in <output>/shards/ and made by this
    pipeline's configuration; no LLM query is computed here.
    """
    from rerankcli.pipeline.config import load_pipeline

    _run_pipeline(load_pipeline(pipeline), cache_dir, None, quiet, merge_only=True)


@app.command("bias")
def bias_command(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file.", parser=path_value)],
    stage: Annotated[str, typer.Option("--stage", help="The LLM rerank stage to test.")],
    shuffles: Annotated[int, typer.Option("--shuffles", min=0, help="Seeded shuffles besides the reversed order.")] = 3,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Cache folder.", parser=path_value)] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.table,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Order sensitivity: rerun a stage on reversed and shuffled candidates; Kendall's tau, nDCG@10
    spread and how often the order shown decides, per query and overall.

    Each order is a cached stage of its own (outputs in <output>/bias-STAGE/), computed through the
    scheduler like `rerank run`, so a second call only measures.
    """
    from rerankcli.pipeline.bias import render, run_bias
    from rerankcli.pipeline.config import load_pipeline

    if fmt not in (Format.table, Format.json):
        raise UserError(f"--format {fmt.value}: bias prints table or json")
    config = load_pipeline(pipeline)
    with _library_output(config, quiet, "bias"):
        report = run_bias(config, stage, shuffles, cache_dir, log=_silent if quiet else _say,
                          show_progress=not quiet)
    print(report.to_json() if fmt == Format.json else render(report), end="")


def _say(message: str) -> None:
    """A line of ours on stderr, also while libraries' output goes to the log file."""
    print(message, file=terminal(), flush=True)


def _silent(message: str) -> None:
    pass


@contextmanager
def _library_output(config, quiet: bool, command: str) -> Iterator[None]:
    """Libraries' logs, warnings and bars: into <output>/rerank.log, or nowhere with --quiet.

    A failure's one line names the log when libraries wrote to it (vLLM's "see root cause above").
    """
    with library_output(None if quiet else config.output / "rerank.log",
                        f"rerank {command} {config.source}") as log:
        try:
            yield
        except (UserError, ResourceError) as exc:
            message, cause = str(exc), None
            if "root cause above" in message:  # vLLM's engine process logged the cause: name it here
                cause = log.root_cause()
                message = re.split(r"\.? See root cause above", message)[0]
                message += f"; root cause: {shown_cause(cause)}" if cause else ""
            if log.written:
                message += f" (libraries' output: {log.path})"
            if cause is not None and "memory" in cause.lower():  # the machine's limit, not the input
                raise ResourceError(message) from None
            exc.args = (message,)
            raise


def shown_cause(line: str, limit: int = 240) -> str:
    """A library's exception line, cut so the one error line stays readable."""
    return line if len(line) <= limit else line[:limit].rstrip() + "..."


def _run_pipeline(config, cache_dir: Optional[Path], force: Optional[list[str]], quiet: bool, **options) -> None:
    from rerankcli.pipeline.runner import Runner

    names = {stage.name for stage in config.stages}  # a stage named 'all' is forced by its name
    wanted = {"*" if name == "all" and "all" not in names else name for name in force or []}
    command = "merge" if options.get("merge_only") else "run"
    with _library_output(config, quiet, command):
        runner = Runner(config, cache_dir, wanted, log=_silent if quiet else _say, show_progress=not quiet,
                        **options)
        report = runner.run()
    fresh = sum(not s.cached for s in report.stages)
    print(f"{len(report.stages)} stages ({fresh} computed, {len(report.stages) - fresh} cached); "
          f"outputs in {config.output}", file=sys.stderr)


@app.command("plan")
def plan_command(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file.", parser=path_value)],
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Cache folder.", parser=path_value)] = None,
    executor: Annotated[Optional[Executor], typer.Option("--executor", help="Plan for this executor.")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.table,
) -> None:
    """Before spending compute: per stage, cached or not, queries, candidates, LLM calls and prompt tokens."""
    import json

    from rerankcli.pipeline.config import load_pipeline
    from rerankcli.pipeline.plan import plan_pipeline, render_plan
    from rerankcli.pipeline.runner import Runner

    if fmt not in (Format.table, Format.json):
        raise UserError(f"--format {fmt.value}: plan prints table or json")
    config = load_pipeline(pipeline)
    chosen = config.executor.model_copy(update={"type": executor.value}) if executor else None
    plans = plan_pipeline(Runner(config, cache_dir, log=lambda message: None, show_progress=False,
                                 executor=chosen))
    if fmt == Format.json:
        print(json.dumps([p.to_json() for p in plans], indent=2))
    else:
        print(render_plan(plans), end="")


@app.command("validate")
def validate_command(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file.", parser=path_value)],
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", parser=path_value)] = None,
) -> None:
    """Check a pipeline without running it: fields, inputs, models, and the data files of the
    stages that would run; show what is cached."""
    from rerankcli.pipeline.config import load_pipeline
    from rerankcli.pipeline.runner import Runner

    config = load_pipeline(pipeline)
    runner = Runner(config, cache_dir, show_progress=False)
    keys = runner.plan()
    runner.check_inputs(keys)
    for stage in config.stages:
        key = keys[stage.name][0]
        reads = ", ".join(config.inputs[stage.name]) or "-"
        state = "cached" if runner.cached(key) else "to run"
        print(f"{stage.name:<16} {stage.type:<9} reads {reads:<24} {state:<7} {key[:12]}")
    print(f"{pipeline}: valid ({len(config.stages)} stages)")


@app.command("index")
def index_command(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file.", parser=path_value)],
    stage: Annotated[Optional[list[str]], typer.Option(
        "--stage", help="Only this retrieve stage (repeatable); default: all of them.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", parser=path_value)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Build the indexes a pipeline's retrieve stages search (Lucene, bm25s, embeddings), once.

    They are cached like stage outputs: 'rerank run' then reuses them, and so do other
    pipelines over the same corpus with the same index settings.
    """
    from rerankcli.core.hashing import save_memo
    from rerankcli.pipeline.config import load_pipeline
    from rerankcli.pipeline.runner import Runner

    config = load_pipeline(pipeline)
    names = {s.name for s in config.stages}
    for name in stage or []:
        if name not in names:
            raise UserError(f"--stage: no stage named {name!r} in {pipeline}")
    with _library_output(config, quiet, "index"):
        runner = Runner(config, cache_dir, log=_silent if quiet else _say, show_progress=not quiet)
        runner.plan()  # validates every stage (data, models, Java) before building anything
        for chosen in config.stages:
            if stage and chosen.name not in stage:
                continue
            line = chosen.prepare(runner.ctx)
            if line is not None or stage:
                print(f"{chosen.name}: {line or 'nothing to index'}")
    save_memo()


@app.command("doctor")
def doctor_command(
    require: Annotated[Optional[list[str]], typer.Option(
        "--require", help="Exit 1 unless this backend is usable (repeatable).", metavar="BACKEND")] = None,
) -> None:
    """Report which retrieval backends work here, and why the others do not."""
    from rerankcli.cli.doctor import checks

    known = checks()
    unknown = sorted(set(require or []) - set(known))
    if unknown:
        raise UserError(f"--require: unknown backend {unknown[0]!r}; known: {', '.join(known)}")
    failed = []
    for name, check in known.items():
        result = check()
        print(f"{name:<10} {'ok' if result.ok else 'unusable':<9} {result.detail}")
        for note in result.notes:
            print(f"{'':<20} {note}")
        if not result.ok and name in (require or []):
            failed.append(name)
    if failed:
        raise CheckFailed(f"--require: {', '.join(failed)} {'is' if len(failed) == 1 else 'are'} unusable here")
