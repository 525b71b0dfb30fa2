"""Listwise reranking, algorithms first: a judge that answers from the qrels gives the ideal order.

DL19's BM25 top-100 is shuffled per query; one sliding pass of window 20 / stride 10 must put the
ideal top-10 on top in ideal order for every query, and so must ``full`` and ``first``.
Batching windows across queries must give exactly what running one query at a time gives.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rerankcli.core.errors import UserError
from rerankcli.evaluate.metrics import evaluate, parse_metric
from rerankcli.llm.requests import Generated
from rerankcli.rerank.candidates import merge
from rerankcli.rerank.listwise import ListwiseStage
from tests.fake_llm import QrelsBackend, ideal, queries_of, rerank_with, shuffled

NDCG = parse_metric("ndcg@10")


def stage_of(**fields) -> ListwiseStage:
    return ListwiseStage(**{"name": "lw", "type": "rerank", "method": "listwise", "model": "judge",
                            "depth": 100, **fields})


def rerank(stage, run, dl19, batch_size=16):
    texts, queries, qrels, _ = dl19
    backend = QrelsBackend(qrels, queries, texts, batch_size=batch_size)
    scores, accounting, state = rerank_with(stage, queries_of(run, texts, queries), backend)
    return scores, accounting, stage.method_details(state), backend


def top10_is_ideal(scores, run, qrels) -> None:
    for qid in run.qids:
        ranked = sorted(scores[qid], key=lambda d: -scores[qid][d])
        grades = [qrels[qid].get(d, 0) for d in ranked[:10]]
        best = sorted((qrels[qid].get(d, 0) for d in run.scores[qid]), reverse=True)[:10]
        assert grades == best, qid


@pytest.mark.parametrize("strategy", ["sliding", "full", "first"])
def test_one_pass_puts_the_ideal_top10_first_in_ideal_order(dl19, strategy):
    texts, queries, qrels, bm25 = dl19
    run = shuffled(bm25, qrels)
    scores, accounting, details, _ = rerank(stage_of(strategy=strategy), run, dl19)
    top10_is_ideal(scores, run, qrels)
    got = evaluate(merge(run, scores, 100), qrels, [NDCG], relevance_level=2).means["ndcg@10"]
    best = evaluate(ideal(run, qrels), qrels, [NDCG], relevance_level=2).means["ndcg@10"]
    assert got == pytest.approx(best, abs=1e-12)
    windows_per_query = 1 if strategy == "full" else 9  # 100 candidates, window 20, stride 10
    assert details["windows"] == windows_per_query * len(run.qids)
    assert accounting.manifest()["calls"] == details["windows"] and details["repairs"] == {}


def test_windows_batched_across_queries_equal_one_query_at_a_time(dl19):
    texts, queries, qrels, bm25 = dl19
    run = shuffled(bm25, qrels, seed=5)
    stage = stage_of(window=8, stride=3, passes=2)
    together, _, _, backend = rerank(stage, run, dl19, batch_size=16)
    assert max(backend.calls) == 16  # windows of 16 queries answered in one call
    for query in queries_of(run, texts, queries):
        alone, _, _ = rerank_with(stage, [query], QrelsBackend(qrels, queries, texts, batch_size=1))
        assert alone[query.qid] == together[query.qid]


def test_input_order_controls_are_deterministic(dl19):
    texts, queries, qrels, bm25 = dl19
    run = shuffled(bm25, qrels)
    for order in ("reverse", "shuffle"):
        first, _, _, _ = rerank(stage_of(order=order, seed=3), run, dl19)
        again, _, _, _ = rerank(stage_of(order=order, seed=3), run, dl19)
        assert first == again
        top10_is_ideal(first, run, qrels)


class Mumbler(QrelsBackend):
    """A judge that forgets the format: prose and bare numbers, half the time."""

    def _answer(self, requests):
        answers = super()._answer(requests)
        return [Generated(a.prompt_tokens, 0, "I think " + a.text.replace("[", "").replace("]", ""), a.new_tokens)
                if i % 2 == 0 else a for i, a in enumerate(answers)]


def test_repairs_are_counted_per_query_and_too_many_fail_the_stage(dl19):
    texts, queries, qrels, bm25 = dl19
    run = shuffled(bm25, qrels)
    one = run.qids[:3]
    candidates = [q for q in queries_of(run, texts, queries) if q.qid in one]
    stage = stage_of(max_repair_rate=0.2)
    with pytest.raises(UserError, match=r"windows needed their answer repaired \(more than max_repair_rate 0.2\)"):
        rerank_with(stage, candidates, Mumbler(qrels, queries, texts, batch_size=2))
    lenient = stage_of()
    _, accounting, state = rerank_with(lenient, candidates, Mumbler(qrels, queries, texts, batch_size=2))
    details = lenient.method_details(state)
    assert details["repairs"] == {"no_brackets": details["repaired_windows"], "extra_text": details["repaired_windows"]}
    assert set(details["repairs_per_query"]) <= set(one) and accounting.repairs["no_brackets"] > 0


def test_first_refuses_identifiers_the_tokenizer_splits(dl19):
    texts, queries, qrels, bm25 = dl19

    class Splitter(QrelsBackend):
        def single_tokens(self, found):
            return [t for t in found if t not in ("K", "Q")]

    stage = stage_of(strategy="first")
    with pytest.raises(UserError, match=r"single tokens; this model's tokenizer splits \['K', 'Q'\]"):
        rerank_with(stage, queries_of(bm25, texts, queries)[:1], Splitter(qrels, queries, texts))


@pytest.mark.parametrize("fields, message", [
    ({"window": 10, "stride": 10}, "stride must be smaller than window"),
    ({"strategy": "first", "window": 30}, "window is at most 26"),
    ({"strategy": "beam"}, "sliding"),
])
def test_impossible_window_settings_are_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        stage_of(**fields)


def test_a_listwise_template_needs_the_passages(tmp_path):
    (tmp_path / "lw.yaml").write_text("user: 'Rank for {query}.'\n")
    with pytest.raises(UserError, match=r"lacks the placeholder \{passages\}"):
        stage_of(prompt="lw.yaml").template(tmp_path)
