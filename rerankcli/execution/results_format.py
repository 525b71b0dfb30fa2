"""The per-query results format that journals and shard files share: one parser, one validator.

A stage's journal (``<cache>/journals/<key>.jsonl``) and a shard result file
(``<output>/shards/<stage>.<i>-of-<N>.jsonl``) are the same JSON lines: a header naming the
stage key (and shard), the method's prepared state, then one line per finished query. Both
are read back as the data a stage's run is made of, so both are read here and every line is
checked the same way: valid UTF-8 JSON of bounded length and depth, exactly the fields and
types the journal writes, finite scores, ids that can stand in a TREC run, each query once.
Where a query belongs (the file's shard, the input run, exactly its candidates) is checked by
``placement_problem``, which the readers call once they know the input run.

Only what a bad line means differs, and the callers decide it: a shard file is the user's
hand-off between jobs (one error line, exit 2); a journal is the cache's own scratch file
(cut before the line, those queries computed again). Reading stops at the first bad line.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerankcli.core.errors import shown, where
from rerankcli.core.user_files import open_regular
from rerankcli.llm.accounting import USAGE_FIELDS, Usage
from rerankcli.rerank.llm_method import QueryResult

FORMAT = 1
HEADER_FIELDS = ("journal", "stage", "key", "shard")
RESULT_FIELDS = ("qid", "scores", "record", "usage", "by")
#: one query's result: its candidates' scores and a short record (10,000 candidates take ~1 MiB)
MAX_LINE = 64 << 20

_LABEL = re.compile(r"^(\d+)/(\d+)$")


class BadLine(ValueError):
    """Why one line is not a line of this format; the reader adds the file and line."""


def header(stage: str, key: str, shard: str | None = None) -> dict[str, Any]:
    return {"journal": FORMAT, "stage": stage, "key": key, "shard": shard}


def shard_index(qid: str, count: int) -> int:
    """The shard of ``count`` a query belongs to: a hash of its id alone, so every job agrees."""
    digest = hashlib.sha256(qid.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_label(label: object) -> tuple[int, int] | None:
    """``(i, N)`` of a shard label ``"i/N"`` with ``0 <= i < N``; None for anything else."""
    match = _LABEL.match(label) if isinstance(label, str) else None
    if match is None:
        return None
    index, count = int(match.group(1)), int(match.group(2))
    return (index, count) if index < count else None


# -- one line ------------------------------------------------------------------------------------

def parse(raw: bytes) -> Any:
    """The JSON value of one line. ``json`` recurses once per nesting level, so ``[[[[…`` a
    hundred thousand deep raises RecursionError, not ValueError: both are a bad line here."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadLine("not valid UTF-8") from None
    except RecursionError:
        raise BadLine("JSON nested too deeply (a line of it is a few levels deep)") from None
    except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits
        raise BadLine(f"not valid JSON ({str(exc).split(':')[0]})") from None


def id_problem(value: object) -> str | None:
    """Why ``value`` cannot be a query or document id of a TREC run, or None."""
    if not isinstance(value, str) or not value:
        return f"must be a non-empty string, found {shown(value)}"
    if any(ch.isspace() for ch in value):
        return f"{shown(value)} contains white space"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # "\udce9" is valid JSON, but no text
        return f"{shown(value)} is not valid Unicode text"
    return None


def read_header(item: object) -> dict[str, Any]:
    """The header line: exactly the fields ``header`` writes."""
    if not isinstance(item, dict) or item.get("journal") != FORMAT:
        raise BadLine("not a journal or shard result file of rerankcli (its first line is no header)")
    if set(item) != set(HEADER_FIELDS) or not isinstance(item["stage"], str) or not isinstance(item["key"], str):
        raise BadLine(f"the header must hold exactly {', '.join(HEADER_FIELDS)}, found {shown(sorted(item), 120)}")
    if item["shard"] is not None and parse_label(item["shard"]) is None:
        raise BadLine(f"the header's shard {shown(item['shard'])} is not of the form i/N")
    return item


def is_prepared(item: object) -> bool:
    return isinstance(item, dict) and set(item) == {"prepared"}


def read_result(item: object) -> tuple[str, QueryResult]:
    """One query's line, every field of the type the journal writes."""
    if not isinstance(item, dict):
        raise BadLine(f"expected a JSON object (one query's result), found {type(item).__name__}")
    missing = [name for name in RESULT_FIELDS if name not in item]
    if missing:
        raise BadLine(f"missing field '{missing[0]}' (a query's result has {', '.join(RESULT_FIELDS)})")
    unknown = sorted(set(item) - set(RESULT_FIELDS))
    if unknown:
        raise BadLine(f"unknown field {shown(unknown[0])}")
    qid, scores, record, usage, by = (item[name] for name in RESULT_FIELDS)
    problem = id_problem(qid)
    if problem:
        raise BadLine(f"field 'qid' {problem}")
    label = f"query {shown(qid)}"
    if not isinstance(scores, dict) or not scores:
        raise BadLine(f"{label}: field 'scores' must map document ids to scores")
    values = {}
    for docid, score in scores.items():
        problem = id_problem(docid)
        if problem:
            raise BadLine(f"{label}: document id {problem}")
        values[docid] = _score(score, f"{label}: the score of document {shown(docid)}")
    if not isinstance(record, dict):
        raise BadLine(f"{label}: field 'record' must be a JSON object")
    if not isinstance(by, str):
        raise BadLine(f"{label}: field 'by' must be a string")
    return qid, QueryResult(values, record, _usage(usage, label), by)


def _score(score: object, what: str) -> float:
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise BadLine(f"{what} is not a number: {shown(score)}")
    try:
        value = float(score)
    except OverflowError:  # an integer of 400 digits
        raise BadLine(f"{what} is not finite ({shown(score, 40)})") from None
    if not math.isfinite(value):
        raise BadLine(f"{what} is not finite ({score})")
    return value


def _usage(usage: object, label: str) -> Usage:
    def count(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    fields = ("requests", *USAGE_FIELDS)
    if not isinstance(usage, dict) or set(usage) != set(fields):
        raise BadLine(f"{label}: field 'usage' must hold exactly {', '.join(fields)}")
    requests = usage["requests"]
    if not isinstance(requests, dict) or not all(isinstance(k, str) and count(v) for k, v in requests.items()):
        raise BadLine(f"{label}: 'usage.requests' must map request kinds to counts")
    bad = [name for name in USAGE_FIELDS if not count(usage[name])]
    if bad:
        raise BadLine(f"{label}: 'usage.{bad[0]}' must be a count (an integer >= 0), found {shown(usage[bad[0]])}")
    return Usage.from_json(usage)


# -- where a result belongs --------------------------------------------------------------------------

def placement_problem(qid: str, result: QueryResult, stage: str, shard: tuple[int, int] | None,
                      candidates: dict[str, list[str]] | None) -> str | None:
    """Why ``result`` is not a result of this stage's query ``qid``, or None.

    ``candidates`` are the input run's queries, each with the documents the stage reranks
    (None: not known to the caller, so only the shard is checked). A document that was not a
    candidate would be ranked above the rest by its score alone, and a candidate without a
    score would drop out of the run.
    """
    if candidates is not None and qid not in candidates:
        return f"query {shown(qid)} is not a query of the input run of stage '{stage}'"
    if shard is not None and shard_index(qid, shard[1]) != shard[0]:
        return (f"query {shown(qid)} belongs to shard {shard_index(qid, shard[1])}/{shard[1]}, not "
                f"{shard[0]}/{shard[1]} (a query id decides its shard)")
    if candidates is None:
        return None
    wanted = candidates[qid]
    extra = sorted(set(result.scores) - set(wanted))
    if extra:
        return (f"query {shown(qid)}: document {shown(extra[0])} was not one of its {len(wanted)} candidates "
                f"in the input run of stage '{stage}'")
    lacking = [docid for docid in wanted if docid not in result.scores]
    if lacking:
        return f"query {shown(qid)}: candidate {shown(lacking[0])} has no score ({len(lacking)} of {len(wanted)} lack one)"
    return None


def record_shape(record: dict[str, Any]) -> dict[str, str]:
    """A method record's fields and their JSON kinds: a method adds its records up after the
    join, so one lacking a field, or holding text for a count, would stop it mid-way."""
    return {name: type(value).__name__ for name, value in record.items()}


# -- a whole file ------------------------------------------------------------------------------------

#: a check of one result beyond its format (its placement, its record): a problem, or None
Check = Callable[[str, QueryResult], str | None]


@dataclass
class Contents:
    """What a journal or shard file holds, up to its first bad line."""

    header: dict[str, Any]
    prepared: Any
    results: dict[str, QueryResult]
    valid_bytes: int  # the length of the good lines (where a journal is cut)
    path: Path = Path()
    lines: dict[str, int] = field(default_factory=dict)  # query id -> its line
    has_prepared: bool = False
    damage: str | None = None  # "<path>:<line>: why" of the first bad line; reading stopped there
    torn: int | None = None  # the last line, cut short (no newline): a kill mid-write, dropped


def read_results(path: Path, what: str, check: Check | None = None) -> Contents:
    """The good lines of the journal or shard file ``path``, in bounded memory per line.

    Reading stops at the first line that is not whole, valid and of the format (``damage``),
    or that ``check`` refuses; a last line without its newline is left out (``torn``).
    ``what`` names the file in messages about its kind ("journal", "shard result").
    """
    contents = Contents({}, None, {}, 0, path)
    with open_regular(path, what) as handle:  # a FIFO or device: one line, no wait
        for number, raw in enumerate(iter(lambda: handle.readline(MAX_LINE + 1), b""), start=1):
            if len(raw) <= MAX_LINE and not raw.endswith(b"\n"):
                contents.torn = number
                break
            try:
                _take(contents, number, raw, check)
            except BadLine as exc:
                contents.damage = f"{where(path, number)}: {exc}"
                break
            contents.valid_bytes += len(raw)
    return contents


def _take(contents: Contents, number: int, raw: bytes, check: Check | None) -> None:
    """Add line ``number`` to ``contents``, or raise ``BadLine``."""
    if len(raw) > MAX_LINE:
        raise BadLine(f"the line is longer than {MAX_LINE >> 20} MiB; no query's result is")
    item = parse(raw)
    if number == 1:
        contents.header = read_header(item)
    elif is_prepared(item):
        # Journals of earlier versions noted a method's ``null`` state again on every resume:
        # the same value again is no damage; another value would make the results disagree.
        if contents.has_prepared and item["prepared"] != contents.prepared:
            raise BadLine(f"a second 'prepared' line that differs from the first ({shown(item['prepared'], 80)})")
        contents.prepared, contents.has_prepared = item["prepared"], True
    else:
        qid, result = read_result(item)
        if qid in contents.results:
            raise BadLine(f"query {shown(qid)} appears twice (first on line {contents.lines[qid]})")
        problem = check(qid, result) if check is not None else None
        if problem:
            raise BadLine(problem)
        contents.results[qid], contents.lines[qid] = result, number
