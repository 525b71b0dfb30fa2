"""``method: pairwise``: pairwise ranking prompting (PRP, Qin et al. 2023).

The model is asked which of two passages is more relevant, always in both orders: a candidate
wins a comparison only when both orders prefer it; when they disagree (position bias), the
comparison is a tie. Strategies:
- ``allpair``: every pair, N(N−1) prompts; the score is the number of wins (a tie is half a
  win). All prompts of a query go to the backend at once.
- ``heapsort``: a max-heap over the candidates, ``top_k`` extractions; at most
  2N + 2·top_k·⌊log₂N⌋ comparisons. The rest keep their input order below the top ``top_k``.
- ``sliding`` (Sliding-K): ``top_k`` bubble-sort passes from the bottom of the list to the top,
  each carrying the best remaining candidate up: K(N−1) − K(K−1)/2 comparisons.
A sort asks one comparison at a time per query, but the scheduler batches the comparisons of
all queries together. Ties (a disagreement, or an answer that could not be read) are resolved
by input order, so a model that always answers "A" leaves the input ranking untouched.

Each query keeps a comparison cache keyed on the ordered pair, so a pair that a sort meets
again (sliding passes do) is never asked twice. ``mode: logits`` reads P(A) against P(B) from
the next token; ``mode: generate`` parses a short generated answer and counts what it cannot read.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import Field

from rerankcli.core.errors import UserError
from rerankcli.llm.backend import Backend
from rerankcli.llm.requests import Generate, Generated, NextToken, Request, Response, TokenLogprobs
from rerankcli.llm.scheduler import Program
from rerankcli.rerank.candidates import Query
from rerankcli.rerank.llm_method import LLMRerankStage, Reranked, answer_probabilities, answer_repairs
from rerankcli.rerank.templates import Template

#: the answer forms read in logits mode (not "a", which is an article)
FORMS = {"A": ("A", " A"), "B": ("B", " B")}
_NAMED = re.compile(r"passage\s*[:\-]?\s*\(?([ab])\b", re.IGNORECASE)
_BARE = re.compile(r"(?<![A-Za-z])([AB])(?![A-Za-z])")
_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)

Steps = Generator[list[Request], list[Response], Any]


def read_choice(text: str) -> str | None:
    """"A" or "B" from a generated answer ("A", " B.", "Passage A", "(B) because…"), else None."""
    text = _THINK.sub(" ", text)
    match = _NAMED.search(text) or _BARE.search(text)
    return match.group(1).upper() if match else None


def outcome(vote_ab: float, vote_ba: float) -> float:
    """How much the first of two candidates wins, from both orders' votes for position A.

    ``vote_ab`` is the vote for A when the first candidate is A, ``vote_ba`` when it is B.
    1 or 0 when both orders agree, 0.5 when they disagree or either had no preference.
    """
    if vote_ab == 1.0 and vote_ba == 0.0:
        return 1.0
    if vote_ab == 0.0 and vote_ba == 1.0:
        return 0.0
    return 0.5


@dataclass
class Comparisons:
    """One query's comparison cache and its counts for the manifest (``summary``)."""

    votes: dict[tuple[int, int], float] = field(default_factory=dict)  # (A, B) -> vote for A
    comparisons: int = 0  # comparisons the strategy made (each needs both orders)
    prompts: int = 0  # prompts sent (cache misses)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    unparsed: int = 0
    think_blocks: int = 0  # answers that opened a think block (the think guard drops it)

    def inconsistent(self) -> tuple[int, int]:
        """(pairs whose two orders contradict each other, pairs asked in both orders)."""
        both = [(i, j) for (i, j) in self.votes if i < j and (j, i) in self.votes]
        bad = sum(self.votes[(i, j)] == self.votes[(j, i)] != 0.5 for i, j in both)
        return bad, len(both)

    def summary(self) -> dict[str, Any]:
        bad, pairs = self.inconsistent()
        return {"comparisons": self.comparisons, "prompts": self.prompts,
                "cache_hits": 2 * self.comparisons - self.prompts, "prompt_tokens": self.prompt_tokens,
                "generated_tokens": self.generated_tokens, "unparsed": self.unparsed,
                "inconsistent_rate": round(bad / pairs, 4) if pairs else 0.0,
                "inconsistent_pairs": bad, "pairs_in_both_orders": pairs, "think_blocks": self.think_blocks}


class PairwiseStage(LLMRerankStage):
    method: Literal["pairwise"] = Field(description="pairwise: which of two passages is more relevant")
    strategy: Literal["allpair", "heapsort", "sliding"] = Field("heapsort", description=(
        "allpair (every pair), heapsort (extract the best top_k), sliding (top_k bubble passes)"))
    top_k: int = Field(10, ge=1, description="heapsort and sliding: how many top positions are sorted")
    mode: Literal["logits", "generate"] = Field("logits", description=(
        "logits: compare P(A) with P(B); generate: read the model's short written answer"))
    max_new_tokens: int = Field(8, gt=0, description="generate mode: the answer's length in tokens")
    max_repair_rate: float = Field(1.0, ge=0, le=1, description=(
        "generate mode: fail the stage when more than this share of answers could not be read"))

    default_prompt: ClassVar = "pairwise"
    placeholders: ClassVar = ({"query", "passage_a", "passage_b"}, {"query", "passage_a", "passage_b"})
    summary: ClassVar = "PRP: which of two passages is more relevant, asked in both orders; allpair or sorting"

    @property
    def asks(self) -> tuple[type, ...]:  # type: ignore[override]
        return (NextToken,) if self.mode == "logits" else (Generate,)

    # -- method ------------------------------------------------------------------------------
    def prepare_method(self, backend: Backend) -> dict[str, list[str]]:
        forms: dict[str, list[str]] = {}
        if self.mode == "logits":
            forms = {choice: backend.single_tokens(words) for choice, words in FORMS.items()}
            split = [choice for choice, found in forms.items() if not found]
            if split:
                raise UserError(f"stage '{self.name}': this model's tokenizer splits the answer "
                                f"{split[0]!r} into several tokens; use mode: generate")
        return forms

    def repairs(self, reranked: Reranked) -> Counter:
        return answer_repairs(reranked)

    def method_details(self, reranked: Reranked) -> dict[str, Any]:
        records = reranked.records
        bad = sum(r["inconsistent_pairs"] for r in records.values())
        pairs = sum(r["pairs_in_both_orders"] for r in records.values())
        totals = {key: sum(r[key] for r in records.values())
                  for key in ("comparisons", "prompts", "cache_hits", "unparsed")}
        return {"answer_tokens": reranked.prepared, **totals,
                "inconsistent_rate": round(bad / pairs, 4) if pairs else 0.0,
                "per_query": dict(sorted(records.items()))}

    def check_method(self, reranked: Reranked) -> None:
        prompts = sum(r["prompts"] for r in reranked.records.values())
        unparsed = self.repairs(reranked)["unparsed_answer"]
        if prompts and unparsed / prompts > self.max_repair_rate:
            raise UserError(f"stage '{self.name}': {unparsed} of {prompts} answers named neither passage "
                            f"(more than max_repair_rate {self.max_repair_rate:g}); the model does not "
                            "follow the output format")

    def program(self, query: Query, template: Template, forms: dict[str, list[str]]) -> Program:
        book = Comparisons()
        n = len(query.candidates)

        def beats(i: int, j: int) -> Steps:
            """Whether candidate i goes above j; a tie keeps the input order."""
            (won,) = yield from self._outcomes(query, template, forms, book, [(i, j)])
            return won > 0.5 or (won == 0.5 and i < j)

        if self.strategy == "allpair":
            pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
            wins = [0.0] * n
            for (i, j), won in zip(pairs, (yield from self._outcomes(query, template, forms, book, pairs))):
                wins[i] += won
                wins[j] += 1.0 - won
            return {c.docid: wins[i] for i, c in enumerate(query.candidates)}, book.summary()
        sort = heap_top if self.strategy == "heapsort" else sliding_top
        order = yield from sort(n, min(self.top_k, n), beats)
        return {query.candidates[i].docid: float(n - rank) for rank, i in enumerate(order)}, book.summary()

    def planned_calls(self, n: int) -> tuple[int, int]:
        """Prompts for ``n`` candidates: allpair N(N−1); a sort asks each pair once, in both orders.

        A sort's comparisons depend on the answers (sliding's count does not, but which pairs
        meet again does). Any sort that finds the best candidate compares N−1 distinct pairs
        at least; at most it asks its comparison bound twice, and never more than N(N−1).
        """
        every = n * (n - 1)
        if self.strategy == "allpair" or n <= 1:
            return every, every
        k = min(self.top_k, n)
        if self.strategy == "sliding":
            passes = min(k, n - 1)
            comparisons = passes * (n - 1) - passes * (passes - 1) // 2
        else:
            comparisons = 2 * n + 2 * k * (n.bit_length() - 1)  # heapify ≤ 2N, each extraction ≤ 2⌊log₂N⌋
        return min(2 * (n - 1), every), min(2 * comparisons, every)

    def prompts_known_in_advance(self) -> bool:
        return self.strategy == "allpair"

    def _outcomes(self, query: Query, template: Template, forms: dict[str, list[str]], book: Comparisons,
                  pairs: list[tuple[int, int]]) -> Steps:
        """Outcomes of comparisons (i, j), asking only the orders the cache does not hold."""
        book.comparisons += len(pairs)
        missing = list(dict.fromkeys(o for i, j in pairs for o in ((i, j), (j, i)) if o not in book.votes))
        if missing:
            answers = yield [self._request(query, template, forms, a, b) for a, b in missing]
            for order, answer in zip(missing, answers):
                book.votes[order] = self._vote(answer, forms, book)
        return [outcome(book.votes[(i, j)], book.votes[(j, i)]) for i, j in pairs]

    def _request(self, query: Query, template: Template, forms: dict[str, list[str]], a: int, b: int) -> Request:
        prompt = template.pair_prompt(query.text, query.candidates[a].text, query.candidates[b].text,
                                      self.max_passage_tokens)
        if self.mode == "logits":
            return NextToken(prompt, tuple(forms["A"] + forms["B"]))
        return Generate(prompt, max_new_tokens=self.max_new_tokens)

    @staticmethod
    def _vote(answer: Response, forms: dict[str, list[str]], book: Comparisons) -> float:
        """1.0 if the answer prefers position A, 0.0 if B, 0.5 if neither."""
        book.prompts += 1
        book.prompt_tokens += answer.prompt_tokens
        if isinstance(answer, TokenLogprobs):
            p = answer_probabilities(answer.logprobs, forms)
            return 1.0 if p["A"] > p["B"] else 0.0 if p["A"] < p["B"] else 0.5
        assert isinstance(answer, Generated)
        book.generated_tokens += answer.new_tokens
        book.think_blocks += bool(_THINK.search(answer.text))
        choice = read_choice(answer.text)
        if choice is None:
            book.unparsed += 1
            return 0.5
        return 1.0 if choice == "A" else 0.0


def heap_top(n: int, k: int, beats: Any) -> Steps:
    """The order of a heap sort that extracts the best ``k``; the rest keep their input order."""
    heap = list(range(n))

    def sift(root: int, size: int) -> Steps:
        while (child := 2 * root + 1) < size:
            if child + 1 < size and (yield from beats(heap[child + 1], heap[child])):
                child += 1
            if not (yield from beats(heap[child], heap[root])):
                return
            heap[root], heap[child] = heap[child], heap[root]
            root = child

    for root in range(n // 2 - 1, -1, -1):
        yield from sift(root, n)
    top = []
    for size in range(n - 1, n - 1 - k, -1):
        top.append(heap[0])
        heap[0] = heap[size]
        yield from sift(0, size)
    chosen = set(top)
    return top + [i for i in range(n) if i not in chosen]


def sliding_top(n: int, k: int, beats: Any) -> Steps:
    """``k`` bubble passes from the bottom up; pass p fixes position p."""
    order = list(range(n))
    for p in range(min(k, n - 1)):
        for pos in range(n - 1, p, -1):
            if (yield from beats(order[pos], order[pos - 1])):
                order[pos - 1], order[pos] = order[pos], order[pos - 1]
    return order
