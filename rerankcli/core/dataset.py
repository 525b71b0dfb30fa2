"""The dataset of a pipeline: local files or an ir_datasets id, loaded lazily and fingerprinted.

Stages ask for the corpus, queries or qrels only when they run; cached stages never load
them. Fingerprints (content hashes of the files, or the ir_datasets id and version) enter
the stage keys, so editing the topics or qrels invalidates exactly what depends on them.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from rerankcli.core.errors import UserError, shown, where
from rerankcli.core.formats import Corpus, Qrels, read_corpus, read_qrels, read_queries
from rerankcli.core.hashing import file_digest
from rerankcli.core.user_files import check_regular, numbered_lines
from rerankcli.core.versions import versions


class DatasetConfig(BaseModel):
    """``{corpus, queries, qrels}`` file paths, or ``irds: <ir_datasets id>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    irds: str | None = None
    corpus: Path | None = None
    queries: Path | None = None
    qrels: Path | None = None
    #: which queries retrieval runs: only those with judgements (BEIR practice), or all
    query_set: Literal["judged", "all"] = "judged"

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
        return self

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
            update={"corpus": fix(self.corpus), "queries": fix(self.queries), "qrels": fix(self.qrels)}
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
        self.label = f"irds:{config.irds}" if config.irds else "dataset"

    def has(self, part: str) -> bool:
        return self.config.irds is not None or getattr(self.config, part) is not None

    def path(self, part: str) -> Path:
        path = getattr(self.config, part)
        if path is None:
            raise UserError(f"dataset.{part} is not set")
        return path

    @functools.cache
    def fingerprint(self, part: str) -> str:
        """Content identity of one part; queries also depend on the query set and qrels."""
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
        if self.config.irds is not None:
            from rerankcli.core.irds import irds_corpus
            return irds_corpus(self.config.irds)
        return read_corpus(self.path("corpus"))

    @functools.cache
    def qrels(self) -> Qrels:
        if self.config.irds is not None:
            from rerankcli.core.irds import irds_qrels
            return irds_qrels(self.config.irds)
        return read_qrels(self.path("qrels"))

    @functools.cache
    def all_queries(self) -> dict[str, str]:
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
            if self.config.irds:
                raise UserError(f"{self.label}: {count} absent from the queries")
            path = self.path("qrels")
            number, qid = first_line_of(path, absent, "qrels")
            raise UserError(f"{where(path, number)}: query {shown(qid)} is not in the queries file "
                            f"{self.path('queries')} ({count} absent)")
        return {qid: queries[qid] for qid in queries if qid in qrels}
