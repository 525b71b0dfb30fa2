"""Pointwise rerankers, algorithms first: a judge that answers from the qrels gives the ideal order.

DL19's BM25 top-100 is shuffled per query (fixed seed), then each method reranks it with the
judge (``fake_llm.QrelsBackend``); nDCG@10 must equal that of the ideal reordering of the same
candidates. Real models run in ``test_pointwise_models.py``.
"""

from __future__ import annotations

import pytest

from rerankcli.core.errors import UserError
from rerankcli.core.runs import Run
from rerankcli.evaluate.metrics import evaluate, parse_metric
from rerankcli.rerank.candidates import Candidate, Query, merge
from rerankcli.rerank.pointwise import GradedStage, QueryLikelihoodStage, YesNoStage
from rerankcli.rerank.templates import SHIPPED, load_template
from tests.fake_llm import QrelsBackend, ideal, rerank_with, shuffled

NDCG = parse_metric("ndcg@10")


def stage_of(cls, method: str, **fields):
    return cls(**{"name": "rerank", "type": "rerank", "method": method, "model": "judge", "depth": 100, **fields})


@pytest.mark.parametrize("cls, method", [(YesNoStage, "yes-no"), (GradedStage, "graded"),
                                         (QueryLikelihoodStage, "query-likelihood")])
def test_a_perfect_judge_gives_the_ideal_order(dl19, cls, method):
    texts, queries, qrels, bm25 = dl19
    run = shuffled(bm25, qrels)
    stage = stage_of(cls, method)
    candidates = [Query(q, queries[q], tuple(Candidate(d, texts[d]) for d, _ in run.ranked(q))) for q in run.qids]
    backend = QrelsBackend(qrels, queries, texts)
    scores, accounting, _ = rerank_with(stage, candidates, backend)
    reranked = merge(run, scores, stage.depth)
    got = evaluate(reranked, qrels, [NDCG], relevance_level=2).means["ndcg@10"]
    best = evaluate(ideal(run, qrels), qrels, [NDCG], relevance_level=2).means["ndcg@10"]
    before = evaluate(run, qrels, [NDCG], relevance_level=2).means["ndcg@10"]
    assert got == pytest.approx(best, abs=1e-12) and got > before + 0.3
    assert accounting.manifest()["calls"] == len(run)  # one request per pair
    assert max(backend.calls) == backend.batch_size  # batches filled across queries


def test_documents_below_depth_keep_their_order_beneath_the_reranked_ones(dl19):
    texts, queries, qrels, bm25 = dl19
    qid = bm25.qids[0]
    run = Run({qid: bm25.scores[qid]})
    stage = stage_of(YesNoStage, "yes-no", depth=10)
    top = [d for d, _ in run.ranked(qid)]
    candidates = [Query(qid, queries[qid], tuple(Candidate(d, texts[d]) for d in top[:10]))]
    scores, _, _ = rerank_with(stage, candidates, QrelsBackend(qrels, queries, texts))
    merged = [d for d, _ in merge(run, scores, 10).ranked(qid)]
    assert sorted(merged[:10]) == sorted(top[:10]) and merged[10:] == top[10:]
    values = [s for _, s in merge(run, scores, 10).ranked(qid)]
    assert all(a > b for a, b in zip(values, values[1:]))  # strictly decreasing


@pytest.mark.parametrize("text, message", [
    ("user: 'Passage: {passage} Answer:'", r"lacks the placeholder \{query\}"),
    ("user: 'Q: {query} P: {passage} {title}'", r"has the placeholder \{title\}"),
    ("user: 'Q: {query P: {passage}'", "literal braces"),
    ("system: x", "a mapping with a 'user' string"),
    ("user: '{query} {passage}'\nanswer: x", r"unknown keys \['answer'\]"),
])
def test_a_broken_prompt_template_is_refused_with_the_file(tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=f"mine.yaml: .*{message}"):
        load_template("mine.yaml", tmp_path, {"query", "passage"}, {"query", "passage"})


def test_query_likelihood_templates_must_not_show_the_query(tmp_path):
    (tmp_path / "ql.yaml").write_text("user: 'Passage: {passage} Query: {query}'")
    stage = stage_of(QueryLikelihoodStage, "query-likelihood", prompt="ql.yaml")
    with pytest.raises(UserError, match=r"has the placeholder \{query\}; this method fills only \{passage\}"):
        stage.template(tmp_path)


def test_a_mistyped_template_name_is_answered_with_the_shipped_one_it_resembles(tmp_path):
    with pytest.raises(UserError, match=r"no such template file .*; did you mean 'yes-no'\?$"):
        stage_of(YesNoStage, "yes-no", prompt="yesno").template(tmp_path)


def test_an_unknown_template_name_lists_the_shipped_ones(tmp_path):
    shipped = " ".join(sorted(path.stem for path in SHIPPED.glob("*.yaml")))
    assert "yes-no" in shipped and "rank1" in shipped
    with pytest.raises(UserError, match=f"shipped templates: {shipped}$"):
        stage_of(YesNoStage, "yes-no", prompt="zzz").template(tmp_path)
