"""The Run type and strict TREC run files: the currency between every stage.

A run maps query ids to scored documents. Order is derived, never stored: documents rank by
score descending and equal scores by docid *descending*, which is the order trec_eval itself
evaluates in. Writing in that order makes the rank column agree with what trec_eval scores,
and makes two equal runs byte-identical files.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

from rerankcli.core.atomic import atomic_open
from rerankcli.core.errors import UserError, shown, where
from rerankcli.core.user_files import line_blocks, numbered_lines


def ranking_key(item: tuple[str, float]) -> tuple[float, str]:
    """Sort key for (docid, score): score descending, then docid descending (trec_eval)."""
    return (item[1], item[0])


_RANKING_KEY = itemgetter(1, 0)  # ``ranking_key`` without a Python call per document


@dataclass
class Run:
    """Scored documents per query. ``scores[qid][docid] = score``."""

    scores: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, qid: str, docid: str, score: float) -> None:
        self.scores.setdefault(qid, {})[docid] = float(score)

    def ranked(self, qid: str) -> list[tuple[str, float]]:
        """The documents of one query in rank order."""
        return sorted(self.scores.get(qid, {}).items(), key=_RANKING_KEY, reverse=True)

    def top(self, k: int) -> Run:
        """A new run keeping the first ``k`` documents of each query."""
        return Run({qid: dict(self.ranked(qid)[:k]) for qid in self.scores})

    @property
    def qids(self) -> list[str]:
        return sorted(self.scores)

    def __len__(self) -> int:
        return sum(len(docs) for docs in self.scores.values())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and self.scores == other.scores


def format_score(score: float) -> str:
    """Shortest text that reads back as the same float: stable across platforms."""
    return repr(float(score))


def run_lines(run: Run, tag: str) -> Iterator[str]:
    """TREC lines ``qid Q0 docid rank score tag`` in canonical order."""
    for qid in run.qids:
        for rank, (docid, score) in enumerate(run.ranked(qid), start=1):
            yield f"{qid} Q0 {docid} {rank} {format_score(score)} {tag}\n"


def write_run(run: Run, path: str | Path, tag: str = "rerankcli") -> None:
    """Write ``run`` as a TREC file, atomically."""
    if not tag or any(ch.isspace() for ch in tag):
        raise UserError(f"run tag {tag!r} must be one word without spaces")
    with atomic_open(path) as handle:
        handle.writelines(run_lines(run, tag))


def read_run(path: str | Path) -> Run:
    """Read a TREC run strictly: six columns, integer rank, finite score, no duplicate pairs.

    A UTF-8 byte-order mark and CRLF line ends are accepted (editors add them); anything else
    that is not a well-formed run stops with the file and line. The file is streamed a block
    of lines at a time (gzip when its name ends in .gz): memory holds the run, never the raw
    text, and no second map of (query, document) pairs to find duplicates (the run itself
    tells; the first line of a duplicate is found by reading the file again).
    """
    path = Path(path)
    run = Run()
    scores = run.scores
    isfinite = math.isfinite
    for first, lines in line_blocks(path, "run"):
        for number, line in enumerate(lines, start=first):
            fields = line.split()
            if len(fields) != 6:
                if not fields:
                    continue
                raise UserError(
                    f"{where(path, number)}: a TREC run line needs 6 columns "
                    f"(qid Q0 docid rank score tag), found {len(fields)}"
                )
            qid, _, docid, rank, score_text, _ = fields
            if not rank.isdecimal():  # the common case, without building an int; int() takes "+1", "-1"
                try:
                    int(rank)
                except ValueError:
                    raise UserError(f"{where(path, number)}: rank {shown(rank)} is not an integer") from None
            try:
                score = float(score_text)
            except ValueError:
                raise UserError(f"{where(path, number)}: score {shown(score_text)} is not a number") from None
            if not isfinite(score):
                raise UserError(f"{where(path, number)}: score {shown(score_text)} is not finite")
            docs = scores.get(qid)
            if docs is None:
                docs = scores[qid] = {}
            elif docid in docs:
                raise UserError(
                    f"{where(path, number)}: duplicate (query {qid}, document {docid}), "
                    f"first seen on line {_first_line(path, qid, docid)}"
                )
            docs[docid] = score
    if not scores:
        raise UserError(f"{path}: the run file is empty")
    return run


def _first_line(path: Path, qid: str, docid: str) -> int | str:
    """The first line of a run file that holds (``qid``, ``docid``): an error path, so a rescan."""
    for number, line in numbered_lines(path, "run"):
        fields = line.split()
        if len(fields) == 6 and fields[0] == qid and fields[2] == docid:
            return number
    return "? (the file changed while it was read)"
