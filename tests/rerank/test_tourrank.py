"""TourRank, algorithm first: a judge that selects from the qrels must find the ideal top.

The schedule (groups per stage, seeded grouping, who advances) and the number of calls are
checked on cases worked out by hand; the tournaments of a query must share their batches;
the answer parser must end with ``keep`` distinct positions whatever the model writes, and
count what it repaired.
"""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from rerankcli.core.errors import UserError
from rerankcli.evaluate.metrics import evaluate, parse_metric
from rerankcli.llm.requests import Generated, Passage
from rerankcli.core.runs import Run
from rerankcli.rerank.candidates import merge
from rerankcli.rerank.templates import load_template
from rerankcli.rerank.tourrank import TourrankStage, parse_selection
from tests.fake_llm import QrelsBackend, ideal, queries_of, rerank_with, shuffled

NDCG = parse_metric("ndcg@10")
_KEEP = re.compile(r"select the (\d+) documents")


def stage_of(**fields) -> TourrankStage:
    return TourrankStage(**{"name": "tour", "type": "rerank", "method": "tourrank", "model": "judge",
                            "depth": 100, **fields})


class SelectingJudge(QrelsBackend):
    """Answers a selection prompt as a perfect judge: the ``keep`` best documents, ties in prompt order.

    It also keeps every prompt's passages, to check the grouping.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.shown: list[list[str]] = []

    def _answer(self, requests):
        self.calls.append(len(requests))
        out = []
        for request in requests:
            text = "".join(p for p in request.prompt.parts if isinstance(p, str))
            keep = int(_KEEP.search(text).group(1))
            self.shown.append([self.docid_of[p.text] for p in request.prompt.parts if isinstance(p, Passage)])
            grades = self.grades(request.prompt)
            best = sorted(range(len(grades)), key=lambda k: -grades[k])[:keep]
            out.append(Generated(1, 0, ", ".join(f"Document {k + 1}" for k in best), 3 * keep))
        return out


class Mute(QrelsBackend):
    """A model that never names a document."""

    def _answer(self, requests):
        self.calls.append(len(requests))
        return [Generated(1, 0, "I think they are all relevant.", 7) for _ in requests]


def rerank(stage, run, dl19, backend_class=SelectingJudge, batch_size=512):
    texts, queries, qrels, _ = dl19
    backend = backend_class(qrels, queries, texts, batch_size=batch_size)
    scores, accounting, state = rerank_with(stage, queries_of(run, texts, queries), backend)
    return scores, accounting, stage.method_details(state), backend


@pytest.fixture(scope="module")
def judged(dl19):
    """The shuffled top-100 of the judged DL19 queries."""
    return shuffled(dl19[3], dl19[2])


def test_hand_worked_schedule_n20_group10_stages_10_4_2_1(dl19, judged):
    # n = 20, group_size 10, stages [10, 4, 2, 1], 2 tournaments:
    #   stage 1: 20 entrants > 10 -> G = ceil(20/10) = 2 groups of 10, each keeps 10/2 = 5 -> 2 calls
    #   stage 2: 10 entrants (not > 10) -> 1 group of 10, keeps 4                          -> 1 call
    #   stage 3: 4 entrants -> 1 group, keeps 2; stage 4: 2 entrants -> 1 group, keeps 1  -> 2 calls
    #   5 calls a tournament, 10 in all; stage by stage the backend gets 2·2, 2·1, 2·1, 2·1 requests
    stage = stage_of(depth=20, group_size=10, stages=[10, 4, 2, 1], tournaments=2)
    run = judged.top(20)
    one = run.qids[0]

    scores, accounting, details, backend = rerank(stage, Run({one: run.scores[one]}), dl19)
    assert stage.planned_calls(20) == (10, 10)
    assert backend.calls == [4, 2, 2, 2]
    assert accounting.manifest()["calls"] == details["groups"] == 10
    assert details["repaired_groups"] == 0 and details["repairs"] == {}
    # the integer part of a score is the points: each tournament gives 10 + 4 + 2 + 1 of them
    points = [int(s) for s in scores[one].values()]
    assert sum(points) == 2 * (10 + 4 + 2 + 1) and max(points) <= 2 * 4


def test_paper_schedule_at_depth_100_is_13_calls_a_tournament_batched_by_stage(dl19, judged):
    stage = stage_of(tournaments=2)
    assert [(r.entrants, r.groups, r.advance) for r in stage.schedule(100)] == [
        (100, 5, 50), (50, 5, 20), (20, 1, 10), (10, 1, 5), (5, 1, 2)]  # the paper's Table 7
    assert [[r.keep(g) for g in range(r.groups)] for r in stage.schedule(100)] == [
        [10] * 5, [4] * 5, [10], [5], [2]]
    run = judged.top(100)
    one = run.qids[0]

    _, accounting, details, backend = rerank(stage, Run({one: run.scores[one]}), dl19)
    assert stage.planned_calls(100) == (26, 26)
    assert backend.calls == [10, 10, 2, 2, 2]  # each stage: both tournaments' groups in one call
    assert accounting.manifest()["calls"] == details["groups"] == 26


def test_groups_are_seeded_and_each_tournament_shuffles_them_differently(dl19, judged):
    run = judged.top(100)
    one = run.qids[0]

    _, _, _, backend = rerank(stage_of(tournaments=2), Run({one: run.scores[one]}), dl19)
    position = {d: i for i, (d, _) in enumerate(run.ranked(one))}
    first = backend.shown[:10]  # stage 1: tournament 0's five groups, then tournament 1's
    for t in range(2):
        for g in range(5):
            shown = first[5 * t + g]
            assert sorted(position[d] for d in shown) == list(range(g, 100, 5))  # positions g, g+5, …
    assert all(sorted(first[g]) == sorted(first[5 + g]) and first[g] != first[5 + g] for g in range(5))


def ideal_grades(qrels, run, qid) -> list[int]:
    return sorted((qrels[qid].get(d, 0) for d in run.scores[qid]), reverse=True)


def ranking(scores, qid) -> list[str]:
    return sorted(scores[qid], key=lambda d: -scores[qid][d])


def test_a_knockout_with_a_perfect_judge_keeps_the_ideal_documents_at_every_cut(dl19, judged):
    # one group per stage (group_size >= n) and one tournament: each stage keeps the best of its
    # entrants, so the top 2, 5, 10, 20 and 50 by points hold the ideal grades; within a points
    # level the order is the input order (TourRank does not order the docs that tie)
    qrels = dl19[2]
    scores, _, details, _ = rerank(stage_of(tournaments=1, group_size=100), judged, dl19)
    assert details["groups"] == 5 * len(judged.qids) and details["repaired_groups"] == 0
    for qid in judged.qids:
        ranked = ranking(scores, qid)
        for cut in (2, 5, 10, 20, 50):
            got = sorted((qrels[qid].get(d, 0) for d in ranked[:cut]), reverse=True)
            assert got == ideal_grades(qrels, judged, qid)[:cut], (qid, cut)


def test_ten_tournaments_of_a_perfect_judge_give_the_ideal_top10_on_shuffled_dl19(dl19, judged):
    # with groups (5 x 20 first), a group's quota can drop a good document, and one tournament's
    # points tie within a level; the paper's r = 10 sums enough shuffles to separate them
    qrels = dl19[2]
    scores, _, details, _ = rerank(stage_of(tournaments=10), judged, dl19)
    assert details["groups"] == 130 * len(judged.qids) and details["repaired_groups"] == 0
    written = merge(judged, scores, 100)  # equal points: first-stage order, scores nudged apart
    for qid in judged.qids:
        ranked = [d for d, _ in written.ranked(qid)]
        values = [s for _, s in written.ranked(qid)]
        assert len(set(values)) == len(values)  # written scores strictly decrease
        assert [qrels[qid].get(d, 0) for d in ranked[:10]] == ideal_grades(qrels, judged, qid)[:10], qid
    got = evaluate(merge(judged, scores, 100), qrels, [NDCG], relevance_level=2).means["ndcg@10"]
    best = evaluate(ideal(judged, qrels), qrels, [NDCG], relevance_level=2).means["ndcg@10"]
    assert got == pytest.approx(best, abs=1e-12)


def test_equal_points_keep_the_input_order(dl19):
    # a mute model's groups are filled with their first shown documents: the points are then
    # arbitrary, but equal points must rank in input order and scores never tie
    run = dl19[3].top(10)
    scores, _, details, _ = rerank(stage_of(depth=10), run, dl19, backend_class=Mute)
    assert details["repairs"] == {"extra_text": details["groups"], "no_ranking": details["groups"]}
    written = merge(run, scores, 10)
    for qid in run.qids:
        position = {d: i for i, (d, _) in enumerate(run.ranked(qid))}
        ranking = [d for d, _ in written.ranked(qid)]
        values = [s for _, s in written.ranked(qid)]
        assert len(set(values)) == len(values)
        for a, b in zip(ranking, ranking[1:]):
            if scores[qid][a] == scores[qid][b]:
                assert position[a] < position[b]


def test_unreadable_answers_fail_the_stage_above_max_repair_rate(dl19):
    with pytest.raises(UserError, match=r"group answers needed a repair"):
        rerank(stage_of(depth=10, max_repair_rate=0.5), dl19[3].top(10), dl19, backend_class=Mute)


@pytest.mark.parametrize("n, calls", [
    (0, 0), (1, 0),
    (2, 2),  # stages [1]: one group of 2 keeps 1, in each of 2 tournaments
    (10, 6),  # stages [5, 2, 1], one group each
    (100, 26),
])
def test_planned_calls_follow_the_schedule(n, calls):
    assert stage_of().planned_calls(n) == (calls, calls)
    assert not stage_of().prompts_known_in_advance()


def test_default_stages_scale_with_the_candidates():
    stage = stage_of()
    assert stage.advances(100) == [50, 20, 10, 5, 2]
    assert stage.advances(20) == [10, 4, 2, 1]  # 0.4 rounds to 0, kept at 1, then dropped as a repeat
    assert stage.advances(10) == [5, 2, 1]
    assert stage.advances(1) == []
    assert stage_of(stages=[30, 10, 3], depth=50).advances(20) == [10, 3]  # a stage that keeps all is skipped


def test_a_group_that_keeps_all_its_members_asks_nothing():
    # 10 entrants in 5 groups of 2 (positions g, g+5), 9 advance: groups keep 2, 2, 2, 2, 1
    stage = stage_of(group_size=2, stages=[9], depth=10)
    (first,) = stage.schedule(10)
    assert (first.groups, [first.keep(g) for g in range(5)]) == (5, [2, 2, 2, 2, 1])
    assert first.asked() == 1 and stage.planned_calls(10) == (2, 2)


@pytest.mark.parametrize("fields, message", [
    ({"stages": [10, 10]}, "strictly decrease"),
    ({"stages": [5, 0]}, "at least 1"),
    ({"stages": []}, "at least one stage"),
    ({"stages": [100, 10], "depth": 100}, "fewer than depth"),
    ({"tournaments": 0}, "greater than or equal to 1"),
])
def test_bad_settings_are_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        stage_of(**fields)


@pytest.mark.parametrize("text, size, keep, chosen, repairs", [
    ("Document 3, Document 1", 5, 2, [2, 0], {}),
    ("Document 3, ..., Document 1", 5, 2, [2, 0], {}),
    ("Here are the documents:\nDocument 4, Document 2.", 5, 2, [3, 1], {"extra_text": 1}),
    ("The most relevant: Document 2, Document 5", 5, 2, [1, 4], {"extra_text": 1}),
    ("3, 1", 5, 2, [2, 0], {"bare_numbers": 1}),
    ("Document 2, Document 2, Document 9, Document 4", 5, 2, [1, 3], {"duplicate": 1, "out_of_range": 1}),
    ("Document 1, Document 2, Document 3", 5, 2, [0, 1], {"too_many": 1}),
    ("Document 4", 5, 3, [3, 0, 1], {"missing": 2}),
    ("<think>Document 1 is off topic, Document 5 fits</think>\nDocument 5, Document 2", 5, 2, [4, 1],
     {"think_block": 1}),
    ("<think>Document 1 looks good, and", 5, 2, [0, 1], {"think_block": 1, "no_ranking": 1}),
    ("", 4, 2, [0, 1], {"no_ranking": 1}),
    ("none of them", 4, 1, [0], {"extra_text": 1, "no_ranking": 1}),
])
def test_parse_selection(text, size, keep, chosen, repairs):
    got, found = parse_selection(text, size, keep)
    assert got == chosen and dict(found) == repairs
    assert len(set(got)) == keep and all(0 <= k < size for k in got)


def test_a_template_without_keep_is_refused(tmp_path):
    (tmp_path / "mine.yaml").write_text("user: 'Pick the best for {query}: {passages}'\n")
    with pytest.raises(UserError, match=r"lacks the placeholder \{keep\}"):
        stage_of(prompt="mine.yaml").template(tmp_path)
    required, allowed = TourrankStage.placeholders
    shipped = load_template("tourrank", tmp_path, required, allowed, listwise=True)
    assert {"query", "passages", "keep", "num"} == set(shipped.fields())
