"""IR metrics with trec_eval's exact semantics, in plain numpy.

Why not ranx on this path: importing ranx and loading its numba kernels costs several
seconds per process, and ``rerank eval`` is called from the shell dozens of times (target:
under 1 s). These few metrics are short, and tests pin them to pytrec_eval (trec_eval's own C
code) and to ranx on real runs.

Semantics (trec_eval 9): documents are ordered by score descending, ties by docid
descending; a document is relevant when its judgement is >= ``relevance_level`` (binary
metrics); nDCG uses the judgement itself as gain (negative counts as 0) whatever the level;
unjudged documents are non-relevant; a query is averaged only if it is in both the run and
the qrels, unless ``missing="zero"`` (trec_eval ``-c``) counts absent queries as 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from rerankcli.core.errors import UserError
from rerankcli.core.runs import Run

Qrels = dict[str, dict[str, int]]

ALIASES = {
    "ndcg": "ndcg", "ndcg_cut": "ndcg",
    "mrr": "mrr", "recip_rank": "mrr", "rr": "mrr",
    "recall": "recall", "r": "recall",
    "map": "map", "ap": "map",
    "precision": "p", "p": "p",
    "rprec": "rprec", "r-prec": "rprec",
}
NEED_CUTOFF = {"p"}
NO_CUTOFF = {"rprec"}
METRIC_PATTERN = re.compile(r"^([a-z_-]+?)(?:[@_.](\d+))?$")


@dataclass(frozen=True)
class Metric:
    """A parsed metric name: ``ndcg@10`` is Metric("ndcg", 10); ``map`` has no cutoff."""

    name: str
    k: int | None = None

    def __str__(self) -> str:
        return self.name if self.k is None else f"{self.name}@{self.k}"


def parse_metric(text: str) -> Metric:
    """Parse ``ndcg@10``, ``mrr@10``, ``recall@100``, ``map``, ``p@5``, ``rprec`` and aliases."""
    match = METRIC_PATTERN.match(text.strip().lower())
    name = ALIASES.get(match.group(1)) if match else None
    if name is None or match is None:
        known = "ndcg[@k], mrr[@k], recall[@k], map[@k], p@k, rprec"
        raise UserError(f"unknown metric {text!r}; known: {known}")
    k = int(match.group(2)) if match.group(2) else None
    if k is not None and k < 1:
        raise UserError(f"metric {text!r}: the cutoff must be at least 1")
    if name in NEED_CUTOFF and k is None:
        raise UserError(f"metric {text!r} needs a cutoff, e.g. {name}@10")
    if name in NO_CUTOFF and k is not None:
        raise UserError(f"metric {text!r} takes no cutoff")
    return Metric(name, k)


@dataclass
class Evaluation:
    """Per-query values and their means, plus which queries were left out and why."""

    per_query: dict[str, dict[str, float]]  # metric -> qid -> value
    means: dict[str, float]
    queries: int
    run_only: list[str] = field(default_factory=list)  # in the run, not judged: ignored
    qrels_only: list[str] = field(default_factory=list)  # judged, not in the run


def _discounts(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, n + 2, dtype=np.float64))


def _dcg(gains: np.ndarray) -> float:
    return float(np.dot(gains, _discounts(len(gains)))) if len(gains) else 0.0


def query_value(metric: Metric, judged: np.ndarray, ideal: np.ndarray, level: int) -> float:
    """One metric of one query.

    ``judged``: the judgement of each retrieved document in rank order (0 when unjudged);
    ``ideal``: all judgements of the query, sorted descending.
    """
    k = metric.k if metric.k is not None else len(judged)
    if metric.name == "ndcg":
        # Without a cutoff trec_eval's ideal ranking holds every judged document, not just
        # as many as were retrieved.
        ideal_k = metric.k if metric.k is not None else len(ideal)
        ideal_dcg = _dcg(np.clip(ideal[:ideal_k], 0, None).astype(np.float64))
        if ideal_dcg <= 0:
            return 0.0
        return _dcg(np.clip(judged[:k], 0, None).astype(np.float64)) / ideal_dcg
    relevant = judged >= level
    num_rel = int(np.count_nonzero(ideal >= level))
    if metric.name == "mrr":
        hits = np.flatnonzero(relevant[:k])
        return 1.0 / (hits[0] + 1) if len(hits) else 0.0
    if metric.name == "p":
        return float(np.count_nonzero(relevant[:k])) / k
    if num_rel == 0:
        return 0.0
    if metric.name == "recall":
        return float(np.count_nonzero(relevant[:k])) / num_rel
    if metric.name == "rprec":
        return float(np.count_nonzero(relevant[:num_rel])) / num_rel
    if metric.name == "map":
        top = relevant[:k]
        ranks = np.flatnonzero(top) + 1
        return float(np.sum(np.arange(1, len(ranks) + 1) / ranks)) / num_rel
    raise AssertionError(f"unhandled metric {metric}")


def evaluate(
    run: Run,
    qrels: Qrels,
    metrics: list[Metric],
    relevance_level: int = 1,
    missing: str = "skip",
) -> Evaluation:
    """Evaluate ``run`` against ``qrels``; see the module docstring for the exact semantics."""
    if missing not in ("skip", "zero"):
        raise UserError(f"missing={missing!r}: use 'skip' or 'zero'")
    judged_qids = sorted(set(run.scores) & set(qrels))
    per_query: dict[str, dict[str, float]] = {str(m): {} for m in metrics}
    for qid in judged_qids:
        judgements = qrels[qid]
        ranked = run.ranked(qid)
        judged = np.fromiter((judgements.get(doc, 0) for doc, _ in ranked), np.int64, len(ranked))
        ideal = np.sort(np.fromiter(judgements.values(), np.int64, len(judgements)))[::-1]
        for metric in metrics:
            per_query[str(metric)][qid] = query_value(metric, judged, ideal, relevance_level)
    qrels_only = sorted(set(qrels) - set(run.scores))
    if missing == "zero":
        for values in per_query.values():
            values.update({qid: 0.0 for qid in qrels_only})
    means = {
        name: (float(np.mean(list(values.values()))) if values else 0.0)
        for name, values in per_query.items()
    }
    return Evaluation(
        per_query=per_query,
        means=means,
        queries=len(next(iter(per_query.values()), {})),
        run_only=sorted(set(run.scores) - set(qrels)),
        qrels_only=qrels_only,
    )
