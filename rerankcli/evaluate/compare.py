"""Compare evaluated runs against a baseline: means, paired tests, wins/ties/losses per query.

Shared by ``rerank compare`` and the evaluate stage's ``baseline:``. Every number is computed
on the queries that all runs have (and the qrels judge): a mean over other queries than its
test would be a different experiment. Which queries each run loses that way is reported.
The family for the correction is, per metric, the runs compared with the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rerankcli.core.errors import UserError
from rerankcli.evaluate.metrics import Evaluation
from rerankcli.evaluate.significance import TEST_NAMES, adjust, p_value


@dataclass
class PairedResult:
    """One run against the baseline on one metric."""

    delta: float  # mean(run) - mean(baseline)
    p: float
    p_adjusted: float
    significant: bool
    wins: int
    ties: int
    losses: int


@dataclass
class Comparison:
    """Everything ``rerank compare`` prints, on ``queries`` (the shared, judged ones)."""

    runs: list[str]
    metrics: list[str]
    baseline: str
    queries: list[str]
    values: dict[str, dict[str, np.ndarray]]  # metric -> run -> value per query (in ``queries``)
    tests: dict[str, dict[str, PairedResult]]  # metric -> run (not the baseline) -> result
    test: str
    correction: str
    alpha: float
    left_out: dict[str, list[str]] = field(default_factory=dict)  # run -> its queries others lack
    absent: dict[str, list[str]] = field(default_factory=dict)  # run -> judged queries it lacks

    def mean(self, metric: str, run: str) -> float:
        values = self.values[metric][run]
        return float(values.mean()) if len(values) else 0.0

    def describe(self) -> str:
        """One line: what was tested, how, on how many queries."""
        fixed = "" if self.correction == "none" else f", {self.correction}-adjusted"
        return (f"{len(self.queries)} queries; baseline {self.baseline}; "
                f"{TEST_NAMES[self.test]}{fixed}, alpha {self.alpha:g}")

    def notes(self) -> list[str]:
        """Queries left out of the comparison, per run, in words."""
        lines = []
        for run in self.runs:
            if self.left_out.get(run):
                lines.append(f"{run}: {len(self.left_out[run])} of its judged queries are missing from "
                             f"another run and were left out ({_sample(self.left_out[run])})")
        return lines


def _sample(qids: list[str], shown: int = 5) -> str:
    more = f", … {len(qids) - shown} more" if len(qids) > shown else ""
    return ", ".join(qids[:shown]) + more


def compare(
    evaluations: dict[str, Evaluation],
    baseline: str,
    test: str = "student",
    correction: str = "holm",
    alpha: float = 0.05,
    permutations: int = 10_000,
    seed: int = 0,
) -> Comparison:
    """Compare every evaluated run with ``baseline`` on the queries all of them have."""
    if baseline not in evaluations:
        raise UserError(f"baseline {baseline!r} is not among the runs: {', '.join(evaluations)}")
    runs = list(evaluations)
    metrics = list(next(iter(evaluations.values())).per_query)
    evaluated = {run: set(next(iter(e.per_query.values()), {})) for run, e in evaluations.items()}
    shared = sorted(set.intersection(*evaluated.values()))
    if not shared:
        raise UserError("the runs have no judged query in common: nothing to compare")
    values = {metric: {run: np.array([evaluations[run].per_query[metric][q] for q in shared])
                       for run in runs} for metric in metrics}
    others = [run for run in runs if run != baseline]
    tests: dict[str, dict[str, PairedResult]] = {}
    for metric in metrics:
        base = values[metric][baseline]
        raw = [p_value(test, values[metric][run], base, permutations, seed) for run in others]
        adjusted = adjust(raw, correction)
        tests[metric] = {}
        for run, p, p_adj in zip(others, raw, adjusted):
            diff = values[metric][run] - base
            tied = np.isclose(diff, 0.0, rtol=0.0, atol=1e-12)
            tests[metric][run] = PairedResult(
                delta=float(diff.mean()), p=p, p_adjusted=p_adj, significant=p_adj < alpha,
                wins=int(np.count_nonzero((diff > 0) & ~tied)), ties=int(np.count_nonzero(tied)),
                losses=int(np.count_nonzero((diff < 0) & ~tied)))
    shared_set = set(shared)
    return Comparison(
        runs=runs, metrics=metrics, baseline=baseline, queries=shared, values=values, tests=tests,
        test=test, correction=correction, alpha=alpha,
        left_out={run: sorted(evaluated[run] - shared_set) for run in runs},
        absent={run: list(evaluations[run].qrels_only) for run in runs},
    )
