"""``--shard i/N``: a deterministic share of the queries, and joining the shares again.

A query belongs to shard ``hash(qid) mod N``. The choice depends on nothing but the query id,
so every stage of a sharded run, on every machine of a SLURM array, agrees on it without
seeing the other shards' queries.

A sharded LLM rerank stage writes its per-query results (the journal format) to
``<output>/shards/<stage>.<i>-of-<N>.jsonl``. ``rerank merge`` checks that shards 0..N-1 are
all there and were all made by the same stage key, then joins them; an unsharded ``rerank
run`` joins whatever matching shards exist and computes the queries they lack.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rerankcli.core.errors import UserError
from rerankcli.core.store import Store
from rerankcli.execution.journal import Contents, Journal, header, read_contents
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


def read_shard(path: Path, shard: Shard) -> Contents:
    contents = read_contents(path)
    if contents is None or contents.header.get("shard") != shard.label:
        raise UserError(f"{path}: not a shard result file of rerankcli (its first line is not a shard header)")
    return contents


def matching_shards(output: Path, stage: str, key: str) -> tuple[dict[Shard, Contents], list[str]]:
    """Shards of ``stage`` made by stage key ``key``, and one line per shard file that is not."""
    matching, foreign = {}, []
    for path, shard in shard_files(output, stage).items():
        contents = read_shard(path, shard)
        if contents.header.get("key") != key or contents.header.get("stage") != stage:
            foreign.append(f"{path} was made by another configuration of stage '{stage}' "
                           f"(stage key {str(contents.header.get('key'))[:12]}, this pipeline's is {key[:12]})")
        else:
            matching[shard] = contents
    return matching, foreign


def join_shards(output: Path, stage: str, key: str, qids: list[str]) -> tuple[object, dict[str, QueryResult]]:
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
        wanted = {q for q in qids if shard.selects(q)}
        if set(contents.results) != wanted:
            lacking = sorted(wanted - set(contents.results)) or sorted(set(contents.results) - wanted)
            raise UserError(f"stage '{stage}': shard {shard.label} does not hold exactly its queries "
                            f"(e.g. {lacking[0]!r}); its input run differs from this pipeline's")
        results.update(contents.results)
    return prepared, results


def stage_journal(store: Store, output: Path, stage: str, key: str, forced: bool, merge_only: bool,
                  qids: list[str], log: Callable[[str], None]) -> Journal:
    """The journal of an unsharded per-query stage, seeded with what its shards computed.

    Forced: a fresh journal. ``rerank merge``: every shard must be there (``join_shards``).
    ``rerank run``: whatever matching shards exist are joined, and the rest is computed.
    """
    path = store.journal_path(key)
    if forced:
        path.unlink(missing_ok=True)
        return Journal(path, header(stage, key))
    journal = Journal(path, header(stage, key))
    if merge_only:
        prepared, results = join_shards(output, stage, key, qids)
        journal.seed(prepared, results)
        return journal
    matching, foreign = matching_shards(output, stage, key)
    for line in foreign:
        log(f"[{stage}] note: ignoring {line}")
    joined = sum(journal.seed(c.prepared, c.results) for c in matching.values())
    if joined:
        log(f"[{stage}] joined {joined} queries from {len(matching)} shard result files")
    return journal
