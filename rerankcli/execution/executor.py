"""Where a per-query stage computes: the one place that picks an executor.

The executor is an operational choice, like a batch size: it never enters a stage key, and
every executor hands back the same per-query results (scores, method record, usage), which
are journaled as they arrive and concluded over at the end. So a run computed here, resumed
after a kill, split into shards or fanned out to Ray workers is the same run. Stages never
import this module; the pipeline runner calls ``execute`` for every stage.
"""

from __future__ import annotations

from rerankcli.core.progress import Progress
from rerankcli.core.runs import Run
from rerankcli.core.stage import Context, StageConfig, StageOutput
from rerankcli.execution.executor_config import ExecutorConfig
from rerankcli.execution.journal import Journal
from rerankcli.execution.llm_session import LLMSession
from rerankcli.llm.accounting import Accounting
from rerankcli.llm.registry import OpenBackends
from rerankcli.rerank.candidates import output
from rerankcli.rerank.llm_method import LLMRerankStage, QueryResult


def execute(stage: StageConfig, ctx: Context, inputs: list[Run], journal: Journal | None,
            executor: ExecutorConfig, backends: OpenBackends) -> StageOutput:
    """The stage's output: computed by the stage itself, or query by query for per-query stages."""
    if not stage.per_query:
        return stage.execute(ctx, inputs)
    assert isinstance(stage, LLMRerankStage)
    return _execute_per_query(stage, ctx, inputs, journal, executor, backends)


def _execute_per_query(stage: LLMRerankStage, ctx: Context, inputs: list[Run], journal: Journal | None,
                       executor: ExecutorConfig, backends: OpenBackends) -> StageOutput:
    """Score the queries the journal does not hold yet, then conclude over all of them."""
    queries = stage.candidates(ctx, inputs[0])
    model = stage.resolved_model(ctx.base_dir)
    wanted = {q.qid for q in queries}
    restored = {q: r for q, r in (journal.results if journal else {}).items() if q in wanted}
    todo = [q for q in queries if q.qid not in restored]
    prepared, results, batches = journal.prepared if journal else None, dict(restored), Accounting()
    session = LLMSession(stage, ctx.base_dir, ctx.store, backends, log=ctx.log)
    if todo:
        if restored:
            ctx.log(f"[{stage.name}] resuming: {len(restored)} of {len(queries)} queries were already done")
        progress = Progress(f"{stage.method} ({stage.model})", len(todo), ctx.show_progress)  # type: ignore[attr-defined]

        def finished(qid: str, result: QueryResult) -> None:
            if journal is not None:
                journal.add(qid, result)
            results[qid] = result
            progress.update(1)

        try:
            if executor.type == "ray":
                from rerankcli.execution.ray_actors import score_on_ray

                prepared, batches = score_on_ray(executor, stage, todo, ctx, journal, finished)
            else:
                with session:
                    prepared = session.prepared
                    if journal is not None:
                        journal.note_prepared(prepared)
                    _, batches = session.score(todo, finished)
        finally:
            progress.close()
    scores, accounting, reranked = stage.conclude(results, prepared, batches)
    details = stage.manifest_details(model, session.template, queries, accounting, reranked, len(restored))
    result = output(inputs[0], scores, stage.depth, details)
    result.files.update(stage.output_files(reranked))
    return result
