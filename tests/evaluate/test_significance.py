"""Paired tests and corrections against references computed here with scipy and statsmodels."""

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from rerankcli.core.formats import read_qrels
from rerankcli.core.runs import read_run
from rerankcli.evaluate.metrics import evaluate, parse_metric
from rerankcli.evaluate.significance import adjust, paired_t_test, randomisation_test
from tests.conftest import shared


def dl19_ndcg(name: str) -> np.ndarray:
    """Per-query nDCG@10 of a shipped DL19 run, in query id order."""
    folder = shared("trec-dl19-passage")
    result = evaluate(read_run(folder / name), read_qrels(folder / "qrels.txt"), [parse_metric("ndcg@10")])
    values = result.per_query["ndcg@10"]
    return np.array([values[q] for q in sorted(values)])


def scipy_randomisation(a: np.ndarray, b: np.ndarray, resamples: int) -> float:
    return stats.permutation_test((a, b), lambda x, y: np.mean(x - y), permutation_type="samples",
                                  n_resamples=resamples, alternative="two-sided",
                                  random_state=np.random.default_rng(7)).pvalue


def test_t_test_equals_scipy_on_dl19_runs() -> None:
    splade, bm25 = dl19_ndcg("splade-pp-ed.top100.trec"), dl19_ndcg("bm25.top100.trec")
    assert paired_t_test(splade, bm25) == pytest.approx(stats.ttest_rel(splade, bm25).pvalue, rel=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_t_test_equals_scipy_on_random_pairs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.random(30)
    b = a + rng.normal(0.02 * seed, 0.1, 30)
    assert paired_t_test(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-10)


def test_t_test_of_identical_runs_is_one_and_of_a_constant_shift_is_zero() -> None:
    a = np.linspace(0, 1, 10)
    assert paired_t_test(a, a) == 1.0
    assert paired_t_test(a + 0.1, a) == 0.0


def test_exact_randomisation_equals_scipy_exactly() -> None:
    """12 queries: 4,096 sign assignments, so both enumerate them all."""
    rng = np.random.default_rng(3)
    a, b = rng.random(12), rng.random(12)
    assert randomisation_test(a, b, permutations=10_000) == pytest.approx(
        scipy_randomisation(a, b, 10_000), abs=1e-12)


def test_sampled_randomisation_is_within_sampling_error_of_scipy() -> None:
    """43 DL19 queries: sampled; a shuffled half of the gains keeps the p-value moderate."""
    bm25 = dl19_ndcg("bm25.top100.trec")
    other = bm25 + np.random.default_rng(1).normal(0.03, 0.15, len(bm25))
    ours = randomisation_test(other, bm25, permutations=20_000, seed=0)
    reference = scipy_randomisation(other, bm25, 100_000)
    assert 0.01 < reference < 0.5
    error = np.sqrt(reference * (1 - reference) * (1 / 20_000 + 1 / 100_000))
    assert abs(ours - reference) < 4 * error


def test_randomisation_is_repeatable_at_a_seed() -> None:
    a, b = dl19_ndcg("splade-pp-ed.top100.trec"), dl19_ndcg("bm25.top100.trec")
    assert randomisation_test(a, b, seed=5) == randomisation_test(a, b, seed=5)


P_VALUES = [0.01, 0.04, 0.03, 0.005, 0.2, 0.04, 0.8, 0.0001]


@pytest.mark.parametrize("correction, method", [("holm", "holm"), ("bonferroni", "bonferroni")])
def test_adjusted_p_values_equal_statsmodels_exactly(correction: str, method: str) -> None:
    rejected, reference, _, _ = multipletests(P_VALUES, alpha=0.05, method=method)
    adjusted = adjust(P_VALUES, correction)
    assert adjusted == reference.tolist()
    assert [p < 0.05 for p in adjusted] == rejected.tolist()


def test_no_correction_keeps_the_p_values() -> None:
    assert adjust(P_VALUES, "none") == P_VALUES
