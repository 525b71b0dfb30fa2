"""Commands over run files: eval, compare, diff (no pipeline needed; they start fast)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rerankcli.cli.app import DEFAULT_METRICS, Correction, Format, Test, app, path_value, run_value
from rerankcli.core.errors import UserError


@app.command("eval")
def eval_command(
    runs: Annotated[list[Path], typer.Argument(help="TREC run files.", parser=path_value)],
    qrels: Annotated[Path, typer.Option("--qrels", help="Qrels (TREC or BEIR TSV).", parser=path_value)],
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
    from rerankcli.core.formats import read_qrels
    from rerankcli.core.runs import read_run
    from rerankcli.evaluate.metrics import evaluate

    judgements = read_qrels(qrels)
    evaluations = {}
    for name, path in named.items():
        run = read_run(path)
        if not any(qid in judgements for qid in run.qids):  # with --missing zero too: all zeros means nothing
            raise UserError(f"{path}: no query of the run is in {qrels}")
        evaluations[name] = evaluate(run, judgements, metrics, relevance_level, missing)
    return evaluations


@app.command("compare")
def compare_command(
    runs: Annotated[list[str], typer.Argument(
        help="Run files, named by file stem, or NAME=PATH.", metavar="RUN...", parser=run_value)],
    qrels: Annotated[Path, typer.Option("--qrels", help="Qrels (TREC or BEIR TSV).", parser=path_value)],
    metric: Annotated[Optional[list[str]], typer.Option(
        "--metric", "-m", help="Metric (repeatable); default ndcg@10, mrr@10, recall@100, map.")] = None,
    baseline: Annotated[Optional[str], typer.Option(
        help="The run the others are tested against: a name, or a file (default: the first run).",
        parser=run_value)] = None,
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
        help="Also draw the sorted per-query differences against the baseline to this PNG.",
        parser=path_value)] = None,
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
    run_a: Annotated[Path, typer.Argument(help="First run file.", parser=path_value)],
    run_b: Annotated[Path, typer.Argument(help="Second run file.", parser=path_value)],
    depth: Annotated[int, typer.Option(help="Overlap and RBO on the top DEPTH of each query.")] = 10,
    rbo_p: Annotated[float, typer.Option("--rbo-p", help="RBO persistence (weight of depth).")] = 0.9,
    top: Annotated[int, typer.Option(help="Show the TOP queries that changed most (lowest RBO).")] = 10,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """How two runs differ, without qrels: overlap@k, rank-biased overlap, Kendall's tau."""
    from rerankcli.core.runs import read_run
    from rerankcli.evaluate.overlap import agreement
    from rerankcli.evaluate.report import render_diff

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
