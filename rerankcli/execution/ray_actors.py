"""``executor: ray``: a stage's queries fanned out to Ray actors, one model per actor.

Each actor loads the stage's model once (reserving ``num_cpus``/``num_gpus``, so Ray places
one actor per GPU) and scores whole chunks of queries with the same scheduler as a local run,
so batches still mix the queries of its chunk. Ray's ``ActorPool`` hands the next chunk to
whichever actor is free and returns results as they finish; the driver journals each query
at once, so a killed Ray job resumes like a local one. Nothing here schedules by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rerankcli.core.errors import UserError
from rerankcli.core.stage import Context
from rerankcli.core.store import Store
from rerankcli.execution.executor_config import ExecutorConfig
from rerankcli.execution.journal import Journal
from rerankcli.execution.llm_session import LLMSession
from rerankcli.llm.accounting import Accounting
from rerankcli.llm.backend import Backend
from rerankcli.llm.registry import BACKENDS, OpenBackends, backend_class, register_backend
from rerankcli.rerank.candidates import Query
from rerankcli.rerank.llm_method import LLMRerankStage, QueryResult


class QueryWorker:
    """A Ray actor: the stage's model on this worker's devices, ready to score chunks of queries.

    The backend class travels with the stage, so a backend registered in the driver at run
    time (a plugin's, a test's) is known in the worker's process too.
    """

    def __init__(self, stage: LLMRerankStage, base_dir: Path, cache_root: Path, backend: type[Backend]) -> None:
        if BACKENDS.get(backend.name) is not backend:
            register_backend(backend)
        self.models = OpenBackends()
        self.session = LLMSession(stage, base_dir, Store(cache_root), self.models)
        self.session.prepared  # noqa: B018  load the model now: every actor loads at the same time

    def prepared_state(self) -> Any:
        return self.session.prepared

    def score(self, queries: list[Query]) -> tuple[list[tuple[str, QueryResult]], list[int], float]:
        results, batches = self.session.score(queries)
        return sorted(results.items()), batches.batch_sizes, batches.wall_s

    def close(self) -> None:
        """Release the model (a vLLM engine's processes) and the call cache before the actor is killed."""
        self.session.close()
        self.models.close()


def score_on_ray(config: ExecutorConfig, stage: LLMRerankStage, queries: list[Query], ctx: Context,
                 journal: Journal | None, on_result: Callable[[str, QueryResult], None]) -> tuple[Any, Accounting]:
    """Compute ``queries`` on ``config.workers`` actors; returns the prepared state and the batches."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise UserError("executor ray needs Ray: pip install 'rerankcli[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=config.address, include_dashboard=False, log_to_driver=ctx.show_progress,
                 configure_logging=False)
    actor = ray.remote(QueryWorker).options(num_cpus=config.num_cpus, num_gpus=config.num_gpus)
    backend = backend_class(stage.backend.type)
    workers = [actor.remote(stage, ctx.base_dir, ctx.store.root, backend) for _ in range(config.workers)]
    size = config.queries_per_task or max(1, math.ceil(len(queries) / (4 * config.workers)))
    chunks = [queries[start:start + size] for start in range(0, len(queries), size)]
    batches = Accounting()
    ctx.log(f"[{stage.name}] ray: {len(chunks)} tasks of up to {size} queries on {config.workers} actors "
            f"({config.num_cpus:g} CPU, {config.num_gpus:g} GPU each)")
    try:
        prepared = _get(ray, workers[0].prepared_state.remote())
        if journal is not None:
            journal.note_prepared(prepared)
        pool = ActorPool(workers)
        for results, sizes, wall in _unwrap(ray, pool.map_unordered(lambda w, chunk: w.score.remote(chunk), chunks)):
            for qid, result in results:
                on_result(qid, result)
            batches.batch_sizes.extend(sizes)  # each actor's batches and model time, added up
            batches.wall_s += wall
    finally:
        try:
            ray.get([worker.close.remote() for worker in workers], timeout=120)
        except Exception:  # noqa: BLE001  an actor that died cannot close; killing it is all that is left
            pass
        for worker in workers:
            ray.kill(worker)
    return prepared, batches


def _get(ray: Any, ref: Any) -> Any:
    return next(_unwrap(ray, iter([ref]), get=True))


def _unwrap(ray: Any, results: Any, get: bool = False) -> Any:
    """Results of Ray tasks; a ``UserError`` raised on a worker comes back as itself."""
    while True:
        try:
            item = next(results)
            yield ray.get(item) if get else item
        except StopIteration:
            return
        except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, UserError):
                raise UserError(str(cause)) from None
            if isinstance(getattr(cause, "cause", None), UserError):  # actor creation failed
                raise UserError(str(cause.cause)) from None
            raise
