"""Permutation self-consistency's aggregators: Kemeny exact where promised, Borda by mean rank.

Exactness is checked against brute force over every permutation; the approximation (a cycle of
more than EXACT_LIMIT items) must be a local optimum no worse than its Borda start.
"""

from __future__ import annotations

import itertools
import random

import numpy as np

from rerankcli.rerank.aggregate import EXACT_LIMIT, borda, distance, kemeny, preferences


def brute_force(rankings, n):
    prefer = preferences(rankings, n)
    return min(distance(p, prefer) for p in itertools.permutations(range(n)))


def random_rankings(rng, n, m, drop=True):
    out = []
    for _ in range(m):
        order = list(range(n))
        rng.shuffle(order)
        out.append((order, rng.randint(0, n) if drop and rng.random() < 0.3 else n))
    return out


def test_kemeny_equals_brute_force_on_random_small_cases():
    rng = random.Random(7)
    for case in range(150):
        n = rng.randint(2, 6)
        rankings = random_rankings(rng, n, rng.randint(1, 7))
        order, exact = kemeny(rankings, n)
        assert exact and sorted(order) == list(range(n))
        assert distance(order, preferences(rankings, n)) == brute_force(rankings, n), case


def test_agreeing_rankings_give_that_ranking_exactly_even_for_100_items():
    order = list(range(100))
    random.Random(1).shuffle(order)
    result, exact = kemeny([(order, 100)] * 3, 100)
    assert result == order and exact


def test_a_majority_outvotes_a_minority():
    ideal = [3, 1, 4, 0, 2]
    result, exact = kemeny([(ideal, 5), (ideal, 5), (ideal[::-1], 5)], 5)
    assert result == ideal and exact


def test_a_cycle_longer_than_the_exact_limit_is_a_local_optimum_no_worse_than_borda():
    n = EXACT_LIMIT + 4
    base = list(range(n))
    rankings = [(base[i:] + base[:i], n) for i in range(0, n, 3)]  # rotations: one big majority cycle
    prefer = preferences(rankings, n)
    result, exact = kemeny(rankings, n)
    assert not exact and sorted(result) == base
    assert distance(result, prefer) <= distance(borda(rankings, n), prefer)
    for item in result:  # no single move improves it
        rest = [x for x in result if x != item]
        assert all(distance(rest[:p] + [item] + rest[p:], prefer) >= distance(result, prefer)
                   for p in range(n))


def test_unnamed_items_rank_below_named_ones_and_say_nothing_among_themselves():
    # two rankings name only item 2; the third names 1 then 0
    rankings = [([2, 0, 1], 1), ([2, 1, 0], 1), ([1, 0, 2], 2)]
    prefer = preferences(rankings, 3)
    assert prefer[2, 0] == 2 and prefer[0, 2] == 1 and prefer[1, 0] == 1 and prefer[0, 1] == 0
    assert kemeny(rankings, 3)[0] == [2, 1, 0]


def test_borda_sorts_by_mean_rank_where_named_never_named_last_ties_in_window_order():
    rankings = [([1, 0, 2, 3], 2), ([0, 1, 2, 3], 3)]
    # means: 1 -> (0+1)/2, 0 -> (1+0)/2, 2 -> 2, 3 -> never named
    assert borda(rankings, 4) == [0, 1, 2, 3]
    assert borda([([2, 1, 0], 3)], 3) == [2, 1, 0]
    assert np.isclose(distance([0, 1], preferences([([1, 0], 2)], 2)), 1.0)
