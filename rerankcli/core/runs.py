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
from pathlib import Path

from rerankcli.core.atomic import atomic_open
from rerankcli.core.errors import UserError, shown, where


def ranking_key(item: tuple[str, float]) -> tuple[float, str]:
    """Sort key for (docid, score): score descending, then docid descending (trec_eval)."""
    return (item[1], item[0])


@dataclass
class Run:
    """Scored documents per query. ``scores[qid][docid] = score``."""

    scores: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, qid: str, docid: str, score: float) -> None:
        self.scores.setdefault(qid, {})[docid] = float(score)

    def ranked(self, qid: str) -> list[tuple[str, float]]:
        """The documents of one query in rank order."""
        return sorted(self.scores.get(qid, {}).items(), key=ranking_key, reverse=True)

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
    that is not a well-formed run stops with the file and line.
    """
    path = Path(path)
    text = read_text(path, "run")
    run = Run()
    seen_at: dict[tuple[str, str], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise UserError(
                f"{where(path, number)}: a TREC run line needs 6 columns "
                f"(qid Q0 docid rank score tag), found {len(fields)}"
            )
        qid, _, docid, rank, score_text, _ = fields
        try:
            int(rank)
        except ValueError:
            raise UserError(f"{where(path, number)}: rank {shown(rank)} is not an integer") from None
        try:
            score = float(score_text)
        except ValueError:
            raise UserError(f"{where(path, number)}: score {shown(score_text)} is not a number") from None
        if not math.isfinite(score):
            raise UserError(f"{where(path, number)}: score {shown(score_text)} is not finite")
        first = seen_at.setdefault((qid, docid), number)
        if first != number:
            raise UserError(
                f"{where(path, number)}: duplicate (query {qid}, document {docid}), "
                f"first seen on line {first}"
            )
        run.scores.setdefault(qid, {})[docid] = score
    if not run.scores:
        raise UserError(f"{path}: the run file is empty")
    return run


def read_text(path: Path, what: str) -> str:
    """Read a whole UTF-8 text file, or stop with a message that says which file and why."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: expected a {what} file, found a directory") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what} file ({exc.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(f"{where(path, line)}: not valid UTF-8 text (byte {exc.start})") from None
