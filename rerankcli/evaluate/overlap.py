"""How much two runs agree, without qrels: overlap@k, rank-biased overlap, Kendall's tau.

- overlap@k: the share of the top-k that both runs hold (k, or the longer of the two
  truncated lists when both are shorter).
- RBO (Webber, Moffat and Zobel, TOIS 2010), the extrapolated form (their eq. 32, which also
  covers lists of different lengths) on the top-k of each run, persistence ``p``: 1 for the
  same top-k in the same order, 0 for disjoint ones, weighted to the top.
- Kendall's tau over the documents the two runs share anywhere in their lists, ranked by each
  run's order (which is total: ties are already broken by docid), so tau-a equals tau-b.
  Undefined (None) when fewer than two documents are shared. Counted by merge sort (O(n log^2 n)
  in numpy), so 100k documents per query take milliseconds and no n x n matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter

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
    return _tau(shared_positions(a, b))


def shared_positions(a: list[str], b: list[str]) -> np.ndarray:
    """The position in ``b`` of each document of ``a`` that ``b`` holds, in a's order."""
    positions = list(map(dict(zip(b, range(len(b)))).get, a))  # C-level loops: 100k documents in ms
    if None in positions:
        positions = [p for p in positions if p is not None]
    return np.array(positions, dtype=np.int64)


def _tau(ranks: np.ndarray) -> float | None:
    """Tau from b's positions in a's order.

    Both orders are total, so tau = 1 - 2 * discordant / pairs, and the discordant pairs are
    the inversions of ``ranks``: O(n log^2 n) time and O(n) memory, not an n x n matrix (100k
    shared documents would need 10 GB).
    """
    n = len(ranks)
    if n < 2:
        return None
    pairs = n * (n - 1) // 2
    return (pairs - 2 * inversions(ranks)) / pairs


def inversions(values: np.ndarray) -> int:
    """Pairs i < j with values[i] > values[j] (equal values are none): a bottom-up merge sort in numpy.

    At each level the array is made of sorted blocks of ``width``; for each right block, the
    elements of its left neighbour greater than each of its elements are counted with one
    ``searchsorted`` over all blocks at once (block numbers lifted into the keys keep the blocks
    apart), then each pair of blocks is merged by sorting the lifted keys.
    """
    order = np.argsort(values, kind="stable")  # ranks 0..n-1 (ties in order) keep the keys small
    ranks = np.empty(len(values), np.int64)
    ranks[order] = np.arange(len(values))
    n = len(ranks)
    index = np.arange(n)
    count = 0
    width = 1
    while width < n:
        pair = index // (2 * width)
        right = (index // width) % 2 == 1
        keys = pair * n + ranks
        left_keys = keys[~right]  # globally sorted: sorted blocks in block order
        ends = np.searchsorted(left_keys, (pair[right] + 1) * n)  # end of each right block's neighbour
        count += int(np.sum(ends - np.searchsorted(left_keys, keys[right], side="right")))
        ranks = np.sort(keys, kind="stable") - pair * n  # merge every pair of blocks
        width *= 2
    return count


def agreement(a: Run, b: Run, depth: int = 10, p: float = 0.9) -> list[QueryAgreement]:
    """Per-query agreement of two runs on the queries both have, in query id order."""
    result = []
    first = itemgetter(0)
    for qid in sorted(set(a.scores) & set(b.scores)):
        ranked_a = list(map(first, a.ranked(qid)))
        ranked_b = list(map(first, b.ranked(qid)))
        ranks = shared_positions(ranked_a, ranked_b)
        result.append(QueryAgreement(
            query=qid, overlap=overlap_at(ranked_a, ranked_b, depth),
            rbo=rbo(ranked_a[:depth], ranked_b[:depth], p), tau=_tau(ranks), shared=len(ranks)))
    return result
