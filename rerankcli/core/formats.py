"""Strict readers for corpus, query and qrels files.

Formats, chosen by file name:
- corpus: BEIR JSONL (``_id``, ``title``, ``text``; ``.jsonl`` or ``.jsonl.gz``) or TSV
  (``id<TAB>text`` or ``id<TAB>title<TAB>text``);
- queries: BEIR JSONL (``_id``, ``text``) or TSV (``id<TAB>text``);
- qrels: TREC (``qid iter docid rel``) or BEIR TSV (``query-id corpus-id score``, header optional).
Every error names the file and line, because these files are large and hand-edited. Files are
read line by line (``core.user_files``): memory holds what was parsed, never the raw file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rerankcli.core.errors import UserError, shown, where
from rerankcli.core.user_files import numbered_lines

Qrels = dict[str, dict[str, int]]


@dataclass
class Corpus:
    """Documents in file order; ``contents(i)`` is what retrieval indexes (title, then text)."""

    ids: list[str]
    titles: list[str]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def contents(self, i: int) -> str:
        title = self.titles[i]
        return f"{title} {self.texts[i]}" if title else self.texts[i]


def _lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """Numbered non-blank lines of a text file (gzip when the name ends in .gz), streamed.

    Only regular files are read, and a line has a length cap (``core.user_files``): a FIFO,
    ``/dev/zero`` or a file without line breaks ends with one line, in bounded memory.
    """
    for number, line in numbered_lines(path, what):
        if line.strip():
            yield number, line


def _is_jsonl(path: Path) -> bool:
    return path.name.endswith((".jsonl", ".jsonl.gz", ".json"))


def _json_records(path: Path, what: str) -> Iterator[tuple[int, dict]]:
    """Each line's JSON object. ``json`` recurses once per nesting level, so ``[[[[…`` a hundred
    thousand deep raises RecursionError, and an integer of 5000 digits a plain ValueError."""
    for number, line in _lines(path, what):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where(path, number)}: invalid JSON ({exc.msg})") from None
        except RecursionError:
            raise UserError(f"{where(path, number)}: JSON nested too deeply (a line of a {what} file is "
                            "one flat object)") from None
        except ValueError as exc:
            raise UserError(f"{where(path, number)}: invalid JSON ({str(exc).split(':')[0]})") from None
        if not isinstance(record, dict):
            raise UserError(f"{where(path, number)}: expected a JSON object per line")
        yield number, record


def _text_field(record: dict, name: str, path: Path, number: int, required: bool) -> str:
    value = record.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        got = "missing" if value is None else f"a {type(value).__name__}"
        raise UserError(f"{where(path, number)}: field {name!r} must be a string, it is {got}")
    return value


def _record_id(record: dict, path: Path, number: int) -> str:
    for name in ("_id", "id", "docid", "doc_id"):
        if name in record:
            value = record[name]
            if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
                return _check_id(str(value), path, number)
            raise UserError(f"{where(path, number)}: field {name!r} must be a non-empty string")
    raise UserError(f"{where(path, number)}: missing field '_id'")


def _check_id(value: str, path: Path, number: int) -> str:
    if any(ch.isspace() for ch in value) or not value:
        raise UserError(f"{where(path, number)}: id {shown(value)} is empty or contains white space")
    return value


def read_corpus(path: str | Path) -> Corpus:
    path = Path(path)
    ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    seen: set[str] = set()
    for number, docid, title, text in _corpus_records(path):
        if docid in seen:
            first = next((n for n, d, _, _ in _corpus_records(path) if d == docid), "?")
            raise UserError(
                f"{where(path, number)}: duplicate document id {shown(docid)}, first on line {first}")
        seen.add(docid)
        ids.append(docid)
        titles.append(title)
        texts.append(text)
    if not ids:
        raise UserError(f"{path}: the corpus file has no documents")
    return Corpus(ids, titles, texts)


def _corpus_records(path: Path) -> Iterator[tuple[int, str, str, str]]:
    """(line, id, title, text) of each document.

    Readers keep a set of ids, not a map to lines: a duplicate is rare and costs a second
    pass to find its first line, while a map would cost memory on every large corpus.
    """
    if _is_jsonl(path):
        for number, record in _json_records(path, "corpus"):
            docid = _record_id(record, path, number)
            title = _text_field(record, "title", path, number, required=False)
            yield number, docid, title, _text_field(record, "text", path, number, required=True)
        return
    for number, line in _lines(path, "corpus"):
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) == 2:
            yield number, _check_id(fields[0], path, number), "", fields[1]
        elif len(fields) == 3:
            yield number, _check_id(fields[0], path, number), fields[1], fields[2]
        else:
            raise UserError(
                f"{where(path, number)}: a corpus TSV line needs id<TAB>text or "
                f"id<TAB>title<TAB>text, found {len(fields)} columns"
            )


def read_queries(path: str | Path) -> dict[str, str]:
    path = Path(path)
    queries: dict[str, str] = {}
    for number, qid, text in _query_records(path):
        if qid in queries:
            first = next((n for n, q, _ in _query_records(path) if q == qid), "?")
            raise UserError(f"{where(path, number)}: duplicate query id {shown(qid)}, first on line {first}")
        if not text.strip():
            raise UserError(f"{where(path, number)}: query {shown(qid)} has empty text")
        queries[qid] = text
    if not queries:
        raise UserError(f"{path}: the queries file has no queries")
    return queries


def _query_records(path: Path) -> Iterator[tuple[int, str, str]]:
    if _is_jsonl(path):
        for number, record in _json_records(path, "queries"):
            qid = _record_id(record, path, number)
            yield number, qid, _text_field(record, "text", path, number, required=True)
        return
    for number, line in _lines(path, "queries"):
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != 2:
            raise UserError(
                f"{where(path, number)}: a queries TSV line needs id<TAB>text, "
                f"found {len(fields)} columns"
            )
        yield number, _check_id(fields[0], path, number), fields[1]


def read_qrels(path: str | Path) -> Qrels:
    """Read TREC qrels (4 columns) or BEIR qrels (3 columns, optional header)."""
    path = Path(path)
    qrels: Qrels = {}
    for number, qid, docid, rel in _qrels_records(path):
        judged = qrels.setdefault(qid, {})
        if docid in judged:
            first = next((n for n, q, d, _ in _qrels_records(path) if (q, d) == (qid, docid)), "?")
            raise UserError(
                f"{where(path, number)}: duplicate judgement of document {docid} for query "
                f"{qid}, first on line {first}"
            )
        judged[docid] = rel
    if not qrels:
        raise UserError(f"{path}: the qrels file has no judgements")
    return qrels


def _qrels_records(path: Path) -> Iterator[tuple[int, str, str, int]]:
    """(line, query, document, relevance) of each judgement."""
    columns: int | None = None
    for number, line in _lines(path, "qrels"):
        fields = line.split()
        if columns is None:
            columns = len(fields)
            if columns == 3 and not _is_int(fields[2]):
                continue  # BEIR header: query-id corpus-id score
            if columns not in (3, 4):
                raise UserError(
                    f"{where(path, number)}: qrels need 4 columns (qid iter docid rel) "
                    f"or 3 (query-id corpus-id score), found {columns}"
                )
        if len(fields) != columns:
            raise UserError(
                f"{where(path, number)}: expected {columns} columns like the first line, "
                f"found {len(fields)}"
            )
        qid, docid, rel = (fields[0], fields[1], fields[2]) if columns == 3 else (
            fields[0], fields[2], fields[3])
        if not _is_int(rel):
            raise UserError(f"{where(path, number)}: relevance {shown(rel)} is not an integer")
        yield number, qid, docid, int(rel)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
