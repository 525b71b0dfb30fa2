"""One ranking out of several: permutation self-consistency's aggregators (Tang et al. 2024).

A listwise window asked in ``M`` shuffled orders comes back as ``M`` rankings of the same items,
each possibly leaving some items unmentioned. Two aggregators:

- ``borda``: sort by mean position over the rankings that mention an item; items no ranking
  mentions come last; ties keep the window's order.
- ``kemeny``: the ranking with the least total Kendall-tau distance to all of them, where a
  ranking prefers every item it mentions over every item it leaves out and says nothing
  about two items it leaves out. Exact Kemeny is NP-hard, so it is computed in two steps:
  1. the items are split into the strongly connected components of the "at least as often
     before" graph; every optimal ranking keeps components in their topological order (an
     item of an earlier component is strictly preferred by a majority to every item of a
     later one), so each component is solved on its own;
  2. a component of up to ``EXACT_LIMIT`` items is solved exactly by dynamic programming over
     its subsets (the best ordering of a subset placed first); a larger one starts from its
     Borda order and moves single items to their best position until no move lowers the
     distance (a local optimum; ``exact`` is then False and the stage counts it).
  With consistent answers every component has one item, so a window of any size is exact; a
  window of 100 is approximate only where more than ``EXACT_LIMIT`` items form one cycle of
  majority preferences.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: the largest component solved exactly (2^12 subsets × 12 items)
EXACT_LIMIT = 12

#: a ranking of items 0..n-1 (best first) and how many of its first items the model named
Ranking = tuple[Sequence[int], int]


def preferences(rankings: Sequence[Ranking], n: int) -> np.ndarray:
    """``P[i, j]``: how many rankings put item i before item j (named items before unnamed)."""
    prefer = np.zeros((n, n))
    for order, named in rankings:
        position = np.full(n, n, dtype=float)  # unnamed: tied last
        for rank, item in enumerate(order[:named]):
            position[item] = rank
        prefer += position[:, None] < position[None, :]
    return prefer


def borda(rankings: Sequence[Ranking], n: int) -> list[int]:
    """Items by mean position where named; never named last; ties in window order."""
    total, count = np.zeros(n), np.zeros(n)
    for order, named in rankings:
        for rank, item in enumerate(order[:named]):
            total[item] += rank
            count[item] += 1
    mean = [total[i] / count[i] if count[i] else float("inf") for i in range(n)]
    return sorted(range(n), key=lambda i: (mean[i], i))


def distance(order: Sequence[int], prefer: np.ndarray) -> float:
    """Total Kendall-tau disagreement of ``order`` with the rankings behind ``prefer``."""
    items = np.asarray(order)
    later_first = prefer[np.ix_(items, items)].T  # [a, b]: rankings putting items[b] before items[a]
    return float(np.triu(later_first, 1).sum())


def kemeny(rankings: Sequence[Ranking], n: int) -> tuple[list[int], bool]:
    """The Kemeny ranking of items 0..n-1, and whether it is exact (see the module docstring)."""
    if n <= 1:
        return list(range(n)), True
    prefer = preferences(rankings, n)
    start = borda(rankings, n)
    result: list[int] = []
    exact = True
    for component in _components(prefer, start):
        if len(component) <= EXACT_LIMIT:
            result += _exact(component, prefer)
        else:
            exact = False
            result += _local_search(component, prefer)
    return result, exact


def _components(prefer: np.ndarray, start: list[int]) -> list[list[int]]:
    """Strongly connected components of "i before j at least as often as j before i", best
    first, each in ``start``'s order."""
    n = len(start)
    edge = prefer >= prefer.T
    np.fill_diagonal(edge, False)
    reach = edge.copy()
    for k in range(n):  # transitive closure (Floyd–Warshall on booleans)
        reach |= reach[:, [k]] & reach[[k], :]
    np.fill_diagonal(reach, True)
    same = reach & reach.T
    seen: set[int] = set()
    components = []
    for item in start:
        if item not in seen:
            members = [j for j in start if same[item, j]]
            seen.update(members)
            components.append(members)
    # a component comes before another when its items reach the other's
    components.sort(key=lambda c: -int(reach[c[0]].sum()))
    return components


def _exact(items: list[int], prefer: np.ndarray) -> list[int]:
    """The optimal order of ``items`` by dynamic programming over their subsets."""
    m = len(items)
    if m == 1:
        return list(items)
    sub = prefer[np.ix_(items, items)]
    incoming = sub.sum(axis=0)  # for each item: rankings putting some other item before it
    full = (1 << m) - 1
    best = np.full(1 << m, np.inf)
    best[0] = 0.0
    choice = np.zeros(1 << m, dtype=int)
    before = np.zeros((1 << m, m))  # before[mask, i]: rankings putting an item of mask before i
    for mask in range(1, 1 << m):
        low = (mask & -mask).bit_length() - 1
        before[mask] = before[mask & (mask - 1)] + sub[low]
    for mask in range(full):
        if best[mask] == np.inf:
            continue
        # item i next: it goes before every item not yet placed, so the rankings putting one
        # of those before i disagree
        for i in range(m):
            if not mask >> i & 1:
                cost = best[mask] + incoming[i] - before[mask, i]
                nxt = mask | 1 << i
                if cost < best[nxt] - 1e-9:
                    best[nxt], choice[nxt] = cost, i
    order, mask = [], full
    while mask:
        i = int(choice[mask])
        order.append(items[i])
        mask &= ~(1 << i)
    return order[::-1]


def _local_search(items: list[int], prefer: np.ndarray) -> list[int]:
    """From the given order, move single items to their best position while that helps."""
    order = list(items)
    improved = True
    while improved:
        improved = False
        for item in list(order):
            rest = [x for x in order if x != item]
            # cost of putting item at position p: rankings preferring the items after it over it
            # plus those preferring it over the items before it
            ahead = np.array([prefer[item, x] for x in rest])  # item before x
            behind = np.array([prefer[x, item] for x in rest])  # x before item
            costs = [behind[p:].sum() + ahead[:p].sum() for p in range(len(rest) + 1)]
            here = order.index(item)
            best = int(np.argmin(costs))
            if costs[best] < costs[here] - 1e-9:
                order = rest[:best] + [item] + rest[best:]
                improved = True
    return order
