"""``method: setwise``: which passage of a small set is the most relevant (Zhuang et al., SIGIR 2024).

Why: pairwise prompting (PRP) needs two prompts per comparison and O(N log N) comparisons.
Setwise shows the model a *set* of ``c`` passages labelled A, B, C, … and asks only for the
label of the best one, so one prompt decides among c passages: a heap of sets needs fewer
levels, and fewer prompt tokens, than PRP's heap of pairs asked in both orders (the paper, at
N = 100, c = 3: ~125 calls and ~40k prompt tokens a query against ~230 and ~105k).

Decision rule (``scoring``):
- ``logits``: one forward pass with the answer slot opened by ``Passage``; the next-token
  probabilities of the labels in use (each in its single-token forms "B" and " B") are
  renormalised and the argmax wins.
- ``generate``: a short greedy answer is parsed: the first ``Passage X`` (any case), else the
  first bare capital letter that labels a passage of the set; a ``<think>`` block is dropped
  first. A letter outside the set, or none, is unparseable: the first passage of the set wins
  (llm-rankers' rule) and the answer is counted as a repair.
- ``both_orders``: each set is also asked reversed (both prompts in one step); probabilities
  are summed per passage (logits) or each order gives one vote (generate). An unparseable
  answer gives no vote.
Ties, and a set nobody voted in, go to the passage first in the set (the heap's parent).

Strategies (llm-rankers ``setwise.py``):
- ``heapsort``: a (c−1)-ary max-heap over the input positions. ``heapify(i)`` asks the set
  ``[arr[i]] + arr[(c−1)i+1 … (c−1)(i+1)]`` (children below the heap size; a node without
  children costs nothing); a child that wins swaps with the parent and the heapify recurses into
  it. Build with ``heapify(i)`` for i = n//(c−1) … 0, then extract ``top_k`` times (root ↔ last,
  shrink, heapify the root; the k-th extraction needs no heapify). With c = 3 this is a binary
  heap; c = 2 degenerates into a chain (each node has one child).
- ``bubblesort``: ``top_k`` passes; pass i slides a window of c from the bottom of the list
  (positions n−c … n) up by c−1 (consecutive windows share the carried winner) until it
  starts at i (clamped); each window's winner moves to the window's top, the others keep their
  order below it. A per-query memo answers a set asked before in the same order from the
  earlier answer (what llm-rankers' ``last_start`` skip achieves); these are the cache hits.
Output: the ``top_k`` found, best first (scores ``n − rank``), then every other candidate in
its first-stage order, whatever order the model was shown (they share one score, and equal
scores are written in first-stage order). llm-rankers' bubble sort swaps the window's winner
with the window's top; here the winner is moved up and the others keep their order below it
(the same top-k with a consistent model; different later sets with an inconsistent one). Calls: see ``planned_calls``; both orders double them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from rerankcli.core.errors import UserError
from rerankcli.llm.backend import Backend
from rerankcli.llm.requests import Generate, Generated, NextToken, Request, Response, TokenLogprobs
from rerankcli.llm.scheduler import Program
from rerankcli.rerank.candidates import Query
from rerankcli.rerank.llm_method import LLMRerankStage, Reranked, answer_probabilities, answer_repairs
from rerankcli.rerank.pointwise import number_forms
from rerankcli.rerank.reasoning import Reasoning, ask, read_number, think, trace, traced, unreadable
from rerankcli.rerank.templates import Template, load_template

#: the passage labels, as in llm-rankers ("Passage X", "Y", "Z" split into more tokens there)
LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVW")
_NAMED = re.compile(r"\bpassage(?:\s*[:\-]\s*|\s+)\(?([a-z])(?![a-z])", re.IGNORECASE)
_BARE = re.compile(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])")
_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
#: "I" and "A" as English words ("I think C", "A good answer is B"), not labels
_WORD = re.compile(r"[AI] [a-z]")

Steps = Generator[list[Request], list[Response], Any]
#: asks one set (candidate indices, in the order shown) and returns the winner's position in it
Best = Callable[[list[int]], Steps]


def read_label(text: str, size: int) -> int | None:
    """0-based position named by a generated answer in a set of ``size``, or None if unreadable.

    The first ``Passage X`` decides (a letter outside the set is unreadable); without one, the
    first bare capital letter that labels a passage of the set ("B", " C.", "(A)").
    """
    labels = LETTERS[:size]
    text = _THINK.sub(" ", text)
    named = _NAMED.search(text)
    if named:
        letter = named.group(1).upper()
        return labels.index(letter) if letter in labels else None
    bare = next((m.group(1) for m in _BARE.finditer(text)
                 if m.group(1) in labels and not _WORD.match(text, m.start())), None)
    return None if bare is None else labels.index(bare)


def winner(weights: list[list[float]], shown: list[tuple[int, ...]], members: list[int]) -> int:
    """Position in ``members`` with the most weight over the prompts ``shown``; ties to the first."""
    total = dict.fromkeys(members, 0.0)
    for order, row in zip(shown, weights):
        for candidate, weight in zip(order, row):
            total[candidate] += weight
    return max(range(len(members)), key=lambda p: (total[members[p]], -p))


@dataclass
class Sets:
    """One query's memo (bubblesort) and its counts for the manifest (``summary``)."""

    memo: dict[tuple[int, ...], list[float]] = field(default_factory=dict)  # shown order -> weights
    sets: int = 0  # sets the strategy decided
    prompts: int = 0  # prompts sent (memo misses)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    unparsed: int = 0
    think_blocks: int = 0  # answers that opened a think block (the think guard drops it)
    traces: list[dict[str, Any]] = field(default_factory=list)  # with reasoning: every prompt's

    def summary(self, orders: int) -> dict[str, int]:
        return {"sets": self.sets, "prompts": self.prompts, "cache_hits": orders * self.sets - self.prompts,
                "prompt_tokens": self.prompt_tokens, "generated_tokens": self.generated_tokens,
                "unparsed": self.unparsed, "think_blocks": self.think_blocks}


class SetwiseStage(LLMRerankStage):
    method: Literal["setwise"] = Field(description="setwise: which passage of a small set is the most relevant")
    strategy: Literal["heapsort", "bubblesort"] = Field("heapsort", description=(
        "heapsort (a (set_size-1)-ary heap, top_k extractions) or bubblesort (top_k passes of a sliding set)"))
    set_size: int = Field(3, ge=2, le=len(LETTERS), description=(
        "passages per prompt (c), labelled A, B, C, ...; at most 23 (A to W)"))
    top_k: int = Field(10, ge=1, description="how many top positions are sorted; the rest keep their input order")
    scoring: Literal["logits", "generate"] = Field("logits", description=(
        "logits: the most probable label after 'Passage'; generate: read the model's short written answer"))
    both_orders: bool = Field(False, description=(
        "also ask each set in reverse order and combine both answers (twice the calls, less position bias)"))
    labels: Literal["letters", "numbers"] = Field("letters", description=(
        "how passages are labelled: letters A, B, C (llm-rankers) or numbers 1, 2, 3 (Rank-R1; read digit by digit)"))
    max_new_tokens: int = Field(4, gt=0, description="generate: the answer's length in tokens")
    max_repair_rate: float = Field(1.0, ge=0, le=1, description=(
        "generate: fail the stage when more than this share of answers named no passage of the set"))

    default_prompt: ClassVar = "setwise"
    placeholders: ClassVar = ({"query", "passages"}, {"query", "passages", "num"})
    summary: ClassVar = "Setwise: which of c labelled passages is the most relevant; heap sort or bubble sort"
    reasons: ClassVar = True
    added_options: ClassVar = {**LLMRerankStage.added_options, "labels": "letters"}

    @model_validator(mode="after")
    def _numbers_are_read_from_logits(self) -> SetwiseStage:
        if self.labels == "numbers" and self.scoring != "logits":
            raise ValueError("labels: numbers are read from the digits' logits: use scoring: logits")
        return self

    @property
    def asks(self) -> tuple[type, ...]:  # type: ignore[override]
        return (NextToken,) if self.scoring == "logits" else (Generate,)

    def template(self, base_dir: Any) -> Template:
        required, allowed = self.placeholders
        return load_template(self.prompt or self.default_prompt, base_dir, required, allowed, listwise=True)

    # -- method ------------------------------------------------------------------------------
    def prepare_method(self, backend: Backend) -> dict[str, list[str]]:
        """logits: each label's single-token forms ("B", " B"); a label with none is refused."""
        if self.scoring != "logits":
            return {}
        if self.labels == "numbers":
            return number_forms(backend, 1, self.set_size, self.name)
        forms = {label: backend.single_tokens((label, " " + label)) for label in LETTERS[: self.set_size]}
        split = [label for label, found in forms.items() if not found]
        if split:
            raise UserError(f"stage '{self.name}': this model's tokenizer has no single token for the "
                            f"label(s) {', '.join(split)}; use a smaller set_size or scoring: generate")
        return forms

    def repairs(self, reranked: Reranked) -> Counter:
        return answer_repairs(reranked)

    def method_details(self, reranked: Reranked) -> dict[str, Any]:
        records = reranked.records
        totals = {key: sum(r[key] for r in records.values()) for key in ("sets", "prompts", "cache_hits", "unparsed")}
        return {"answer_tokens": reranked.prepared, **totals, "per_query": dict(sorted(records.items()))}

    def check_method(self, reranked: Reranked) -> None:
        prompts = sum(r["prompts"] for r in reranked.records.values())
        unparsed = self.repairs(reranked)["unparsed_answer"]
        if prompts and unparsed / prompts > self.max_repair_rate:
            raise UserError(f"stage '{self.name}': {unparsed} of {prompts} answers named no passage of "
                            f"their set (more than max_repair_rate {self.max_repair_rate:g}); the model "
                            "does not follow the output format")

    def program(self, query: Query, template: Template, forms: dict[str, list[str]]) -> Program:
        book = Sets()
        n = len(query.candidates)
        k = min(self.top_k, n)
        remember = self.strategy == "bubblesort"  # a heap sort never shows a set twice in one order

        def best(members: list[int]) -> Steps:
            book.sets += 1
            shown = [tuple(members)] + ([tuple(reversed(members))] if self.both_orders else [])
            memo = book.memo if remember else {}
            missing = [order for order in shown if order not in memo]
            if missing:
                weights = yield from self._ask(query, template, forms, missing, book)
                for order, weight in zip(missing, weights):
                    memo[order] = weight
            return winner([memo[order] for order in shown], shown, members)

        sort = heap_top if self.strategy == "heapsort" else bubble_top
        top = yield from sort(n, k, self.set_size, best)
        # the rest share one score below the top: the run's writer orders equal scores by their
        # first-stage position, whatever order the model was shown (``order``)
        scores = {c.docid: 0.0 for c in query.candidates}
        scores.update({query.candidates[i].docid: float(n - rank) for rank, i in enumerate(top)})
        record = book.summary(2 if self.both_orders else 1)
        return scores, record if self.reasoning is None else {**record, **traced(book.traces)}

    def _ask(self, query: Query, template: Template, forms: dict[str, list[str]],
             orders: list[tuple[int, ...]], book: Sets) -> Steps:
        """Each order's weights per position (one step, or think then answer with reasoning).

        Numbers are read digit by digit (``read_number``) and give one vote; a set whose digits
        have no probability gives none, so the parent (first of the set) wins, as in Rank-R1.
        """
        requests = [self._request(query, template, forms, order) for order in orders]
        size = len(orders[0])
        if self.labels == "numbers":
            prompts, thoughts = [r.prompt for r in requests], None
            if self.reasoning is not None:
                thoughts, prompts = yield from think(prompts, self.reasoning, self.think_close(template))
            numbers = yield from read_number(prompts, 1, size, forms)
            book.prompts += len(orders)
            book.prompt_tokens += sum(n.prompt_tokens for n in numbers)
            book.unparsed += sum(n.fell_back for n in numbers)
            weights = [[0.0] * size if n.fell_back else [float(p == n.value - 1) for p in range(size)]
                       for n in numbers]
            fallbacks = [n.fell_back for n in numbers]
            answers: list[Any] = [n.value for n in numbers]
        else:
            replies, thoughts = yield from ask(requests, self.reasoning, self.think_close(template))
            weights = [self._weights(a, size, forms, book) for a in replies]
            fallbacks = [not any(w) or (isinstance(a, TokenLogprobs) and unreadable(a)) for a, w in zip(replies, weights)]
            answers = [LETTERS[max(range(size), key=lambda p: (w[p], -p))] for w in weights]
        if thoughts is not None:
            book.traces += [trace([query.candidates[i].docid for i in order], t, a, f)
                            for order, t, a, f in zip(orders, thoughts, answers, fallbacks)]
        return weights

    def identity(self) -> dict[str, Any]:
        # generate mode's answer length cannot change what logits mode reads
        identity = super().identity()
        if self.scoring == "logits":
            identity.pop("max_new_tokens", None)
        return identity

    def planned_calls(self, n: int) -> tuple[int, int]:
        """(least, most) prompts for ``n`` candidates; both orders double both bounds.

        heapsort (m = c−1, k = min(top_k, n)); heapify(i) at a node with children costs one call
        per level it sifts down:
        - least: no set is ever won by a child: one call per node with children,
          ⌈(n−1)/m⌉, plus one per root heapify after extractions 1 … k−1 (heap sizes n−1 …
          n−k+1, a call when the size is at least 2);
        - most: every heapify sifts down its deepest path (through first children): the sum of
          the nodes' heights in the build, plus the root's height at each size n−1 … n−k+1.
        Both bounds are reached: by a model that always answers A, and one that always answers B.

        bubblesort (P = min(top_k, n−1) passes): pass i asks 1 + ⌈(n−c−i)/m⌉ windows (one when
        n−c ≤ i).
        - most: every window asked (no memo hit);
        - least: a model that always answers A (nothing moves): pass 0 asks all its windows,
          and a later pass i re-asks only its top window when that is clamped (i is not one of
          the starts n−c−j·m), since every other window is one the previous pass asked in the
          same order. A clamped window is always new (it is shorter than c and lacks the passage
          an earlier pass fixed above it), so no model asks fewer.
        """
        if n <= 1:
            return 0, 0
        c, m, k = self.set_size, self.set_size - 1, min(self.top_k, n)
        if self.strategy == "heapsort":
            least = -(-(n - 1) // m) + sum(1 for size in range(n - 1, n - k, -1) if size >= 2)
            most = (sum(_height(i, n, m) for i in range(n // m, -1, -1))
                    + sum(_height(0, size, m) for size in range(n - 1, n - k, -1)))
        else:
            passes = min(k, n - 1)
            windows = [1 + max(0, -(-(n - c - i) // m)) for i in range(passes)]
            most = sum(windows)
            least = windows[0] + sum(1 for i in range(1, passes) if n - c - i < 0 or (n - c - i) % m)
        orders = 2 if self.both_orders else 1
        # per prompt: a think call with reasoning; with numbers, a second digit when c >= 10
        # and a label from 10 up may be meant
        thinking = 1 if self.reasoning is not None else 0
        second = 1 if self.labels == "numbers" and self.set_size >= 10 else 0
        return orders * least * (1 + thinking), orders * most * (1 + thinking + second)

    def prompts_known_in_advance(self) -> bool:
        return False  # each set holds the winners of earlier ones

    def _request(self, query: Query, template: Template, forms: dict[str, list[str]],
                 order: tuple[int, ...]) -> Request:
        labels = LETTERS[: len(order)] if self.labels == "letters" else [str(k + 1) for k in range(len(order))]
        prompt = template.list_prompt(query.text, [query.candidates[i].text for i in order], list(labels),
                                      self.max_passage_tokens)
        if self.labels == "numbers":
            return NextToken(prompt, ())  # read digit by digit by ``read_number``
        if self.scoring == "logits":
            return NextToken(prompt, tuple(f for label in labels for f in forms[label]))
        return Generate(prompt, max_new_tokens=self.max_new_tokens)

    @staticmethod
    def _weights(answer: Response, size: int, forms: dict[str, list[str]], book: Sets) -> list[float]:
        """What one prompt says for each position: label probabilities, or a vote (none if unread)."""
        book.prompts += 1
        book.prompt_tokens += answer.prompt_tokens
        labels = LETTERS[:size]
        if isinstance(answer, TokenLogprobs):
            p = answer_probabilities(answer.logprobs, {label: forms[label] for label in labels})
            return [p[label] for label in labels]
        assert isinstance(answer, Generated)
        book.generated_tokens += answer.new_tokens
        book.think_blocks += bool(_THINK.search(answer.text))
        chosen = read_label(answer.text, size)
        if chosen is None:
            book.unparsed += 1
            return [0.0] * size
        return [float(p == chosen) for p in range(size)]


def _height(i: int, size: int, m: int) -> int:
    """Calls of the longest sift from node ``i`` of an m-ary heap of ``size`` (via first children)."""
    calls = 0
    while m * i + 1 < size:
        calls += 1
        i = m * i + 1
    return calls


def heap_top(n: int, k: int, c: int, best: Best) -> Steps:
    """The best ``k`` of ``n`` candidates, best first, by a (c−1)-ary heap of sets of c."""
    m = c - 1
    heap = list(range(n))

    def heapify(i: int, size: int) -> Steps:
        while m * i + 1 < size:
            nodes = [i, *range(m * i + 1, min(m * (i + 1) + 1, size))]
            won = yield from best([heap[x] for x in nodes])
            if won == 0:
                return
            child = nodes[won]
            heap[i], heap[child] = heap[child], heap[i]
            i = child

    for i in range(n // m, -1, -1):
        yield from heapify(i, n)
    top = []
    for extracted in range(1, k + 1):
        size = n - extracted
        top.append(heap[0])
        heap[0], heap[size] = heap[size], heap[0]
        if extracted < k:  # llm-rankers stops before re-heapifying for a (k+1)-th extraction
            yield from heapify(0, size)
    return top


def bubble_top(n: int, k: int, c: int, best: Best) -> Steps:
    """The best ``k`` of ``n``, best first, by ``k`` passes of a window of c sliding up by c−1."""
    order = list(range(n))
    for i in range(min(k, n - 1)):
        start, end = n - c, n
        while True:
            start = max(start, i)
            won = yield from best(order[start:end])
            if won:
                order.insert(start, order.pop(start + won))
            if start == i:
                break
            start, end = start - (c - 1), end - (c - 1)
    return order[:k]


class RankR1Stage(SetwiseStage):
    """``method: rank-r1`` (Zhuang et al. 2025): setwise heap sort over sets of 20 numbered
    passages (as trained), each set reasoned about up to 2,048 tokens, then the label read
    from the digits after ``<answer>[``; a set whose answer cannot be read keeps its parent."""

    method: Literal["rank-r1"] = Field(description="rank-r1: think, then pick the best of a set")  # type: ignore[assignment]
    set_size: int = Field(20, ge=2, le=len(LETTERS), description="passages per prompt (Rank-R1: 20)")
    labels: Literal["letters", "numbers"] = Field("numbers", description="Rank-R1 numbers its passages [1] ... [c]")
    reasoning: Reasoning | None = Field(default_factory=lambda: Reasoning(max_tokens=2048), description=(
        "the think budget per set (Rank-R1: 2048 tokens)"))

    default_prompt: ClassVar = "rank-r1"
    summary: ClassVar = "Rank-R1: setwise heap sort; reasons about each set, then names the best passage"
