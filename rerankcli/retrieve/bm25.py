"""``type: retrieve, method: bm25``: lexical retrieval with a choice of backend.

- ``bm25s`` (default): sparse-matrix BM25 with Lucene's scoring formula; fast, no Java. Its
  index is cached on disk by (corpus, analyzer, k1, b), so changing ``k`` reuses it.
- ``rank_bm25``: the reference Okapi BM25 of the rank_bm25 package (slower, its own idf).
- ``pyserini``: Lucene itself (see ``lucene.py``): an on-disk index built once from the corpus
  and cached, an existing index directory, or a pyserini prebuilt index; RM3 optional.
The first two analyse text with ``analyzer.py``, which mirrors Lucene's English analyzer, so
all three rank alike. Only documents that match at least one query term are returned.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from rerankcli.core.atomic import library_writes, write_text
from rerankcli.core.errors import UserError
from rerankcli.core.formats import Corpus
from rerankcli.core.hashing import text_digest, tree_digest
from rerankcli.core.progress import Progress
from rerankcli.core.runs import Run
from rerankcli.core.stage import Context, StageConfig, StageOutput
from rerankcli.core.versions import versions
from rerankcli.retrieve.analyzer import Analyzer, AnalyzerConfig

BACKEND_VERSIONS = {"bm25s": ("bm25s", "PyStemmer", "numpy", "scipy"),
                    "rank_bm25": ("rank-bm25", "PyStemmer", "numpy"),
                    "pyserini": ("pyserini", "pyjnius")}
ANALYZER_REVISION = 1  # bump when analyzer.py changes what terms it produces


class RM3Config(BaseModel):
    """RM3 pseudo-relevance feedback (pyserini's defaults); ``rm3: true`` takes them all."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fb_terms: int = Field(10, ge=1, description="expansion terms")
    fb_docs: int = Field(10, ge=1, description="feedback documents")
    original_query_weight: float = Field(0.5, ge=0, le=1, description=(
        "weight of the original query against the expansion terms (0..1)"))


def _rm3_takes_a_bool(schema: dict[str, Any]) -> None:
    """``rm3: true`` and ``rm3: false`` are accepted too (``_rm3_shorthand``): tell editors."""
    schema["anyOf"].insert(0, {"type": "boolean", "description": "true: RM3 with pyserini's defaults"})


class BM25Stage(StageConfig):
    """BM25 over title + text of every document, for each query of the dataset."""

    type: Literal["retrieve"] = Field(description="retrieve: rank the whole corpus for each query")
    method: Literal["bm25"] = Field(description="bm25: lexical BM25 ranking")
    backend: str = Field("bm25s", description="bm25s, rank_bm25, or pyserini (Lucene through Anserini)")
    k: int = Field(1000, ge=1, description="documents returned per query")
    k1: float = Field(0.9, ge=0, description="term-frequency saturation (pyserini's default)")
    b: float = Field(0.4, ge=0, le=1, description="length normalisation (pyserini's default)")
    analyzer: AnalyzerConfig = Field(AnalyzerConfig(), description=(
        "bm25s and rank_bm25: how text becomes terms (lowercase, possessive, stopwords, stemmer)"))
    threads: int = Field(0, ge=0, description="indexing and search threads; 0 = all cores")
    batch_size: int = Field(1000, ge=1, description="queries per search call")
    index: str | None = Field(None, description="pyserini: an index directory or prebuilt name")
    rm3: RM3Config | None = Field(None, description="pyserini: RM3 query expansion (true: with the default settings)",
                                  json_schema_extra=_rm3_takes_a_bool)

    reads: ClassVar = "none"
    needs: ClassVar = frozenset({"corpus", "queries"})
    summary: ClassVar = "BM25 over title + text of every document (bm25s, rank_bm25 or pyserini)"

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in BACKEND_VERSIONS:
            raise ValueError(f"unknown backend {value!r}; known: {', '.join(BACKEND_VERSIONS)}")
        return value

    @field_validator("analyzer")
    @classmethod
    def _analyzer_not_for_lucene(cls, value: AnalyzerConfig, info: ValidationInfo) -> AnalyzerConfig:
        if info.data.get("backend") == "pyserini" and value != AnalyzerConfig():
            raise ValueError("backend 'pyserini' analyses text with Lucene's English analyzer; "
                             "'analyzer' settings apply to bm25s and rank_bm25")
        return value

    @field_validator("index")
    @classmethod
    def _index_where(cls, value: str | None, info: ValidationInfo) -> str | None:
        from rerankcli.retrieve.lucene import is_index_dir, looks_like_path

        _pyserini_only(info, "index")
        if value is None or not looks_like_path(value):
            return value  # a prebuilt name: checked against pyserini's list when the stage is planned
        base = Path((info.context or {}).get("base_dir", Path.cwd()))
        path = (base / Path(value).expanduser()).resolve()
        if not is_index_dir(path):
            raise ValueError(f"no Lucene index at {path} (no segments_N file there)")
        return str(path)

    @field_validator("rm3", mode="before")
    @classmethod
    def _rm3_shorthand(cls, value: Any, info: ValidationInfo) -> Any:
        _pyserini_only(info, "rm3")
        if value is True:
            return {}
        return None if value is False else value

    def dataset_parts(self) -> frozenset[str]:
        return frozenset({"queries"}) if self.index is not None else self.needs

    def identity(self) -> dict[str, Any]:
        # threads and batch size never change the result; an index enters by its content
        return {**super().identity(), "threads": None, "batch_size": None, "index": None}

    def fingerprint(self, ctx: Context) -> dict[str, Any]:
        found = {"queries": ctx.dataset.fingerprint("queries"),
                 "versions": versions(*BACKEND_VERSIONS[self.backend])}
        if self.backend == "pyserini":
            return {**found, "index": self._lucene_source(ctx)}
        return {**found, "corpus": ctx.dataset.fingerprint("corpus"),
                "analyzer_revision": ANALYZER_REVISION}

    def prepare(self, ctx: Context) -> str | None:
        if self.backend == "bm25s":
            _, docids, cached, folder = self._bm25s_index(ctx, ctx.dataset.corpus(), Analyzer(self.analyzer))
            return f"bm25s index of {len(docids)} documents {'reused' if cached else 'built'}: {folder}"
        if self.backend == "pyserini":
            folder, details = self._lucene_index(ctx)
            state = {True: "reused", False: "built"}.get(details.get("index_cached"), "found")
            return f"Lucene index ({details['index_source']}) {state}: {folder}"
        return None

    def execute(self, ctx: Context, inputs: list[Run]) -> StageOutput:
        queries = ctx.dataset.queries()
        if self.backend == "pyserini":
            run, details = self._pyserini(ctx, queries)
        else:
            corpus = ctx.dataset.corpus()
            analyzer = Analyzer(self.analyzer)
            qids = list(queries)
            query_terms = analyzer.many(queries[q] for q in qids)
            search = self._bm25s if self.backend == "bm25s" else self._rank_bm25
            run, details = search(ctx, corpus, analyzer, qids, query_terms)
        details["queries_without_matches"] = sum(1 for q in queries if q not in run.scores)
        return StageOutput(run=run, details=details)

    # --- pyserini (Lucene) ------------------------------------------------------------------

    def _lucene_source(self, ctx: Context) -> dict[str, Any]:
        """What identifies the index: corpus + settings, a directory's content, or a prebuilt name.

        Also checks, before anything runs, that pyserini and a usable Java are installed.
        """
        from rerankcli.retrieve import java, lucene

        jar = lucene.anserini_jar()
        java.find_java()
        if self.index is None:
            return {"built_from": ctx.dataset.fingerprint("corpus"), "settings": lucene.INDEX_SETTINGS,
                    "anserini": jar.name}
        if lucene.looks_like_path(self.index):
            return {"directory": tree_digest(Path(self.index))}
        return {"prebuilt": self.index, "md5": lucene.prebuilt_info(self.index)["md5"]}

    def _lucene_index(self, ctx: Context) -> tuple[Path, dict[str, Any]]:
        """The index directory to search, built (once) or fetched as the config says."""
        from rerankcli.retrieve import lucene

        if self.index is not None and lucene.looks_like_path(self.index):
            return Path(self.index), {"index_source": "directory", "index": self.index}
        if self.index is not None:
            folder = lucene.download_prebuilt(self.index, ctx.log)
            return folder, {"index_source": f"prebuilt {self.index}", "index": str(folder)}
        key = text_digest(json.dumps(self._lucene_source(ctx), sort_keys=True))
        folder = ctx.store.artifact_dir("lucene-index", key)
        details = {"index_source": "built from the corpus", "index_key": key}
        if ctx.store.has_artifact("lucene-index", key) and lucene.is_index_dir(folder / "index"):
            return folder / "index", {**details, "index_cached": True, "index": str(folder / "index")}
        corpus = ctx.dataset.corpus()
        with ctx.store.building() as staging:
            stats = lucene.build_index(corpus, staging / "index", self._threads(), ctx.show_progress)
            write_text(staging / "info.json", json.dumps({**stats, "documents": len(corpus)}))
            ctx.store.publish(staging, folder)
        return folder / "index", {**details, "index_cached": False, "index": str(folder / "index"), **stats}

    def _pyserini(self, ctx: Context, queries: dict[str, str]) -> tuple[Run, dict]:
        from rerankcli.retrieve import lucene

        index, details = self._lucene_index(ctx)
        facts = lucene.index_facts(index)
        if self.rm3 is not None and not facts.docvectors:
            raise UserError(f"stage '{self.name}': RM3 needs an index that stores document vectors, "
                            f"and {index} does not (indexes built by rerankcli do)")
        settings = lucene.SearchSettings(
            k=self.k, k1=self.k1, b=self.b, threads=self._threads(), batch_size=self.batch_size,
            rm3=self.rm3.model_dump() if self.rm3 else None)
        workdir = ctx.store.staging()
        try:
            run = lucene.search(index, queries, settings, workdir, ctx.show_progress)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return run, {**details, "documents": facts.documents, "java": lucene.start()}

    def _threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    # --- bm25s and rank_bm25 ----------------------------------------------------------------

    def _bm25s_index(self, ctx: Context, corpus: Corpus, analyzer: Analyzer):
        """The bm25s model and docids, loaded from the artefact cache or built and cached."""
        import bm25s

        index_key = text_digest(json.dumps({
            "corpus": ctx.dataset.fingerprint("corpus"), "analyzer": self.analyzer.model_dump(),
            "analyzer_revision": ANALYZER_REVISION, "k1": self.k1, "b": self.b,
            "versions": versions(*BACKEND_VERSIONS["bm25s"]),
        }, sort_keys=True))
        folder = ctx.store.artifact_dir("bm25s-index", index_key)
        if ctx.store.has_artifact("bm25s-index", index_key):
            model = bm25s.BM25.load(str(folder), show_progress=False)
            docids = json.loads((folder / "docids.json").read_text(encoding="utf-8"))
            return model, docids, True, folder
        terms = _analyze_corpus(ctx, corpus, analyzer)
        vocab: dict[str, int] = {}
        ids = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in terms]
        model = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        model.index(bm25s.tokenization.Tokenized(ids=ids, vocab=vocab), show_progress=False)
        with ctx.store.building() as staging:
            with library_writes(staging):
                model.save(str(staging), show_progress=False)
            write_text(staging / "docids.json", json.dumps(corpus.ids))
            ctx.store.publish(staging, folder)
        return model, corpus.ids, False, folder

    def _bm25s(self, ctx, corpus, analyzer, qids, query_terms) -> tuple[Run, dict]:
        import bm25s

        model, docids, index_cached, folder = self._bm25s_index(ctx, corpus, analyzer)
        vocab = model.vocab_dict
        k = min(self.k, len(docids))
        run = Run()
        wanted = [(qid, [vocab[t] for t in terms if t in vocab]) for qid, terms in zip(qids, query_terms)]
        wanted = [(qid, ids) for qid, ids in wanted if ids]
        progress = Progress("bm25s", len(wanted), ctx.show_progress)
        for start in range(0, len(wanted), self.batch_size):
            batch = wanted[start:start + self.batch_size]
            tokens = bm25s.tokenization.Tokenized(ids=[ids for _, ids in batch], vocab=vocab)
            found, scores = model.retrieve(tokens, k=k, show_progress=False, n_threads=self._threads())
            for (qid, _), rows, values in zip(batch, found, scores):
                _keep_matches(run, qid, (docids[int(i)] for i in rows), values)
            progress.update(len(batch))
        progress.close()
        return run, {"index_cached": index_cached, "index_key": folder.name, "documents": len(docids)}

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


def _pyserini_only(info: ValidationInfo, field: str) -> None:
    if info.data.get("backend", "bm25s") != "pyserini":
        raise ValueError(f"'{field}' applies to backend 'pyserini' only")


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
