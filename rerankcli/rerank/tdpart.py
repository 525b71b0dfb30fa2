"""Top-down partitioning (TDPart; Parry, MacAvaney, Ganguly, SIGIR 2024) for any listwise ranker.

Instead of sliding a window up the whole list, TDPart looks for the top ``k`` directly:

1. rank the first window ``L = rank(R[:w])``; the k-th best is the pivot ``p``, the better
   ones are the candidates ``C = L[:k-1]``, the worse ones the backfill ``Bk = L[k:]``;
2. rank every block of ``w-1`` remaining documents together with ``p``: documents above the
   pivot join ``C``, those below join ``Bk``. All blocks share the pivot, so they are asked in
   one step (parallel), and ``C`` is then cut to the ``budget`` in order;
3. if no block document beat the pivot, the top is ``C + [p]`` and we are done; otherwise
   ``C[:budget]`` is partitioned again, and ``C[budget:] + [p] + Bk`` goes on top of the
   backfill gathered so far;
4. once the candidate list fits in one window it is ranked by one last call.

Output: the sorted candidates, then the backfill in the order it was gathered (later rounds'
leftovers above earlier ones). The paper's code detects "nothing beat the pivot" with
``len(C) == k-1``, which only holds a round later; we test "no new candidate" as intended.
Calls for ``n`` candidates: one window, ``ceil((n-w)/(w-1))`` blocks, then the rounds on at
most ``budget`` candidates (``planned_calls`` bounds them by simulation).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

Steps = Generator[list[Any], list[Any], list[int]]
#: ranks several lists of candidates in one step; returns each list reordered best first
RankMany = Callable[[list[list[int]]], Generator[list[Any], list[Any], list[list[int]]]]

MAX_ROUNDS = 100


def tdpart(order: list[int], window: int, k: int, budget: int, rank_many: RankMany,
           counts: dict[str, int] | None = None) -> Steps:
    """The ranking of ``order`` (candidate indices) by top-down partitioning.

    ``counts["over_budget"]`` grows by the candidates that beat a pivot but were cut by the
    budget: the top ``k`` is exact only when none were (with a model that ranks consistently).
    """
    counts = {} if counts is None else counts
    counts.setdefault("over_budget", 0)
    backfill: list[int] = []
    todo = list(order)
    for _ in range(MAX_ROUNDS):
        if len(todo) <= 1:  # nothing left to order: no call
            return todo + backfill
        (first,) = yield from rank_many([todo[:window]])
        if len(todo) <= window:
            return first + backfill
        pivot = first[k - 1]
        above, below = first[: k - 1], first[k:]
        rest = todo[window:]
        blocks = [[pivot] + rest[i:i + window - 1] for i in range(0, len(rest), window - 1)]
        new: list[int] = []
        for ranked in (yield from rank_many(blocks)):
            cut = ranked.index(pivot)
            new += ranked[:cut]
            below += ranked[cut + 1:]
        if not new:
            return above + [pivot] + below + backfill
        above += new
        counts["over_budget"] += max(0, len(above) - budget)
        backfill = above[budget:] + [pivot] + below + backfill
        todo = above[:budget]
    return todo + backfill  # not reached: each round shrinks the list (see planned_range)


def planned_range(n: int, window: int, k: int, budget: int) -> tuple[int, int]:
    """(least, most) ranking calls for ``n`` candidates.

    Least: no block document beats the first pivot (one window and the blocks). Most: every
    block document beats it, so each round keeps ``min(budget, k-1+len(rest))`` candidates.
    """
    if n <= 1:
        return 0, 0
    if n <= window:
        return 1, 1

    def blocks(m: int) -> int:
        return -(-(m - window) // (window - 1))

    least = 1 + blocks(n)
    most, m = 0, n
    for _ in range(MAX_ROUNDS):
        if m <= 1:
            break
        most += 1
        if m <= window:
            break
        most += blocks(m)
        m = min(budget, k - 1 + (m - window))
    return least, most
