"""Per-query results of an LLM rerank stage, appended to a journal as each query finishes.

A query's result is everything the stage's output needs from it: its candidates' scores, the
method's per-query counts (windows and repairs, comparisons, forward passes) and what its
model calls cost. With those journaled, a stage killed halfway restarts from the queries it
has not finished and still writes the run and manifest of one uninterrupted run; shards and
Ray workers hand back the same results, so merging them is the same operation as resuming.

The journal is JSON lines, each written whole, flushed and fsync'd before the next query
counts as done: a header naming the stage key (and shard), the method's prepared state (the
answer tokens it chose for this model), then one line per query. A line cut short by a kill
is dropped when the journal is reopened.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rerankcli.core.atomic import append_line
from rerankcli.core.user_files import open_regular
from rerankcli.rerank.llm_method import QueryResult

FORMAT = 1


def header(stage: str, key: str, shard: str | None = None) -> dict[str, Any]:
    return {"journal": FORMAT, "stage": stage, "key": key, "shard": shard}


@dataclass
class Contents:
    """What a journal or shard file holds."""

    header: dict[str, Any]
    prepared: Any
    results: dict[str, QueryResult]
    valid_bytes: int


def read_contents(path: Path) -> Contents | None:
    """The complete lines of ``path``; None if it is missing or not a journal at all."""
    if not os.path.lexists(path):
        return None
    with open_regular(path, "journal or shard") as handle:  # a FIFO or device: one line, no wait
        data = handle.read()
    contents: Contents | None = None
    offset = 0
    while (end := data.find(b"\n", offset)) >= 0:
        try:
            item = json.loads(data[offset:end])
        except ValueError:
            break  # a torn or corrupted line: everything from here on is discarded
        if contents is None:
            if not isinstance(item, dict) or item.get("journal") != FORMAT:
                return None
            contents = Contents(item, None, {}, 0)
        elif "prepared" in item:
            contents.prepared = item["prepared"]
        else:
            qid, result = QueryResult.from_line(item)
            contents.results[qid] = result
        offset = end + 1
        contents.valid_bytes = offset
    return contents


class Journal:
    """The journal of one stage key (and shard) in the cache's ``journals/`` folder."""

    def __init__(self, path: Path, head: dict[str, Any]) -> None:
        self.path, self.header = path, head
        self.prepared: Any = None
        self.results: dict[str, QueryResult] = {}
        found = read_contents(path)
        if found is not None and found.header == head:
            self.prepared, self.results = found.prepared, found.results
            with open(path, "r+b") as handle:  # drop a torn last line before appending
                handle.truncate(found.valid_bytes)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write(head, create=True)

    def note_prepared(self, prepared: Any) -> None:
        """Record the method's prepared state once (before the first result that used it)."""
        if self.prepared is None:
            self.prepared = prepared
            self._write({"prepared": prepared})

    def add(self, qid: str, result: QueryResult) -> None:
        if qid in self.results:
            raise RuntimeError(f"query {qid!r} finished twice in journal {self.path}")
        self._write(result.line(qid))
        self.results[qid] = result

    def seed(self, prepared: Any, results: dict[str, QueryResult]) -> int:
        """Take results computed elsewhere (shards); returns how many were new."""
        if prepared is not None:
            self.note_prepared(prepared)
        new = {qid: r for qid, r in results.items() if qid not in self.results}
        for qid, result in sorted(new.items()):
            self.add(qid, result)
        return len(new)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def _write(self, item: dict[str, Any], create: bool = False) -> None:
        """One line, whole and fsync'd; a disk or permission fault goes up as the OSError it is
        (exit 75 naming the journal), and a torn line it leaves is dropped on the next open."""
        append_line(self.path, (json.dumps(item) + "\n").encode(), create=create)
