"""Where an LLM rerank stage computes its queries: in this process, or on Ray actors.

The executor is an operational choice, like a batch size: it never enters a stage key, and
every executor hands back the same per-query results (scores, method record, usage), which
the stage journals and concludes over. So a run computed here, resumed after a kill, split
into shards or fanned out to Ray workers is the same run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rerankcli.llm.accounting import Accounting
from rerankcli.rerank.journal import QueryResult

if TYPE_CHECKING:
    from rerankcli.models import ResolvedModel
    from rerankcli.rerank.llm_stage import LLMRerankStage
    from rerankcli.rerank.prompts import Template
    from rerankcli.rerank.stage import Query
    from rerankcli.stage import Context


class ExecutorConfig(BaseModel):
    """``executor:`` at the top of a pipeline, or ``--executor`` on the command line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["local", "ray"] = "local"
    address: str | None = Field(None, description=(
        "ray: the cluster to join ('auto', 'ray://head:10001'); none starts a local Ray instance"))
    workers: int = Field(1, ge=1, description="ray: actors, each holding one copy of the model")
    num_cpus: float = Field(1.0, ge=0, description="ray: CPUs each actor reserves")
    num_gpus: float = Field(0.0, ge=0, description="ray: GPUs each actor reserves (1 for one GPU each)")
    queries_per_task: int | None = Field(None, gt=0, description=(
        "ray: queries sent to an actor at once (default: spread over 4 tasks per actor)"))


def score_queries(stage: LLMRerankStage, queries: list[Query], template: Template, model: ResolvedModel,
                  ctx: Context, on_result: Callable[[str, QueryResult], None]) -> tuple[Any, Accounting]:
    """Compute ``queries`` on the context's executor; ``on_result`` hears of each as it finishes.

    Returns the method's prepared state (journaled before the first result) and the batches
    the model computed.
    """
    config = ctx.executor or ExecutorConfig()
    if config.type == "ray":
        from rerankcli.ray_executor import score_on_ray

        return score_on_ray(config, stage, queries, template, ctx, on_result)
    backend = stage.load_backend(ctx, model)
    try:
        prepared = stage.prepare_method(backend)
        if ctx.journal is not None:
            ctx.journal.note_prepared(prepared)
        _, batches = stage.score(queries, template, backend, prepared, on_result)
    finally:
        if stage.llm_cache:
            backend.close()  # the call cache's connection; the model stays open for later stages
    return prepared, batches
