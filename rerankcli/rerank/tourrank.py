"""``method: tourrank``: tournaments of groups whose winners advance (TourRank, Chen et al. WWW 2025).

Why: a listwise model asked to order 100 passages at once loses track of them, and a sliding
window depends on the input order. TourRank only asks the model to *select* the best few of a
group, runs a sports-style tournament over the candidates, and repeats it with other shuffles.

How one tournament runs (Table 7 of the paper at n = 100: 100 → 50 → 20 → 10 → 5 → 2):
- ``stages`` lists how many candidates advance after each stage; by default the paper's
  [50, 20, 10, 5, 2] scaled by n/100 (rounded, at least 1, strictly decreasing).
- A stage takes the top ``input`` candidates by points (the previous stage's advance; n first).
  While its input exceeds ``group_size`` it splits them into G = ceil(n / group_size) groups
  (at most one per advancing place), else into one group; group g gets positions g, g+G, …
  of the current order, so each group mixes strong and weak seeds. Group g keeps advance/G
  candidates, the remainder going to the first groups. At n = 100, group_size 20 this gives
  the paper's 5×20, 5×10, 1×20, 1×10, 1×5.
- The docs of a group are shuffled (key: seed, qid, tournament, stage, group) and the model
  selects the ``keep`` best (``Document 3, Document 1, …``). A group that keeps all its docs
  is not asked. Every selected doc gains a point; candidates are then stable-sorted by points,
  so ties keep the current order, which started as the input order.
- ``tournaments`` (r) run independently: each stage yields the groups of every tournament at
  once, so they share batches. The paper's best setting is r = 10 (130 calls at n = 100); the
  default here is its budget setting r = 2.
Score = points summed over the tournaments (the written score's integer part), plus a fraction
below 1 that falls with input position, so written scores strictly decrease and ties keep the
input order.

Calls: r · Σ over stages of the groups asked (13·r at n = 100), in as many sequential steps as
stages. Parsing follows the paper's code: the last line naming a ``Document`` (else the whole
text), its integers as 1-based positions; out-of-range and repeated positions are dropped,
the first ``keep`` are taken and missing ones are filled with the first unused positions of
the group as shown. Every repair is counted by kind.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from rerankcli.llm.requests import Generate, Request
from rerankcli.llm.scheduler import Program
from rerankcli.rerank.candidates import Query
from rerankcli.rerank.llm_method import LLMRerankStage, Reranked, refuse_poor_answers, repair_counts, summed_repairs
from rerankcli.rerank.orders import shuffled
from rerankcli.rerank.permutation import BARE, THINK
from rerankcli.rerank.templates import Template, load_template

#: how many candidates advance after each stage at n = 100 (the paper's Table 7)
PAPER_STAGES = (50, 20, 10, 5, 2)
#: the kinds of repair, in the order the manifest lists them (permutation.REPAIRS where they fit)
REPAIRS = ("think_block", "bare_numbers", "extra_text", "duplicate", "out_of_range", "too_many", "missing",
           "no_ranking")
_DOCUMENT = re.compile(r"document\s*\[?\s*(\d+)\s*\]?", re.IGNORECASE)
#: the trailing integer of each comma-separated piece of a "Document 3, 1, Document 2" line
_TRAILING = re.compile(r"\[?\s*(\d+)\s*\]?\s*(?=,|;|$|\.|\s*>)")


def parse_selection(text: str, size: int, keep: int) -> tuple[list[int], Counter]:
    """``keep`` distinct 0-based positions of a group of ``size`` selected by the model's answer."""
    repairs: Counter = Counter()
    if THINK.search(text):
        repairs["think_block"] += 1
        text = THINK.sub(" ", text)
    lines = [line for line in text.splitlines() if line.strip()]
    named = [line for line in lines if _DOCUMENT.search(line)]
    numbered = [line for line in lines if BARE.search(line)]
    line = named[-1] if named else numbered[-1] if numbered else text
    numbers = [int(m) for m in _DOCUMENT.findall(line)]
    rest = _DOCUMENT.sub(" ", line)
    if numbers:  # "Document 3, 1, 2": the paper's parser reads every piece's trailing number
        numbers = [int(m) for m in _TRAILING.findall(line)]
        rest = _TRAILING.sub(" ", rest)
    if not numbers:
        numbers = [int(m) for m in BARE.findall(line)]
        repairs["bare_numbers"] += bool(numbers)
        rest = BARE.sub(" ", rest)
    if (named and len(lines) > 1) or re.search(r"[^\s,;.>|\-]", rest):
        repairs["extra_text"] += 1
    chosen: list[int] = []
    for number in numbers:
        if not 1 <= number <= size:
            repairs["out_of_range"] += 1
        elif number - 1 in chosen:
            repairs["duplicate"] += 1
        elif len(chosen) == keep:
            repairs["too_many"] += 1
        else:
            chosen.append(number - 1)
    if not chosen:
        repairs["no_ranking"] += 1
    elif len(chosen) < keep:
        repairs["missing"] += keep - len(chosen)
    unused = [i for i in range(size) if i not in chosen]
    return chosen + unused[: keep - len(chosen)], +repairs


@dataclass(frozen=True)
class Round:
    """One stage of a tournament: ``entrants`` top candidates in ``groups`` groups, ``advance`` go on."""

    entrants: int
    groups: int
    advance: int

    def members(self, g: int) -> range:
        """Positions (in the current order) of group g: g, g+G, g+2G, …"""
        return range(g, self.entrants, self.groups)

    def keep(self, g: int) -> int:
        return self.advance // self.groups + (g < self.advance % self.groups)

    def asked(self) -> int:
        """Groups that must choose (a group keeping all its members asks nothing)."""
        return sum(self.keep(g) < len(self.members(g)) for g in range(self.groups))


class TourrankStage(LLMRerankStage):
    method: Literal["tourrank"] = Field(description=(
        "tourrank: tournaments in which the model selects the best of each group (TourRank)"))
    tournaments: int = Field(2, ge=1, description=(
        "r: independent tournaments whose points are summed (the paper's budget setting 2; its best 10)"))
    group_size: int = Field(20, ge=2, description=(
        "a stage with more entrants than this splits them into ceil(n / group_size) groups"))
    stages: list[int] | None = Field(None, description=(
        "how many candidates advance after each stage, strictly decreasing; default: the paper's "
        "[50, 20, 10, 5, 2] scaled by n/100"))
    max_new_tokens: int | None = Field(None, gt=0, description=(
        "longest answer, in tokens; default: 6 per document to select, plus 16"))
    max_repair_rate: float = Field(1.0, ge=0, le=1, description=(
        "fail the stage when more than this share of group answers needed a repair"))

    default_prompt: ClassVar = "tourrank"
    placeholders: ClassVar = ({"query", "passages", "keep"}, {"query", "num", "passages", "keep"})
    asks: ClassVar = (Generate,)
    summary: ClassVar = "TourRank: tournaments of groups, the model selects who advances; points summed"

    @model_validator(mode="after")
    def _stages_decrease(self) -> TourrankStage:
        if self.stages is not None:
            if not self.stages:
                raise ValueError("stages needs at least one stage")
            if any(a < 1 for a in self.stages):
                raise ValueError("each stage must advance at least 1 candidate")
            if any(b >= a for a, b in zip(self.stages, self.stages[1:])):
                raise ValueError(f"stages must strictly decrease, found {self.stages}")
            if self.stages[0] >= self.depth:
                raise ValueError(f"the first stage must advance fewer than depth ({self.depth}) candidates")
        return self

    def template(self, base_dir: Any) -> Template:
        required, allowed = self.placeholders
        return load_template(self.prompt or self.default_prompt, base_dir, required, allowed, listwise=True)

    # -- the schedule ------------------------------------------------------------------------
    def advances(self, n: int) -> list[int]:
        """How many of ``n`` candidates advance after each stage (stages that would keep all are left out)."""
        wanted = self.stages or [max(1, math.floor(a * n / 100 + 0.5)) for a in PAPER_STAGES]
        out: list[int] = []
        for advance in wanted:
            if advance < (out[-1] if out else n):
                out.append(advance)
        return out

    def schedule(self, n: int) -> list[Round]:
        rounds, entrants = [], n
        split = -(-n // self.group_size)
        for advance in self.advances(n):
            rounds.append(Round(entrants, min(split, advance) if entrants > self.group_size else 1, advance))
            entrants = advance
        return rounds

    def planned_calls(self, n: int) -> tuple[int, int]:
        """r · Σ over stages of the groups asked; at n = 100 with the defaults 13·r."""
        calls = self.tournaments * sum(r.asked() for r in self.schedule(n))
        return calls, calls

    def prompts_known_in_advance(self) -> bool:
        return False  # later stages hold the winners of earlier ones

    # -- the method --------------------------------------------------------------------------
    def repairs(self, reranked: Reranked) -> Counter:
        return summed_repairs(reranked)

    def method_details(self, reranked: Reranked) -> dict[str, Any]:
        records = reranked.records
        return {"tournaments": self.tournaments,
                "schedule_at_depth": [[r.entrants, r.groups, r.advance] for r in self.schedule(self.depth)],
                "groups": sum(r["groups"] for r in records.values()),
                "repaired_groups": sum(r["repaired_groups"] for r in records.values()),
                **repair_counts(reranked, REPAIRS)}

    def check_method(self, reranked: Reranked) -> None:
        details = self.method_details(reranked)
        refuse_poor_answers(self.name, details["repaired_groups"], details["groups"], self.max_repair_rate,
                            "group answers needed a repair")

    def program(self, query: Query, template: Template, prepared: None) -> Program:
        n = len(query.candidates)
        orders = [list(range(n)) for _ in range(self.tournaments)]
        points = [[0] * n for _ in range(self.tournaments)]
        repairs: Counter = Counter()
        groups = repaired = 0
        for s, stage in enumerate(self.schedule(n)):
            asked: list[tuple[int, list[int], int]] = []  # (tournament, group as shown, keep)
            for t, order in enumerate(orders):
                for g in range(stage.groups):
                    members = [order[p] for p in stage.members(g)]
                    keep = stage.keep(g)
                    if keep >= len(members):
                        for i in members:
                            points[t][i] += 1
                        continue
                    shown = [members[k] for k in shuffled(len(members), f"{self.seed}:{query.qid}:{t}:{s}:{g}")]
                    asked.append((t, shown, keep))
            requests = [self._request(query, template, shown, keep) for _, shown, keep in asked]
            answers = (yield requests) if requests else []
            for (t, shown, keep), answer in zip(asked, answers):
                chosen, found = parse_selection(answer.text, len(shown), keep)
                groups += 1
                repaired += bool(found)
                repairs.update(found)
                for k in chosen:
                    points[t][shown[k]] += 1
            for t, order in enumerate(orders):
                order.sort(key=points[t].__getitem__, reverse=True)  # stable: ties keep the current order
        # equal points, equal scores: the run's writer orders them by first-stage position,
        # whatever order the model was shown (``order``)
        scores = {c.docid: float(sum(p[i] for p in points)) for i, c in enumerate(query.candidates)}
        return scores, {"groups": groups, "repaired_groups": repaired, "repairs": dict(repairs)}

    def _request(self, query: Query, template: Template, shown: list[int], keep: int) -> Request:
        texts = [query.candidates[i].text for i in shown]
        ids = [str(k + 1) for k in range(len(shown))]
        prompt = template.list_prompt(query.text, texts, ids, self.max_passage_tokens, values={"keep": str(keep)})
        return Generate(prompt, max_new_tokens=self.max_new_tokens or 6 * keep + 16)
