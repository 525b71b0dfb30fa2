"""The one owner of an LLM rerank stage's lifecycle in one process.

Resolving the model, opening its backend, the LLM call cache, the method's prepared state,
scheduling every query's program and counting what it cost happen here and nowhere else.
Local runs, shards, Ray actors and ``rerank plan`` (with a stand-in backend that only counts
tokens) all compute through an ``LLMSession``, so a method written once works in all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rerankcli.core.store import Store
from rerankcli.llm.accounting import Accounting, Usage
from rerankcli.llm.backend import Backend
from rerankcli.llm.call_cache import CallCache
from rerankcli.llm.registry import OpenBackends
from rerankcli.llm.scheduler import run_programs
from rerankcli.rerank.candidates import Query
from rerankcli.rerank.llm_method import LLMRerankStage, QueryResult, Reranked

OnResult = Callable[[str, QueryResult], None]


class LLMSession:
    """One stage's model, call cache and prepared method state, ready to score queries.

    ``backend`` given (``rerank plan``'s token counter, a test's fake model): that backend is
    used, behind ``cache`` if one is given, and nothing is loaded. Otherwise the stage's model
    is opened from ``backends`` (the process's pool, which outlives the session so later
    stages can share the model) when first needed, behind the stage's call cache if it has
    ``llm_cache``. ``close`` releases what the session itself opened: that call cache.
    """

    def __init__(self, stage: LLMRerankStage, base_dir: Path, store: Store | None = None,
                 backends: OpenBackends | None = None, backend: Backend | None = None,
                 cache: CallCache | None = None, log: Callable[[str], None] = print) -> None:
        self.stage, self.base_dir, self.store, self.log = stage, base_dir, store, log
        self.template = stage.template(base_dir)
        self._backends, self._backend = backends, backend
        self._cache, self._owns_cache = cache, False
        self._prepared: Any = None
        self._is_prepared = False

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            assert self.store is not None and self._backends is not None, "no backend and no pool to open one"
            model = self.stage.resolved_model(self.base_dir)
            self._backend = self._backends.open(self.stage.backend_config(), model, self.store, self.log)
            if self.stage.llm_cache:
                namespace = self.stage.call_cache_namespace(model)
                self._cache, self._owns_cache = CallCache(self.store.root / "llm-calls.sqlite", namespace), True
        return self._backend

    @property
    def prepared(self) -> Any:
        """The method's state for this model (answer tokens it chose, ...); JSON, journaled."""
        if not self._is_prepared:
            self._prepared = self.stage.prepare_method(self.backend)
            self._is_prepared = True
        return self._prepared

    def score(self, queries: list[Query], on_result: OnResult = lambda qid, result: None
              ) -> tuple[dict[str, QueryResult], Accounting]:
        """Every query's result (scores, method record, usage), and the batches this took.

        All queries' programs share the backend's batches (scheduler); ``on_result`` hears of
        each query as soon as it is finished, so it can be journaled at once.
        """
        backend, prepared = self.backend, self.prepared
        usage: dict[Any, Usage] = {}
        results: dict[str, QueryResult] = {}
        batches = Accounting()

        def finished(qid: Any, value: tuple[dict[str, float], dict[str, Any]]) -> None:
            results[qid] = QueryResult(value[0], value[1], usage[qid])
            on_result(qid, results[qid])

        run_programs(((q.qid, self.stage.program(self.stage.presented(q), self.template, prepared))
                      for q in queries), backend,
                     on_done=finished, usage=usage, cache=self._cache, batches=batches)
        return results, batches

    def rerank(self, queries: list[Query]) -> tuple[dict[str, dict[str, float]], Accounting, Reranked]:
        """Score and conclude in one go: every query's scores, the accounting, the method's record."""
        results, batches = self.score(queries)
        return self.stage.conclude(results, self.prepared, batches)

    def close(self) -> None:
        """Close the call cache this session opened (one given to it belongs to the caller)."""
        if self._cache is not None and self._owns_cache:
            self._cache.close()
            self._cache, self._owns_cache = None, False

    def __enter__(self) -> LLMSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
