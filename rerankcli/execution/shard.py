"""``--shard i/N``: a deterministic share of the queries, and joining the shares again.

A query belongs to shard ``hash(qid) mod N``. The choice depends on nothing but the query id,
so every stage of a sharded run, on every machine of a SLURM array, agrees on it without
seeing the other shards' queries.

A sharded LLM rerank stage writes its per-query results (the journal format) to
``<output>/shards/<stage>.<i>-of-<N>.jsonl``. ``rerank merge`` checks that shards 0..N-1 are
all there and were all made by the same stage key, then joins them; an unsharded ``rerank
run`` joins whatever matching shards exist and computes the queries they lack.

A shard file is read strictly before anything is joined, by the reader and validator it shares
with journals (``results_format``): every line whole, valid JSON, with the fields and types the
journal writes and finite scores; each query of the input run and of its own shard, scoring
exactly that query's candidates. Anything else is one line naming the file and line (exit 2),
and the stage's journal is not touched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rerankcli.core.errors import UserError, shown, where
from rerankcli.core.runs import Run
from rerankcli.core.store import Store
from rerankcli.execution.journal import Journal
from rerankcli.execution.results_format import Contents, header, placement_problem, read_results, record_shape, \
    shard_index
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
        if count < 1:
            raise UserError(f"--shard {text}: the number of shards N in i/N must be at least 1")
        if index >= count:
            raise UserError(f"--shard {text}: the index counts from 0 and must be below the number of "
                            f"shards ({'0/1' if count == 1 else f'0/{count} to {count - 1}/{count}'})")
        return cls(index, count)

    def selects(self, qid: str) -> bool:
        return shard_index(qid, self.count) == self.index

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


#: what a shard file holds (with its path and each query's line, for messages)
ShardContents = Contents


def read_shard(path: Path, shard: Shard) -> ShardContents:
    """Every line of a shard result file, checked; else one ``UserError`` naming the file and line.

    A journal may end in a torn line (a kill mid-write; it is dropped and recomputed), but a
    shard file is copied whole from a finished journal: a bad or cut line in it is damage, and
    joining it would rank documents by whatever survived. Where each query belongs is checked
    once the input run is known (``check_placement``).
    """
    contents = read_results(path, "shard result")
    if contents.header and contents.header.get("shard") != shard.label:
        raise UserError(f"{where(path, 1)}: the header says shard {shown(contents.header.get('shard'))}, the file "
                        f"name shard {shard.label}")
    if contents.damage:
        raise UserError(contents.damage)
    if contents.torn is not None:
        raise UserError(f"{where(path, contents.torn)}: the line is cut short (the file ends without a newline): "
                        f"the shard was not written whole; delete it and run shard {shard.label} again")
    if not contents.header:
        raise UserError(f"{path}: the shard result file is empty; delete it and run shard {shard.label} again")
    return contents


def matching_shards(output: Path, stage: str, key: str, qids: list[str] | None = None,
                    candidates: dict[str, list[str]] | None = None
                    ) -> tuple[dict[Shard, ShardContents], list[str]]:
    """Shards of ``stage`` made by stage key ``key``, and one line per shard file that is not.

    Every query of a matching shard is checked to belong there (``check_placement``) against
    what the caller knows of the input run: each query's ``candidates``, else its ``qids``,
    else only the shard its id hashes to; and their records agree (``check_records``).
    """
    matching: dict[Shard, ShardContents] = {}
    foreign: list[str] = []
    for path, shard in shard_files(output, stage).items():
        contents = read_shard(path, shard)
        if contents.header.get("key") != key or contents.header.get("stage") != stage:
            foreign.append(f"{path} was made by another configuration of stage '{stage}' "
                           f"(stage key {str(contents.header.get('key'))[:12]}, this pipeline's is {key[:12]})")
        else:
            matching[shard] = contents
    for shard, contents in sorted(matching.items(), key=lambda item: (item[0].count, item[0].index)):
        known = candidates if candidates is not None else _scored(contents, qids) if qids is not None else None
        check_placement(contents, shard, stage, known)
    check_records([c for _, c in sorted(matching.items(), key=lambda item: (item[0].count, item[0].index))])
    return matching, foreign


def candidate_ids(run: Run, depth: int) -> dict[str, list[str]]:
    """Each query's candidates as a rerank stage of this ``depth`` takes them from ``run``."""
    return {qid: [docid for docid, _ in run.ranked(qid)[:depth]] for qid in run.qids}


def check_placement(contents: ShardContents, shard: Shard, stage: str,
                    candidates: dict[str, list[str]] | None) -> None:
    """Every result of a shard is a query of the input run and of this shard, scoring exactly
    its query's candidates (``results_format.placement_problem``, as for journals)."""
    for qid, result in contents.results.items():
        problem = placement_problem(qid, result, stage, (shard.index, shard.count), candidates)
        if problem:
            raise UserError(f"{where(contents.path, contents.lines[qid])}: {problem}")


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
            shape = record_shape(result.record)
            at = where(contents.path, contents.lines[qid])
            if first is None:
                first = (shape, at)
            elif shape != first[0]:
                raise UserError(f"{at}: query {shown(qid)}: its record has fields {shown(shape, 120)}, "
                                f"unlike {first[1]} ({shown(first[0], 120)})")


def join_shards(output: Path, stage: str, key: str, qids: list[str],
                candidates: dict[str, list[str]] | None = None) -> tuple[object, dict[str, QueryResult]]:
    """Every query's result from a complete set of matching shards, or one clear error."""
    matching, foreign = matching_shards(output, stage, key, qids, candidates)
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
        wanted = {q for q in qids if shard.selects(q)}
        lacking = sorted(wanted - set(contents.results))
        if lacking:
            raise UserError(f"{contents.path}: query {shown(lacking[0])} of the input run of stage '{stage}' is "
                            f"missing ({len(lacking)} of the shard's {len(wanted)} queries); the shard was made "
                            f"from another input run, or cut: run shard {shard.label} again")
        results.update(contents.results)
    return prepared, results


def stage_journal(store: Store, output: Path, stage: str, key: str, forced: bool, merge_only: bool,
                  qids: list[str], log: Callable[[str], None],
                  candidates: dict[str, list[str]] | None = None) -> Journal:
    """The journal of an unsharded per-query stage, seeded with what its shards computed.

    Forced: a fresh journal. ``rerank merge``: every shard must be there (``join_shards``).
    ``rerank run``: whatever matching shards exist are joined, and the rest is computed. The
    journal left by a killed run is checked against ``candidates`` like a shard, and cut where
    it is damaged, with one line where the store reports damaged cache entries (even with -q).
    """
    path = store.journal_path(key)
    if forced:
        path.unlink(missing_ok=True)
        return Journal(path, header(stage, key), candidates, warn=store.warn)
    if merge_only:  # every shard checked before the journal is touched: a refusal leaves no trace
        prepared, results = join_shards(output, stage, key, qids, candidates)
        journal = Journal(path, header(stage, key), candidates, warn=store.warn)
        journal.seed(prepared, results)
        return journal
    matching, foreign = matching_shards(output, stage, key, qids, candidates)
    for line in foreign:
        log(f"[{stage}] note: ignoring {line}")
    journal = Journal(path, header(stage, key), candidates, warn=store.warn)
    joined = sum(journal.seed(c.prepared, c.results) for c in matching.values())
    if joined:
        log(f"[{stage}] joined {joined} queries from {len(matching)} shard result files")
    return journal
