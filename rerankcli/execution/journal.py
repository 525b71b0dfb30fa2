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

Its lines are data the stage's run is made of, so they are read and checked like a shard
file's (``results_format``): a line that is not whole, valid JSON of the format, or a result
of this stage's query and candidates is damage. Damage in a journal is the cache's, not the
user's input: the journal is cut before that line with one warning line naming it, and the
queries it held are computed again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rerankcli.core.atomic import append_line
from rerankcli.core.errors import shown
from rerankcli.core.library_output import terminal
from rerankcli.execution.results_format import FORMAT, Contents, header, parse_label, placement_problem, \
    read_results, record_shape
from rerankcli.rerank.llm_method import QueryResult

__all__ = ["FORMAT", "Contents", "Journal", "QueryResult", "header"]


def _stderr(message: str) -> None:
    """The terminal's stderr, not the library log that ``sys.stderr`` is during a run."""
    print(message, file=terminal(), flush=True)


def _checker(head: dict[str, Any], candidates: dict[str, list[str]] | None) -> Callable[[str, QueryResult], str | None]:
    """The check of each journaled result: a query of this journal's shard and input run, scoring
    exactly its candidates, with a record of the same fields as the journal's first."""
    stage, shard = str(head.get("stage")), parse_label(head.get("shard"))
    first: list[tuple[str, dict[str, str]]] = []

    def check(qid: str, result: QueryResult) -> str | None:
        problem = placement_problem(qid, result, stage, shard, candidates)
        if problem:
            return problem
        shape = record_shape(result.record)
        if not first:
            first.append((qid, shape))
        elif shape != first[0][1]:
            return (f"query {shown(qid)}: its record has fields {shown(shape, 120)}, unlike query "
                    f"{shown(first[0][0])} ({shown(first[0][1], 120)})")
        return None

    return check


class Journal:
    """The journal of one stage key (and shard) in the cache's ``journals/`` folder.

    ``candidates``: the input run's queries, each with the documents the stage reranks; a
    journaled result must score exactly those (None: only the journal's shard is checked).
    ``warn`` receives the one line about a damaged journal.
    """

    def __init__(self, path: Path, head: dict[str, Any], candidates: dict[str, list[str]] | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        self.path, self.header = path, head
        self.prepared: Any = None
        self.results: dict[str, QueryResult] = {}
        self._noted = False  # a 'prepared' line is in the file
        found = read_results(path, "journal", _checker(head, candidates)) if os.path.lexists(path) else None
        if found is not None and found.header == head:
            if found.damage:
                (warn or _stderr)(f"[{head['stage']}] damaged journal line {found.damage}; the journal is cut "
                                  f"there (keeping the {len(found.results)} queries before it), the rest is "
                                  "computed again")
            self.prepared, self.results, self._noted = found.prepared, found.results, found.has_prepared
            with open(path, "r+b") as handle:  # drop a torn or damaged line (and all after it) before appending
                handle.truncate(found.valid_bytes)
        else:
            if found is not None and found.damage and not found.header:
                (warn or _stderr)(f"[{head['stage']}] damaged journal line {found.damage}; the journal is "
                                  "started again")
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write(head, create=True)

    def note_prepared(self, prepared: Any) -> None:
        """Record the method's prepared state once (before the first result that used it); a
        method whose state is None notes it once too, not again on every resume."""
        if not self._noted:
            self.prepared, self._noted = prepared, True
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
