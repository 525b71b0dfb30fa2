"""How much two runs agree, without qrels: overlap@k, rank-biased overlap, Kendall's tau.

- overlap@k: the share of the top-k that both runs hold (k, or the longer of the two
  truncated lists when both are shorter).
- RBO (Webber, Moffat and Zobel, TOIS 2010), the extrapolated form (their eq. 32, which also
  covers lists of different lengths) on the top-k of each run, persistence ``p``: 1 for the
  same top-k in the same order, 0 for disjoint ones, weighted to the top.
- Kendall's tau over the documents the two runs share anywhere in their lists, ranked by each
  run's order (which is total: ties are already broken by docid), so tau-a equals tau-b.
  Undefined (None) when fewer than two documents are shared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rerankcli.core.runs import Run


@dataclass
class QueryAgreement:
    query: str
    overlap: float
    rbo: float
    tau: float | None
    shared: int  # documents in both runs (whole lists)


def overlap_at(a: list[str], b: list[str], k: int) -> float:
    top_a, top_b = a[:k], b[:k]
    size = max(len(top_a), len(top_b))
    return len(set(top_a) & set(top_b)) / size if size else 1.0


def rbo(a: list[str], b: list[str], p: float = 0.9) -> float:
    """Extrapolated rank-biased overlap of two rankings (each without duplicates)."""
    if not a and not b:
        return 1.0
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    s, length = len(short), len(long)
    if s == 0:
        return 0.0
    seen_short: set[str] = set()
    seen_long: set[str] = set()
    overlap = 0
    overlaps = np.zeros(length + 1)  # overlaps[d] = |short[:d] & long[:d]|
    for d in range(1, length + 1):
        item_long = long[d - 1]
        if d <= s:
            item_short = short[d - 1]
            if item_short == item_long:
                overlap += 1
            else:
                overlap += (item_short in seen_long) + (item_long in seen_short)
            seen_short.add(item_short)
        else:
            overlap += item_long in seen_short
        seen_long.add(item_long)
        overlaps[d] = overlap
    depths = np.arange(1, length + 1)
    weights = p ** depths
    total = float(np.sum(overlaps[1:] / depths * weights))
    x_s, x_l = overlaps[s], overlaps[length]
    tail = depths > s
    total += float(np.sum(x_s * (depths[tail] - s) / (s * depths[tail]) * weights[tail]))
    return (1 - p) / p * total + ((x_l - x_s) / length + x_s / s) * p**length


def kendall_tau(a: list[str], b: list[str]) -> float | None:
    """Kendall's tau between the orders ``a`` and ``b`` give their shared documents."""
    position_b = {doc: i for i, doc in enumerate(b)}
    ranks = np.array([position_b[doc] for doc in a if doc in position_b])  # in a's order
    n = len(ranks)
    if n < 2:
        return None
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    concordant = np.count_nonzero((ranks[None, :] > ranks[:, None]) & upper)
    pairs = n * (n - 1) // 2
    return (2 * concordant - pairs) / pairs


def agreement(a: Run, b: Run, depth: int = 10, p: float = 0.9) -> list[QueryAgreement]:
    """Per-query agreement of two runs on the queries both have, in query id order."""
    result = []
    for qid in sorted(set(a.scores) & set(b.scores)):
        ranked_a = [doc for doc, _ in a.ranked(qid)]
        ranked_b = [doc for doc, _ in b.ranked(qid)]
        result.append(QueryAgreement(
            query=qid, overlap=overlap_at(ranked_a, ranked_b, depth),
            rbo=rbo(ranked_a[:depth], ranked_b[:depth], p), tau=kendall_tau(ranked_a, ranked_b),
            shared=len(set(ranked_a) & set(ranked_b))))
    return result
