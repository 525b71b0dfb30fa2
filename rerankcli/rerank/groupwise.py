"""``method: groupwise``: the model scores a group of documents together (GroupRank, Sun et al. 2025).

Why: a pointwise judge scores each document alone and cannot calibrate against the others; a
listwise one gives only an order. A groupwise judge sees ``group_size`` documents at once and
gives each an absolute usefulness score (0-10), so scores from different groups can be
averaged, and every group is independent of the others (all calls run in one parallel step).

How: for each of ``repeats`` rounds the candidates are shuffled (key: seed, qid, repeat) and cut
into consecutive groups of ``group_size``; one ``Generate`` per group asks for a JSON object
``{"[1]": 7, ...}`` inside ``<answer>...</answer>``. A document's score is the mean, over the
rounds, of its score / 10 clipped to [0, 1]; equal scores keep the input order.

Calls: ceil(n / group_size) · repeats, all yielded at once (30 at n = 100 with the paper's
group_size 20 and 6 repeats). Reading an answer follows the paper's code: the content of
``<answer>``, else the last fenced ``json`` block, else the last ``{...}``; ``[7]]`` keys and a
missing ``}`` (a cut answer) are repaired; keys ``"[3]"`` and ``"3"`` are accepted. A document
the parsed object leaves out scores 0; an answer that cannot be parsed gives the whole group 0.
Each repair is counted by kind.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any, ClassVar, Literal

from pydantic import Field

from rerankcli.llm.requests import Generate, Request
from rerankcli.llm.scheduler import Program
from rerankcli.rerank.candidates import Query
from rerankcli.rerank.llm_method import LLMRerankStage, Reranked, refuse_poor_answers, repair_counts, summed_repairs
from rerankcli.rerank.orders import shuffled
from rerankcli.rerank.permutation import THINK
from rerankcli.rerank.templates import Template, load_template

#: the kinds of repair, in the order the manifest lists them
REPAIRS = ("think_block", "no_answer_tag", "bracket_key", "missing_brace", "trailing_comma", "bad_key",
           "out_of_range", "bad_score", "out_of_scale", "missing", "unparsed")
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json)?(.*?)(?:```|$)", re.DOTALL | re.IGNORECASE)
_VALUE = re.compile(r":\s*\"?-?\d+(?:\.\d+)?\"?")
_BRACKET_KEY = re.compile(r"(\[\s*\d+\s*\])\]+")
_TRAILING_COMMA = re.compile(r",\s*}")
_KEY = re.compile(r"\s*\[?\s*(\d+)\s*\]?\s*")
_NEWLINES = re.compile(r"\s*\n\s*")


def _object_text(text: str, repairs: Counter) -> str | None:
    """The JSON object's text in an answer, repaired; None when there is none."""
    answers = _ANSWER.findall(text)
    if answers:
        text = answers[-1]
    else:
        repairs["no_answer_tag"] += 1
    fences = _FENCE.findall(text)
    if fences:
        text = fences[-1]
    start = text.rfind("{")
    if start < 0:
        return None
    end = text.find("}", start)
    if end < 0:  # cut short: keep the entries up to the last complete value
        repairs["missing_brace"] += 1
        values = list(_VALUE.finditer(text, start))
        body = (text[start: values[-1].end()] if values else "{") + "}"
    else:
        body = text[start: end + 1]
    body, fixed = _BRACKET_KEY.subn(r"\1", body)
    repairs["bracket_key"] += fixed
    body, fixed = _TRAILING_COMMA.subn("}", body)
    repairs["trailing_comma"] += fixed
    return body


def parse_scores(text: str, size: int) -> tuple[list[float], Counter]:
    """A score in [0, 1] for each of a group's ``size`` documents, and the repairs it needed."""
    repairs: Counter = Counter()
    if THINK.search(text):
        repairs["think_block"] += 1
        text = THINK.sub(" ", text)
    body = _object_text(text, repairs)
    try:
        data = json.loads(body) if body is not None else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        repairs["unparsed"] += 1
        return [0.0] * size, +repairs
    scores: dict[int, float] = {}
    for key, value in data.items():
        match = _KEY.fullmatch(key)
        if match is None:
            repairs["bad_key"] += 1
            continue
        position = int(match.group(1))
        if not 1 <= position <= size:
            repairs["out_of_range"] += 1
            continue
        try:
            number = float(value) if not isinstance(value, (bool, dict, list)) and value is not None else math.nan
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            repairs["bad_score"] += 1
            continue
        if not 0.0 <= number <= 10.0:
            repairs["out_of_scale"] += 1
        scores[position - 1] = min(max(number / 10.0, 0.0), 1.0)
    repairs["missing"] += size - len(scores)
    return [scores.get(k, 0.0) for k in range(size)], +repairs


class GroupwiseStage(LLMRerankStage):
    method: Literal["groupwise"] = Field(description=(
        "groupwise: the model scores a group of documents 0-10 at once; scores averaged over shuffles"))
    group_size: int = Field(20, ge=1, description="documents per prompt")
    repeats: int = Field(6, ge=1, description="rounds, each cutting a fresh shuffle of the candidates into groups")
    max_new_tokens: int | None = Field(None, gt=0, description=(
        "longest answer, in tokens; default: 10 per document in the group, plus 48"))
    max_repair_rate: float = Field(1.0, ge=0, le=1, description=(
        "fail the stage when more than this share of group answers needed a repair"))

    default_prompt: ClassVar = "groupwise"
    placeholders: ClassVar = ({"query", "passages"}, {"query", "num", "passages"})
    asks: ClassVar = (Generate,)
    summary: ClassVar = "GroupRank: the model scores groups of documents 0-10 in JSON; mean over shuffled rounds"

    def template(self, base_dir: Any) -> Template:
        required, allowed = self.placeholders
        return load_template(self.prompt or self.default_prompt, base_dir, required, allowed, listwise=True)

    def planned_calls(self, n: int) -> tuple[int, int]:
        """ceil(n / group_size) · repeats; a single candidate asks nothing."""
        calls = -(-n // self.group_size) * self.repeats if n > 1 else 0
        return calls, calls

    # -- the method --------------------------------------------------------------------------
    def repairs(self, reranked: Reranked) -> Counter:
        return summed_repairs(reranked)

    def method_details(self, reranked: Reranked) -> dict[str, Any]:
        totals = self.repairs(reranked)
        records = reranked.records
        return {"groups": sum(r["groups"] for r in records.values()),
                "repaired_groups": sum(r["repaired_groups"] for r in records.values()),
                "unparsed_groups": totals["unparsed"],
                **repair_counts(reranked, REPAIRS)}

    def check_method(self, reranked: Reranked) -> None:
        details = self.method_details(reranked)
        refuse_poor_answers(self.name, details["repaired_groups"], details["groups"], self.max_repair_rate,
                            "group answers needed a repair")

    def program(self, query: Query, template: Template, prepared: None) -> Program:
        n = len(query.candidates)
        groups: list[list[int]] = []
        for repeat in range(self.repeats if n > 1 else 0):  # one candidate: nothing to compare
            order = shuffled(n, f"{self.seed}:{query.qid}:{repeat}")
            groups += [order[start: start + self.group_size] for start in range(0, n, self.group_size)]
        answers = (yield [self._request(query, template, group) for group in groups]) if groups else []
        received: list[list[float]] = [[] for _ in range(n)]
        repairs: Counter = Counter()
        repaired = 0
        for group, answer in zip(groups, answers):
            scores, found = parse_scores(answer.text, len(group))
            repaired += bool(found)
            repairs.update(found)
            for i, score in zip(group, scores):
                received[i].append(score)
        scores = {c.docid: sum(received[i]) / len(received[i]) if received[i] else 0.0
                  for i, c in enumerate(query.candidates)}
        return scores, {"groups": len(groups), "repaired_groups": repaired, "repairs": dict(repairs)}

    def _request(self, query: Query, template: Template, group: list[int]) -> Request:
        # one line per document, as the paper does: the blank lines between items stay unambiguous
        texts = [_NEWLINES.sub(" ", query.candidates[i].text) for i in group]
        ids = [str(k + 1) for k in range(len(group))]
        prompt = template.list_prompt(query.text, texts, ids, self.max_passage_tokens)
        return Generate(prompt, max_new_tokens=self.max_new_tokens or 10 * len(group) + 48)
