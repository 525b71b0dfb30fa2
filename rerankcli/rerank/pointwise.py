"""Pointwise LLM rerankers: each (query, passage) pair scored on its own, all in one step.

- ``yes-no``: P(Yes) from the next-token distribution after a relevance question, renormalised
  over the Yes and No answers (one forward pass, no decoding).
- ``graded``: labels 0..``scale``; the score is the expected label under the renormalised
  probabilities of the label tokens (Zhuang et al. 2023).
- ``query-likelihood``: mean log-probability of the query's tokens after the passage and an
  instruction (UPR, Sachan et al. 2022).

An answer is read as the sum over its surface forms ("Yes", " Yes", "yes", " yes"): which one a
model puts after "Answer:" depends on its tokenizer. Forms the tokenizer splits into several
tokens are left out; if every form of an answer is split, the stage stops and says so.

A template made for a trained reranker (``prompt: qwen3-reranker``) names its ``answers``: yes-no
then reads exactly those tokens (Qwen3-Reranker: ``yes`` and ``no``, no other forms) and refuses
a model for which one is not a single token. Its ``{instruction}`` has a default in the
template, which the stage's ``instruction`` replaces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from rerankcli.core.errors import UserError
from rerankcli.core.models import ResolvedModel
from rerankcli.llm.accounting import Accounting
from rerankcli.llm.backend import Backend
from rerankcli.llm.requests import Continuation, NextToken
from rerankcli.llm.scheduler import Program
from rerankcli.rerank.candidates import Query
from rerankcli.rerank.llm_method import LLMRerankStage, Reranked, answer_probabilities
from rerankcli.rerank.reasoning import ask, trace, traced, unreadable
from rerankcli.rerank.templates import Template


def surface_forms(word: str) -> list[str]:
    return list(dict.fromkeys([word, f" {word}", word.lower(), f" {word.lower()}"]))


def answer_tokens(backend: Backend, answers: dict[Any, str]) -> dict[Any, list[str]]:
    """For each answer, its surface forms that are single tokens for this model."""
    forms = {key: backend.single_tokens(surface_forms(word)) for key, word in answers.items()}
    for key, found in forms.items():
        if not found:
            raise UserError(f"the model's tokenizer splits every form of the answer {answers[key]!r} "
                            f"({', '.join(map(repr, surface_forms(answers[key])))}) into several tokens; "
                            "this method needs single-token answers")
    return forms


def number_forms(backend: Backend, low: int, high: int, stage: str) -> dict[str, list[str]]:
    """The answer tokens of the integers in [low, high] (``reasoning.read_number``): every
    number's own forms when the tokenizer has a token for each ("10", "17"), else the digits'
    (the plain digit must be a token: it is a two-digit number's second one). A tokenizer with
    tokens for some numbers of the range but not all is refused: neither reading is exact."""
    numbers = [str(v) for v in range(low, high + 1)]
    if high >= 10 and len(backend.single_tokens(numbers)) == len(numbers):
        return answer_tokens(backend, {v: v for v in numbers})
    several = [v for v in numbers if len(v) > 1 and backend.single_tokens([v])]
    split = [d for d in "0123456789" if not backend.single_tokens([d])]
    if several or split:
        raise UserError(f"stage '{stage}': this model's tokenizer has single tokens for some numbers from {low} to "
                        f"{high} but not all ({', '.join(several or split)}); the answer cannot be read exactly")
    return answer_tokens(backend, {d: d for d in "0123456789"})


class YesNoStage(LLMRerankStage):
    method: Literal["yes-no"] = Field(description="yes-no: P(yes) that the passage is relevant")
    yes: str = Field("Yes", description="the answer meaning relevant (must be a single token)")
    no: str = Field("No", description="the answer meaning not relevant (must be a single token)")
    instruction: str | None = Field(None, description=(
        "the text of the template's {instruction} (e.g. a task instruction for Qwen3-Reranker); "
        "default: the template's own"))

    default_prompt: ClassVar = "yes-no"
    asks: ClassVar = (NextToken,)
    order_matters: ClassVar = False  # each passage is scored on its own
    reasons: ClassVar = True
    summary: ClassVar = "pointwise: P(Yes) renormalised over Yes/No, from the next-token distribution"
    added_options: ClassVar = {**LLMRerankStage.added_options, "instruction": None}

    def template(self, base_dir: Path) -> Template:
        """The template, with the stage's instruction; one that names its answers fixes them."""
        template = super().template(base_dir).instructed(self.instruction, self.name)
        if template.answers is not None:
            if set(template.answers) != {"yes", "no"}:
                raise UserError(f"stage '{self.name}': the template {template.source} names the answers "
                                f"{sorted(template.answers)}; yes-no reads exactly 'yes' and 'no'")
            chosen = sorted({"yes", "no"} & self.model_fields_set)
            if chosen:
                raise UserError(f"stage '{self.name}': the template {template.source} fixes the answer tokens "
                                f"({template.answers['yes']!r}, {template.answers['no']!r}); leave out {chosen[0]}")
        return template

    def prepare_method(self, backend: Backend) -> dict[str, list[str]]:
        return answer_tokens(backend, {"yes": self.yes, "no": self.no})

    def method_details(self, reranked: Reranked) -> dict[str, Any]:
        return {"answer_tokens": reranked.prepared}

    def manifest_details(self, model: ResolvedModel, template: Template, queries: list[Query],
                         accounting: Accounting, reranked: Reranked, restored: int) -> dict[str, Any]:
        details = super().manifest_details(model, template, queries, accounting, reranked, restored)
        details["answer_tokens"] = read_tokens(template, reranked.prepared)
        if template.instruction is not None:
            details["instruction"] = template.instruction
        return details

    def program(self, query: Query, template: Template, forms: dict[str, list[str]]) -> Program:
        forms = read_tokens(template, forms)
        asked = tuple(forms["yes"] + forms["no"])
        answers, thoughts = yield from ask(
            [NextToken(template.prompt(query.text, c.text, self.max_passage_tokens), asked) for c in query.candidates],
            self.reasoning, self.think_close(template))
        scores = {c.docid: answer_probabilities(a.logprobs, forms)["yes"] for c, a in zip(query.candidates, answers)}
        return scores, judgements(query, thoughts, answers, scores)


def judgements(query: Query, thoughts: list | None, answers: list, scores: dict[str, float]) -> dict[str, Any]:
    """A pointwise query's record: nothing without reasoning; else each pair's trace. An answer
    whose tokens all have probability 0 fell back to the neutral score (0.5 for yes-no)."""
    if thoughts is None:
        return {}
    return traced([trace([c.docid], t, round(scores[c.docid], 6), unreadable(a))
                   for c, t, a in zip(query.candidates, thoughts, answers)])


def read_tokens(template: Template, forms: dict[str, list[str]]) -> dict[str, list[str]]:
    """The tokens yes-no reads: the template's exact answers if it names them, else the forms
    found for the stage's answers. A template's answer that is not one token is refused when
    its first request is rendered (``Renderer.single_token``), before any model call."""
    if template.answers is None:
        return forms
    return {"yes": [template.answers["yes"]], "no": [template.answers["no"]]}


class GradedStage(LLMRerankStage):
    method: Literal["graded"] = Field(description="graded: the expected relevance label")
    scale: int = Field(3, ge=1, le=9, description="labels 0..scale, each a digit")

    default_prompt: ClassVar = "graded"
    asks: ClassVar = (NextToken,)
    order_matters: ClassVar = False  # each passage is scored on its own
    reasons: ClassVar = True
    summary: ClassVar = "pointwise: expected relevance label 0..scale, from the next-token distribution"

    def prepare_method(self, backend: Backend) -> dict[str, list[str]]:
        return answer_tokens(backend, {str(label): str(label) for label in range(self.scale + 1)})

    def method_details(self, reranked: Reranked) -> dict[str, Any]:
        return {"label_tokens": reranked.prepared}

    def program(self, query: Query, template: Template, forms: dict[str, list[str]]) -> Program:
        asked = tuple(f for label in sorted(forms, key=int) for f in forms[label])
        answers, thoughts = yield from ask(
            [NextToken(template.prompt(query.text, c.text, self.max_passage_tokens), asked) for c in query.candidates],
            self.reasoning, self.think_close(template))
        scores = {}
        for c, a in zip(query.candidates, answers):
            probabilities = answer_probabilities(a.logprobs, forms)
            scores[c.docid] = sum(int(label) * p for label, p in probabilities.items())
        return scores, judgements(query, thoughts, answers, scores)


class QueryLikelihoodStage(LLMRerankStage):
    method: Literal["query-likelihood"] = Field(description="query-likelihood: log P(query | passage)")

    default_prompt: ClassVar = "query-likelihood"
    placeholders: ClassVar = ({"passage"}, {"passage"})
    asks: ClassVar = (Continuation,)
    order_matters: ClassVar = False  # each passage is scored on its own
    summary: ClassVar = "pointwise: mean log-probability of the query's tokens given the passage (UPR)"

    def program(self, query: Query, template: Template, prepared: None) -> Program:
        if not query.text.strip():
            raise UserError(f"query {query.qid!r} is empty: query likelihood has nothing to score")
        answers = yield [Continuation(template.prompt(query.text, c.text, self.max_passage_tokens),
                                      " " + query.text.strip()) for c in query.candidates]
        return {c.docid: a.mean for c, a in zip(query.candidates, answers)}, {}
