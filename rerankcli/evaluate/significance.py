"""Paired significance tests over per-query metric values, and multiple-comparison corrections.

Written in numpy (plus ``scipy.special`` for the t distribution) rather than called from
``scipy.stats``: importing ``scipy.stats`` alone costs most of a second per process, and
``rerank compare`` is meant to answer from the shell in well under two. Tests pin every
p-value to ``scipy.stats``.

- ``student``: the paired t-test on the per-query differences, two-sided.
- ``fisher`` (alias ``permutation``): Fisher's randomisation test, the paired permutation
  test of IR practice (Smucker et al., CIKM 2007). Under the null hypothesis the two runs are
  exchangeable on each query, so each difference keeps or flips its sign with probability
  1/2; the p-value is the share of sign assignments whose mean difference is at least as far
  from zero as the observed one. Exact when 2**n assignments are at most ``permutations``,
  otherwise sampled (``permutations`` draws at ``seed``, counting the observed assignment,
  as ``scipy.stats.permutation_test`` does).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np

Test = Literal["student", "fisher", "permutation"]
Correction = Literal["holm", "bonferroni", "none"]
TESTS: tuple[str, ...] = ("student", "fisher", "permutation")
CORRECTIONS: tuple[str, ...] = ("holm", "bonferroni", "none")
TEST_NAMES = {"student": "paired t-test", "fisher": "Fisher's randomisation test",
              "permutation": "Fisher's randomisation test"}


def paired_t_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of the paired t-test of ``a`` against ``b`` (same queries, same order).

    Identical values give 1.0; a constant non-zero difference gives 0.0 (scipy says NaN or a
    p-value from rounding noise, which no table should show).
    """
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = len(diff)
    if n < 2:
        return 1.0
    mean = diff.mean()
    sd = diff.std(ddof=1)
    if sd <= 1e-12:  # constant difference, up to rounding: t is 0 or infinite
        return 1.0 if abs(mean) <= 1e-12 else 0.0
    from scipy.special import stdtr

    t = mean / (sd / np.sqrt(n))
    return float(min(1.0, 2.0 * stdtr(n - 1, -abs(t))))


#: sign values computed per step: memory stays ~16 MB whatever the queries x permutations
CHUNK_VALUES = 1 << 21


def _sign_blocks(n: int, permutations: int, seed: int) -> tuple[Iterator[np.ndarray], int, bool]:
    """Rows of +1/-1 for ``n`` queries, in blocks: all 2**n of them, or ``permutations`` random ones.

    The whole matrix would be permutations x queries floats (10,000 x 5,000 queries: 400 MB);
    blocks of ``CHUNK_VALUES`` draw the same rows in the same order (one generator, read on).
    Returns the blocks, how many rows they hold, and whether the rows are exhaustive.
    """
    rows = max(1, CHUNK_VALUES // max(n, 1))
    if n <= 20 and 2**n <= permutations:
        total = 2**n

        def exhaustive() -> Iterator[np.ndarray]:
            for start in range(0, total, rows):
                codes = np.arange(start, min(start + rows, total), dtype=np.int64)[:, None] >> np.arange(n, dtype=np.int64)
                yield 1.0 - 2.0 * (codes & 1)

        return exhaustive(), total, True
    rng = np.random.default_rng(seed)

    def sampled() -> Iterator[np.ndarray]:
        for start in range(0, permutations, rows):
            yield rng.choice(np.array([-1.0, 1.0]), size=(min(rows, permutations - start), n))

    return sampled(), permutations, False


def randomisation_test(a: np.ndarray, b: np.ndarray, permutations: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of Fisher's randomisation (paired sign-flip permutation) test."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = len(diff)
    if n == 0:
        return 1.0
    observed = diff.mean()
    blocks, total, exact = _sign_blocks(n, permutations, seed)
    # The same relative tolerance as scipy: sums in another order differ in the last bits.
    gamma = abs(observed) * np.finfo(np.float64).eps * 100
    greater = less = 0
    for signs in blocks:
        null = signs @ diff / n
        greater += np.count_nonzero(null >= observed - gamma)
        less += np.count_nonzero(null <= observed + gamma)
    if exact:
        p = 2 * min(greater, less) / total
    else:
        p = 2 * (min(greater, less) + 1) / (total + 1)
    return float(min(1.0, p))


def p_value(test: str, a: np.ndarray, b: np.ndarray, permutations: int = 10_000, seed: int = 0) -> float:
    """The p-value of ``test`` (one of ``TESTS``) for paired values ``a`` and ``b``."""
    if test == "student":
        return paired_t_test(a, b)
    if test in ("fisher", "permutation"):
        return randomisation_test(a, b, permutations, seed)
    raise ValueError(f"unknown test {test!r}; known: {', '.join(TESTS)}")


def adjust(p_values: list[float], correction: str) -> list[float]:
    """Adjusted p-values for one family of hypotheses (reject where adjusted p < alpha).

    Holm's step-down: sort ascending, multiply the i-th smallest (from 0) by m - i, keep the
    running maximum, cap at 1. Bonferroni multiplies every p-value by m.
    """
    m = len(p_values)
    values = np.asarray(p_values, np.float64)
    if correction == "none" or m == 0:
        return values.tolist()
    if correction == "bonferroni":
        return np.minimum(1.0, values * m).tolist()
    if correction == "holm":
        order = np.argsort(values, kind="stable")
        stepped = np.maximum.accumulate(values[order] * (m - np.arange(m)))
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(1.0, stepped)
        return adjusted.tolist()
    raise ValueError(f"unknown correction {correction!r}; known: {', '.join(CORRECTIONS)}")
