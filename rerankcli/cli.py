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


class Executor(str, Enum):
    local = "local"
    ray = "ray"


@app.command("run")
def run_command(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file.")],
    force: Annotated[Optional[list[str]], typer.Option(
        "--force", help="Recompute STAGE (repeatable); '--force all' recomputes every stage.",
        metavar="STAGE")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(
        "--cache-dir", help="Cache folder (default: pipeline 'cache:', $RERANK_CACHE_DIR, "
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
    from rerankcli.config import load_pipeline
    from rerankcli.shard import Shard

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
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file whose shards to join.")],
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Cache folder.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Join the shard results of `rerank run --shard i/N` into the full runs, then finish the pipeline.

    Every shard 0..N-1 of each LLM rerank stage must be in <output>/shards/ and made by this
    pipeline's configuration; no LLM query is computed here.
    """
    from rerankcli.config import load_pipeline

    _run_pipeline(load_pipeline(pipeline), cache_dir, None, quiet, merge_only=True)


def _run_pipeline(config, cache_dir: Optional[Path], force: Optional[list[str]], quiet: bool, **options) -> None:
    from rerankcli.pipeline import Runner

    wanted = {"*" if name == "all" else name for name in force or []}
    silent = (lambda message: None) if quiet else None
    runner = Runner(config, cache_dir, wanted, log=silent, show_progress=not quiet, **options)
    report = runner.run()
    fresh = sum(not s.cached for s in report.stages)
    print(f"{len(report.stages)} stages ({fresh} computed, {len(report.stages) - fresh} cached); "
          f"outputs in {config.output}", file=sys.stderr)


@app.command("plan")
def plan_command(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file.")],
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Cache folder.")] = None,
    executor: Annotated[Optional[Executor], typer.Option("--executor", help="Plan for this executor.")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.table,
) -> None:
    """Before spending compute: per stage, cached or not, queries, candidates, LLM calls and prompt tokens."""
    import json

    from rerankcli.config import load_pipeline
    from rerankcli.pipeline import Runner
    from rerankcli.plan import plan_pipeline, render_plan

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
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file.")],
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir")] = None,
) -> None:
    """Check a pipeline without running it: fields, inputs, models, and the data files of the
    stages that would run; show what is cached."""
    from rerankcli.config import load_pipeline
    from rerankcli.pipeline import Runner

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
    from rerankcli.evaluate.metrics import parse_metric
    from rerankcli.evaluate.report import render

    metrics = [parse_metric(m) for m in (metric or DEFAULT_METRICS)]
    named: dict[str, Path] = {}
    for path in runs:
        named[_unique_name(path, named)] = path
    evaluations = _evaluate_runs(named, qrels, metrics, relevance_level, missing)
    sys.stdout.write(render({name: result.means for name, result in evaluations.items()}, fmt.value))


def _unique_name(path: Path, taken: dict) -> str:
    name = path.name
    return name if name not in taken else str(path)


def _evaluate_runs(named: dict[str, Path], qrels: Path, metrics: list, relevance_level: int,
                   missing: str = "skip") -> dict:
    """Each named run file evaluated against ``qrels``; a run with no judged query stops."""
    from rerankcli.data.formats import read_qrels
    from rerankcli.evaluate.metrics import evaluate
    from rerankcli.runs import read_run

    judgements = read_qrels(qrels)
    evaluations = {}
    for name, path in named.items():
        result = evaluate(read_run(path), judgements, metrics, relevance_level, missing)
        if result.queries == 0:
            raise UserError(f"{path}: no query of the run is in {qrels}")
        evaluations[name] = result
    return evaluations


@app.command("compare")
def compare_command(
    runs: Annotated[list[str], typer.Argument(
        help="Run files, named by file stem, or NAME=PATH.", metavar="RUN...")],
    qrels: Annotated[Path, typer.Option("--qrels", help="Qrels (TREC or BEIR TSV).")],
    metric: Annotated[Optional[list[str]], typer.Option(
        "--metric", "-m", help="Metric (repeatable); default ndcg@10, mrr@10, recall@100, map.")] = None,
    baseline: Annotated[Optional[str], typer.Option(
        help="The run the others are tested against: a name, or a file (default: the first run).")] = None,
    test: Annotated[Test, typer.Option(
        "--test", help="student: paired t-test; fisher (= permutation): randomisation test.")] = Test.student,
    correction: Annotated[Correction, typer.Option(
        help="Adjust p-values for the number of runs compared with the baseline.")] = Correction.holm,
    alpha: Annotated[float, typer.Option(help="Significance level for the markers.")] = 0.05,
    permutations: Annotated[int, typer.Option(
        help="Randomisation test: sign assignments sampled (exact when 2^queries is fewer).")] = 10_000,
    seed: Annotated[int, typer.Option(help="Randomisation test: random seed.")] = 0,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    per_query: Annotated[bool, typer.Option(
        "--per-query", help="Print each query's value per metric and run instead of the summary.")] = False,
    plot: Annotated[Optional[Path], typer.Option(
        help="Also draw the sorted per-query differences against the baseline to this PNG.")] = None,
    relevance_level: Annotated[int, typer.Option(
        "--relevance-level", "-l", help="Judgement >= this is relevant (binary metrics), as trec_eval -l.")] = 1,
) -> None:
    """Compare runs with a baseline: metrics, significance, wins/ties/losses per query."""
    from rerankcli.evaluate.compare import compare
    from rerankcli.evaluate.metrics import parse_metric
    from rerankcli.evaluate.report import render_comparison, render_per_query

    if not 0.0 < alpha < 1.0:
        raise UserError(f"--alpha {alpha}: must lie between 0 and 1")
    if permutations < 1:
        raise UserError(f"--permutations {permutations}: must be at least 1")
    if plot is not None and plot.suffix.lower() != ".png":
        raise UserError(f"--plot {plot}: the plot is a PNG; name the file *.png")
    metrics = [parse_metric(m) for m in (metric or DEFAULT_METRICS)]
    named = _named_runs(runs)
    if baseline is not None and baseline not in named:  # a file: it joins the runs, first
        if "=" not in baseline and not Path(baseline).exists():
            raise UserError(f"--baseline {baseline!r}: neither a run named here ({', '.join(named)}) "
                            "nor a run file")
        extra = _named_runs([baseline])
        baseline = next(iter(extra))
        if baseline in named:
            raise UserError(f"--baseline: a run named {baseline!r} is already compared; "
                            "name the baseline with NAME=PATH")
        named = {**extra, **named}
    if len(named) < 2:
        raise UserError("compare needs at least two runs (or one and a --baseline)")
    evaluations = _evaluate_runs(named, qrels, metrics, relevance_level)
    comparison = compare(evaluations, baseline or next(iter(named)), test.value, correction.value,
                         alpha, permutations, seed)
    for note in comparison.notes():
        print(f"note: {note}", file=sys.stderr)
    if plot is not None:
        from rerankcli.evaluate.plot import plot_differences

        plot_differences(comparison, plot)
    render_output = render_per_query if per_query else render_comparison
    sys.stdout.write(render_output(comparison, fmt.value))


@app.command("diff")
def diff_command(
    run_a: Annotated[Path, typer.Argument(help="First run file.")],
    run_b: Annotated[Path, typer.Argument(help="Second run file.")],
    depth: Annotated[int, typer.Option(help="Overlap and RBO on the top DEPTH of each query.")] = 10,
    rbo_p: Annotated[float, typer.Option("--rbo-p", help="RBO persistence (weight of depth).")] = 0.9,
    top: Annotated[int, typer.Option(help="Show the TOP queries that changed most (lowest RBO).")] = 10,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """How two runs differ, without qrels: overlap@k, rank-biased overlap, Kendall's tau."""
    from rerankcli.evaluate.overlap import agreement
    from rerankcli.evaluate.report import render_diff
    from rerankcli.runs import read_run

    if depth < 1:
        raise UserError(f"--depth {depth}: must be at least 1")
    if not 0.0 < rbo_p < 1.0:
        raise UserError(f"--rbo-p {rbo_p}: must lie strictly between 0 and 1")
    a, b = read_run(run_a), read_run(run_b)
    rows = agreement(a, b, depth, rbo_p)
    if not rows:
        raise UserError(f"{run_a} and {run_b} have no query in common")
    only_a, only_b = sorted(set(a.scores) - set(b.scores)), sorted(set(b.scores) - set(a.scores))
    sys.stdout.write(render_diff(rows, (str(run_a), str(run_b)), (only_a, only_b), depth, rbo_p,
                                 max(top, 0), fmt.value))


def _named_runs(arguments: list[str]) -> dict[str, Path]:
    """``NAME=PATH`` or ``PATH`` (named by its stem) for each argument; names must differ."""
    named: dict[str, Path] = {}
    for text in arguments:
        name, sep, rest = text.partition("=")
        if sep and name and rest and not Path(text).exists():
            path = Path(rest)
        else:
            path = Path(text)
            name = Path(path.name.removesuffix(".gz")).stem
        if name in named:
            raise UserError(f"two runs are named {name!r} ({named[name]} and {path}); "
                            "name them with NAME=PATH")
        named[name] = path
    return named


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
