"""A deterministic backend that answers from the qrels, for testing reranking algorithms.

It reads the query and the passages straight from a request's prompt parts (no model, no
tokenizer) and answers as a perfect judge would: P(Yes) and the expected label grow with the
judged relevance, query likelihood too; a listwise window is answered "[i] > [j] > …" best
first; letters (FIRST's identifiers, PRP's "A" and "B") get log-probabilities that grow with
the grade of the passage they name, and a generated PRP answer names the better passage ("A"
on a tie). Any reranker driven by it must produce the ideal order of its candidates; if it
does not, the algorithm is wrong, not the model.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from rerankcli.core.runs import Run
from rerankcli.execution.llm_session import LLMSession
from rerankcli.llm.backend import Backend
from rerankcli.llm.requests import (
    Continuation,
    ContinuationLogprobs,
    Generate,
    Generated,
    NextToken,
    Passage,
    Prompt,
    TokenLogprobs,
)
from rerankcli.rerank.candidates import Candidate, Query


def rerank_with(stage, queries: list[Query], backend: Backend):
    """(scores, accounting, method record) of ``stage`` over ``queries`` answered by ``backend``."""
    return LLMSession(stage, Path("."), backend=backend).rerank(queries)


class QrelsBackend(Backend):
    name = "qrels"
    answers = frozenset({NextToken, Continuation, Generate})

    def __init__(self, qrels: dict[str, dict[str, int]], queries: dict[str, str],
                 passages: dict[str, str], batch_size: int = 32) -> None:
        super().__init__()
        self.qrels = qrels
        self.qid_of = {text: qid for qid, text in queries.items()}
        self.docid_of = {text: docid for docid, text in passages.items()}
        self.batch_size = batch_size
        self.calls: list[int] = []

    def single_tokens(self, texts):
        return list(texts)  # every answer form is "one token" for the judge

    def grades(self, prompt: Prompt, query: str | None = None) -> list[int]:
        """The judged grade of every passage in the prompt, in prompt order."""
        if query is None:
            query = next(p for p in prompt.parts if isinstance(p, str) and p in self.qid_of)
        judged = self.qrels.get(self.qid_of[query.strip()], {})
        return [judged.get(self.docid_of[p.text], 0) for p in prompt.parts if isinstance(p, Passage)]

    @staticmethod
    def pairwise(prompt: Prompt) -> bool:
        return "Passage A" in "".join(p for p in prompt.parts if isinstance(p, str))

    def grade(self, prompt: Prompt, query: str | None = None) -> int:
        return self.grades(prompt, query)[0]

    def _answer(self, requests):
        self.calls.append(len(requests))
        out = []
        for request in requests:
            if isinstance(request, Continuation):
                grade = self.grade(request.prompt, request.continuation)
                out.append(ContinuationLogprobs(1, 0, (grade - 5.0, grade - 5.0)))
            elif isinstance(request, Generate) and self.pairwise(request.prompt):
                a, b = self.grades(request.prompt)
                out.append(Generated(1, 0, " B" if b > a else " A", 1))
            elif isinstance(request, Generate):  # a listwise window: best first, ties in prompt order
                grades = self.grades(request.prompt)
                ranked = sorted(range(len(grades)), key=lambda k: -grades[k])
                out.append(Generated(1, 0, " > ".join(f"[{k + 1}]" for k in ranked), len(ranked)))
            elif len(self.grades(request.prompt)) > 1:  # letters name the passages in prompt order
                grades = self.grades(request.prompt)
                out.append(TokenLogprobs(1, 0, {c: float(grades[ord(c.strip()) - ord("A")]) - 9
                                                for c in request.candidates}))
            else:
                grade = self.grade(request.prompt)
                out.append(TokenLogprobs(1, 0, {c: self._logprob(c, grade) for c in request.candidates}))
        return out

    @staticmethod
    def _logprob(candidate: str, grade: int) -> float:
        word = candidate.strip().lower()
        if word == "yes":
            return math.log((grade + 1) / 8)
        if word == "no":
            return math.log((4 - grade) / 8 + 1e-3)
        if word.isdigit():  # a label: the judged grade gets the mass
            return 0.0 if int(word) == grade else -6.0
        return -20.0


def queries_of(run: Run, texts: dict[str, str], queries: dict[str, str]) -> list[Query]:
    """Each query of ``run`` with its ranked candidates' texts, as a rerank stage sees them."""
    return [Query(q, queries[q], tuple(Candidate(d, texts[d]) for d, _ in run.ranked(q))) for q in run.qids]


def shuffled(run: Run, qrels, seed: int = 13) -> Run:
    """Each judged query's candidates in a random order (scores = the shuffled ranks)."""
    rng = random.Random(seed)
    out = Run()
    for qid in run.qids:
        if qid not in qrels:
            continue
        docs = [d for d, _ in run.ranked(qid)]
        rng.shuffle(docs)
        for rank, docid in enumerate(docs):
            out.add(qid, docid, float(len(docs) - rank))
    return out


def ideal(run: Run, qrels) -> Run:
    return Run({q: {d: float(qrels[q].get(d, 0)) for d in run.scores[q]} for q in run.qids})
