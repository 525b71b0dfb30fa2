"""BRIGHT (xlangai/BRIGHT) read from disk: ``dataset: {bright: PATH, domain: biology}``.

BRIGHT keeps one table per config, split by domain (biology, earth_science, economics,
psychology, robotics, stackoverflow, sustainable_living, leetcode, pony, aops,
theoremqa_theorems, theoremqa_questions)::

    PATH/documents/<domain>...        id, content
    PATH/long_documents/<domain>...   id, content               (``documents: long``)
    PATH/examples/<domain>...         id, query, gold_ids, gold_ids_long, excluded_ids, ...

A table of a domain is, in ``PATH/<config>/``, one of
- parquet: ``<domain>.parquet`` or shards ``<domain>-00000-of-00002.parquet`` (a hub snapshot);
- JSONL: the same names ending in ``.jsonl`` or ``.jsonl.gz``, one row per line;
- a folder ``<domain>/`` written by ``datasets``' ``save_to_disk`` (saving a config's
  ``DatasetDict`` writes exactly this: one such folder per domain).
Parquet needs ``pyarrow``, a ``save_to_disk`` folder needs ``datasets``; neither is imported
before a table of that kind is read.

Queries are the examples' ``id`` -> ``query``; each id of ``gold_ids`` (``gold_ids_long`` with
long documents) is relevance 1. ``excluded_ids`` lists documents that BRIGHT's scorer removes
from that query's ranking before computing metrics (``["N/A"]`` means none): the evaluate stage
does the same with ``excluded()``. BRIGHT asserts that no gold document is excluded; so does
this reader.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rerankcli.core.errors import UserError, is_resource_fault, shown
from rerankcli.core.formats import Corpus, Qrels
from rerankcli.core.hashing import file_digest, tree_digest
from rerankcli.core.user_files import check_regular, numbered_lines

#: documents: short | long -> (the config holding the documents, the examples' column of gold ids)
DOCUMENTS = {"short": ("documents", "gold_ids"), "long": ("long_documents", "gold_ids_long")}
EXAMPLES = "examples"
#: BRIGHT's spelling of "no excluded document" in ``excluded_ids``
NONE_EXCLUDED = "N/A"
#: ``<domain>[-00000-of-00002[-<hash>]].<suffix>``: how the hub and ``datasets`` name shards
_SHARD = re.compile(r"^(?P<domain>.+?)(?:-(?P<index>\d{5})-of-(?P<count>\d{5})(?:-[0-9a-f]+)?)?"
                    r"\.(?P<suffix>parquet|jsonl|jsonl\.gz)$")
_KINDS = {"parquet": "parquet", "jsonl": "jsonl", "jsonl.gz": "jsonl"}


class LayoutError(UserError):
    """A BRIGHT folder without the expected tables; ``field`` is the dataset field to blame."""

    def __init__(self, message: str, field: Literal["bright", "domain"] = "bright") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Table:
    """One config's table of one domain: shard files in order, or one ``save_to_disk`` folder."""

    name: str
    kind: Literal["parquet", "jsonl", "disk"]
    paths: tuple[Path, ...]

    def digest(self) -> str:
        """Content digest of the files read, with their names (a renamed shard is another table)."""
        digest = hashlib.sha256()
        for path in self.paths:
            digest.update(f"{self.name}/{path.name}\0".encode())
            digest.update((tree_digest(path) if self.kind == "disk" else file_digest(path)).encode())
        return f"sha256:{digest.hexdigest()}"


def _entries(folder: Path) -> dict[str, list[tuple[str, Path, re.Match[str] | None]]]:
    """domain -> (kind, path, shard name match) of everything in a config folder that holds a table."""
    found: dict[str, list[tuple[str, Path, re.Match[str] | None]]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            if (path / "state.json").is_file():
                found.setdefault(path.name, []).append(("disk", path, None))
            continue
        match = _SHARD.match(path.name)
        if match:
            found.setdefault(match["domain"], []).append((_KINDS[match["suffix"]], path, match))
    return found


def domains(root: Path, config: str = EXAMPLES) -> list[str]:
    """The domains with a table in ``root/<config>``, sorted (none when the folder is absent)."""
    folder = root / config
    return sorted(_entries(folder)) if folder.is_dir() else []


def find_table(root: Path, config: str, domain: str) -> Table:
    """The table of ``domain`` in ``root/<config>``, its shards complete; else one line."""
    folder = root / config
    if not folder.is_dir():
        raise LayoutError(f"{root} has no '{config}' table folder ({folder} is missing; a BRIGHT "
                          "snapshot has documents/, long_documents/ and examples/)")
    entries = _entries(folder)
    if domain not in entries:
        found = ", ".join(sorted(entries)) or "none"
        raise LayoutError(f"no '{config}' table for domain {shown(domain)} in {folder} (domains found there: "
                          f"{found})", "domain")
    kinds = sorted({kind for kind, _, _ in entries[domain]})
    if len(kinds) > 1:
        raise LayoutError(f"{folder}: domain {shown(domain)} is there as {' and '.join(kinds)}; keep one of them")
    kind = kinds[0]
    if kind == "disk":
        return Table(config, "disk", (entries[domain][0][1],))
    shards = [(match, path) for _, path, match in entries[domain] if match is not None]
    numbered = [(int(m["index"]), int(m["count"])) for m, _ in shards if m["index"] is not None]
    if numbered:
        counts = {count for _, count in numbered}
        indexes = sorted(index for index, _ in numbered)
        if len(numbered) != len(shards) or len(counts) > 1 or indexes != list(range(next(iter(counts)))):
            names = ", ".join(path.name for _, path in shards)
            raise LayoutError(f"{folder}: the {kind} shards of domain {shown(domain)} are not one complete set "
                              f"({names})")
        shards.sort(key=lambda item: int(item[0]["index"]))
    elif len(shards) > 1:
        raise LayoutError(f"{folder}: domain {shown(domain)} has {len(shards)} {kind} files "
                          f"({', '.join(p.name for _, p in shards)}); keep one")
    return Table(config, kind, tuple(path for _, path in shards))


def locate(root: Path, domain: str, documents: str = "short") -> tuple[Table, Table]:
    """(documents table, examples table) of ``domain`` under ``root``, or one ``LayoutError`` line."""
    if not root.exists():
        raise LayoutError(f"folder not found: {root}")
    if not root.is_dir():
        raise LayoutError(f"{root} is a file, not a BRIGHT folder (documents/, examples/, ...)")
    found = domains(root)
    if (root / EXAMPLES).is_dir() and domain not in found:
        raise LayoutError(f"unknown domain {shown(domain)}; domains found in {root / EXAMPLES}: "
                          f"{', '.join(found) or 'none'}", "domain")
    examples = find_table(root, EXAMPLES, domain)
    return find_table(root, DOCUMENTS[documents][0], domain), examples


# -- rows ------------------------------------------------------------------------------------

def _library(module: str, package: str, table: Table) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{table.paths[0]}: reading a BRIGHT {table.kind} table needs {package} "
                        f"(pip install {package})") from None


def _missing(columns: Sequence[str], names: Sequence[str], where: str) -> None:
    absent = [column for column in columns if column not in names]
    if absent:
        raise UserError(f"{where}: no column {absent[0]!r} (columns: {', '.join(map(str, names)) or 'none'})")


def rows(table: Table, columns: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) of each row of ``table``, shards in order; ``where`` names file and row or line."""
    yield from {"parquet": _parquet_rows, "jsonl": _jsonl_rows, "disk": _disk_rows}[table.kind](table, columns)


def _parquet_rows(table: Table, columns: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    pq = _library("pyarrow.parquet", "pyarrow", table)
    import pyarrow

    for path in table.paths:
        check_regular(path, f"BRIGHT {table.name}")
        try:
            _missing(columns, pq.read_schema(path).names, str(path))
            data = pq.read_table(path, columns=list(columns)).to_pylist()
        except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError) as exc:
            raise UserError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0]})") from None
        for number, row in enumerate(data, start=1):
            yield f"{path} row {number}", row


def _jsonl_rows(table: Table, columns: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in table.paths:
        for number, line in numbered_lines(path, f"BRIGHT {table.name}"):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except (ValueError, RecursionError) as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
                raise UserError(f"{where}: invalid JSON ({reason})") from None
            if not isinstance(row, dict):
                raise UserError(f"{where}: expected a JSON object per line")
            _missing(columns, list(row), where)
            yield where, row


def _disk_rows(table: Table, columns: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    datasets = _library("datasets", "datasets", table)
    folder = table.paths[0]
    try:
        data = datasets.load_from_disk(str(folder))
    except Exception as exc:  # the library's many ways to refuse a folder
        if is_resource_fault(exc):
            raise
        raise UserError(f"{folder}: not a folder written by datasets' save_to_disk "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not hasattr(data, "column_names") or isinstance(data.column_names, dict):
        raise UserError(f"{folder}: holds several splits; name the folder of one domain")
    _missing(columns, data.column_names, str(folder))
    for number, row in enumerate(data.select_columns(list(columns)).to_list(), start=1):
        yield f"{folder} row {number}", row


# -- values ----------------------------------------------------------------------------------

def _kind(value: object) -> str:
    return "missing" if value is None else f"a {type(value).__name__}"


def _id(value: object, where: str, column: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UserError(f"{where}: column {column!r} must be an id (text), it is {_kind(value)}")
    text = str(value)
    if not text or any(ch.isspace() for ch in text):  # a TREC run cannot hold it
        raise UserError(f"{where}: column {column!r}: id {shown(text)} is empty or contains white space")
    return text


def _text(value: object, where: str, column: str) -> str:
    if not isinstance(value, str):
        raise UserError(f"{where}: column {column!r} must be text, it is {_kind(value)}")
    return value


def _ids(value: object, where: str, column: str) -> list[str]:
    if not isinstance(value, list):
        raise UserError(f"{where}: column {column!r} must be a list of ids, it is {_kind(value)}")
    return [_id(item, where, column) for item in value]


@dataclass
class Examples:
    """The examples table read: queries, judgements and, per query, the excluded documents."""

    queries: dict[str, str]
    qrels: Qrels
    excluded: dict[str, frozenset[str]]


def read_documents(table: Table) -> Corpus:
    ids: list[str] = []
    texts: list[str] = []
    seen: set[str] = set()
    for where, row in rows(table, ("id", "content")):
        docid = _id(row["id"], where, "id")
        if docid in seen:
            first = next(w for w, r in rows(table, ("id",)) if str(r["id"]) == docid)
            raise UserError(f"{where}: duplicate document id {shown(docid)}, first at {first}")
        seen.add(docid)
        ids.append(docid)
        texts.append(_text(row["content"], where, "content"))
    if not ids:
        raise UserError(f"{table.paths[0]}: the BRIGHT {table.name} table has no documents")
    return Corpus(ids, [""] * len(ids), texts)


def read_examples(table: Table, gold: str) -> Examples:
    queries: dict[str, str] = {}
    qrels: Qrels = {}
    excluded: dict[str, frozenset[str]] = {}
    for where, row in rows(table, ("id", "query", gold, "excluded_ids")):
        qid = _id(row["id"], where, "id")
        if qid in queries:
            first = next(w for w, r in rows(table, ("id",)) if str(r["id"]) == qid)
            raise UserError(f"{where}: duplicate query id {shown(qid)}, first at {first}")
        text = _text(row["query"], where, "query")
        if not text.strip():
            raise UserError(f"{where}: query {shown(qid)} has empty text")
        queries[qid] = text
        golds = _ids(row[gold], where, gold)
        dropped = frozenset(_ids(row["excluded_ids"], where, "excluded_ids")) - {NONE_EXCLUDED}
        both = sorted(dropped & set(golds))
        if both:  # BRIGHT's own scorer asserts this never happens
            raise UserError(f"{where}: query {shown(qid)}: document {shown(both[0])} is in both {gold} and "
                            "excluded_ids")
        if golds:
            qrels[qid] = dict.fromkeys(golds, 1)
        if dropped:
            excluded[qid] = dropped
    if not queries:
        raise UserError(f"{table.paths[0]}: the BRIGHT examples table has no queries")
    return Examples(queries, qrels, excluded)


class BrightSource:
    """One domain of a BRIGHT folder: located once, each table read once, on first use."""

    def __init__(self, root: Path, domain: str, documents: str = "short") -> None:
        self.root, self.domain, self.documents = root, domain, documents
        self.gold = DOCUMENTS[documents][1]
        self.label = f"bright:{root} ({domain}{', long documents' if documents == 'long' else ''})"

    @functools.cached_property
    def tables(self) -> tuple[Table, Table]:
        return locate(self.root, self.domain, self.documents)

    def fingerprint(self, part: str, query_set: str) -> str:
        """Content identity of a part: digests of the files it is read from, and how it is read."""
        documents, examples = self.tables
        if part == "corpus":
            return f"bright:{documents.digest()}"
        if part == "queries":
            return f"bright:{examples.digest()}#{self.gold}#{query_set}"
        return f"bright:{examples.digest()}#{self.gold}#minus-excluded_ids"

    @functools.cached_property
    def corpus(self) -> Corpus:
        return read_documents(self.tables[0])

    @functools.cached_property
    def examples(self) -> Examples:
        return read_examples(self.tables[1], self.gold)
