"""What every rerank stage shares: top-``depth`` candidates in, a merged run out.

A rerank stage reads one run, takes each query's first ``depth`` documents as candidates,
scores them, and writes them in their new order followed by the rest of the input ranking
unchanged. Scores in the written run strictly decrease with rank: the candidates keep the
model's scores, the documents below ``depth`` get scores below the lowest of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from rerankcli.core.errors import UserError
from rerankcli.core.runs import Run
from rerankcli.core.stage import Context, StageConfig, StageOutput


@dataclass(frozen=True)
class Candidate:
    docid: str
    text: str
    score: float = 0.0  # the input run's score (InsertRank shows it to the model)


@dataclass(frozen=True)
class Query:
    qid: str
    text: str
    candidates: tuple[Candidate, ...]


class RerankStage(StageConfig):
    type: Literal["rerank"] = Field(description="rerank: reorder the top documents of the input run")
    depth: int = Field(100, ge=1, description="rerank the first depth documents of each query")
    fields: list[Literal["title", "text"]] = Field(
        default_factory=lambda: ["title", "text"], min_length=1,
        description="what a passage shows the model: title and text joined by a space")

    reads: ClassVar = "one"
    needs: ClassVar = frozenset({"corpus", "queries"})

    @field_validator("fields")
    @classmethod
    def _each_field_once(cls, value: list[str]) -> list[str]:
        """A field twice would show the model the same text twice in every passage."""
        if len(set(value)) != len(value):
            raise ValueError(f"'{next(f for f in value if value.count(f) > 1)}' is listed twice")
        return value

    def check_inputs(self, ctx: Context) -> None:
        ctx.dataset.corpus()
        ctx.dataset.all_queries()  # a reranker takes any query of its input run, judged or not

    def candidates(self, ctx: Context, run: Run) -> list[Query]:
        """Each query of the run with its top-``depth`` documents' texts."""
        corpus = ctx.dataset.corpus()
        position = {docid: i for i, docid in enumerate(corpus.ids)}
        queries = ctx.dataset.all_queries()
        out = []
        for qid in run.qids:
            if qid not in queries:
                raise UserError(f"stage '{self.name}': query {qid!r} of the input run is not in the queries")
            docs = []
            for docid, score in run.ranked(qid)[: self.depth]:
                if docid not in position:
                    raise UserError(f"stage '{self.name}': document {docid!r} (query {qid!r}) of the "
                                    "input run is not in the corpus")
                docs.append(Candidate(docid, self.passage(corpus, position[docid]), score))
            out.append(Query(qid, queries[qid], tuple(docs)))
        return out

    def passage(self, corpus: Any, i: int) -> str:
        parts = [corpus.titles[i] if f == "title" else corpus.texts[i] for f in self.fields]
        return " ".join(p for p in parts if p)


def merge(run: Run, scores: dict[str, dict[str, float]], depth: int) -> Run:
    """The reranked candidates on top (their scores), the rest of each ranking below them.

    Equal model scores keep their input order; the later one is nudged down by the smallest
    float step, so written scores strictly decrease and trec_eval reads the same order.
    """
    merged = Run()
    for qid in run.qids:
        ranking = run.ranked(qid)
        reranked = scores.get(qid, {})
        position = {docid: rank for rank, (docid, _) in enumerate(ranking)}
        previous = math.inf
        for docid in sorted(reranked, key=lambda d: (-reranked[d], position.get(d, 0))):
            score = reranked[docid] if reranked[docid] < previous else math.nextafter(previous, -math.inf)
            merged.add(qid, docid, score)
            previous = score
        floor = previous if reranked else 0.0
        rest = [docid for docid, _ in ranking[depth:] if docid not in reranked]
        for offset, docid in enumerate(rest, 1):
            merged.add(qid, docid, floor - offset)
    return merged


def output(run: Run, scores: dict[str, dict[str, float]], depth: int,
           details: dict[str, Any]) -> StageOutput:
    return StageOutput(run=merge(run, scores, depth), details=details)
