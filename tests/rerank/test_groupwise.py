"""Groupwise scoring (GroupRank), algorithm first: a judge that scores from the qrels gives the ideal order.

Every round must show each candidate exactly once, all rounds' groups must go to the backend in
one step, and the JSON reader must end with a score for every document of a group whatever the
model writes, counting what it repaired.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from rerankcli.core.errors import UserError
from rerankcli.core.runs import Run
from rerankcli.evaluate.metrics import evaluate, parse_metric
from rerankcli.llm.requests import Generated, Passage
from rerankcli.rerank.candidates import Candidate, Query, merge
from rerankcli.rerank.groupwise import GroupwiseStage, parse_scores
from rerankcli.rerank.templates import load_template
from tests.fake_llm import QrelsBackend, ideal, queries_of, rerank_with, shuffled

NDCG = parse_metric("ndcg@10")


def stage_of(**fields) -> GroupwiseStage:
    return GroupwiseStage(**{"name": "group", "type": "rerank", "method": "groupwise", "model": "judge",
                             "depth": 100, **fields})


class ScoringJudge(QrelsBackend):
    """Scores every document of a group 3 × its judged grade (0-9), in the asked JSON form.

    It also keeps every prompt's passages, to check the groups.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.shown: list[list[str]] = []

    def _answer(self, requests):
        self.calls.append(len(requests))
        out = []
        for request in requests:
            self.shown.append([self.docid_of[p.text] for p in request.prompt.parts if isinstance(p, Passage)])
            scores = {f"[{k + 1}]": 3 * grade for k, grade in enumerate(self.grades(request.prompt))}
            out.append(Generated(1, 0, f"<answer>{json.dumps(scores)}</answer>", 4 * len(scores)))
        return out


class Prose(QrelsBackend):
    def _answer(self, requests):
        self.calls.append(len(requests))
        return [Generated(1, 0, "All of these documents look relevant to me.", 9) for _ in requests]


def rerank(stage, run, dl19, backend_class=ScoringJudge, batch_size=512):
    texts, queries, qrels, _ = dl19
    backend = backend_class(qrels, queries, texts, batch_size=batch_size)
    scores, accounting, state = rerank_with(stage, queries_of(run, texts, queries), backend)
    return scores, accounting, stage.method_details(state), backend


@pytest.fixture(scope="module")
def judged(dl19):
    """The shuffled top-100 of the judged DL19 queries."""
    return shuffled(dl19[3], dl19[2])


def one_query(run: Run, size: int) -> Run:
    qid = run.qids[0]
    return Run({qid: dict(run.ranked(qid)[:size])})


def test_hand_worked_calls_n10_group4_repeats2(dl19, judged):
    # n = 10, group_size 4, repeats 2: each round cuts a shuffle into groups of 4, 4 and 2, so
    # ceil(10/4) = 3 groups a round and 3 · 2 = 6 calls, all independent: one backend call of 6
    stage = stage_of(depth=10, group_size=4, repeats=2)
    run = one_query(judged, 10)
    _, accounting, details, backend = rerank(stage, run, dl19)
    assert stage.planned_calls(10) == (6, 6) and stage.prompts_known_in_advance()
    assert backend.calls == [6]
    assert accounting.manifest()["calls"] == details["groups"] == 6
    assert [len(shown) for shown in backend.shown] == [4, 4, 2, 4, 4, 2]
    for round_ in (backend.shown[:3], backend.shown[3:]):  # each round shows every candidate once
        assert sorted(d for shown in round_ for d in shown) == sorted(run.scores[run.qids[0]])
    assert backend.shown[:3] != backend.shown[3:]  # a fresh shuffle each round


def test_a_perfect_judge_gives_the_ideal_ranking_on_shuffled_dl19(dl19, judged):
    qrels = dl19[2]
    scores, accounting, details, backend = rerank(stage_of(), judged, dl19)
    assert details["groups"] == 30 * len(judged.qids) == accounting.manifest()["calls"]
    assert details["repaired_groups"] == 0 and details["repairs"] == {}
    appearances = Counter(d for shown in backend.shown for d in shown)
    candidates = Counter(d for qid in judged.qids for d in judged.scores[qid])
    assert appearances == Counter({d: 6 * k for d, k in candidates.items()})  # once a round
    for qid in judged.qids:
        assert scores[qid] == {d: 3 * qrels[qid].get(d, 0) / 10 for d in judged.scores[qid]}
    merged = merge(judged, scores, 100)
    for qid in judged.qids:  # best grade first; equal grades in input order
        position = {d: i for i, (d, _) in enumerate(judged.ranked(qid))}
        expected = sorted(judged.scores[qid], key=lambda d: (-qrels[qid].get(d, 0), position[d]))
        assert [d for d, _ in merged.ranked(qid)] == expected
    got = evaluate(merged, qrels, [NDCG], relevance_level=2).means["ndcg@10"]
    best = evaluate(ideal(judged, qrels), qrels, [NDCG], relevance_level=2).means["ndcg@10"]
    assert got == pytest.approx(best, abs=1e-12)


def test_groups_of_many_queries_share_batches(dl19, judged):
    run = judged.top(8)
    stage = stage_of(depth=8, group_size=4, repeats=3)  # 2 groups x 3 rounds = 6 a query
    _, _, details, backend = rerank(stage, run, dl19, batch_size=64)
    assert details["groups"] == 6 * len(run.qids) and max(backend.calls) == 64


def test_unreadable_answers_score_zero_and_fail_the_stage_above_max_repair_rate(dl19):
    run = dl19[3].top(6)
    scores, _, details, _ = rerank(stage_of(depth=6, group_size=3, repeats=1), run, dl19, backend_class=Prose)
    assert details["unparsed_groups"] == details["groups"] == 2 * len(run.qids)
    assert details["repairs"] == {"no_answer_tag": details["groups"], "unparsed": details["groups"]}
    assert all(s == 0.0 for q in scores for s in scores[q].values())
    merged = merge(run, scores, 6)
    assert all([d for d, _ in merged.ranked(q)] == [d for d, _ in run.ranked(q)] for q in run.qids)
    with pytest.raises(UserError, match="group answers needed a repair"):
        rerank(stage_of(depth=6, group_size=3, repeats=1, max_repair_rate=0.5), run, dl19, backend_class=Prose)


@pytest.mark.parametrize("n, calls", [(0, 0), (1, 0), (2, 6), (20, 6), (21, 12), (100, 30)])
def test_planned_calls_are_groups_times_repeats(n, calls):
    assert stage_of().planned_calls(n) == (calls, calls)


@pytest.mark.parametrize("text, size, scores, repairs", [
    ('<answer>{"[1]": 7, "[2]": 0, "[3]": 10}</answer>', 3, [0.7, 0.0, 1.0], {}),
    ('<answer>\n```json\n{"[1]": 5, "[2]": 3}\n```\n</answer>', 2, [0.5, 0.3], {}),
    ('Sure.\n```json\n{"1": 4, "2": 9}\n```', 2, [0.4, 0.9], {"no_answer_tag": 1}),
    ('Scores: {"[1]": 2} and then {"[1]": 6, "[2]": 8}', 2, [0.6, 0.8], {"no_answer_tag": 1}),
    ('<answer>{"[1]": 7, "[2]]": 3}</answer>', 2, [0.7, 0.3], {"bracket_key": 1}),
    ('<answer>{"[1]": 7, "[2]": 3', 2, [0.7, 0.3], {"missing_brace": 1}),
    ('<answer>{"[1]": 7, "[2]": 3, "[3', 3, [0.7, 0.3, 0.0], {"missing_brace": 1, "missing": 1}),
    ('<answer>{"[1]": 7, "[2]": 3,}</answer>', 2, [0.7, 0.3], {"trailing_comma": 1}),
    ('<answer>{"[1]": 12, "[2]": -1, "[3]": "6"}</answer>', 3, [1.0, 0.0, 0.6], {"out_of_scale": 2}),
    ('<answer>{"[1]": 7, "[4]": 3, "doc": 2, "[2]": "high"}</answer>', 2, [0.7, 0.0],
     {"out_of_range": 1, "bad_key": 1, "bad_score": 1, "missing": 1}),
    ('<think>[1] seems best: {"[1]": 1}</think><answer>{"[1]": 9, "[2]": 1}</answer>', 2, [0.9, 0.1],
     {"think_block": 1}),
    ('<think>{"[1]": 9, "[2]": 1} is what I', 2, [0.0, 0.0], {"think_block": 1, "no_answer_tag": 1, "unparsed": 1}),
    ("Document 1 is the most useful.", 2, [0.0, 0.0], {"no_answer_tag": 1, "unparsed": 1}),
    ("<answer>[7, 3]</answer>", 2, [0.0, 0.0], {"unparsed": 1}),
    ('<answer>{"[1]": 7 "[2]": 3}</answer>', 2, [0.0, 0.0], {"unparsed": 1}),
    ("", 1, [0.0], {"no_answer_tag": 1, "unparsed": 1}),
])
def test_parse_scores(text, size, scores, repairs):
    got, found = parse_scores(text, size)
    assert got == pytest.approx(scores) and dict(found) == repairs


def test_passages_are_shown_on_one_line_each():
    stage = stage_of(depth=2, group_size=2, repeats=1)
    template = stage.template(Path("."))
    query = Query("q", "what is a test", (Candidate("a", "line one\n\n  line two"), Candidate("b", "plain")))
    program = stage.program(query, template, None)
    requests = next(program)
    texts = sorted(p.text for p in requests[0].prompt.parts if isinstance(p, Passage))
    assert texts == ["line one line two", "plain"]


def test_the_shipped_template_asks_for_json_in_answer_tags(tmp_path):
    required, allowed = GroupwiseStage.placeholders
    template = load_template("groupwise", tmp_path, required, allowed, listwise=True)
    assert template.item == "[{id}]. {passage}\n\n" and "<answer>" in template.user
    (tmp_path / "mine.yaml").write_text("user: 'Score for {query}'\n")
    with pytest.raises(UserError, match=r"lacks the placeholder \{passages\}"):
        stage_of(prompt="mine.yaml").template(tmp_path)
