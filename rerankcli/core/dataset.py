"""The dataset of a pipeline: local files, an ir_datasets id or a BRIGHT domain, loaded lazily
and fingerprinted.

Stages ask for the corpus, queries or qrels only when they run; cached stages never load
them. Fingerprints (content hashes of the files, or the ir_datasets id and version) enter
the stage keys, so editing the topics or qrels invalidates exactly what depends on them.
A BRIGHT domain (``core/bright.py``) also lists, per query, documents that evaluation removes
from every run (``excluded``); the other sources exclude nothing.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rerankcli.core.bright import BrightSource
from rerankcli.core.errors import UserError, shown, where
from rerankcli.core.formats import Corpus, Qrels, read_corpus, read_qrels, read_queries
from rerankcli.core.hashing import file_digest
from rerankcli.core.user_files import check_regular, numbered_lines
from rerankcli.core.versions import versions


#: what a BRIGHT domain name may be: it names files (``<domain>-00000-of-00001.parquet``)
BRIGHT_DOMAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class DatasetConfig(BaseModel):
    """``{corpus, queries, qrels}`` file paths, ``irds: <ir_datasets id>``, or
    ``{bright: <folder>, domain: <name>}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    irds: str | None = None
    corpus: Path | None = None
    queries: Path | None = None
    qrels: Path | None = None
    #: which queries retrieval runs: only those with judgements (BEIR practice), or all
    query_set: Literal["judged", "all"] = "judged"
    bright: Path | None = Field(None, description=(
        "a BRIGHT folder (documents/, long_documents/, examples/ as parquet, JSONL or save_to_disk tables)"))
    domain: str | None = Field(None, description="the BRIGHT domain (split) to read, e.g. biology")
    documents: Literal["short", "long"] = Field("short", description=(
        "BRIGHT: documents and gold_ids (short), or long_documents and gold_ids_long (long)"))

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: object) -> object:
        if isinstance(value, str):
            if value.startswith("irds:"):
                return {"irds": value[len("irds:"):]}
            raise ValueError("a dataset is 'irds:<id>' or a mapping {corpus, queries, qrels}")
        return value

    @model_validator(mode="after")
    def _irds_or_files(self) -> DatasetConfig:
        if self.irds is not None and (self.corpus or self.queries or self.qrels):
            raise ValueError("give either 'irds' or file paths, not both")
        if self.bright is None:
            extra = [name for name in ("domain", "documents") if name in self.model_fields_set]
            if extra:
                raise ValueError(f"'{extra[0]}' belongs to a BRIGHT dataset (bright: <folder>, domain: <name>)")
            return self
        if self.irds is not None or self.corpus or self.queries or self.qrels:
            raise ValueError("give one of 'bright', 'irds' or file paths {corpus, queries, qrels}")
        if self.domain is None:
            raise ValueError("a BRIGHT dataset needs 'domain' (e.g. domain: biology)")
        if not BRIGHT_DOMAIN.match(self.domain):
            raise ValueError(f"domain {shown(self.domain)} is not a domain name (letters, digits, '_', '.', '-')")
        return self

    def sets(self, part: str) -> bool:
        """Whether the dataset provides ``part`` (corpus, queries, qrels)."""
        return self.irds is not None or self.bright is not None or getattr(self, part) is not None

    def resolved(self, base_dir: Path) -> DatasetConfig:
        """Paths made absolute relative to the pipeline file's folder."""
        def fix(path: Path | None) -> Path | None:
            if path is None:
                return None
            try:
                return (base_dir / path).resolve()
            except RuntimeError:  # a symbolic link loop: kept as written, refused when it is checked
                return Path(os.path.abspath(base_dir / path))
        return self.model_copy(
            update={"corpus": fix(self.corpus), "queries": fix(self.queries), "qrels": fix(self.qrels),
                    "bright": fix(self.bright)}
        )


def first_line_of(path: Path, qids: set[str], what: str = "data") -> tuple[int | None, str]:
    """Line number and query id of the first line of ``path`` whose first field is in ``qids``."""
    for number, line in numbered_lines(path, what):
        fields = line.split()
        if fields and fields[0] in qids:
            return number, fields[0]
    return None, sorted(qids)[0]


class Dataset:
    """Lazy access to a dataset's parts, with content fingerprints for stage keys."""

    def __init__(self, config: DatasetConfig) -> None:
        self.config = config
        self.bright = (BrightSource(config.bright, config.domain or "", config.documents)
                       if config.bright is not None else None)
        self.label = (f"irds:{config.irds}" if config.irds else
                      self.bright.label if self.bright is not None else "dataset")

    def has(self, part: str) -> bool:
        return self.config.sets(part)

    def source(self, part: str) -> str:
        """What to name in a message about ``part``: its file, or the dataset's label."""
        return str(self.path(part)) if self.config.irds is None and self.bright is None else self.label

    def path(self, part: str) -> Path:
        path = getattr(self.config, part)
        if path is None:
            raise UserError(f"dataset.{part} is not set")
        return path

    @functools.cache
    def fingerprint(self, part: str) -> str:
        """Content identity of one part; queries also depend on the query set and qrels."""
        if self.bright is not None:
            return self.bright.fingerprint(part, self.config.query_set)
        if self.config.irds is not None:
            from rerankcli.core.irds import irds_dataset

            irds_dataset(self.config.irds)  # an unknown id stops the job before any stage runs
            base = f"irds:{self.config.irds}@ir_datasets-{versions('ir_datasets')['ir_datasets']}"
            return f"{base}#{part}#{self.config.query_set}"
        check_regular(self.path(part), part)  # hashing a FIFO would wait for a writer
        digest = file_digest(self.path(part))
        if part == "queries" and self.config.query_set == "judged" and self.config.qrels:
            check_regular(self.config.qrels, "qrels")
            return f"{digest}#judged-by:{file_digest(self.config.qrels)}"
        return digest

    def load(self, part: str) -> object:
        """The part as the stages that declare it read it (queries: the retrieval set)."""
        return {"corpus": self.corpus, "queries": self.queries, "qrels": self.qrels}[part]()

    @functools.cache
    def corpus(self) -> Corpus:
        if self.bright is not None:
            return self.bright.corpus
        if self.config.irds is not None:
            from rerankcli.core.irds import irds_corpus
            return irds_corpus(self.config.irds)
        return read_corpus(self.path("corpus"))

    @functools.cache
    def qrels(self) -> Qrels:
        if self.bright is not None:
            return self.bright.examples.qrels
        if self.config.irds is not None:
            from rerankcli.core.irds import irds_qrels
            return irds_qrels(self.config.irds)
        return read_qrels(self.path("qrels"))

    def excluded(self) -> dict[str, frozenset[str]]:
        """Per query, documents removed from every run before evaluation (BRIGHT's excluded_ids)."""
        return self.bright.examples.excluded if self.bright is not None else {}

    @functools.cache
    def all_queries(self) -> dict[str, str]:
        if self.bright is not None:
            return self.bright.examples.queries
        if self.config.irds is not None:
            from rerankcli.core.irds import irds_queries
            return irds_queries(self.config.irds)
        return read_queries(self.path("queries"))

    @functools.cache
    def queries(self) -> dict[str, str]:
        """The queries retrieval runs: the judged ones by default (as BEIR evaluates)."""
        queries = self.all_queries()
        if self.config.query_set == "all" or not self.has("qrels"):
            return queries
        qrels = self.qrels()
        absent = set(qrels) - set(queries)
        if absent:
            count = f"{len(absent)} judged quer{'y' if len(absent) == 1 else 'ies'}"
            if self.config.irds or self.bright is not None:
                raise UserError(f"{self.label}: {count} absent from the queries")
            path = self.path("qrels")
            number, qid = first_line_of(path, absent, "qrels")
            raise UserError(f"{where(path, number)}: query {shown(qid)} is not in the queries file "
                            f"{self.path('queries')} ({count} absent)")
        return {qid: queries[qid] for qid in queries if qid in qrels}
