"""A deterministic backend that answers from the qrels, for testing reranking algorithms.

It reads the query and the passage straight from a request's prompt parts (no model, no
tokenizer) and answers as a perfect judge would: P(Yes) and the expected label grow with the
judged relevance, query likelihood too. Any reranker driven by it must produce the ideal order
of its candidates; if it does not, the algorithm is wrong, not the model.
"""

from __future__ import annotations

import math

from rerankcli.llm.backend import Backend
from rerankcli.llm.requests import (
    Continuation, ContinuationLogprobs, Generate, NextToken, Passage, Prompt, TokenLogprobs,
)


class QrelsBackend(Backend):
    name = "qrels"
    answers = frozenset({NextToken, Continuation})

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

    def grade(self, prompt: Prompt, query: str | None = None) -> int:
        passage = next(p.text for p in prompt.parts if isinstance(p, Passage))
        if query is None:
            query = next(p for p in prompt.parts if isinstance(p, str) and p in self.qid_of)
        return self.qrels.get(self.qid_of[query.strip()], {}).get(self.docid_of[passage], 0)

    def _answer(self, requests):
        self.calls.append(len(requests))
        out = []
        for request in requests:
            if isinstance(request, Continuation):
                grade = self.grade(request.prompt, request.continuation)
                out.append(ContinuationLogprobs(1, 0, (grade - 5.0, grade - 5.0)))
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


__all__ = ["QrelsBackend", "Generate"]
