"""``--shard i/N``: a deterministic share of the queries, and joining the shares again.

A query belongs to shard ``hash(qid) mod N``. The choice depends on nothing but the query id,
so every stage of a sharded run, on every machine of a SLURM array, agrees on it without
seeing the other shards' queries.

A sharded LLM rerank stage writes its per-query results (the journal format) to
``<output>/shards/<stage>.<i>-of-<N>.jsonl``. ``rerank merge`` checks that shards 0..N-1 are
all there and were all made by the same stage key, then joins them; an unsharded ``rerank
run`` joins whatever matching shards exist and computes the queries they lack.

A shard file is read strictly before anything is joined: every line whole, valid JSON, with
the fields and types the journal writes and finite scores; each query of its own shard and of
the input run, scoring exactly that query's candidates. Anything else is one line naming the
file and line, and the stage's journal is not touched.
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

from rerankcli.core.errors import UserError, shown, where
from rerankcli.core.runs import Run
from rerankcli.core.store import Store
from rerankcli.core.user_files import open_regular
from rerankcli.execution.journal import FORMAT, Contents, Journal, header
from rerankcli.llm.accounting import USAGE_FIELDS, Usage
from rerankcli.rerank.llm_method import QueryResult

_SPEC = re.compile(r"^(\d+)/(\d+)$")
_FILE = re.compile(r"^(?P<stage>.+)\.(?P<index>\d+)-of-(?P<count>\d+)\.jsonl$")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = _SPEC.match(text.strip())
        if not match:
            raise UserError(f"--shard {text!r}: write it as i/N, e.g. 0/4 for the first of four shards")
        index, count = int(match.group(1)), int(match.group(2))
        if count < 1 or index >= count:
            raise UserError(f"--shard {text}: the index counts from 0 and must be below the number of "
                            f"shards (0/{max(count, 1)} to {max(count, 1) - 1}/{max(count, 1)})")
        return cls(index, count)

    def selects(self, qid: str) -> bool:
        digest = hashlib.sha256(qid.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def file(self, folder: Path, stage: str) -> Path:
        return folder / f"{stage}.{self.index}-of-{self.count}.jsonl"


def shard_folder(output: Path) -> Path:
    return output / "shards"


def shard_files(output: Path, stage: str) -> dict[Path, Shard]:
    """The shard result files of ``stage`` in the output folder, with the shard each names."""
    folder = shard_folder(output)
    found = {}
    for path in sorted(folder.glob(f"{stage}.*-of-*.jsonl")) if folder.is_dir() else []:
        match = _FILE.match(path.name)
        if match and match.group("stage") == stage:
            found[path] = Shard(int(match.group("index")), int(match.group("count")))
    return found


@dataclass
class ShardContents(Contents):
    """A shard file's contents, with where they came from (for messages)."""

    path: Path = Path()
    lines: dict[str, int] = field(default_factory=dict)  # query id -> its line


RESULT_FIELDS = ("qid", "scores", "record", "usage", "by")
#: one query's result: its candidates' scores and a short record (10,000 candidates take ~1 MiB)
MAX_SHARD_LINE = 64 << 20


def read_shard(path: Path, shard: Shard) -> ShardContents:
    """Every line of a shard result file, checked; else one ``UserError`` naming the file and line.

    A journal may end in a torn line (a kill mid-write; it is dropped and recomputed), but a
    shard file is copied whole from a finished journal: a bad or cut line in it is damage, and
    joining it would rank documents by whatever survived.
    """
    contents = ShardContents({}, None, {}, 0, path)
    with open_regular(path, "shard result") as handle:
        for number, raw in enumerate(iter(lambda: handle.readline(MAX_SHARD_LINE + 1), b""), start=1):
            at = where(path, number)
            if len(raw) > MAX_SHARD_LINE:
                raise UserError(f"{at}: the line is longer than {MAX_SHARD_LINE >> 20} MiB; no query's result is")
            if not raw.endswith(b"\n"):
                raise UserError(f"{at}: the line is cut short (the file ends without a newline): the shard "
                                f"was not written whole; delete it and run shard {shard.label} again")
            try:
                item = json.loads(raw)
            except UnicodeDecodeError:
                raise UserError(f"{at}: not valid UTF-8") from None
            except ValueError as exc:
                raise UserError(f"{at}: not valid JSON ({str(exc).split(':')[0]})") from None
            if number == 1:
                contents.header = _header(item, path, shard)
            elif isinstance(item, dict) and set(item) == {"prepared"}:
                if contents.prepared is not None or contents.results:
                    raise UserError(f"{at}: a second 'prepared' line, or one after the results")
                contents.prepared = item["prepared"]
            else:
                qid, result = _result(item, at, shard)
                if qid in contents.results:
                    raise UserError(f"{at}: query {shown(qid)} appears twice (first on line {contents.lines[qid]})")
                contents.results[qid], contents.lines[qid] = result, number
            contents.valid_bytes += len(raw)
    if not contents.header:
        raise UserError(f"{path}: the shard result file is empty; delete it and run shard {shard.label} again")
    return contents


def _header(item: object, path: Path, shard: Shard) -> dict[str, Any]:
    if not isinstance(item, dict) or item.get("journal") != FORMAT or not isinstance(item.get("stage"), str) \
            or not isinstance(item.get("key"), str):
        raise UserError(f"{where(path, 1)}: not a shard result file of rerankcli (its first line is not a shard header)")
    if item.get("shard") != shard.label:
        raise UserError(f"{where(path, 1)}: the header says shard {shown(item.get('shard'))}, the file name "
                        f"shard {shard.label}")
    return item


def _result(item: object, at: str, shard: Shard) -> tuple[str, QueryResult]:
    """One query's line, every field of the type the journal writes."""
    if not isinstance(item, dict):
        raise UserError(f"{at}: expected a JSON object (one query's result), found {type(item).__name__}")
    missing = [name for name in RESULT_FIELDS if name not in item]
    if missing:
        raise UserError(f"{at}: missing field '{missing[0]}' (a query's result has {', '.join(RESULT_FIELDS)})")
    unknown = sorted(set(item) - set(RESULT_FIELDS))
    if unknown:
        raise UserError(f"{at}: unknown field {shown(unknown[0])}")
    qid, scores, record, usage, by = (item[name] for name in RESULT_FIELDS)
    if not isinstance(qid, str) or not qid:
        raise UserError(f"{at}: field 'qid' must be a non-empty string, found {shown(qid)}")
    if not shard.selects(qid):
        raise UserError(f"{at}: query {shown(qid)} belongs to another shard than {shard.label}; "
                        "the file was edited or renamed")
    label = f"query {shown(qid)}"
    if not isinstance(scores, dict) or not scores:
        raise UserError(f"{at}: {label}: field 'scores' must map document ids to scores")
    for docid, score in scores.items():
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise UserError(f"{at}: {label}: the score of document {shown(docid)} is not a number: {shown(score)}")
        if not math.isfinite(score):
            raise UserError(f"{at}: {label}: the score of document {shown(docid)} is not finite ({score})")
    if not isinstance(record, dict):
        raise UserError(f"{at}: {label}: field 'record' must be a JSON object")
    if not isinstance(by, str):
        raise UserError(f"{at}: {label}: field 'by' must be a string")
    return qid, QueryResult({d: float(s) for d, s in scores.items()}, record, _usage(usage, at, label), by)


def _usage(usage: object, at: str, label: str) -> Usage:
    def count(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    fields = ("requests", *USAGE_FIELDS)
    if not isinstance(usage, dict) or set(usage) != set(fields):
        raise UserError(f"{at}: {label}: field 'usage' must hold exactly {', '.join(fields)}")
    requests = usage["requests"]
    if not isinstance(requests, dict) or not all(isinstance(k, str) and count(v) for k, v in requests.items()):
        raise UserError(f"{at}: {label}: 'usage.requests' must map request kinds to counts")
    bad = [name for name in USAGE_FIELDS if not count(usage[name])]
    if bad:
        raise UserError(f"{at}: {label}: 'usage.{bad[0]}' must be a count (an integer >= 0), "
                        f"found {shown(usage[bad[0]])}")
    return Usage.from_json(usage)


def matching_shards(output: Path, stage: str, key: str) -> tuple[dict[Shard, ShardContents], list[str]]:
    """Shards of ``stage`` made by stage key ``key``, and one line per shard file that is not."""
    matching: dict[Shard, ShardContents] = {}
    foreign: list[str] = []
    for path, shard in shard_files(output, stage).items():
        contents = read_shard(path, shard)
        if contents.header.get("key") != key or contents.header.get("stage") != stage:
            foreign.append(f"{path} was made by another configuration of stage '{stage}' "
                           f"(stage key {str(contents.header.get('key'))[:12]}, this pipeline's is {key[:12]})")
        else:
            matching[shard] = contents
    return matching, foreign


def candidate_ids(run: Run, depth: int) -> dict[str, list[str]]:
    """Each query's candidates as a rerank stage of this ``depth`` takes them from ``run``."""
    return {qid: [docid for docid, _ in run.ranked(qid)[:depth]] for qid in run.qids}


def check_candidates(contents: ShardContents, stage: str, candidates: dict[str, list[str]]) -> None:
    """Every result of a shard scores exactly its query's candidates, and the query is in the input run.

    A document that was not a candidate would be ranked above the rest by its score alone,
    and a candidate without a score would drop out of the run.
    """
    for qid, result in contents.results.items():
        at = where(contents.path, contents.lines[qid])
        if qid not in candidates:
            raise UserError(f"{at}: query {shown(qid)} is not in the input run of stage '{stage}'; the shard "
                            "was made from another input run")
        wanted = candidates[qid]
        extra = sorted(set(result.scores) - set(wanted))
        if extra:
            raise UserError(f"{at}: query {shown(qid)}: document {shown(extra[0])} was not one of its "
                            f"{len(wanted)} candidates in the input run of stage '{stage}'")
        lacking = [docid for docid in wanted if docid not in result.scores]
        if lacking:
            raise UserError(f"{at}: query {shown(qid)}: candidate {shown(lacking[0])} has no score "
                            f"({len(lacking)} of {len(wanted)} lack one)")


def _scored(contents: ShardContents, qids: list[str]) -> dict[str, list[str]]:
    """Without the candidates (a caller that passes only ``qids``): the queries of the input run,
    each taken to have the candidates it scores, so that only unknown queries are refused."""
    return {qid: list(contents.results[qid].scores) for qid in qids if qid in contents.results}


def check_records(shards: list[ShardContents]) -> None:
    """Every query's method record has the same fields, of the same JSON kinds, across the shards.

    A method adds its records up after the join (windows, repairs, comparisons); a record
    lacking a field would stop it with a KeyError instead of naming the line.
    """
    first: tuple[dict[str, str], str] | None = None
    for contents in shards:
        for qid, result in sorted(contents.results.items(), key=lambda item: contents.lines[item[0]]):
            shape = {name: type(value).__name__ for name, value in result.record.items()}
            at = where(contents.path, contents.lines[qid])
            if first is None:
                first = (shape, at)
            elif shape != first[0]:
                raise UserError(f"{at}: query {shown(qid)}: its record has fields {shown(shape, 120)}, "
                                f"unlike {first[1]} ({shown(first[0], 120)})")


def join_shards(output: Path, stage: str, key: str, qids: list[str],
                candidates: dict[str, list[str]] | None = None) -> tuple[object, dict[str, QueryResult]]:
    """Every query's result from a complete set of matching shards, or one clear error."""
    matching, foreign = matching_shards(output, stage, key)
    if foreign:
        raise UserError(f"stage '{stage}': {foreign[0]}; delete it or run that shard again")
    if not matching:
        raise UserError(f"stage '{stage}': no shard results in {shard_folder(output)}; run "
                        "`rerank run PIPELINE --shard i/N` for every shard first")
    counts = sorted({s.count for s in matching})
    if len(counts) > 1:
        raise UserError(f"stage '{stage}': shard results of different splits ({', '.join(f'of {c}' for c in counts)}) "
                        f"in {shard_folder(output)}; keep one split")
    count = counts[0]
    missing = [f"{i}/{count}" for i in range(count) if Shard(i, count) not in matching]
    if missing:
        raise UserError(f"stage '{stage}': shard {missing[0]} is missing ({len(missing)} of {count} missing; "
                        f"expected {Shard(int(missing[0].split('/')[0]), count).file(shard_folder(output), stage)})")
    results: dict[str, QueryResult] = {}
    prepared = None
    for shard, contents in sorted(matching.items(), key=lambda item: item[0].index):
        prepared = prepared if prepared is not None else contents.prepared
        check_candidates(contents, stage, candidates or _scored(contents, qids))
        wanted = {q for q in qids if shard.selects(q)}
        lacking = sorted(wanted - set(contents.results))
        if lacking:
            raise UserError(f"{contents.path}: query {shown(lacking[0])} of the input run of stage '{stage}' is "
                            f"missing ({len(lacking)} of the shard's {len(wanted)} queries); the shard was made "
                            f"from another input run, or cut: run shard {shard.label} again")
        results.update(contents.results)
    check_records(list(matching.values()))
    return prepared, results


def stage_journal(store: Store, output: Path, stage: str, key: str, forced: bool, merge_only: bool,
                  qids: list[str], log: Callable[[str], None],
                  candidates: dict[str, list[str]] | None = None) -> Journal:
    """The journal of an unsharded per-query stage, seeded with what its shards computed.

    Forced: a fresh journal. ``rerank merge``: every shard must be there (``join_shards``).
    ``rerank run``: whatever matching shards exist are joined, and the rest is computed.
    """
    path = store.journal_path(key)
    if forced:
        path.unlink(missing_ok=True)
        return Journal(path, header(stage, key))
    if merge_only:  # every shard checked before the journal is touched: a refusal leaves no trace
        prepared, results = join_shards(output, stage, key, qids, candidates)
        journal = Journal(path, header(stage, key))
        journal.seed(prepared, results)
        return journal
    matching, foreign = matching_shards(output, stage, key)
    for contents in matching.values():
        check_candidates(contents, stage, candidates or _scored(contents, qids))
    check_records(list(matching.values()))
    for line in foreign:
        log(f"[{stage}] note: ignoring {line}")
    journal = Journal(path, header(stage, key))
    joined = sum(journal.seed(c.prepared, c.results) for c in matching.values())
    if joined:
        log(f"[{stage}] joined {joined} queries from {len(matching)} shard result files")
    return journal
