"""Lucene BM25 through pyserini: build or open an index, search it in batches.

An index comes from one of three places:
- built here from the pipeline's corpus (the default): a JsonCollection whose ``contents`` is
  title + " " + text, indexed by Anserini's ``IndexCollection`` with positions and document
  vectors, exactly as pyserini's BEIR "flat" indexes. It is cached as an artefact keyed on the
  corpus content, the settings below and the Anserini jar, so it is built once;
- an existing index directory (``index: /data/indexes/msmarco``);
- a pyserini prebuilt index name (``index: beir-v1.0.0-scifact.flat``), downloaded by pyserini
  into its own cache on first use.

pyserini is imported only here, after ``java.start_jvm``; see ``java.py`` for why the JVM must be
started by us. We use pyserini's Anserini jar, its prebuilt-index registry and downloader, and
run Anserini's indexer and searcher through pyjnius (``search`` says why not ``pyserini.search``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rerankcli.core.errors import UserError
from rerankcli.core.formats import Corpus
from rerankcli.core.progress import Progress
from rerankcli.core.runs import Run
from rerankcli.retrieve.java import start_jvm

INSTALL_HINT = "pip install 'rerankcli[lucene]'"
#: what an index built here contains; part of its cache key
INDEX_SETTINGS = {
    "collection": "JsonCollection",
    "generator": "DefaultLuceneDocumentGenerator",
    "contents": "title + ' ' + text",
    "analyzer": "default English (Porter stemmer, Lucene stop words)",
    "store": ["positions", "docvectors"],
}


def anserini_jar() -> Path:
    """The Anserini fat jar inside the installed pyserini, found without importing pyserini."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or spec.origin is None:
        raise UserError(f"backend 'pyserini' needs pyserini, which is not installed ({INSTALL_HINT})")
    jars = sorted((Path(spec.origin).parent / "resources" / "jars").glob("anserini-*-fatjar.jar"))
    if not jars:
        raise UserError(f"pyserini at {Path(spec.origin).parent} has no Anserini jar in resources/jars")
    return jars[-1]


def start() -> str:
    """Start the JVM with Anserini on the class path (once per process); its Java version."""
    version = start_jvm([anserini_jar()])
    _quiet_java_logging()
    return version


def _quiet_java_logging() -> None:
    """Anserini logs each indexing step through log4j, and Lucene warns through java.util.logging
    about Java versions it was not built for; keep errors only (failures raise anyway)."""
    from jnius import autoclass

    autoclass("java.util.logging.Logger").getLogger("").setLevel(
        autoclass("java.util.logging.Level").SEVERE)
    try:
        level = autoclass("org.apache.logging.log4j.Level")
        autoclass("org.apache.logging.log4j.core.config.Configurator").setRootLevel(level.ERROR)
    except Exception:  # a jar without log4j-core: its logging stays as it is
        pass


# --- where the index comes from ---------------------------------------------------------------

def is_index_dir(path: Path) -> bool:
    return path.is_dir() and any(path.glob("segments_*"))


def looks_like_path(spec: str) -> bool:
    return "/" in spec or spec.startswith((".", "~")) or os.sep in spec


def prebuilt_info(name: str) -> dict[str, Any]:
    """pyserini's metadata for an inverted prebuilt index (md5, urls, size), or a UserError."""
    start()
    from pyserini.prebuilt_index_info import IMPACT_INDEX_INFO, TF_INDEX_INFO

    if name in TF_INDEX_INFO:
        return TF_INDEX_INFO[name]
    if name in IMPACT_INDEX_INFO:
        raise UserError(f"index {name!r} is a learned-sparse (impact) index; BM25 needs an inverted "
                        "index such as beir-v1.0.0-scifact.flat")
    raise UserError(f"index {name!r} is neither an index directory nor a pyserini prebuilt index "
                    "name (a directory needs a '/' in its path, e.g. ./indexes/x)")


def download_prebuilt(name: str, log) -> Path:
    """The local copy of a prebuilt index, downloading it through pyserini if needed."""
    info = prebuilt_info(name)
    from pyserini.util import check_downloaded, download_prebuilt_index

    if not check_downloaded(name):
        size = info.get("size compressed (bytes)")
        log(f"downloading prebuilt index {name} ({size or '?'} bytes) into pyserini's cache")
    try:
        with contextlib.redirect_stdout(_Forward(log)):  # pyserini prints its progress
            return Path(download_prebuilt_index(name, verbose=False))
    except Exception as exc:
        urls = ", ".join(info.get("urls", [])) or "its URLs"
        raise UserError(
            f"prebuilt index {name!r} could not be downloaded from {urls} ({type(exc).__name__}: "
            f"{exc}); without internet access, leave out 'index:' to build one from the corpus, "
            "or download it elsewhere and give its directory") from None


class _Forward:
    """A write-only stream that sends each non-blank line to ``log``."""

    def __init__(self, log) -> None:
        self.log = log

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self.log(line.strip())
        return len(text)

    def flush(self) -> None:
        pass


# --- building ---------------------------------------------------------------------------------

def write_collection(corpus: Corpus, folder: Path, parts: int) -> None:
    """The corpus as an Anserini JsonCollection: ``parts`` files so indexing threads share it."""
    import json

    folder.mkdir(parents=True)
    parts = max(1, min(parts, len(corpus)))
    handles = [open(folder / f"part-{i:04d}.jsonl", "w", encoding="utf-8") for i in range(parts)]
    try:
        for i in range(len(corpus)):
            record = {"id": corpus.ids[i], "contents": corpus.contents(i)}
            handles[i * parts // len(corpus)].write(json.dumps(record, ensure_ascii=False) + "\n")
    finally:
        for handle in handles:
            handle.close()


def build_index(corpus: Corpus, target: Path, threads: int, show_progress: bool) -> dict[str, Any]:
    """Index ``corpus`` into the (new) directory ``target``; return build statistics."""
    start()
    from jnius import autoclass

    collection = target.parent / "collection"
    write_collection(corpus, collection, threads)
    began = time.perf_counter()
    progress = Progress("lucene index", len(corpus), show_progress)
    autoclass("io.anserini.index.IndexCollection").main([
        "-collection", INDEX_SETTINGS["collection"], "-generator", INDEX_SETTINGS["generator"],
        "-input", str(collection), "-index", str(target), "-threads", str(threads),
        "-storePositions", "-storeDocvectors", "-quiet",
    ])
    progress.update(len(corpus))
    progress.close()
    shutil.rmtree(collection, ignore_errors=True)
    if not is_index_dir(target):
        raise UserError(f"Anserini did not write an index to {target} (see its messages above)")
    return {"build_s": round(time.perf_counter() - began, 3)}


# --- searching --------------------------------------------------------------------------------

@dataclass(frozen=True)
class SearchSettings:
    k: int
    k1: float
    b: float
    threads: int
    batch_size: int
    rm3: dict[str, Any] | None = None


@dataclass(frozen=True)
class IndexFacts:
    documents: int
    docvectors: bool  # RM3 needs them


def index_facts(index: Path) -> IndexFacts:
    """How many documents ``index`` holds and whether it stores document vectors."""
    start()
    from jnius import autoclass

    try:
        searcher = autoclass("io.anserini.search.SimpleSearcher")(str(index))
    except Exception as exc:
        raise UserError(f"{index}: Lucene could not open this index ({exc})") from None
    try:
        return IndexFacts(int(searcher.get_total_num_docs()), bool(searcher.reader.getTermVectors(0)))
    finally:
        searcher.close()


def search(index: Path, queries: dict[str, str], settings: SearchSettings, workdir: Path,
           show_progress: bool) -> Run:
    """Top ``k`` documents per query by Anserini's ``SearchCollection``, ``batch_size`` at a time.

    SearchCollection is the tool behind pyserini's published regressions, and it writes the run
    in Java: asking Anserini's searcher for hits through pyjnius instead costs one Java object
    per hit (9.7 s and 1.5 GB for SciFact's 300 queries x 1000 hits, against 3 s here). We do
    not import ``pyserini.search`` at all: it pulls torch, transformers and onnxruntime for
    pyserini's dense encoders, and builds an OpenAI client that raises without an API key on
    openai >= 2.34. Scores are Anserini's (rounded to 4 decimals, as in its regressions).
    """
    start()
    from jnius import autoclass

    collection_search = autoclass("io.anserini.search.SearchCollection")
    qids = [qid for qid, text in queries.items() if text.strip()]
    workdir.mkdir(parents=True, exist_ok=True)
    topics, output = workdir / "topics.tsv", workdir / "run.trec"
    run = Run()
    progress = Progress("lucene bm25", len(qids), show_progress)
    for begin in range(0, len(qids), settings.batch_size):
        batch = qids[begin:begin + settings.batch_size]
        topics.write_text("".join(f"{qid}\t{' '.join(queries[qid].split())}\n" for qid in batch),
                          encoding="utf-8")
        collection_search.main(_search_args(index, topics, output, settings))
        for line in output.read_text(encoding="utf-8").splitlines():
            qid, _, docid, _, score, _ = line.split()
            run.add(qid, docid, float(score))
        progress.update(len(batch))
    progress.close()
    return run


def _search_args(index: Path, topics: Path, output: Path, settings: SearchSettings) -> list[str]:
    args = ["-index", str(index), "-topics", str(topics), "-topicReader", "TsvString",
            "-output", str(output), "-hits", str(settings.k), "-threads", str(settings.threads),
            "-bm25", "-bm25.k1", repr(float(settings.k1)), "-bm25.b", repr(float(settings.b))]
    if settings.rm3 is not None:
        args += ["-rm3", "-rm3.fbTerms", str(settings.rm3["fb_terms"]),
                 "-rm3.fbDocs", str(settings.rm3["fb_docs"]),
                 "-rm3.originalQueryWeight", repr(float(settings.rm3["original_query_weight"]))]
    return args
