"""Rerank stages that ask a language model: model, backend, prompt template, accounting.

A method subclass says which template placeholders it uses and writes ``program``: for one
query, a generator that yields requests and returns the candidates' scores and the method's
per-query record. The method never sees where it runs: the execution layer
(``rerankcli.execution``) opens the model, runs every query's program through the scheduler
(batches shared across queries) here or on Ray workers, journals each finished query, and
hands the per-query results back to ``conclude``: scores, accounting and method details.
"""

from __future__ import annotations

import math
import os
import socket
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator

from rerankcli.core.errors import UserError
from rerankcli.core.models import ResolvedModel, resolve_model
from rerankcli.core.runs import Run
from rerankcli.core.stage import Context, StageOutput
from rerankcli.core.versions import versions
from rerankcli.llm.accounting import Accounting, Usage
from rerankcli.llm.backend import Backend, BackendConfig
from rerankcli.llm.hf import HFConfig
from rerankcli.llm.registry import BackendField, backend_class, require
from rerankcli.llm.requests import Generate
from rerankcli.llm.scheduler import Program
from rerankcli.rerank.candidates import Query, RerankStage
from rerankcli.rerank.orders import Order, reorder
from rerankcli.rerank.reasoning import CLOSE, Reasoning
from rerankcli.rerank.templates import Template, load_template
from rerankcli.rerank.traces import traces_file

#: who computed a query: lets a reader of a journal see which process did what
WRITER = f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class QueryResult:
    """One query's share of a stage: its scores, the method's record, what its calls cost."""

    scores: dict[str, float]
    record: dict[str, Any]
    usage: Usage
    by: str = WRITER

    def line(self, qid: str) -> dict[str, Any]:
        return {"qid": qid, "scores": self.scores, "record": self.record, "usage": self.usage.to_json(),
                "by": self.by}

    @staticmethod
    def from_line(data: dict[str, Any]) -> tuple[str, QueryResult]:
        return data["qid"], QueryResult(data["scores"], data["record"], Usage.from_json(data["usage"]), data["by"])


@dataclass
class Reranked:
    """What the method knows after a stage: its prepared state, every query's record and, for a
    reasoning stage, every query's traces (split off the records, which keep the counts)."""

    prepared: Any
    records: dict[str, dict[str, Any]]
    traces: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class LLMRerankStage(RerankStage):
    model: str = Field(description=(
        "the language model: a local folder, a GGUF file, package:<distribution>, or a hub id"))
    revision: str | None = Field(None, description="hub revision of model: a branch, tag or commit")
    backend: BackendField = Field(default_factory=HFConfig, description=(
        "where the model runs: hf, vllm, openai, or a mapping with type: and that backend's settings"))
    prompt: str | None = Field(None, description="a shipped template name or a YAML file; default: the method's")
    max_passage_tokens: int | None = Field(None, gt=0, description="cut each passage to this many tokens")
    batch_size: int | None = Field(None, gt=0, description="shortcut for backend.batch_size")
    max_length: int | None = Field(None, gt=0, description="shortcut for backend.max_length (tokens)")
    llm_cache: bool = Field(False, description=(
        "answer repeated model calls from <cache>/llm-calls.sqlite (identical model, settings, prompt)"))
    order: Order = Field("input", description=(
        "the order the model sees the candidates in: input, reverse, shuffle (rerank bias uses it)"))
    seed: int = Field(0, description="the random seed of the method's shuffles (and of order: shuffle)")
    order_seed: int | None = Field(None, description=(
        "order: shuffle with its own seed, leaving the method's shuffles as they are (rerank bias uses it)"))
    reasoning: Reasoning | None = Field(None, description=(
        "think before answering: {max_tokens, temperature, seed}; the think block is closed for the "
        "model when max_tokens runs out (yes-no, graded, listwise, setwise and the reasoning presets)"))

    #: the method's default template, and the placeholders its templates must / may have
    default_prompt: ClassVar[str]
    placeholders: ClassVar[tuple[set[str], set[str]]] = ({"query", "passage"}, {"query", "passage"})
    #: request kinds the method sends (checked against the backend before compute)
    asks: ClassVar[tuple[type, ...]] = ()
    #: one line for ``rerank methods``
    summary: ClassVar[str] = ""

    per_query: ClassVar[bool] = True
    #: options added after the method shipped, left out of the stage's identity at these
    #: values, so that adding an option never changes the cache key of a stage that omits it
    added_options: ClassVar[dict[str, Any]] = {"order": "input", "seed": 0, "order_seed": None, "reasoning": None}
    #: whether the order the candidates are shown in can change the output (not for pointwise)
    order_matters: ClassVar[bool] = True
    #: whether the method can think before it answers (``reasoning:``)
    reasons: ClassVar[bool] = False

    @model_validator(mode="after")
    def _reasoning_applies(self) -> LLMRerankStage:
        if self.reasoning is not None and not self.reasons:
            raise ValueError(f"method {self.method} does not reason: 'reasoning' applies to yes-no, graded, "  # type: ignore[attr-defined]
                             "listwise, setwise, rank1, erank, reasonrank and rank-r1")
        return self

    def think_close(self, template: Template) -> str:
        """What closes the model's reasoning before the answer prefix (the template's, or the default)."""
        return template.think_close if template.think_close is not None else CLOSE

    def backend_config(self) -> BackendConfig:
        """The backend's config with the stage-level shortcuts applied."""
        update = {k: v for k, v in (("batch_size", self.batch_size), ("max_length", self.max_length))
                  if v is not None}
        return self.backend.model_copy(update=update) if update else self.backend

    def identity(self) -> dict[str, Any]:
        # the model's content digest and the template's content stand in for their names;
        # the backend contributes only the settings that change answers
        identity = super().identity()
        for key in ("model", "prompt", "backend", "batch_size", "max_length", "llm_cache"):
            identity.pop(key, None)
        for key, default in self.added_options.items():
            if identity.get(key) == default:
                identity.pop(key)
        return {**identity, "backend": self.backend_config().identity()}

    def presented(self, query: Query) -> Query:
        """The query as the model sees it: its candidates in the stage's ``order``."""
        return reorder(query, self.order, self.shuffle_seed)

    @property
    def shuffle_seed(self) -> int:
        """The seed of ``order: shuffle``."""
        return self.seed if self.order_seed is None else self.order_seed

    def template(self, base_dir: Path) -> Template:
        required, allowed = self.placeholders
        return load_template(self.prompt or self.default_prompt, base_dir, required, allowed)

    def fingerprint(self, ctx: Context) -> dict[str, Any]:
        backend = backend_class(self.backend.type)
        require(backend, self.asks + ((Generate,) if self.reasoning is not None else ()), self.method)  # type: ignore[attr-defined]
        model = self.resolved_model(ctx.base_dir)
        return {
            "model": model.identity,
            "prompt": self.template(ctx.base_dir).digest,
            "corpus": ctx.dataset.fingerprint("corpus"),
            "queries": ctx.dataset.fingerprint("queries"),
            "versions": versions(*backend.libraries),
        }

    def execute(self, ctx: Context, inputs: list[Run]) -> StageOutput:
        raise TypeError(f"stage '{self.name}' computes per query: run it through rerankcli.execution")

    def resolved_model(self, base_dir: Path) -> ResolvedModel:
        """The stage's model; code shipped with it runs only if the backend trusts it."""
        trust = bool(getattr(self.backend, "trust_remote_code", False))
        return resolve_model(self.model, base_dir, self.revision, trust_remote_code=trust)

    def call_cache_namespace(self, model: ResolvedModel) -> str:
        """What besides a request decides its answer, for the LLM call cache (``llm_cache``)."""
        from rerankcli.llm.call_cache import namespace

        return namespace(model.identity, self.backend_config().identity(),
                         versions(*backend_class(self.backend.type).libraries))

    def manifest_details(self, model: ResolvedModel, template: Template, queries: list[Query],
                         accounting: Accounting, reranked: Reranked, restored: int) -> dict[str, Any]:
        """What the stage's manifest records about its model, prompt, calls and method."""
        details = {"model": model.manifest(), "backend": self.backend_config().model_dump(mode="json"),
                   "prompt": template.source, "candidates": sum(len(q.candidates) for q in queries),
                   "llm": accounting.manifest(), "restored_queries": restored, **self.method_details(reranked)}
        if self.reasoning is not None:
            details["reasoning"] = reasoning_totals(self.reasoning, reranked)
        return details

    def output_files(self, reranked: Reranked) -> dict[str, bytes]:
        """Files the stage writes beside its run: a reasoning stage's traces (``rerank explain``)."""
        return {"traces.jsonl.gz": traces_file(reranked.traces)} if self.reasoning is not None else {}

    def conclude(self, results: dict[str, QueryResult], prepared: Any, batches: Accounting
                 ) -> tuple[dict[str, dict[str, float]], Accounting, Reranked]:
        """Scores, accounting and method record of the whole stage from its per-query results.

        Totals are sums over queries, so they do not depend on which process (or which earlier,
        killed run) computed a query; only the batches are this process's own.
        """
        accounting = Accounting(batch_sizes=list(batches.batch_sizes), wall_s=batches.wall_s)
        for qid in sorted(results):
            accounting.update(results[qid].usage)
        records = {qid: results[qid].record for qid in sorted(results)}
        reranked = Reranked(prepared, {q: {k: v for k, v in r.items() if k != "traces"} for q, r in records.items()},
                            {q: r["traces"] for q, r in records.items() if "traces" in r})
        accounting.repairs.update(self.repairs(reranked))
        self.check_method(reranked)
        for qid, result in sorted(results.items()):
            bad = [d for d, s in result.scores.items() if not math.isfinite(s)]
            if bad:
                raise UserError(f"stage '{self.name}': the model gave no finite score for document "
                                f"{bad[0]!r} of query {qid!r}")
        return {qid: r.scores for qid, r in results.items()}, accounting, reranked

    # -- what a method provides ----------------------------------------------------------------
    def prepare_method(self, backend: Backend) -> Any:
        """Check the model can do what the method needs (single-token answers, ...) and
        return what the method's programs need to know about it (JSON: it is journaled)."""
        return None

    def repairs(self, reranked: Reranked) -> Counter:
        """Repairs the method made to the model's answers (parsing), by kind."""
        return Counter()

    def check_method(self, reranked: Reranked) -> None:
        """Refuse the result when the model's answers were too poor to trust (after compute)."""

    def method_details(self, reranked: Reranked) -> dict[str, Any]:
        """What the manifest should record about the method's choices and per-query counts."""
        return {}

    def program(self, query: Query, template: Template, prepared: Any) -> Program:
        """One query's requests; returns (scores by docid, the method's per-query record)."""
        raise NotImplementedError

    def planned_calls(self, n: int) -> tuple[int, int]:
        """(least, most) model calls for a query with ``n`` candidates (``rerank plan``).

        Equal bounds mean the count does not depend on the model's answers. Pointwise methods
        ask once per candidate, twice with reasoning (think, then answer).
        """
        calls = 2 * n if self.reasoning is not None else n
        return calls, calls

    def planned_generations(self, n: int) -> int | None:
        """How many of a query's calls generate text, when that does not follow from
        ``planned_calls`` in proportion (``rerank plan``'s generated-token range); None: it does."""
        return None

    def prompts_known_in_advance(self) -> bool:
        """Whether every prompt follows from the candidates alone (not from earlier answers);
        an answer call holds the model's reasoning, which no plan can know."""
        return self.reasoning is None


def answer_probabilities(logprobs: dict[str, float], groups: dict[Any, list[str]]) -> dict[Any, float]:
    """Probability of each group of answer forms, renormalised over all groups."""
    mass = {g: sum(math.exp(logprobs[f]) for f in forms) for g, forms in groups.items()}
    total = sum(mass.values())
    if total <= 0.0:
        return {g: 1.0 / len(groups) for g in groups}
    return {g: m / total for g, m in mass.items()}



def reasoning_totals(reasoning: Reasoning, reranked: Reranked) -> dict[str, Any]:
    """The manifest's reasoning block: the budget, the think calls and their tokens, forced
    closes (and their rate) and neutral fallbacks, summed over the queries' records."""
    counts: Counter = Counter()
    for record in reranked.records.values():
        counts.update(record.get("reasoning", {}))
    calls = counts["calls"]
    return {"max_tokens": reasoning.max_tokens, "temperature": reasoning.temperature, "calls": calls,
            "reasoning_tokens": counts["tokens"], "forced_closes": counts["forced"], "forced_rate": round(counts["forced"] / calls, 4) if calls else 0.0,
            "fallbacks": counts["fallbacks"]}


def answer_repairs(reranked: Reranked) -> Counter:
    """Repairs of methods that read one short answer per prompt (pairwise, setwise): answers that
    named no choice, and answers that opened a think block where the answer was expected."""
    totals = Counter({"unparsed_answer": sum(r["unparsed"] for r in reranked.records.values()),
                      "think_block": sum(r.get("think_blocks", 0) for r in reranked.records.values())})
    return +totals  # only the kinds that happened


def summed_repairs(reranked: Reranked) -> Counter:
    """The per-query records' ``repairs`` counts, added up (methods that parse generated text)."""
    totals: Counter = Counter()
    for record in reranked.records.values():
        totals.update(record["repairs"])
    return totals


def repair_counts(reranked: Reranked, kinds: tuple[str, ...]) -> dict[str, Any]:
    """The manifest's repair counts: totals by kind (in ``kinds`` order) and per query."""
    totals = summed_repairs(reranked)
    return {"repairs": {k: totals[k] for k in kinds if totals[k]},
            "repairs_per_query": {q: r["repairs"] for q, r in sorted(reranked.records.items()) if r["repairs"]}}


def refuse_poor_answers(stage: str, repaired: int, total: int, rate: float, what: str) -> None:
    """Fail the stage when more than ``rate`` of its ``total`` answers needed a repair."""
    if total and repaired / total > rate:
        raise UserError(f"stage '{stage}': {repaired} of {total} {what} (more than max_repair_rate "
                        f"{rate:g}); the model does not follow the output format")
