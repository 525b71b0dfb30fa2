"""``type: fuse``: combine several runs into one (RRF, CombSUM, CombMNZ).

Small and exact, so it lives here rather than pulling in ranx's start-up cost for a few lines
of arithmetic. Documents are ranked as trec_eval ranks them (score desc, docid desc).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from rerankcli.core.runs import Run
from rerankcli.core.stage import Context, StageConfig, StageOutput


def rrf(runs: list[Run], weights: list[float], k: float = 60.0, depth: int | None = None) -> Run:
    """Reciprocal rank fusion: score(d) = sum_i w_i / (k + rank_i(d))."""
    fused = Run()
    for run, weight in zip(runs, weights):
        for qid in run.scores:
            target = fused.scores.setdefault(qid, {})
            for rank, (doc, _) in enumerate(run.ranked(qid)[:depth], start=1):
                target[doc] = target.get(doc, 0.0) + weight / (k + rank)
    return fused


def _normalised(ranked: list[tuple[str, float]], how: str) -> dict[str, float]:
    if not ranked or how == "none":
        return dict(ranked)
    scores = [s for _, s in ranked]
    if how == "minmax":
        low, high = min(scores), max(scores)
        span = high - low
        return {d: (s - low) / span if span > 0 else 1.0 for d, s in ranked}
    mean = sum(scores) / len(scores)
    std = (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
    return {d: (s - mean) / std if std > 0 else 0.0 for d, s in ranked}


def comb(runs: list[Run], weights: list[float], how: str, mnz: bool, depth: int | None = None) -> Run:
    """CombSUM (sum of normalised scores) or CombMNZ (that sum times the number of runs)."""
    fused = Run()
    hits: dict[tuple[str, str], int] = {}
    for run, weight in zip(runs, weights):
        for qid in run.scores:
            target = fused.scores.setdefault(qid, {})
            for doc, score in _normalised(run.ranked(qid)[:depth], how).items():
                target[doc] = target.get(doc, 0.0) + weight * score
                hits[(qid, doc)] = hits.get((qid, doc), 0) + 1
    if mnz:
        for qid, docs in fused.scores.items():
            for doc in docs:
                docs[doc] *= hits[(qid, doc)]
    return fused


class FuseStage(StageConfig):
    """Fuse the runs named in ``inputs``."""

    type: Literal["fuse"] = Field(description="fuse: combine the runs of two or more earlier stages")
    method: Literal["rrf", "combsum", "combmnz"] = Field("rrf", description=(
        "rrf (reciprocal rank fusion), combsum (sum of normalised scores), combmnz (combsum x runs found in)"))
    rrf_k: float = Field(60.0, gt=0, description="rrf: the constant k in weight / (k + rank)")
    weights: list[float] | None = Field(None, description="one weight per input run (default: all 1)")
    normalize: Literal["minmax", "zscore", "none"] = Field("minmax", description=(
        "combsum and combmnz: how each run's scores are normalised per query"))
    depth: int | None = Field(None, ge=1, description="documents read from each input run")
    k: int = Field(1000, ge=1, description="documents kept per query")

    reads: ClassVar = "many"
    summary: ClassVar = "fuse the runs named in inputs: rrf, combsum or combmnz"

    @model_validator(mode="after")
    def _weights_match_inputs(self) -> FuseStage:
        if self.inputs is None or len(self.inputs) < 2:
            raise ValueError("a fuse stage needs 'inputs' naming at least two stages")
        if self.weights is not None and len(self.weights) != len(self.inputs):
            raise ValueError(f"'weights' has {len(self.weights)} values for {len(self.inputs)} inputs")
        if self.weights is not None and not any(self.weights):
            raise ValueError("'weights' are all 0: the fused run would have no scores to rank by")
        return self

    def execute(self, ctx: Context, inputs: list[Run]) -> StageOutput:
        weights = self.weights or [1.0] * len(inputs)
        if self.method == "rrf":
            fused = rrf(inputs, weights, self.rrf_k, self.depth)
        else:
            fused = comb(inputs, weights, self.normalize, self.method == "combmnz", self.depth)
        return StageOutput(run=fused.top(self.k), details={"inputs": len(inputs)})
