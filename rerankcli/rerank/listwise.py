"""``method: listwise``: rank windows of candidates at once, by generation or by FIRST logits.

Strategies:
- ``sliding`` (RankGPT): windows of ``window`` candidates, moving by ``stride`` from the bottom
  of the top-``depth`` list to the top, ``passes`` times; each window's answer is parsed into a
  permutation (``permutation.py``). With stride ≤ window/2 one pass carries the best
  ``window - stride`` candidates to the top in order.
- ``full``: one window holding all ``depth`` candidates (long-context models); passages are
  cut in tokens so the prompt fits ``max_length``, and the cuts are counted.
- ``first`` (FIRST): no decoding; the window is ordered by the next-token log-probabilities of
  the identifiers after "[" (letters A, B, … by default, which must be single tokens).
- ``tdpart`` (top-down partitioning, ``tdpart.py``): a pivot from the first window, blocks
  compared against it in parallel, ``top_k`` and ``budget`` as in the paper.

Any strategy ranks each window by generation, or by FIRST's logits when ``strategy: first``.
Options that apply to every strategy:
- ``permutations: M`` (permutation self-consistency, Tang et al. 2024): each window is asked in
  M orders (the first as shown, the others seeded shuffles from ``orders.py``) in one step, and
  the M rankings are aggregated (``aggregate.py``: ``kemeny`` or ``borda``); M = 1 is plain
  listwise. The paper shuffles all M; keeping the shown order as one of them makes M = 1 the
  same stage as before.
- ``first_stage_scores: true`` (InsertRank, Seetharaman et al. 2025): each passage shows its
  first-stage score, raw with 3 decimals (as rank_llm does) or min-max normalised per query.

Each query is a program that yields one step of windows at a time, so the scheduler batches
the windows of different queries together and no query waits for another. Written scores are
``depth - rank`` (listwise ranking has no scores of its own).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Generator
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from rerankcli.core.errors import UserError
from rerankcli.llm.backend import Backend
from rerankcli.llm.requests import Generate, NextToken, Request
from rerankcli.llm.scheduler import Program
from rerankcli.rerank.aggregate import borda, kemeny
from rerankcli.rerank.candidates import Query
from rerankcli.rerank.llm_method import LLMRerankStage, Reranked, refuse_poor_answers, repair_counts, summed_repairs
from rerankcli.rerank.orders import shuffled
from rerankcli.rerank.permutation import REPAIRS, parse_permutation
from rerankcli.rerank.reasoning import Reasoning, ask, trace, traced
from rerankcli.rerank.tdpart import planned_range, tdpart
from rerankcli.rerank.templates import Template, load_template

LETTERS = list(string.ascii_uppercase)
_BRACKETED_NUMBER = re.compile(r"\[(\d+)\]")


Steps = Generator[list[Request], list[Any], list[list[int]]]


class ListwiseStage(LLMRerankStage):
    method: Literal["listwise"] = Field(description="listwise: the model orders a list of candidates")
    strategy: Literal["sliding", "full", "first", "tdpart"] = Field("sliding", description=(
        "sliding windows (RankGPT), full (all candidates in one prompt), first (identifier logits, FIRST), "
        "tdpart (top-down partitioning around a pivot)"))
    window: int = Field(20, ge=2, description="candidates per prompt (sliding, first, tdpart)")
    stride: int = Field(10, ge=1, description="positions the window moves up between prompts (< window)")
    passes: int = Field(1, ge=1, description="sliding: sweeps of the window from the bottom to the top")
    top_k: int = Field(10, ge=1, description="tdpart: the pivot is the top_k-th best of the first window")
    budget: int = Field(20, ge=1, description="tdpart: candidates above the pivot kept for the next round")
    permutations: int = Field(1, ge=1, description=(
        "self-consistency: ask each window in this many orders (shown, then seeded shuffles) and aggregate"))
    aggregation: Literal["kemeny", "borda"] = Field("kemeny", description=(
        "how the permutations' rankings are combined: kemeny (least Kendall-tau distance) or borda (mean rank)"))
    first_stage_scores: bool = Field(False, description=(
        "InsertRank: show each passage's first-stage score in the prompt (the template's item has {score})"))
    score_normalization: Literal["raw", "minmax", "minmax100"] = Field("raw", description=(
        "first_stage_scores: raw (3 decimals), or min-max over the query's candidates to [0,1] or [0,100]"))
    max_new_tokens: int | None = Field(None, gt=0, description=(
        "longest answer, in tokens; default: 6 per passage in the window, plus 16"))
    max_repair_rate: float = Field(1.0, ge=0, le=1, description=(
        "fail the stage when more than this share of prompts needed a repair of the model's answer"))

    placeholders: ClassVar = ({"query", "passages"}, {"query", "passages", "num"})
    reasons: ClassVar = True
    summary: ClassVar = ("the model orders lists of candidates: sliding windows, one full list, FIRST, TDPart; "
                         "self-consistency, first-stage scores")
    # order and seed were listwise options before every method had them: they stay in its identity
    added_options: ClassVar = {"order_seed": None, "reasoning": None, "top_k": 10, "budget": 20, "permutations": 1,
                               "aggregation": "kemeny", "first_stage_scores": False, "score_normalization": "raw"}

    def identity(self) -> dict[str, Any]:
        # an option that does not apply cannot change the output, so it does not change the key
        identity = super().identity()
        tdpart = self.strategy == "tdpart"
        unused = {"aggregation": self.permutations == 1, "score_normalization": not self.first_stage_scores,
                  "top_k": not tdpart, "budget": not tdpart, "stride": tdpart}
        return {k: v for k, v in identity.items() if not unused.get(k)}

    @model_validator(mode="after")
    def _window_fits(self) -> ListwiseStage:
        if self.strategy in ("sliding", "first") and self.stride >= self.window:
            raise ValueError("stride must be smaller than window, or windows would skip candidates")
        if self.strategy == "first" and self.window > len(LETTERS):
            raise ValueError(f"strategy first identifies passages by letters: window is at most {len(LETTERS)}")
        if self.strategy == "tdpart" and self.top_k > self.window:
            raise ValueError(f"tdpart: top_k ({self.top_k}) must be at most window ({self.window}): "
                             "the pivot comes from the first window")
        if self.strategy == "tdpart" and self.budget < self.top_k:
            raise ValueError(f"tdpart: budget ({self.budget}) must be at least top_k ({self.top_k})")
        if self.strategy == "first" and self.reasoning is not None:
            raise ValueError("strategy first reads logits without generating: reasoning applies to sliding, "
                             "full and tdpart")
        if self.strategy == "tdpart" and self.passes > 1:
            raise ValueError("tdpart makes one top-down pass; passes applies to sliding, full and first")
        if "score_normalization" in self.model_fields_set and not self.first_stage_scores:
            raise ValueError("score_normalization applies only with first_stage_scores: true")
        return self

    @property
    def default_prompt(self) -> str:  # type: ignore[override]
        name = "listwise-first" if self.strategy == "first" else "listwise"
        return name.replace("listwise", "insertrank") if self.first_stage_scores else name

    @property
    def asks(self) -> tuple[type, ...]:  # type: ignore[override]
        return (NextToken,) if self.strategy == "first" else (Generate,)

    def template(self, base_dir: Any) -> Template:
        required, allowed = self.placeholders
        return load_template(self.prompt or self.default_prompt, base_dir, required, allowed, listwise=True,
                             item_score=self.first_stage_scores)

    def size(self) -> int:
        return self.depth if self.strategy == "full" else self.window

    # -- method ------------------------------------------------------------------------------
    def prepare_method(self, backend: Backend) -> None:
        if self.strategy == "first":
            ids = LETTERS[: self.size()]
            split = [i for i in ids if i not in set(backend.single_tokens(ids))]
            if split:
                raise UserError(f"stage '{self.name}': strategy first needs identifiers that are single "
                                f"tokens; this model's tokenizer splits {split}")

    def repairs(self, reranked: Reranked) -> Counter:
        return summed_repairs(reranked)

    def method_details(self, reranked: Reranked) -> dict[str, Any]:
        records = reranked.records
        details = {"windows": sum(r["windows"] for r in records.values()),
                   "repaired_windows": sum(r["repaired_windows"] for r in records.values()),
                   **repair_counts(reranked, REPAIRS)}
        if self.strategy == "tdpart":  # candidates that beat a pivot but were cut by the budget
            details["over_budget"] = sum(r.get("over_budget", 0) for r in records.values())
        if self.permutations > 1:
            details.update(permutations=self.permutations, aggregation=self.aggregation,
                           prompts=sum(r["prompts"] for r in records.values()),
                           approximate_windows=sum(r["approximate_windows"] for r in records.values()))
        return details

    def check_method(self, reranked: Reranked) -> None:
        details = self.method_details(reranked)
        noun = "windows" if self.permutations == 1 else "prompts"
        refuse_poor_answers(self.name, details["repaired_windows"], details.get("prompts", details["windows"]),
                            self.max_repair_rate, f"{noun} needed their answer repaired")

    def planned_calls(self, n: int) -> tuple[int, int]:
        """Windows times permutations: sliding windows move up by ``stride`` until one reaches the
        top; tdpart's count depends on how many candidates beat its pivot (``tdpart.py``)."""
        if n <= 1:
            return 0, 0
        if self.strategy == "tdpart":
            least, most = planned_range(n, self.window, self.top_k, self.budget)
            per_window = self.permutations * (2 if self.reasoning is not None else 1)
            return least * per_window, most * per_window
        size = self.size()
        windows = 1 if n <= size or self.strategy == "full" else 1 + -(-(n - size) // self.stride)
        calls = self.passes * windows * self.permutations * (2 if self.reasoning is not None else 1)
        return calls, calls

    def prompts_known_in_advance(self) -> bool:
        # later windows hold the candidates earlier windows carried up
        return self.strategy == "full" and self.passes == 1 and self.reasoning is None

    def program(self, query: Query, template: Template, prepared: None) -> Program:
        book = _Book()
        shown_scores = self._score_texts(query) if self.first_stage_scores else None
        order = list(range(len(query.candidates)))

        def rank_many(windows: list[list[int]]) -> Steps:
            """Each window (candidate indices) best first; all windows and permutations in one step."""
            requests, shows = [], []
            for window in windows:
                views = [list(range(len(window)))] + [
                    shuffled(len(window), f"{self.seed}:{query.qid}:permutation:{book.windows}:{j}")
                    for j in range(1, self.permutations)]
                book.windows += 1
                for view in views:
                    requests.append(self._request(query, template, [window[k] for k in view], shown_scores))
                shows.append(views)
            replies, thoughts = yield from ask(requests, self.reasoning, self.think_close(template))
            answers, thinking = iter(replies), iter(thoughts or [])
            ranked_windows = []
            for window, views in zip(windows, shows):
                rankings = []
                for view in views:
                    answer = next(answers)
                    rankings.append(self._read(answer, view, book))
                    if thoughts is not None:
                        ranking = [query.candidates[window[k]].docid for k in rankings[-1][0]]
                        book.traces.append(trace([query.candidates[window[k]].docid for k in view], next(thinking),
                                                 {"text": answer.text, "ranking": ranking}, rankings[-1][1] == 0))
                ranked_windows.append([window[k] for k in self._combine(rankings, len(window), book)])
            return ranked_windows

        if len(order) > 1 and self.strategy == "tdpart":
            order = yield from tdpart(order, self.window, self.top_k, self.budget, rank_many, book.tdpart)
        size = self.size() if self.strategy != "tdpart" else 0
        stride = size if self.strategy == "full" else self.stride
        for _ in range(self.passes if len(order) > 1 and size else 0):  # one candidate: nothing to rank
            end = len(order)
            while True:
                start = max(0, end - size)
                (order[start:end],) = yield from rank_many([order[start:end]])
                if start == 0:
                    break
                end -= stride
        scores = {query.candidates[i].docid: float(len(order) - rank) for rank, i in enumerate(order)}
        record = book.record(self.permutations > 1, self.strategy == "tdpart")
        return scores, record if self.reasoning is None else {**record, **traced(book.traces)}

    def _request(self, query: Query, template: Template, shown: list[int],
                 scores: list[str] | None) -> Request:
        """One prompt listing the candidates ``shown`` in that order."""
        texts = [self.shown_text(query.candidates[i].text) for i in shown]
        values = [scores[i] for i in shown] if scores is not None else None
        if self.strategy == "first":
            ids = LETTERS[: len(shown)]
            return NextToken(template.list_prompt(query.text, texts, ids, self.max_passage_tokens, values),
                             tuple(ids))
        ids = [str(k + 1) for k in range(len(shown))]
        prompt = template.list_prompt(self.shown_text(query.text), texts, ids, self.max_passage_tokens, values)
        stop = ("</answer>",) if self.reasoning is not None and prompt.answer_prefix.endswith("<answer>") else ()
        return Generate(prompt, max_new_tokens=self.max_new_tokens or 6 * len(shown) + 16, stop=stop)

    def shown_text(self, text: str) -> str:
        """A query or passage as the prompt shows it (unchanged; ReasonRank rewrites "[n]")."""
        return text

    def _read(self, answer: Any, view: list[int], book: _Book) -> tuple[list[int], int]:
        """The answer as a ranking of window positions, and how many of them the model named."""
        book.prompts += 1
        if self.strategy == "first":
            ids = LETTERS[: len(view)]
            ranked = sorted(range(len(view)), key=lambda k: -answer.logprobs[ids[k]])
            return [view[k] for k in ranked], len(view)
        ranked, found = parse_permutation(answer.text, len(view))
        book.repaired += bool(found)
        book.repairs.update(found)
        named = 0 if found["no_ranking"] else len(view) - found["missing"]
        return [view[k] for k in ranked], named

    def _combine(self, rankings: list[tuple[list[int], int]], n: int, book: _Book) -> list[int]:
        """One ranking of the window's positions from its permutations' rankings."""
        if len(rankings) == 1:
            return rankings[0][0]
        if self.aggregation == "borda":
            return borda(rankings, n)
        order, exact = kemeny(rankings, n)
        book.approximate += not exact
        return order

    def _score_texts(self, query: Query) -> list[str]:
        """Each candidate's first-stage score as the prompt shows it."""
        values = [c.score for c in query.candidates]
        if self.score_normalization == "raw":
            return [f"{v:.3f}" for v in values]
        low, high = min(values), max(values)
        unit = [(v - low) / (high - low) if high > low else 1.0 for v in values]
        return [f"{u:.3f}" if self.score_normalization == "minmax" else f"{100 * u:.1f}" for u in unit]


class _Book:
    """One query's counts: windows ranked, prompts sent, repairs, approximate aggregations."""

    def __init__(self) -> None:
        self.windows = self.prompts = self.repaired = self.approximate = 0
        self.repairs: Counter = Counter()
        self.tdpart: dict[str, int] = {}  # tdpart's counts (candidates cut by the budget)
        self.traces: list[dict[str, Any]] = []  # with reasoning: every prompt's trace

    def record(self, aggregated: bool, tdpart: bool) -> dict[str, Any]:
        record = {"windows": self.windows, "repaired_windows": self.repaired, "repairs": dict(self.repairs)}
        if aggregated:
            record.update(prompts=self.prompts, approximate_windows=self.approximate)
        if tdpart:
            record["over_budget"] = self.tdpart.get("over_budget", 0)
        return record


class ReasonRankStage(ListwiseStage):
    """``method: reasonrank`` (Liu et al. 2025): sliding windows of 20 moving by 10 (one pass),
    each window reasoned about up to 3,072 tokens (the paper's scripts), then ranked inside
    ``<answer>``; a window whose answer names no passage keeps its order (the fallback)."""

    method: Literal["reasonrank"] = Field(description="reasonrank: think, then rank each sliding window")  # type: ignore[assignment]
    reasoning: Reasoning | None = Field(default_factory=lambda: Reasoning(max_tokens=3072), description=(
        "the think budget per window (ReasonRank's scripts: 3072 tokens)"))

    summary: ClassVar = "ReasonRank: reasons about each sliding window, then ranks it inside <answer>"

    def shown_text(self, text: str) -> str:
        """ReasonRank writes "[n]" in queries and passages as "(n)", so that only the passages'
        identifiers look like the answer's (its ``utils.py``)."""
        return _BRACKETED_NUMBER.sub(r"(\1)", text)

    @property
    def default_prompt(self) -> str:  # type: ignore[override]
        return "reasonrank"
