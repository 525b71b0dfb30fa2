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

Each query is a program that yields one window at a time, so the scheduler batches the windows
of different queries together and no query waits for another. Written scores are
``depth - rank`` (listwise ranking has no scores of its own).
"""

from __future__ import annotations

import random
import string
from collections import Counter
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from rerankcli.core.errors import UserError
from rerankcli.llm.backend import Backend
from rerankcli.llm.requests import Generate, NextToken
from rerankcli.llm.scheduler import Program
from rerankcli.rerank.candidates import Query
from rerankcli.rerank.llm_method import LLMRerankStage, Reranked
from rerankcli.rerank.permutation import REPAIRS, parse_permutation
from rerankcli.rerank.templates import Template, load_template

LETTERS = list(string.ascii_uppercase)


class ListwiseStage(LLMRerankStage):
    method: Literal["listwise"] = Field(description="listwise: the model orders a list of candidates")
    strategy: Literal["sliding", "full", "first"] = Field("sliding", description=(
        "sliding windows (RankGPT), full (all candidates in one prompt), first (identifier logits, FIRST)"))
    window: int = Field(20, ge=2, description="candidates per prompt (sliding, first)")
    stride: int = Field(10, ge=1, description="positions the window moves up between prompts (< window)")
    passes: int = Field(1, ge=1, description="sliding: sweeps of the window from the bottom to the top")
    order: Literal["input", "reverse", "shuffle"] = Field("input", description="candidate order before ranking")
    seed: int = Field(0, description="order shuffle: the random seed")
    max_new_tokens: int | None = Field(None, gt=0, description=(
        "longest answer, in tokens; default: 6 per passage in the window, plus 16"))
    max_repair_rate: float = Field(1.0, ge=0, le=1, description=(
        "fail the stage when more than this share of windows needed a repair of the model's answer"))

    placeholders: ClassVar = ({"query", "passages"}, {"query", "passages", "num"})
    summary: ClassVar = "the model orders lists of candidates: RankGPT sliding windows, one full list, or FIRST"

    @model_validator(mode="after")
    def _window_fits(self) -> ListwiseStage:
        if self.strategy != "full" and self.stride >= self.window:
            raise ValueError("stride must be smaller than window, or windows would skip candidates")
        if self.strategy == "first" and self.window > len(LETTERS):
            raise ValueError(f"strategy first identifies passages by letters: window is at most {len(LETTERS)}")
        return self

    @property
    def default_prompt(self) -> str:  # type: ignore[override]
        return "listwise-first" if self.strategy == "first" else "listwise"

    @property
    def asks(self) -> tuple[type, ...]:  # type: ignore[override]
        return (NextToken,) if self.strategy == "first" else (Generate,)

    def template(self, base_dir: Any) -> Template:
        required, allowed = self.placeholders
        return load_template(self.prompt or self.default_prompt, base_dir, required, allowed, listwise=True)

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
        totals: Counter = Counter()
        for record in reranked.records.values():
            totals.update(record["repairs"])
        return totals

    def method_details(self, reranked: Reranked) -> dict[str, Any]:
        totals = self.repairs(reranked)
        records = reranked.records
        return {"windows": sum(r["windows"] for r in records.values()),
                "repaired_windows": sum(r["repaired_windows"] for r in records.values()),
                "repairs": {k: totals[k] for k in REPAIRS if totals[k]},
                "repairs_per_query": {q: r["repairs"] for q, r in sorted(records.items()) if r["repairs"]}}

    def check_method(self, reranked: Reranked) -> None:
        details = self.method_details(reranked)
        windows, repaired = details["windows"], details["repaired_windows"]
        if windows and repaired / windows > self.max_repair_rate:
            raise UserError(f"stage '{self.name}': {repaired} of {windows} windows "
                            f"needed their answer repaired (more than max_repair_rate "
                            f"{self.max_repair_rate:g}); the model does not follow the output format")

    def planned_calls(self, n: int) -> tuple[int, int]:
        """One call per window: windows move up by ``stride`` until one reaches the top."""
        if n <= 1:
            return 0, 0
        size = self.size()
        windows = 1 if n <= size or self.strategy == "full" else 1 + -(-(n - size) // self.stride)
        return self.passes * windows, self.passes * windows

    def prompts_known_in_advance(self) -> bool:
        # later windows hold the candidates earlier windows carried up
        return self.strategy == "full" and self.passes == 1

    def program(self, query: Query, template: Template, prepared: None) -> Program:
        order = list(range(len(query.candidates)))
        if self.order == "reverse":
            order.reverse()
        elif self.order == "shuffle":
            random.Random(f"{self.seed}:{query.qid}").shuffle(order)
        repairs: Counter = Counter()
        windows = repaired = 0
        size = self.size()
        stride = size if self.strategy == "full" else self.stride
        for _ in range(self.passes if len(order) > 1 else 0):  # one candidate: nothing to rank
            end = len(order)
            while True:
                start = max(0, end - size)
                window = order[start:end]
                texts = [query.candidates[i].text for i in window]
                if self.strategy == "first":
                    ids = LETTERS[: len(window)]
                    prompt = template.list_prompt(query.text, texts, ids, self.max_passage_tokens)
                    (answer,) = yield [NextToken(prompt, tuple(ids))]
                    ranked = sorted(range(len(window)), key=lambda k: -answer.logprobs[ids[k]])
                    found: Counter = Counter()
                else:
                    ids = [str(k + 1) for k in range(len(window))]
                    prompt = template.list_prompt(query.text, texts, ids, self.max_passage_tokens)
                    budget = self.max_new_tokens or 6 * len(window) + 16
                    (answer,) = yield [Generate(prompt, max_new_tokens=budget)]
                    ranked, found = parse_permutation(answer.text, len(window))
                windows += 1
                repaired += bool(found)
                repairs.update(found)
                order[start:end] = [window[k] for k in ranked]
                if start == 0:
                    break
                end -= stride
        scores = {query.candidates[i].docid: float(len(order) - rank) for rank, i in enumerate(order)}
        return scores, {"windows": windows, "repaired_windows": repaired, "repairs": dict(repairs)}
