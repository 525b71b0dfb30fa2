"""Pairwise ranking prompting, algorithms first: a comparator from the qrels gives the ideal order.

DL19's BM25 top-100 is shuffled per query. ``allpair`` and ``heapsort`` must put the ideal top-10
first, and ``sliding`` with K passes the ideal top-K; a comparator that always answers "A" must
leave the input order as it is, because both orders are asked and a disagreement is a tie. The
number of prompts each strategy sends on 100 candidates is checked against the theory.
"""

from __future__ import annotations

import math

import pytest

from rerankcli.core.errors import UserError
from rerankcli.evaluate.metrics import evaluate, parse_metric
from rerankcli.llm.backend import Backend
from rerankcli.llm.requests import Generate, Generated, NextToken, TokenLogprobs
from rerankcli.rerank.candidates import Query, merge
from rerankcli.rerank.pairwise import PairwiseStage, outcome, read_choice
from rerankcli.rerank.templates import load_template
from tests.fake_llm import QrelsBackend, ideal, queries_of, rerank_with, shuffled

NDCG = parse_metric("ndcg@10")


def stage_of(**fields) -> PairwiseStage:
    return PairwiseStage(**{"name": "prp", "type": "rerank", "method": "pairwise", "model": "judge",
                            "depth": 100, **fields})


def rerank(stage, run, dl19, backend=None, batch_size=64):
    texts, queries, qrels, _ = dl19
    backend = backend or QrelsBackend(qrels, queries, texts, batch_size=batch_size)
    scores, accounting, state = rerank_with(stage, queries_of(run, texts, queries), backend)
    return scores, accounting, stage.method_details(state), backend


def ranked(scores, qid) -> list[str]:
    return sorted(scores[qid], key=lambda d: -scores[qid][d])


def top_is_ideal(scores, run, qrels, k: int) -> None:
    for qid in run.qids:
        grades = [qrels[qid].get(d, 0) for d in ranked(scores, qid)[:k]]
        assert grades == sorted((qrels[qid].get(d, 0) for d in run.scores[qid]), reverse=True)[:k], qid


class AlwaysA(Backend):
    """A comparator with total position bias: whatever the passages, it prefers the first."""

    name = "always-a"
    answers = frozenset({NextToken, Generate})
    batch_size = 256

    def single_tokens(self, texts):
        return list(texts)

    def _answer(self, requests):
        return [Generated(1, 0, "Passage A", 2) if isinstance(r, Generate)
                else TokenLogprobs(1, 0, {c: 0.0 if "A" in c else -4.0 for c in r.candidates})
                for r in requests]


@pytest.fixture(scope="module")
def judged(dl19):
    """The shuffled top-100 of the judged DL19 queries."""
    return shuffled(dl19[3], dl19[2])


@pytest.mark.parametrize("strategy", ["allpair", "heapsort"])
def test_sorting_strategies_put_the_ideal_top10_first(dl19, judged, strategy):
    qrels = dl19[2]
    scores, _, details, _ = rerank(stage_of(strategy=strategy, top_k=10), judged, dl19)
    top_is_ideal(scores, judged, qrels, 10)
    got = evaluate(merge(judged, scores, 100), qrels, [NDCG], relevance_level=2).means["ndcg@10"]
    best = evaluate(ideal(judged, qrels), qrels, [NDCG], relevance_level=2).means["ndcg@10"]
    assert got == pytest.approx(best, abs=1e-12)
    assert details["inconsistent_rate"] == 0.0  # a perfect judge never contradicts itself


def test_sliding_with_k_passes_puts_the_ideal_top_k_first(dl19, judged):
    scores, _, _, _ = rerank(stage_of(strategy="sliding", top_k=5), judged, dl19)
    top_is_ideal(scores, judged, dl19[2], 5)


def test_generate_mode_reads_the_judges_answers(dl19, judged):
    scores, accounting, details, _ = rerank(stage_of(strategy="heapsort", top_k=10, mode="generate"),
                                            judged, dl19)
    top_is_ideal(scores, judged, dl19[2], 10)
    assert accounting.manifest()["requests"] == {"Generate": details["prompts"]}
    assert details["unparsed"] == 0 and accounting.manifest()["generated_tokens"] == details["prompts"]


@pytest.mark.parametrize("mode", ["logits", "generate"])
@pytest.mark.parametrize("strategy", ["allpair", "heapsort", "sliding"])
def test_a_comparator_that_always_prefers_a_leaves_the_input_order(dl19, strategy, mode):
    texts, queries, qrels, bm25 = dl19
    run = bm25.top(30)
    scores, _, details, _ = rerank(stage_of(strategy=strategy, mode=mode, depth=30), run, dl19, backend=AlwaysA())
    merged = merge(run, scores, 30)
    for qid in run.qids:
        assert [d for d, _ in merged.ranked(qid)] == [d for d, _ in run.ranked(qid)]
    assert details["inconsistent_rate"] == 1.0  # every pair contradicts itself when its order flips


def one_query(dl19, judged) -> Query:
    texts, queries, _, _ = dl19
    return queries_of(judged, texts, queries)[0]


def counts(dl19, query, **fields) -> dict:
    texts, queries, qrels, _ = dl19
    stage = stage_of(**fields)
    _, accounting, state = rerank_with(stage, [query], QrelsBackend(qrels, queries, texts, batch_size=512))
    return {**stage.method_details(state)["per_query"][query.qid], "calls": accounting.manifest()["calls"]}


def test_allpair_sends_n_times_n_minus_1_prompts(dl19, judged):
    query = one_query(dl19, judged)
    assert len(query.candidates) == 100
    seen = counts(dl19, query, strategy="allpair")
    assert seen["prompts"] == seen["calls"] == 100 * 99 and seen["comparisons"] == 100 * 99 // 2
    assert seen["cache_hits"] == 0


def test_heapsort_stays_within_2n_plus_2k_log_n_comparisons(dl19, judged):
    query = one_query(dl19, judged)
    n, k = 100, 10
    seen = counts(dl19, query, strategy="heapsort", top_k=k)
    assert seen["comparisons"] <= 2 * n + 2 * k * math.floor(math.log2(n))
    assert seen["prompts"] == seen["calls"] <= 2 * seen["comparisons"]
    assert seen["comparisons"] > n - 1  # building the heap alone needs more than n - 1


def test_sliding_makes_k_passes_and_asks_repeated_pairs_once(dl19, judged):
    query = one_query(dl19, judged)
    n, k = 100, 10
    seen = counts(dl19, query, strategy="sliding", top_k=k)
    assert seen["comparisons"] == k * (n - 1) - k * (k - 1) // 2
    assert seen["prompts"] == seen["calls"] == 2 * seen["comparisons"] - seen["cache_hits"]
    assert seen["cache_hits"] > 0  # later passes meet pairs the earlier ones compared


def test_comparisons_batched_across_queries_equal_one_query_at_a_time(dl19, judged):
    texts, queries, qrels, _ = dl19
    run = judged.top(20)
    stage = stage_of(strategy="heapsort", top_k=5, depth=20)
    together, _, _, backend = rerank(stage, run, dl19, batch_size=64)
    assert max(backend.calls) == 64  # comparisons of many queries answered in one call
    for query in queries_of(run, texts, queries):
        alone, _, _ = rerank_with(stage, [query], QrelsBackend(qrels, queries, texts, batch_size=1))
        assert alone[query.qid] == together[query.qid]


@pytest.mark.parametrize("text, choice", [
    (" A", "A"), (" B.", "B"), ("Passage B", "B"), ("passage a is more relevant", "A"),
    (" (B) because it mentions the query", "B"), ("<think>A or B? A seems off</think> B", "B"),
    (":B", "B"), ("\nA\n", "A"), ("Passage: A", "A"), (" Both are relevant", None), ("", None),
    (" a passage about", None),
])
def test_read_choice_finds_the_named_passage(text, choice):
    assert read_choice(text) == choice


def test_outcome_needs_both_orders_to_agree():
    assert outcome(1.0, 0.0) == 1.0 and outcome(0.0, 1.0) == 0.0
    assert outcome(1.0, 1.0) == outcome(0.0, 0.0) == outcome(0.5, 0.0) == 0.5


def test_unreadable_answers_fail_the_stage_above_max_repair_rate(dl19):
    texts, queries, qrels, bm25 = dl19

    class Prose(QrelsBackend):
        def _answer(self, requests):
            return [Generated(1, 0, "I cannot decide.", 4) for _ in requests]

    with pytest.raises(UserError, match="named neither passage"):
        rerank(stage_of(strategy="sliding", top_k=2, depth=10, mode="generate", max_repair_rate=0.2),
               bm25.top(10), dl19, backend=Prose(qrels, queries, texts))


def test_a_tokenizer_that_splits_a_or_b_is_refused_before_compute(dl19):
    class Split(AlwaysA):
        def single_tokens(self, texts):
            return [t for t in texts if "B" not in t]

        def _answer(self, requests):
            raise AssertionError("no compute expected")

    with pytest.raises(UserError, match="splits the answer 'B'"):
        rerank(stage_of(depth=10), dl19[3].top(10), dl19, backend=Split())


def test_a_template_without_passage_b_is_refused(tmp_path):
    (tmp_path / "mine.yaml").write_text("user: 'Query: {query} A: {passage_a}'\n")
    required, allowed = PairwiseStage.placeholders
    with pytest.raises(UserError, match=r"lacks the placeholder \{passage_b\}"):
        load_template("mine.yaml", tmp_path, required, allowed)
