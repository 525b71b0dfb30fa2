"""``type: retrieve, method: bm25``: lexical retrieval with a choice of backend.

Backends rank with the same analyzer (see ``analyzer.py``):
- ``bm25s`` (default): sparse-matrix BM25 with Lucene's scoring formula; fast, no Java. Its
  index is cached on disk by (corpus, analyzer, k1, b), so changing ``k`` reuses it.
- ``rank_bm25``: the reference Okapi BM25 of the rank_bm25 package (slower, its own idf).
- ``pyserini``: Lucene itself, arriving with the Lucene backend; named here so that a
  pipeline asking for it gets a clear answer at validation time.
Only documents that match at least one query term are returned, as Lucene does.
"""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from rerankcli.data.formats import Corpus
from rerankcli.hashing import text_digest
from rerankcli.progress import Progress
from rerankcli.retrieve.analyzer import Analyzer, AnalyzerConfig
from rerankcli.runs import Run
from rerankcli.stage import Context, StageConfig, StageOutput, versions

BACKEND_VERSIONS = {"bm25s": ("bm25s", "PyStemmer", "numpy", "scipy"),
                    "rank_bm25": ("rank-bm25", "PyStemmer", "numpy")}
ANALYZER_REVISION = 1  # bump when analyzer.py changes what terms it produces


class BM25Stage(StageConfig):
    """BM25 over title + text of every document, for each query of the dataset."""

    type: Literal["retrieve"]
    method: Literal["bm25"]
    backend: str = "bm25s"
    k: int = Field(1000, ge=1, description="documents returned per query")
    k1: float = Field(0.9, ge=0, description="term-frequency saturation (pyserini's default)")
    b: float = Field(0.4, ge=0, le=1, description="length normalisation (pyserini's default)")
    analyzer: AnalyzerConfig = AnalyzerConfig()
    threads: int = Field(0, ge=0, description="retrieval threads; 0 = all cores (bm25s)")

    reads: ClassVar = "none"
    needs: ClassVar = frozenset({"corpus", "queries"})

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value == "pyserini":
            raise ValueError("backend 'pyserini' (Lucene) is not available in this version; "
                             "use 'bm25s' (default) or 'rank_bm25'")
        if value not in BACKEND_VERSIONS:
            raise ValueError(f"unknown backend {value!r}; known: {', '.join(BACKEND_VERSIONS)}")
        return value

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "threads": None}  # threads never change the result

    def fingerprint(self, ctx: Context) -> dict[str, Any]:
        return {
            "corpus": ctx.dataset.fingerprint("corpus"),
            "queries": ctx.dataset.fingerprint("queries"),
            "analyzer_revision": ANALYZER_REVISION,
            "versions": versions(*BACKEND_VERSIONS[self.backend]),
        }

    def execute(self, ctx: Context, inputs: list[Run]) -> StageOutput:
        corpus = ctx.dataset.corpus()
        queries = ctx.dataset.queries()
        analyzer = Analyzer(self.analyzer)
        qids = list(queries)
        query_terms = analyzer.many(queries[q] for q in qids)
        search = self._bm25s if self.backend == "bm25s" else self._rank_bm25
        run, details = search(ctx, corpus, analyzer, qids, query_terms)
        details["queries_without_known_terms"] = sum(1 for q in qids if q not in run.scores)
        return StageOutput(run=run, details=details)

    def _bm25s(self, ctx, corpus, analyzer, qids, query_terms) -> tuple[Run, dict]:
        import bm25s

        index_key = text_digest(json.dumps({
            "corpus": ctx.dataset.fingerprint("corpus"), "analyzer": self.analyzer.model_dump(),
            "analyzer_revision": ANALYZER_REVISION, "k1": self.k1, "b": self.b,
            "versions": versions(*BACKEND_VERSIONS["bm25s"]),
        }, sort_keys=True))
        folder = ctx.store.artifact_dir("bm25s-index", index_key)
        index_cached = (folder / "docids.json").is_file()
        if index_cached:
            model = bm25s.BM25.load(str(folder), show_progress=False)
            docids = json.loads((folder / "docids.json").read_text(encoding="utf-8"))
        else:
            terms = _analyze_corpus(ctx, corpus, analyzer)
            vocab: dict[str, int] = {}
            ids = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in terms]
            model = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
            model.index(bm25s.tokenization.Tokenized(ids=ids, vocab=vocab), show_progress=False)
            docids = corpus.ids
            staging = ctx.store.staging()
            model.save(str(staging), show_progress=False)
            (staging / "docids.json").write_text(json.dumps(docids), encoding="utf-8")
            ctx.store.publish(staging, folder)
        vocab = model.vocab_dict
        k = min(self.k, len(docids))
        run = Run()
        wanted = [(qid, [vocab[t] for t in terms if t in vocab]) for qid, terms in zip(qids, query_terms)]
        wanted = [(qid, ids) for qid, ids in wanted if ids]
        threads = self.threads or os.cpu_count() or 1
        progress = Progress("bm25s", len(wanted), ctx.show_progress)
        for start in range(0, len(wanted), 256):
            batch = wanted[start:start + 256]
            tokens = bm25s.tokenization.Tokenized(ids=[ids for _, ids in batch], vocab=vocab)
            found, scores = model.retrieve(tokens, k=k, show_progress=False, n_threads=threads)
            for (qid, _), rows, values in zip(batch, found, scores):
                _keep_matches(run, qid, (docids[int(i)] for i in rows), values)
            progress.update(len(batch))
        progress.close()
        return run, {"index_cached": index_cached, "index_key": index_key, "documents": len(docids)}

    def _rank_bm25(self, ctx, corpus, analyzer, qids, query_terms) -> tuple[Run, dict]:
        from rank_bm25 import BM25Okapi

        model = BM25Okapi(_analyze_corpus(ctx, corpus, analyzer), k1=self.k1, b=self.b)
        run = Run()
        k = min(self.k, len(corpus))
        progress = Progress("rank_bm25", len(qids), ctx.show_progress)
        for qid, terms in zip(qids, query_terms):
            scores = model.get_scores(terms) if terms else np.zeros(len(corpus))
            top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
            _keep_matches(run, qid, (corpus.ids[i] for i in top), scores[top])
            progress.update(1)
        progress.close()
        return run, {"documents": len(corpus)}


def _analyze_corpus(ctx: Context, corpus: Corpus, analyzer: Analyzer) -> list[list[str]]:
    progress = Progress("analyze corpus", len(corpus), ctx.show_progress)
    terms = []
    for i in range(len(corpus)):
        terms.append(analyzer(corpus.contents(i)))
        if i % 1000 == 999:
            progress.update(1000)
    progress.close()
    return terms


def _keep_matches(run: Run, qid: str, docids, scores) -> None:
    """Add the documents that match the query (score > 0) to ``run``."""
    for docid, score in zip(docids, scores):
        if score > 0:
            run.add(qid, docid, float(score))
