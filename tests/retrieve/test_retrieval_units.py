"""BM25 analysis (Lucene's English analyzer), fusion arithmetic, exact dense search."""

import numpy as np
import pytest

from rerankcli.core.runs import Run
from rerankcli.retrieve.analyzer import Analyzer, AnalyzerConfig
from rerankcli.retrieve.dense import exact_search
from rerankcli.retrieve.fusion import comb, rrf


@pytest.mark.parametrize(("text", "terms"), [
    ("The U.S.A. and the UK", ["u.s.a", "uk"]),  # stop words go, acronyms stay whole
    ("John's cats are running", ["john", "cat", "run"]),  # possessive, plural, -ing
    ("pi is 3.14, about 1,000 times", ["pi", "3.14", "about", "1,000", "time"]),
    ("covid-19 relational", ["covid", "19", "relat"]),  # hyphens split; Porter, not Porter2
])
def test_analyzer_follows_lucene_english(text: str, terms: list[str]) -> None:
    assert Analyzer(AnalyzerConfig())(text) == terms


def test_analyzer_options_can_switch_everything_off() -> None:
    raw = Analyzer(AnalyzerConfig(lowercase=False, stopwords="none", stemmer="none", possessive=False))
    assert raw("The cat's Running") == ["The", "cat's", "Running"]


def test_rrf_sums_reciprocal_ranks() -> None:
    a = Run({"q": {"x": 3.0, "y": 2.0}})
    b = Run({"q": {"y": 9.0, "z": 1.0}})
    fused = rrf([a, b], [1.0, 1.0], k=60)
    assert fused.scores["q"] == pytest.approx({"x": 1 / 61, "y": 1 / 62 + 1 / 61, "z": 1 / 62})
    assert [d for d, _ in fused.ranked("q")] == ["y", "x", "z"]


def test_combmnz_multiplies_by_the_number_of_runs_that_found_the_document() -> None:
    a = Run({"q": {"x": 1.0, "y": 0.0}})
    b = Run({"q": {"x": 0.0, "y": 1.0, "z": 0.5}})
    assert comb([a, b], [1, 1], "minmax", mnz=False).scores["q"] == {"x": 1.0, "y": 1.0, "z": 0.5}
    assert comb([a, b], [1, 1], "minmax", mnz=True).scores["q"] == {"x": 2.0, "y": 2.0, "z": 0.5}


def test_exact_search_returns_the_nearest_documents() -> None:
    docs = np.eye(4, dtype=np.float32)
    queries = np.array([[0.1, 0.9, 0.0, 0.0], [0.0, 0.0, 0.2, 0.8]], dtype=np.float32)
    run = exact_search(queries, docs, ["a", "b"], ["d0", "d1", "d2", "d3"], k=2, block=1)
    assert [d for d, _ in run.ranked("a")] == ["d1", "d0"]
    assert [d for d, _ in run.ranked("b")] == ["d3", "d2"]
