"""Comparing evaluated runs (shared queries, wins/ties/losses, markers) and run agreement measures."""

import itertools

import numpy as np
import pytest
from scipy import stats

from rerankcli.core.errors import UserError
from rerankcli.evaluate.compare import compare
from rerankcli.evaluate.metrics import Evaluation
from rerankcli.evaluate.overlap import kendall_tau, overlap_at, rbo
from rerankcli.evaluate.report import render_comparison


def evaluation(values: dict[str, float], metric: str = "ndcg@10") -> Evaluation:
    return Evaluation(per_query={metric: values}, means={metric: float(np.mean(list(values.values())))},
                      queries=len(values))


BASE = {"q1": 0.5, "q2": 0.5, "q3": 0.2, "q4": 0.9}
BETTER = {"q1": 0.7, "q2": 0.5, "q3": 0.6, "q4": 0.8}


def test_wins_ties_losses_count_each_query_once() -> None:
    result = compare({"base": evaluation(BASE), "new": evaluation(BETTER)}, "base").tests["ndcg@10"]["new"]
    assert (result.wins, result.ties, result.losses) == (2, 1, 1)
    assert result.delta == pytest.approx(0.125)


def test_runs_are_compared_on_the_queries_all_of_them_have() -> None:
    fewer = {q: v for q, v in BETTER.items() if q != "q4"}
    comparison = compare({"base": evaluation(BASE), "new": evaluation(fewer)}, "base")
    assert comparison.queries == ["q1", "q2", "q3"]
    assert comparison.mean("ndcg@10", "base") == pytest.approx(0.4)  # q4 left out of the baseline too
    assert comparison.left_out == {"base": ["q4"], "new": []}
    assert comparison.notes() == ["base: 1 of its judged queries are missing from another run and were "
                                  "left out (q4)"]


def test_runs_without_a_shared_query_stop_with_a_message() -> None:
    with pytest.raises(UserError, match="no judged query in common"):
        compare({"base": evaluation({"q1": 1.0}), "new": evaluation({"q2": 1.0})}, "base")


def test_a_significantly_worse_run_is_marked_down() -> None:
    rng = np.random.default_rng(0)
    base = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0.5, 1.0, 40))}
    worse = {q: v - 0.3 + float(rng.normal(0, 0.05)) for q, v in base.items()}
    same = dict(base)
    comparison = compare({"base": evaluation(base), "worse": evaluation(worse), "same": evaluation(same)},
                         "base", correction="bonferroni")
    assert comparison.tests["ndcg@10"]["worse"].significant
    assert not comparison.tests["ndcg@10"]["same"].significant
    assert comparison.tests["ndcg@10"]["same"].p_adjusted == 1.0
    table = render_comparison(comparison, "table")
    assert "▼" in table.splitlines()[3] and "▲" not in table.splitlines()[3]


def test_latex_escapes_names_and_turns_marks_into_arrows() -> None:
    rng = np.random.default_rng(1)
    base = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0, 0.5, 40))}
    better = {q: v + 0.4 for q, v in base.items()}
    text = render_comparison(compare({"bm25_base": evaluation(base), "new&improved": evaluation(better)},
                                     "bm25_base"), "latex")
    assert r"bm25\_base" in text and r"new\&improved" in text and r"$^{\uparrow}$" in text
    assert "▲" not in text


def test_overlap_counts_the_shared_top_k() -> None:
    assert overlap_at(["a", "b", "c", "d"], ["b", "a", "x", "y"], 2) == 1.0
    assert overlap_at(["a", "b", "c", "d"], ["b", "x", "a", "y"], 2) == 0.5


def brute_rbo(a: list[str], b: list[str], p: float) -> float:
    """Webber et al.'s eq. 32 from set intersections at every depth (no incremental counting)."""
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    s, length = len(short), len(long)
    x = {d: len(set(short[:d]) & set(long[:d])) for d in range(1, length + 1)}
    total = sum(x[d] / d * p**d for d in range(1, length + 1))
    total += sum(x[s] * (d - s) / (s * d) * p**d for d in range(s + 1, length + 1))
    return (1 - p) / p * total + ((x[length] - x[s]) / length + x[s] / s) * p**length


def test_rbo_is_one_for_the_same_ranking_and_zero_for_disjoint_ones() -> None:
    ranking = list("abcdefghij")
    assert rbo(ranking, ranking) == pytest.approx(1.0)
    assert rbo(ranking, list("klmnopqrst")) == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_rbo_equals_the_definition_on_random_rankings(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pool = [f"d{i}" for i in range(30)]
    a = list(rng.permutation(pool)[: rng.integers(5, 20)])
    b = list(rng.permutation(pool)[: rng.integers(5, 20)])
    assert rbo(a, b, 0.9) == pytest.approx(brute_rbo(a, b, 0.9), abs=1e-12)


def test_rbo_weights_the_top_more() -> None:
    ranking = list("abcdefghij")
    top_swapped = list("bacdefghij")
    bottom_swapped = list("abcdefghji")
    assert rbo(ranking, bottom_swapped) > rbo(ranking, top_swapped)


@pytest.mark.parametrize("seed", range(4))
def test_kendall_tau_equals_scipy_on_the_shared_documents(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = [f"d{i}" for i in rng.permutation(40)[:30]]
    b = [f"d{i}" for i in rng.permutation(40)[:30]]
    shared = [doc for doc in a if doc in b]
    reference = stats.kendalltau([a.index(d) for d in shared], [b.index(d) for d in shared]).statistic
    assert kendall_tau(a, b) == pytest.approx(reference, abs=1e-12)


def test_kendall_tau_of_a_reversed_ranking_is_minus_one_and_undefined_below_two() -> None:
    ranking = [f"d{i}" for i in range(10)]
    assert kendall_tau(ranking, ranking[::-1]) == -1.0
    assert kendall_tau(["a", "b"], ["a", "c"]) is None


def test_kendall_tau_counts_every_pair_once() -> None:
    for perm in itertools.permutations("abcd"):
        discordant = sum(1 for i, j in itertools.combinations(range(4), 2)
                         if "abcd".index(perm[i]) > "abcd".index(perm[j]))
        assert kendall_tau(list("abcd"), list(perm)) == pytest.approx((6 - 2 * discordant) / 6)
