"""Agreement of two runs: Kendall's tau without an n x n matrix, RBO and overlap as defined."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from rerankcli.core.runs import Run
from rerankcli.evaluate.overlap import agreement, inversions, kendall_tau, overlap_at, rbo


def brute_inversions(values: list[int]) -> int:
    return sum(values[i] > values[j] for i in range(len(values)) for j in range(i + 1, len(values)))


def brute_tau(a: list[str], b: list[str]) -> float | None:
    """Kendall's tau-a over the shared documents, pair by pair."""
    shared = [doc for doc in a if doc in b]
    if len(shared) < 2:
        return None
    agree = 0
    for i in range(len(shared)):
        for j in range(i + 1, len(shared)):
            agree += 1 if b.index(shared[i]) < b.index(shared[j]) else -1
    return agree / (len(shared) * (len(shared) - 1) / 2)


def brute_rbo(a: list[str], b: list[str], p: float) -> float:
    """Webber et al.'s extrapolated RBO (eq. 32), each overlap counted with sets."""
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    s, l = len(short), len(long)
    x = [len(set(short[:d]) & set(long[:d])) for d in range(l + 1)]
    total = sum(x[d] / d * p**d for d in range(1, l + 1))
    total += sum(x[s] * (d - s) / (s * d) * p**d for d in range(s + 1, l + 1))
    return (1 - p) / p * total + ((x[l] - x[s]) / l + x[s] / s) * p**l


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 8, 13, 31, 32, 33, 100, 257])
def test_inversions_equal_the_pair_by_pair_count(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(10):
        values = rng.permutation(n) * 3 - 7  # distinct, not 0..n-1
        assert inversions(values) == brute_inversions(values.tolist())
    assert inversions(np.arange(n)) == 0
    assert inversions(np.arange(n)[::-1]) == n * (n - 1) // 2


@pytest.mark.parametrize("seed", range(20))
def test_kendall_tau_equals_brute_force_and_scipy_on_partly_shared_rankings(seed: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(rng.randint(2, 60))]
    a = rng.sample(docs, rng.randint(1, len(docs)))
    b = rng.sample(docs, rng.randint(1, len(docs)))
    expected = brute_tau(a, b)
    ours = kendall_tau(a, b)
    if expected is None:
        assert ours is None
        return
    assert ours == pytest.approx(expected, abs=1e-12)
    shared = [doc for doc in a if doc in b]
    reference = stats.kendalltau(range(len(shared)), [b.index(doc) for doc in shared]).statistic
    assert ours == pytest.approx(reference, abs=1e-12)


def test_kendall_tau_of_identical_reversed_and_barely_shared_lists() -> None:
    a = [f"d{i}" for i in range(50)]
    assert kendall_tau(a, a) == 1.0
    assert kendall_tau(a, a[::-1]) == -1.0
    assert kendall_tau(a, ["d3", "x", "y"]) is None
    assert kendall_tau([], []) is None


def test_kendall_tau_of_100k_documents_takes_a_fraction_of_a_second() -> None:
    """The n x n matrix this replaced needed 10 GB at 100k documents."""
    rng = np.random.default_rng(0)
    a = [f"d{i}" for i in rng.permutation(100_000)]
    b = list(a)
    b[::7] = b[::7][::-1]  # disorder some of it
    start = time.perf_counter()
    tau = kendall_tau(a, b)
    assert time.perf_counter() - start < 2.0
    assert tau is not None and -1.0 < tau < 1.0


@pytest.mark.parametrize("seed", range(20))
def test_rbo_equals_the_formula_counted_with_sets(seed: int) -> None:
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(30)]
    a = rng.sample(docs, rng.randint(1, 20))
    b = rng.sample(docs, rng.randint(1, 20))
    p = rng.choice([0.5, 0.8, 0.9, 0.95])
    assert rbo(a, b, p) == pytest.approx(brute_rbo(a, b, p), abs=1e-12)


def test_rbo_bounds_and_overlap() -> None:
    a = ["a", "b", "c", "d"]
    assert rbo(a, a) == pytest.approx(1.0)
    assert rbo(a, ["w", "x", "y", "z"]) == 0.0
    assert rbo([], []) == 1.0
    assert rbo(a, []) == 0.0
    assert overlap_at(a, ["d", "c", "x", "y"], 2) == 0.0
    assert overlap_at(a, ["d", "c", "x", "y"], 4) == 0.5
    assert overlap_at(["a"], ["a"], 10) == 1.0


def test_agreement_reports_each_shared_query_in_order() -> None:
    first = Run({"q2": {"a": 3.0, "b": 2.0, "c": 1.0}, "q1": {"a": 1.0}, "only": {"z": 1.0}})
    second = Run({"q1": {"b": 1.0}, "q2": {"a": 1.0, "b": 2.0, "c": 3.0}})
    rows = agreement(first, second, depth=2)
    assert [row.query for row in rows] == ["q1", "q2"]
    assert (rows[0].overlap, rows[0].tau, rows[0].shared) == (0.0, None, 0)
    assert rows[1].tau == -1.0 and rows[1].shared == 3 and rows[1].overlap == 0.5  # {a, b} vs {c, b}
