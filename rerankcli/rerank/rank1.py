"""``method: rank1``: think, then say whether the passage is relevant (Weller et al. 2025, Rank1).

Rank1 is yes-no with reasoning, prompted as its authors prompt it (``prompts/rank1.yaml``: a raw
completion prompt ending in ``<think>``, no chat template): the model reasons up to
``reasoning.max_tokens``; its reasoning is closed with ``"\\n</think>"`` (cut back to its last
full sentence when the budget ran out first) and the score is P(" true") renormalised over
" true" and " false" at the next token, as Rank1 reads the log-probabilities of its final
position. A pair whose answer tokens have no probability at all scores 0.5 (Rank1's fallback).
The published setting is 8,192 reasoning tokens (METHODS.md §5).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from rerankcli.rerank.pointwise import YesNoStage
from rerankcli.rerank.reasoning import Reasoning


class Rank1Stage(YesNoStage):
    method: Literal["rank1"] = Field(description="rank1: think, then P(true) that the passage is relevant")  # type: ignore[assignment]
    reasoning: Reasoning | None = Field(default_factory=lambda: Reasoning(max_tokens=8192), description=(
        "the think budget (Rank1: 8192 tokens)"))

    default_prompt: ClassVar = "rank1"
    summary: ClassVar = "Rank1: reasons in a think block, then P(true) from the next-token distribution"

    @model_validator(mode="after")
    def _reasons(self) -> Rank1Stage:
        if self.reasoning is None:
            raise ValueError("rank1 always reasons (its prompt ends inside <think>): set reasoning.max_tokens, "
                             "or use method: yes-no to answer at once")
        return self
