"""``method: cross-encoder``: sentence-transformers ``CrossEncoder`` scores (query, passage) pairs.

All pairs of all queries are scored together, sorted by length so that a batch holds pairs of
similar length (little padding), then put back in order. The score is the model's raw output
(no activation), which is what the model was trained to rank by.
"""

from __future__ import annotations

import importlib.util
from typing import Any, ClassVar, Literal

from pydantic import Field

from rerankcli.core.errors import UserError
from rerankcli.core.models import local_model_path, resolve_model
from rerankcli.core.progress import Progress
from rerankcli.core.runs import Run
from rerankcli.core.stage import Context, StageOutput
from rerankcli.core.versions import versions
from rerankcli.rerank.candidates import RerankStage, output

LIBRARIES = ("sentence-transformers", "transformers", "torch")


class CrossEncoderStage(RerankStage):
    method: Literal["cross-encoder"] = Field(description="cross-encoder: score (query, passage) pairs jointly")
    model: str = Field(description=(
        "a sentence-transformers cross-encoder: a local folder, package:<distribution>, or a hub id"))
    revision: str | None = Field(None, description="hub revision of model: a branch, tag or commit")
    batch_size: int = Field(32, gt=0, description="(query, passage) pairs per forward pass")
    max_length: int = Field(512, gt=0, description="tokens per (query, passage) pair; longer pairs are cut")
    device: str | None = Field(None, description="cpu, cuda, cuda:1, mps; default: best available")
    trust_remote_code: bool = Field(False, description="run code shipped with the model (only models you trust)")

    summary: ClassVar = "score each (query, passage) pair with a sentence-transformers cross-encoder"

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "model": None, "batch_size": None, "device": None}

    def fingerprint(self, ctx: Context) -> dict[str, Any]:
        if importlib.util.find_spec("sentence_transformers") is None:
            raise UserError(f"stage '{self.name}': cross-encoders need sentence-transformers "
                            "(pip install 'rerankcli[dense]')")
        return {"model": resolve_model(self.model, ctx.base_dir, self.revision, self.trust_remote_code).identity,
                "corpus": ctx.dataset.fingerprint("corpus"),
                "queries": ctx.dataset.fingerprint("queries"), "versions": versions(*LIBRARIES)}

    def execute(self, ctx: Context, inputs: list[Run]) -> StageOutput:
        import torch
        from sentence_transformers import CrossEncoder

        queries = self.candidates(ctx, inputs[0])
        resolved = resolve_model(self.model, ctx.base_dir, self.revision, self.trust_remote_code)
        model = CrossEncoder(str(local_model_path(resolved)), device=self.device, max_length=self.max_length,
                             trust_remote_code=self.trust_remote_code, activation_fn=torch.nn.Identity())
        if model.config.num_labels != 1:
            raise UserError(f"stage '{self.name}': {self.model} has {model.config.num_labels} outputs; "
                            "a cross-encoder for ranking has one")
        pairs = [(q.qid, c.docid, q.text, c.text) for q in queries for c in q.candidates]
        # lengths of the whole pairs, in tokens: to sort batches and to count what gets cut
        lengths = [len(ids) for ids in model.tokenizer([p[2] for p in pairs], [p[3] for p in pairs])["input_ids"]]
        order = sorted(range(len(pairs)), key=lambda i: min(lengths[i], self.max_length))
        scores: dict[str, dict[str, float]] = {q.qid: {} for q in queries}
        progress = Progress(f"cross-encoder ({self.model})", len(pairs), ctx.show_progress)
        chunk = 64 * self.batch_size
        for start in range(0, len(order), chunk):
            part = order[start:start + chunk]
            values = model.predict([(pairs[i][2], pairs[i][3]) for i in part], batch_size=self.batch_size,
                                   show_progress_bar=False, convert_to_numpy=True)
            for i, value in zip(part, values):
                scores[pairs[i][0]][pairs[i][1]] = float(value)
            progress.update(len(part))
        progress.close()
        truncated = sum(n > self.max_length for n in lengths)
        return output(inputs[0], scores, self.depth, {
            "model": resolved.manifest(), "device": str(model.device), "pairs": len(pairs),
            "max_length": self.max_length, "truncated_pairs": truncated})
