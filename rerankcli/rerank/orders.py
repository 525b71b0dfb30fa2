"""The orders in which candidates are shown to a model: as retrieved, reversed, or shuffled.

Permutation methods (listwise windows, sorts, sets, tournaments) see their candidates in some
order, and models prefer what they see first. Two features show a model its candidates in other
orders and must agree on how: permutation self-consistency (several shuffles of one window,
aggregated) and ``rerank bias`` (a whole stage rerun on reversed and shuffled inputs). Every
shuffle is drawn from a generator seeded by a text key, so a rerun, a resumed query, a shard or
a Ray worker sees exactly the same shuffles.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Literal

from rerankcli.rerank.candidates import Query

Order = Literal["input", "reverse", "shuffle"]


def shuffled(n: int, key: str) -> list[int]:
    """A permutation of ``range(n)`` that depends only on ``key``."""
    order = list(range(n))
    random.Random(key).shuffle(order)
    return order


def presented(n: int, order: Order, seed: int, qid: str) -> list[int]:
    """Positions of the input ranking in the order a stage shows them to its model."""
    if order == "reverse":
        return list(range(n - 1, -1, -1))
    if order == "shuffle":
        return shuffled(n, f"{seed}:{qid}")
    return list(range(n))


def reorder(query: Query, order: Order, seed: int) -> Query:
    """``query`` with its candidates in the ``order`` shown to the model."""
    if order == "input":
        return query
    positions = presented(len(query.candidates), order, seed, query.qid)
    return replace(query, candidates=tuple(query.candidates[i] for i in positions))
