"""``type: evaluate``: metrics of the input runs, written to ``<output>/metrics.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from rerankcli.data.formats import read_qrels
from rerankcli.evaluate.metrics import evaluate, parse_metric
from rerankcli.errors import UserError
from rerankcli.hashing import file_digest
from rerankcli.load import resolve_existing
from rerankcli.runs import Run
from rerankcli.stage import Context, StageConfig, StageOutput, versions


class EvaluateStage(StageConfig):
    """Evaluate one or more runs with the dataset's qrels (or ``qrels:``, a file of its own)."""

    type: Literal["evaluate"]
    metrics: list[str] = Field(default_factory=lambda: ["ndcg@10", "mrr@10", "recall@100", "map"])
    relevance_level: int = Field(1, description="judgement >= this is relevant (binary metrics)")
    missing: Literal["skip", "zero"] = "skip"
    qrels: Path | None = None

    reads: ClassVar = "many"
    produces: ClassVar = "metrics"
    needs: ClassVar = frozenset({"qrels"})

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one metric")
        try:
            return [str(parse_metric(m)) for m in value]
        except UserError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("qrels")
    @classmethod
    def _exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else resolve_existing(value, info, "qrels file")

    def dataset_parts(self) -> frozenset[str]:
        return frozenset() if self.qrels is not None else self.needs

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "qrels": None}

    def fingerprint(self, ctx: Context) -> dict[str, Any]:
        qrels = file_digest(self.qrels) if self.qrels else ctx.dataset.fingerprint("qrels")
        return {"qrels": qrels, "versions": versions("numpy")}

    def execute(self, ctx: Context, inputs: list[Run]) -> StageOutput:
        qrels = read_qrels(self.qrels) if self.qrels else ctx.dataset.qrels()
        metrics = [parse_metric(m) for m in self.metrics]
        results = []
        for run in inputs:
            result = evaluate(run, qrels, metrics, self.relevance_level, self.missing)
            results.append({
                "means": result.means,
                "per_query": result.per_query,
                "queries": result.queries,
                "unjudged_queries": len(result.run_only),
                "queries_missing_from_run": len(result.qrels_only),
            })
        return StageOutput(metrics={"runs": results}, details={"runs": len(inputs)})
