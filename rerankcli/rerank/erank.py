"""``method: erank``: think, then give an integer relevance score 0-10 (Cai et al. 2025, ERank).

The answer is read from the digit tokens after ``<answer>`` (``reasoning.read_number``): the
score is the integer times its token probability (``scoring: product``, the paper's rule: it
breaks ties between documents given the same integer), or the expected value over 0-10
(``scoring: expected``, an option METHODS.md §6 keeps). "10" is read as "1" then "0" when the
tokenizer splits it, with the product of the two probabilities. A pair whose digit tokens have
no probability at all scores 0 (the lowest score). Published budget: about 1,024 reasoning
tokens (the model's RL responses; ~410 on average).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from rerankcli.llm.backend import Backend
from rerankcli.llm.requests import NextToken
from rerankcli.llm.scheduler import Program
from rerankcli.rerank.candidates import Query
from rerankcli.rerank.llm_method import LLMRerankStage, Reranked
from rerankcli.rerank.pointwise import number_forms
from rerankcli.rerank.reasoning import Reasoning, read_number, think, trace, traced
from rerankcli.rerank.templates import Template


class ERankStage(LLMRerankStage):
    method: Literal["erank"] = Field(description="erank: think, then an integer relevance score 0-10")
    reasoning: Reasoning | None = Field(default_factory=lambda: Reasoning(max_tokens=1024), description=(
        "the think budget (ERank: responses of up to 1024 tokens); null answers at once"))
    scoring: Literal["product", "expected"] = Field("product", description=(
        "product: the integer times its probability (the paper); expected: the mean over 0-10"))
    instruction: str | None = Field(None, description="the relevance definition shown to the model; default: the template's")

    default_prompt: ClassVar = "erank"
    placeholders: ClassVar = ({"query", "passage"}, {"query", "passage", "instruction"})
    asks: ClassVar = (NextToken,)
    order_matters: ClassVar = False
    reasons: ClassVar = True
    summary: ClassVar = "ERank: reasons, then an integer 0-10; score = integer x its probability"

    def template(self, base_dir: Path) -> Template:
        return super().template(base_dir).instructed(self.instruction, self.name)

    def prepare_method(self, backend: Backend) -> dict[str, list[str]]:
        """The score tokens: 0-10 as tokens, or the digits (``pointwise.number_forms``)."""
        return number_forms(backend, 0, 10, self.name)

    def method_details(self, reranked: Reranked) -> dict[str, Any]:
        return {"answer_tokens": reranked.prepared, "scoring": self.scoring}

    def planned_calls(self, n: int) -> tuple[int, int]:
        """Per pair: a think call, the first digit, and a second look after a "1" (10 or 1?):
        always with ``scoring: expected``, only when "1" wins otherwise."""
        think_calls = n if self.reasoning is not None else 0
        second = (n, n) if self.scoring == "expected" else (0, n)
        return think_calls + n + second[0], think_calls + n + second[1]

    def planned_generations(self, n: int) -> int:
        return n if self.reasoning is not None else 0  # one think call per pair; the rest read digits

    def prompts_known_in_advance(self) -> bool:
        return self.reasoning is None and self.scoring == "expected"

    def program(self, query: Query, template: Template, forms: dict[str, list[str]]) -> Program:
        prompts = [template.prompt(query.text, c.text, self.max_passage_tokens) for c in query.candidates]
        thoughts = None
        if self.reasoning is not None:
            thoughts, prompts = yield from think(prompts, self.reasoning, self.think_close(template))
        numbers = yield from read_number(prompts, 0, 10, forms, expected=self.scoring == "expected")
        scores = {c.docid: n.value * n.probability if self.scoring == "product" else n.value
                  for c, n in zip(query.candidates, numbers)}
        if thoughts is None:
            return scores, {}
        return scores, traced([trace([c.docid], t, {"score": n.value, "probability": round(n.probability, 6)},
                                     n.fell_back) for c, t, n in zip(query.candidates, thoughts, numbers)])
