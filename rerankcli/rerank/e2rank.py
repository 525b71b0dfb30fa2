"""``method: e2rank``: an embedding model used as a listwise reranker (E²Rank, Liu et al. 2025,
arXiv 2510.22733; Alibaba-NLP/E2Rank ``src/eval.py``).

E²Rank embeds a *pseudo-query* made of the query and the top of its own candidate list (like
pseudo-relevance feedback) and ranks every candidate by cosine similarity to it::

    {instruction}\\nDocuments:\\n[1] {d1}\\n[2] {d2}\\n...[K] {dK}\\nSearch Query: {query}

with the top K = ``prf_depth`` candidates in input order, wrapped in the tokenizer's chat
template when it has one (generation prompt added, thinking off, no EOS appended: as E²Rank
does). Documents are embedded on their own, no instruction, ``document_suffix`` appended
(E²Rank's models pool the ``<|endoftext|>`` token they were trained with). Score =
cos(pseudo-query, document) for all candidates, sorted descending; ties keep input order.
Cost per query: one pseudo-query embedding, plus one embedding per distinct candidate document,
computed once per stage however many queries share it, and kept in the cache: another e2rank
stage with the same model over the same candidates (another prf_depth) reuses them. No
generation, no window.

Fitting the pseudo-query: the encoder reads at most ``max_seq_length`` tokens and would silently
drop the end of a longer input, which here is the query itself. Instead each PRF document is cut
in model tokens to a common cap, the largest that lets the instruction, the labels and the query
fit whole (the water-filling of LLM prompts, ``rerankcli.llm.render``); the manifest records the
caps and how many documents were cut. For all-MiniLM-L6-v2 (256 tokens) at ``prf_depth: 20``
this leaves about 7 to 10 tokens per document (SciFact: median 7; 18 at depth 10, 39 at 5), a
few words of each: a far weaker signal than E²Rank's own models get (32k tokens; their documents
are cut to 1024 words). MiniLM was not trained for such inputs either: on SciFact's BM25 top-100
E²Rank with it falls well below MiniLM as a plain bi-encoder (``scripts/bench_e2rank.py``).
A query whose fixed part alone does not fit is refused. ``prf_depth: 0`` embeds the query alone, after
``{instruction}\\nSearch Query: `` unless the instruction is empty: plain bi-encoder scoring.
Documents longer than ``max_seq_length`` are cut before ``document_suffix``, which is kept.

The model is any sentence-transformers model (its pooling as its folder configures it). E²Rank's
checkpoints pool the last token: load them from a sentence-transformers folder whose pooling
is ``lasttoken``. Embeddings are L2-normalised here whatever the folder says.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, StrictBool, model_validator

from rerankcli.core.atomic import atomic_open
from rerankcli.core.errors import UserError
from rerankcli.core.hashing import text_digest
from rerankcli.core.models import ResolvedModel, local_model_path, resolve_model
from rerankcli.core.progress import Progress
from rerankcli.core.runs import Run
from rerankcli.core.stage import Context, StageOutput
from rerankcli.core.versions import versions
from rerankcli.llm.render import Rendered, Renderer
from rerankcli.llm.requests import Part, Passage, Prompt
from rerankcli.rerank.candidates import Query, RerankStage, output

LIBRARIES = ("sentence-transformers", "transformers", "torch", "numpy")
#: E²Rank's listwise instructions (``EVAL_PROMPTS``) made dataset-neutral; they end with a colon
INSTRUCTION = "Given a query and some relevant documents, rerank the documents by relevance to the query:"


class E2RankStage(RerankStage):
    method: Literal["e2rank"] = Field(description=(
        "e2rank: cosine to a pseudo-query of the query and its top documents (embedding model)"))
    model: str = Field(description=(
        "a sentence-transformers embedding model: a local folder, package:<distribution>, or a hub id"))
    revision: str | None = Field(None, description="hub revision of model: a branch, tag or commit")
    prf_depth: int = Field(20, ge=0, description=(
        "the top candidates put into the pseudo-query, at most depth (0: the query alone, a plain "
        "bi-encoder)"))
    instruction: str = Field(INSTRUCTION, description=(
        "the first line of the pseudo-query (empty: none)"))
    document_suffix: str = Field("", description=(
        "text appended to each document before embedding (E²Rank's models: '<|endoftext|>')"))
    chat_template: Literal["auto"] | StrictBool = Field("auto", description=(
        "wrap the pseudo-query in the tokenizer's chat template: auto (if it has one), true, false"))
    batch_size: int = Field(32, gt=0, description="texts embedded per forward pass")
    device: str | None = Field(None, description="cpu, cuda, cuda:1, mps; default: best available")
    trust_remote_code: bool = Field(False, description="run code shipped with the model (only models you trust)")

    summary: ClassVar = "listwise by embedding: cosine to a pseudo-query of the query and its top documents (E²Rank)"

    @model_validator(mode="after")
    def _prf_within_depth(self) -> E2RankStage:
        """A prf_depth set above depth asks for documents the stage never sees (the default is capped)."""
        if "prf_depth" in self.model_fields_set and self.prf_depth > self.depth:
            raise ValueError(f"prf_depth ({self.prf_depth}) must be at most depth ({self.depth}): "
                             "the pseudo-query takes its documents from the candidates")
        return self

    def identity(self) -> dict[str, Any]:
        # the model's content digest stands in for its spec; batch size and device change floats only
        return {**super().identity(), "model": None, "batch_size": None, "device": None}

    def fingerprint(self, ctx: Context) -> dict[str, Any]:
        if importlib.util.find_spec("sentence_transformers") is None:
            raise UserError(f"stage '{self.name}': e2rank needs sentence-transformers "
                            "(pip install 'rerankcli[dense]')")
        return {"model": self._resolved(ctx).identity, "corpus": ctx.dataset.fingerprint("corpus"),
                "queries": ctx.dataset.fingerprint("queries"), "versions": versions(*LIBRARIES)}

    def pseudo_query(self, query: Query) -> Prompt:
        """The pseudo-query of ``query``: its top ``prf_depth`` candidates are cuttable passages."""
        parts: list[Part] = [self.instruction + "\n"] if self.instruction else []
        top = query.candidates[: min(self.prf_depth, self.depth)]  # the default is capped by depth
        if top:
            parts.append("Documents:\n")
            for k, candidate in enumerate(top, 1):
                parts += [f"[{k}] ", Passage(candidate.text), "\n"]
        parts.append(("Search Query: " if parts else "") + query.text)
        return Prompt(tuple(parts))

    def execute(self, ctx: Context, inputs: list[Run]) -> StageOutput:
        queries = self.candidates(ctx, inputs[0])
        resolved = self._resolved(ctx)
        encoder = self._load(resolved)
        limit = encoder.max_seq_length
        if not limit or limit > 1_000_000:
            raise UserError(f"stage '{self.name}': {self.model} states no max_seq_length "
                            "(set it in the model folder's sentence_bert_config.json)")
        chat = None if self.chat_template == "auto" else self.chat_template
        try:
            pseudo = Renderer(encoder.tokenizer, limit, chat)
        except UserError as exc:
            raise UserError(f"stage '{self.name}': {exc}") from None
        plain = Renderer(encoder.tokenizer, limit, chat=False)

        texts = {c.docid: c.text for q in queries for c in q.candidates}
        docids = list(texts)
        fitted = {q.qid: self._fit(pseudo, q) for q in queries}
        doc_vectors, documents_cut, cached = self._document_vectors(ctx, encoder, resolved, plain, docids, texts)
        progress = Progress(f"e2rank pseudo-queries ({self.model})", len(queries), ctx.show_progress)
        query_vectors = embed(encoder, [fitted[q.qid].ids for q in queries], self.batch_size, progress)
        progress.close()

        row = {docid: i for i, docid in enumerate(docids)}
        scores: dict[str, dict[str, float]] = {}
        for q, vector in zip(queries, query_vectors):
            rows = [row[c.docid] for c in q.candidates]
            scores[q.qid] = {c.docid: float(s) for c, s in zip(q.candidates, doc_vectors[rows] @ vector)}

        lengths = [len(fitted[q.qid].ids) for q in queries]
        caps = [r.cap for r in fitted.values() if r.cap is not None]
        return output(inputs[0], scores, self.depth, {
            "model": resolved.manifest(), "device": str(encoder.device), "max_seq_length": limit,
            "chat_template": pseudo.chat, "prf_depth": min(self.prf_depth, self.depth),
            "instruction": self.instruction,
            "queries": len(queries), "documents": len(docids), "document_embeddings_cached": cached,
            "documents_cut": documents_cut,
            "pseudo_query_tokens": _summary(lengths),
            "prf_documents_cut": sum(r.truncated for r in fitted.values()),
            "queries_with_cut_documents": len(caps),
            "prf_document_cap_tokens": _summary(caps),
        })

    # -- internals ----------------------------------------------------------------------------
    def _resolved(self, ctx: Context) -> ResolvedModel:
        return resolve_model(self.model, ctx.base_dir, self.revision, self.trust_remote_code)

    def _load(self, resolved: ResolvedModel) -> Any:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress line covers encoding
        encoder = SentenceTransformer(str(local_model_path(resolved)), device=self.device,
                                      trust_remote_code=self.trust_remote_code)
        return encoder.eval()

    def _document_vectors(self, ctx: Context, encoder: Any, resolved: ResolvedModel, plain: Renderer,
                          docids: list[str], texts: dict[str, str]) -> tuple[np.ndarray, int, bool]:
        """Each candidate document's embedding (once, however many queries share it), the number
        cut to fit the encoder, and whether they came from the store: the candidates of an
        earlier stage with the same model and documents (another prf_depth, say) are reused."""
        key = text_digest(json.dumps({
            "model": resolved.identity, "max_seq_length": plain.max_length, "suffix": self.document_suffix,
            "documents": text_digest(json.dumps([[d, texts[d]] for d in docids])), "versions": versions(*LIBRARIES),
        }, sort_keys=True))
        folder = ctx.store.artifact_dir("e2rank-documents", key)
        if ctx.store.has_artifact("e2rank-documents", key):
            cut = json.loads((folder / "cut.json").read_text())["documents_cut"]
            return np.load(folder / "embeddings.npy"), cut, True
        suffix = (self.document_suffix,) if self.document_suffix else ()
        documents = [plain.render(Prompt.of(Passage(texts[d]), *suffix)) for d in docids]
        progress = Progress(f"e2rank documents ({self.model})", len(docids), ctx.show_progress)
        vectors = embed(encoder, [r.ids for r in documents], self.batch_size, progress)
        progress.close()
        cut = sum(r.truncated for r in documents)
        with ctx.store.building() as staging:
            with atomic_open(staging / "embeddings.npy", "wb") as handle:
                np.save(handle, vectors)
            with atomic_open(staging / "cut.json", "w") as handle:
                json.dump({"documents_cut": cut}, handle)
            ctx.store.publish(staging, folder)
        return vectors, cut, False

    def _fit(self, renderer: Renderer, query: Query) -> Rendered:
        """The pseudo-query's tokens: PRF documents cut to a common cap, the query kept whole."""
        try:
            return renderer.render(self.pseudo_query(query))
        except UserError:
            raise UserError(f"stage '{self.name}': query {query.qid!r}: the instruction, the document labels "
                            f"and the query alone are longer than the encoder's {renderer.max_length} tokens; "
                            "shorten the instruction or lower prf_depth") from None


def embed(encoder: Any, sequences: list[list[int]], batch_size: int, progress: Progress) -> np.ndarray:
    """L2-normalised embeddings of token id sequences, batched by length (little padding), in order."""
    import torch

    if not sequences:
        return np.zeros((0, 0), dtype=np.float32)
    vectors: list[np.ndarray | None] = [None] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for start in range(0, len(order), batch_size):
        part = order[start:start + batch_size]
        features = encoder.tokenizer.pad({"input_ids": [sequences[i] for i in part]}, return_tensors="pt")
        features = {key: value.to(encoder.device) for key, value in features.items()}
        with torch.inference_mode():
            batch = encoder(features)["sentence_embedding"].float()
        batch = torch.nn.functional.normalize(batch, dim=-1).cpu().numpy()
        for i, vector in zip(part, batch):
            vectors[i] = vector
        progress.update(len(part))
    return np.stack(vectors).astype(np.float32)


def _summary(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}
