"""InsertRank: listwise prompts that show each passage's first-stage score."""

from __future__ import annotations

import pytest

from rerankcli.core.errors import UserError
from rerankcli.llm.requests import Generated
from rerankcli.rerank.candidates import Candidate, Query
from rerankcli.rerank.listwise import ListwiseStage
from tests.fake_llm import QrelsBackend, rerank_with


class Recorder(QrelsBackend):
    """Keeps every prompt's text; answers the shown order."""

    def __init__(self):
        super().__init__({}, {}, {})
        self.texts: list[str] = []

    def _answer(self, requests):
        for r in requests:
            self.texts.append("".join(p if isinstance(p, str) else p.text for p in r.prompt.parts))
        return [Generated(1, 0, "[1] > [2] > [3]", 3) for _ in requests]


QUERY = Query("q", "what is a cat", (Candidate("a", "A cat is an animal.", 12.3456),
                                      Candidate("b", "Dogs bark.", 7.0), Candidate("c", "Cats purr.", 2.0)))


def prompt_of(**fields) -> str:
    stage = ListwiseStage(name="ir", type="rerank", method="listwise", model="judge", depth=3,
                          first_stage_scores=True, **fields)
    backend = Recorder()
    rerank_with(stage, [QUERY], backend)
    return backend.texts[0]


def test_raw_scores_follow_each_passage_with_three_decimals():
    text = prompt_of()
    assert "[1] A cat is an animal.\nRetrieval score of passage [1]: 12.346\n" in text
    assert "Retrieval score of passage [2]: 7.000" in text and "Retrieval score of passage [3]: 2.000" in text


@pytest.mark.parametrize("scale, shown", [("minmax", ["1.000", "0.483", "0.000"]),
                                          ("minmax100", ["100.0", "48.3", "0.0"])])
def test_min_max_normalisation_over_the_query_candidates(scale, shown):
    text = prompt_of(score_normalization=scale)
    for i, value in enumerate(shown, 1):
        assert f"Retrieval score of passage [{i}]: {value}\n" in text


def test_scores_travel_with_their_passage_when_the_order_changes():
    text = prompt_of(order="reverse")
    assert "[1] Cats purr.\nRetrieval score of passage [1]: 2.000" in text
    assert "[3] A cat is an animal.\nRetrieval score of passage [3]: 12.346" in text


def test_a_template_without_a_score_slot_is_refused(tmp_path):
    (tmp_path / "plain.yaml").write_text('user: "{query} {passages}"\nitem: "[{id}] {passage}"\n')
    stage = ListwiseStage(name="ir", type="rerank", method="listwise", model="judge", first_stage_scores=True,
                          prompt="plain.yaml")
    with pytest.raises(UserError, match=r"'item' must have the placeholders \{id\} and \{passage\} and "
                                        r"\{score\} and no others \(first_stage_scores: true"):
        stage.template(tmp_path)
    off = ListwiseStage(name="ir", type="rerank", method="listwise", model="judge", prompt="insertrank")
    with pytest.raises(UserError, match=r"\{score\} needs first_stage_scores: true"):
        off.template(tmp_path)


def test_the_option_left_out_keeps_the_stage_key():
    plain = ListwiseStage(name="x", type="rerank", method="listwise", model="m")
    assert not {"first_stage_scores", "score_normalization", "permutations", "top_k", "budget"} & set(plain.identity())
    assert "order" in plain.identity()  # listwise had order and seed before every method did
    scored = ListwiseStage(name="x", type="rerank", method="listwise", model="m", first_stage_scores=True)
    assert scored.identity()["first_stage_scores"] is True
