"""``method: icr``: in-context reranking by attention (ICR, Chen et al. 2024).

All ``depth`` candidates go into one prompt, the query last. A candidate's score is the
attention its tokens receive from the query's tokens, summed over layers and heads (mean over
the query's tokens), minus what the same tokens receive from the content-free query "N/A"
(calibration against the position and length bias of attention). The backend runs the shared
passage prefix once and reuses its KV cache for both probes, so a query costs one long forward
pass and a short one, whatever ``depth`` is; several queries share each pass. With ``mask_outliers`` (the paper's default),
tokens whose calibrated score is more than ``outlier_std`` standard deviations below their
passage's mean are left out, as the authors' code does.

Attention comes from the transformers backend through a registered attention function that
computes only the query's rows, in float32 (``llm/attention_rows.py``); no modeling file is
forked, so any decoder model that transformers loads works.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from rerankcli.core.errors import UserError
from rerankcli.llm.requests import Attention, AttentionMass
from rerankcli.llm.scheduler import Program
from rerankcli.rerank.candidates import Query
from rerankcli.rerank.llm_method import LLMRerankStage, Reranked
from rerankcli.rerank.templates import Template, load_template


def passage_score(query: Sequence[float], calibration: Sequence[float] | None, outlier_std: float | None) -> float:
    """One passage's ICR score from the attention its tokens receive from the query (and "N/A").

    Masking drops tokens whose calibrated score is below mean − ``outlier_std``·std of the
    passage's calibrated scores (it needs two tokens or more to have a spread).
    """
    if calibration is None:
        return float(sum(query))
    calibrated = [q - c for q, c in zip(query, calibration)]
    if outlier_std is not None and len(calibrated) > 1:
        threshold = statistics.fmean(calibrated) - outlier_std * statistics.stdev(calibrated)
        calibrated = [c for c in calibrated if c > threshold]
    return float(sum(calibrated))


class IcrStage(LLMRerankStage):
    method: Literal["icr"] = Field(description="icr: in-context reranking from attention weights")
    calibration: bool = Field(True, description='subtract the attention of the content-free query "N/A"')
    calibration_query: str = Field("N/A", description="the content-free query whose attention is subtracted")
    mask_outliers: bool = Field(True, description="drop tokens whose calibrated score is a low outlier")
    outlier_std: float = Field(2.0, gt=0, description=(
        "mask_outliers: standard deviations below its passage's mean that make a token an outlier"))
    layers: list[int] | None = Field(None, description="layers whose attention counts (default: all)")

    default_prompt: ClassVar = "icr"
    placeholders: ClassVar = ({"query", "passages"}, {"query", "passages", "num"})
    asks: ClassVar = (Attention,)
    summary: ClassVar = "in-context reranking: attention from the query to each passage in one prompt (hf only)"

    @field_validator("layers")
    @classmethod
    def _layers_are_indices(cls, value: list[int] | None) -> list[int] | None:
        """No layer would be no attention (every score 0); a layer twice counts it twice."""
        if value is None:
            return None
        if not value:
            raise ValueError("list at least one layer, or leave 'layers' out for all of them")
        if min(value) < 0:
            raise ValueError(f"layer {min(value)}: layers count from 0")
        if len(set(value)) != len(value):
            raise ValueError(f"layer {next(v for v in value if value.count(v) > 1)} is listed twice")
        return value

    def template(self, base_dir: Any) -> Template:
        required, allowed = self.placeholders
        template = load_template(self.prompt or self.default_prompt, base_dir, required, allowed, listwise=True)
        fields = template.fields()
        if fields.count("query") != 1 or fields.index("query") < fields.index("passages"):
            raise UserError(f"prompt {template.source!r}: ICR needs {{query}} once, after {{passages}} "
                            "(the calibration query takes its place and reuses the passages' KV cache)")
        return template

    def method_details(self, reranked: Reranked) -> dict[str, Any]:
        records = reranked.records.values()
        return {"forward_passes": sum(r["forward_passes"] for r in records),
                "truncated_passages": sum(r["truncated"] for r in records),
                "calibration_query": self.calibration_query if self.calibration else None}

    def planned_calls(self, n: int) -> tuple[int, int]:
        """One attention request per query (its passages once, each probe on their cache)."""
        return (1, 1) if n else (0, 0)

    def program(self, query: Query, template: Template, prepared: None) -> Program:
        if not query.text.strip():
            raise UserError(f"query {query.qid!r} is empty: ICR has no query tokens to read attention from")
        texts = [c.text for c in query.candidates]
        prompt = template.attention_prompt(texts, [str(k + 1) for k in range(len(texts))], self.max_passage_tokens)
        probes = (query.text.strip(),) + ((self.calibration_query,) if self.calibration else ())
        layers = tuple(self.layers) if self.layers is not None else None
        (answer,) = yield [Attention(prompt, probes, layers)]
        assert isinstance(answer, AttentionMass)
        # per query: one pass over the passages, then one per probe on their KV cache
        record = {"forward_passes": 1 + len(probes), "truncated": answer.truncated}
        scores = {}
        for k, candidate in enumerate(query.candidates):
            start, end = answer.spans.get(str(k), (0, 0))
            calibration = answer.received[1][start:end] if self.calibration else None
            score = passage_score(answer.received[0][start:end], calibration,
                                  self.outlier_std if self.mask_outliers else None)
            scores[candidate.docid] = score  # a non-finite score stops the stage (LLMRerankStage.conclude)
        return scores, record
