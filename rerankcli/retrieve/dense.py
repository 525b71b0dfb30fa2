"""``type: retrieve, method: dense``: bi-encoder retrieval with sentence-transformers.

Documents (title + text) and queries are encoded in batches with normalised embeddings and
searched exactly by inner product. Corpus embeddings are cached on disk by (model content,
corpus content, encoding settings, library versions): changing ``k`` or the queries re-uses
them. torch and sentence-transformers are imported only when the stage runs.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from rerankcli.core.atomic import atomic_open
from rerankcli.core.errors import UserError
from rerankcli.core.hashing import text_digest
from rerankcli.core.models import local_model_path, resolve_model
from rerankcli.core.progress import Progress
from rerankcli.core.runs import Run
from rerankcli.core.stage import Context, StageConfig, StageOutput
from rerankcli.core.versions import versions

LIBRARIES = ("sentence-transformers", "transformers", "torch", "numpy")


class DenseStage(StageConfig):
    """Exact inner-product search over sentence-transformers embeddings."""

    type: Literal["retrieve"] = Field(description="retrieve: rank the whole corpus for each query")
    method: Literal["dense"] = Field(description="dense: nearest neighbours in an embedding space")
    model: str = Field(description=(
        "a sentence-transformers model: a local folder, package:<distribution>, or a hub id"))
    revision: str | None = Field(None, description="hub revision of model: a branch, tag or commit")
    k: int = Field(1000, ge=1, description="documents returned per query")
    batch_size: int = Field(64, ge=1, description="texts encoded per batch")
    max_length: int | None = Field(None, ge=8, description="longest text encoded, in tokens; default: the model's")
    query_prefix: str = Field("", description="text put before each query (e.g. 'query: ' for E5)")
    document_prefix: str = Field("", description="text put before each document (e.g. 'passage: ' for E5)")
    device: str | None = Field(None, description="cpu, cuda, cuda:1, mps; default: best available")
    trust_remote_code: bool = Field(False, description="run code shipped with the model (only models you trust)")

    reads: ClassVar = "none"
    needs: ClassVar = frozenset({"corpus", "queries"})
    summary: ClassVar = "exact inner-product search over sentence-transformers embeddings of title + text"

    def identity(self) -> dict[str, Any]:
        # the model's content digest stands in for its spec; batch size and device do not
        # change which documents are retrieved beyond float noise
        return {**super().identity(), "model": None, "batch_size": None, "device": None}

    def fingerprint(self, ctx: Context) -> dict[str, Any]:
        if importlib.util.find_spec("sentence_transformers") is None:
            raise UserError(f"stage '{self.name}': dense retrieval needs sentence-transformers "
                            "(pip install 'rerankcli[dense]')")
        model = resolve_model(self.model, ctx.base_dir, self.revision, self.trust_remote_code)
        return {
            "model": model.identity,
            "corpus": ctx.dataset.fingerprint("corpus"),
            "queries": ctx.dataset.fingerprint("queries"),
            "versions": versions(*LIBRARIES),
        }

    def prepare(self, ctx: Context) -> str | None:
        resolved = resolve_model(self.model, ctx.base_dir, self.revision, self.trust_remote_code)
        encoder = _load_encoder(resolved, self)
        corpus = ctx.dataset.corpus()
        embeddings, cached = self._corpus_embeddings(ctx, encoder, resolved.identity, corpus)
        return (f"embeddings of {len(corpus)} documents ({embeddings.shape[1]} dimensions) "
                f"{'reused' if cached else 'built'}")

    def execute(self, ctx: Context, inputs: list[Run]) -> StageOutput:
        resolved = resolve_model(self.model, ctx.base_dir, self.revision, self.trust_remote_code)
        encoder = _load_encoder(resolved, self)
        corpus = ctx.dataset.corpus()
        embeddings, cached = self._corpus_embeddings(ctx, encoder, resolved.identity, corpus)
        queries = ctx.dataset.queries()
        qids = list(queries)
        query_vectors = encoder.encode(
            [self.query_prefix + queries[q] for q in qids], batch_size=self.batch_size,
            normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False,
        ).astype(np.float32)
        run = exact_search(query_vectors, embeddings, qids, corpus.ids, min(self.k, len(corpus)))
        return StageOutput(run=run, details={
            "model": resolved.manifest(), "embeddings_cached": cached,
            "dimension": int(embeddings.shape[1]), "documents": len(corpus),
            "device": str(encoder.device), "max_length": encoder.max_seq_length,
        })

    def _corpus_embeddings(self, ctx, encoder, model_identity: str, corpus) -> tuple[np.ndarray, bool]:
        key = text_digest(json.dumps({
            "model": model_identity, "corpus": ctx.dataset.fingerprint("corpus"),
            "max_length": encoder.max_seq_length, "prefix": self.document_prefix,
            "versions": versions(*LIBRARIES),
        }, sort_keys=True))
        folder = ctx.store.artifact_dir("dense-embeddings", key)
        if ctx.store.has_artifact("dense-embeddings", key):
            return np.load(folder / "embeddings.npy"), True
        texts = [self.document_prefix + corpus.contents(i) for i in range(len(corpus))]
        progress = Progress(f"encode corpus ({self.model})", len(texts), ctx.show_progress)
        parts = []
        for start in range(0, len(texts), 1024):
            chunk = texts[start:start + 1024]
            parts.append(encoder.encode(
                chunk, batch_size=self.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            ).astype(np.float32))
            progress.update(len(chunk))
        progress.close()
        embeddings = np.concatenate(parts)
        with ctx.store.building() as staging:
            with atomic_open(staging / "embeddings.npy", "wb") as handle:
                np.save(handle, embeddings)
            ctx.store.publish(staging, folder)
        return embeddings, False


def _load_encoder(resolved, stage: DenseStage):
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress line covers encoding

    encoder = SentenceTransformer(
        str(local_model_path(resolved)), device=stage.device,
        trust_remote_code=stage.trust_remote_code,
    )
    if stage.max_length is not None:
        encoder.max_seq_length = stage.max_length
    return encoder


def exact_search(queries: np.ndarray, docs: np.ndarray, qids: list[str], docids: list[str],
                 k: int, block: int = 256) -> Run:
    """Top-``k`` documents by inner product for each query, in blocks to bound memory."""
    run = Run()
    for start in range(0, len(qids), block):
        scores = queries[start:start + block] @ docs.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < docs.shape[0] else \
            np.tile(np.arange(docs.shape[0]), (scores.shape[0], 1))
        for row, qid in enumerate(qids[start:start + block]):
            for i in top[row]:
                run.add(qid, docids[i], float(scores[row, i]))
    return run
