"""The ``rerank`` command: thin Typer commands over the library.

Imports of anything heavy happen inside the commands, so ``rerank --help`` and ``rerank eval``
start fast. Every ``UserError`` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from rerankcli import __version__
from rerankcli.errors import UserError

app = typer.Typer(
    help="Retrieval and reranking pipelines declared in YAML; TREC runs in, TREC runs out.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


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


@app.command("run")
def run_command(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file.")],
    force: Annotated[Optional[list[str]], typer.Option(
        "--force", help="Recompute STAGE (repeatable); '--force all' recomputes every stage.",
        metavar="STAGE")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(
        "--cache-dir", help="Cache folder (default: pipeline 'cache:', $RERANK_CACHE_DIR, "
                            "~/.cache/rerankcli).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Run a pipeline: each stage's run is cached; unchanged stages are reused."""
    from rerankcli.config import load_pipeline
    from rerankcli.pipeline import Runner

    config = load_pipeline(pipeline)
    wanted = {"*" if name == "all" else name for name in force or []}
    silent = (lambda message: None) if quiet else None
    runner = Runner(config, cache_dir, wanted, log=silent, show_progress=not quiet)
    report = runner.run()
    fresh = sum(not s.cached for s in report.stages)
    print(f"{len(report.stages)} stages ({fresh} computed, {len(report.stages) - fresh} cached); "
          f"outputs in {config.output}", file=sys.stderr)


@app.command("validate")
def validate_command(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file.")],
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir")] = None,
) -> None:
    """Check a pipeline without running it: fields, inputs, files, models; show what is cached."""
    from rerankcli.config import load_pipeline
    from rerankcli.pipeline import Runner

    config = load_pipeline(pipeline)
    runner = Runner(config, cache_dir, show_progress=False)
    keys = runner.plan()
    for stage in config.stages:
        key = keys[stage.name][0]
        reads = ", ".join(config.inputs[stage.name]) or "-"
        state = "cached" if runner.cached(key) else "to run"
        print(f"{stage.name:<16} {stage.type:<9} reads {reads:<24} {state:<7} {key[:12]}")
    print(f"{pipeline}: valid ({len(config.stages)} stages)")


@app.command("index")
def index_command(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file.")],
    stage: Annotated[Optional[list[str]], typer.Option(
        "--stage", help="Only this retrieve stage (repeatable); default: all of them.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Build the indexes a pipeline's retrieve stages search (Lucene, bm25s, embeddings), once.

    They are cached like stage outputs: 'rerank run' then reuses them, and so do other
    pipelines over the same corpus with the same index settings.
    """
    from rerankcli.config import load_pipeline
    from rerankcli.hashing import save_memo
    from rerankcli.pipeline import Runner

    config = load_pipeline(pipeline)
    names = {s.name for s in config.stages}
    for name in stage or []:
        if name not in names:
            raise UserError(f"--stage: no stage named {name!r} in {pipeline}")
    runner = Runner(config, cache_dir, log=(lambda message: None) if quiet else None,
                    show_progress=not quiet)
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
    from rerankcli.doctor import CHECKS

    unknown = sorted(set(require or []) - set(CHECKS))
    if unknown:
        raise UserError(f"--require: unknown backend {unknown[0]!r}; known: {', '.join(CHECKS)}")
    failed = []
    for name, check in CHECKS.items():
        result = check()
        print(f"{name:<10} {'ok' if result.ok else 'unusable':<9} {result.detail}")
        for note in result.notes:
            print(f"{'':<20} {note}")
        if not result.ok and name in (require or []):
            failed.append(name)
    if failed:
        raise typer.Exit(1)


@app.command("eval")
def eval_command(
    runs: Annotated[list[Path], typer.Argument(help="TREC run files.")],
    qrels: Annotated[Path, typer.Option("--qrels", help="Qrels (TREC or BEIR TSV).")],
    metric: Annotated[Optional[list[str]], typer.Option(
        "--metric", "-m", help="Metric (repeatable): ndcg@10, mrr@10, recall@100, map, p@10, ...")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    relevance_level: Annotated[int, typer.Option(
        "--relevance-level", "-l", help="Judgement >= this is relevant (binary metrics), as trec_eval -l.")] = 1,
    missing: Annotated[str, typer.Option(
        help="Judged queries absent from a run: 'skip' (trec_eval) or 'zero' (trec_eval -c).")] = "skip",
) -> None:
    """Evaluate run files; numbers equal trec_eval's."""
    from rerankcli.data.formats import read_qrels
    from rerankcli.evaluate.metrics import evaluate, parse_metric
    from rerankcli.evaluate.report import render
    from rerankcli.runs import read_run

    metrics = [parse_metric(m) for m in (metric or ["ndcg@10", "mrr@10", "recall@100", "map"])]
    judgements = read_qrels(qrels)
    rows = {}
    for path in runs:
        result = evaluate(read_run(path), judgements, metrics, relevance_level, missing)
        if result.queries == 0:
            raise UserError(f"{path}: no query of the run is in {qrels}")
        rows[_unique_name(path, rows)] = result.means
    sys.stdout.write(render(rows, fmt.value))


def _unique_name(path: Path, taken: dict) -> str:
    name = path.name
    return name if name not in taken else str(path)


def main() -> None:
    """Entry point: one line and exit 2 for user errors, never a traceback for them."""
    try:
        app(standalone_mode=False)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:
        import click

        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
