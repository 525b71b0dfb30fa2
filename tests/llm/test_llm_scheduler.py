"""Cross-query batching returns exactly what query-by-query execution returns.

The fake backend is deterministic and answers from the request alone (a hash of the prompt
text), so any difference between a batched and a sequential run would be the scheduler's.
The programs are multi-step like real methods: a sort whose next comparisons depend on the
answers to the previous ones, with rounds of different sizes.
"""

from __future__ import annotations

import hashlib

from rerankcli.llm.accounting import Accounting
from rerankcli.llm.backend import Backend
from rerankcli.llm.requests import NextToken, Prompt, TokenLogprobs
from rerankcli.llm.scheduler import run_programs


class HashBackend(Backend):
    """Prefers "A" or "B" by a hash of the prompt: deterministic, order-free, no model."""

    name = "fake"
    answers = frozenset({NextToken})

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.calls: list[int] = []

    def _answer(self, requests):
        self.calls.append(len(requests))
        out = []
        for request in requests:
            text = "".join(str(p) for p in request.prompt.parts)
            bit = hashlib.sha256(text.encode()).digest()[0] & 1
            out.append(TokenLogprobs(len(text), 0, {"A": -0.1 if bit else -2.0, "B": -2.0 if bit else -0.1}))
        return out


def compare(a: str, b: str) -> NextToken:
    return NextToken(Prompt.of(f"Which is better? A: {a} B: {b}"), ("A", "B"))


def merge_sort(items: list[str]):
    """A merge sort that asks each level's comparisons together, as one step."""
    runs = [[x] for x in items]
    while len(runs) > 1:
        pairs = [(runs[i], runs[i + 1]) for i in range(0, len(runs) - 1, 2)]
        merged = []
        states = [(left, right, []) for left, right in pairs]
        while any(left and right for left, right, _ in states):
            active = [s for s in states if s[0] and s[1]]
            answers = yield [compare(left[0], right[0]) for left, right, _ in active]
            for (left, right, out), answer in zip(active, answers):
                first = answer.logprobs["A"] > answer.logprobs["B"]
                out.append(left.pop(0) if first else right.pop(0))
        for left, right, out in states:
            merged.append(out + left + right)
        if len(runs) % 2:
            merged.append(runs[-1])
        runs = merged
    return runs[0]


def queries(n: int) -> dict[str, list[str]]:
    return {f"q{q}": [f"doc{q}-{d}" for d in range(3 + q % 9)] for q in range(n)}


def test_batched_across_queries_equals_one_query_at_a_time():
    data = queries(40)
    batched = run_programs(((q, merge_sort(docs)) for q, docs in data.items()), HashBackend(16))
    sequential = {q: run_programs([(q, merge_sort(docs))], HashBackend(1))[q] for q, docs in data.items()}
    assert batched == sequential
    assert sorted(batched) == sorted(data)


def test_batches_are_kept_full_while_queries_remain():
    backend, batches = HashBackend(16), Accounting()
    run_programs(((q, merge_sort(docs)) for q, docs in queries(40).items()), backend, batches=batches)
    # all but the last few calls (when only stragglers are left) carry a full batch
    assert backend.calls[: len(backend.calls) // 2] == [16] * (len(backend.calls) // 2)
    assert batches.batch_sizes == backend.calls


def test_a_query_never_waits_for_another_querys_step():
    """A query with one comparison per round finishes while a long query is still sorting."""
    finished: list[str] = []
    data = {"long": [f"l{i}" for i in range(32)], "short": ["s0", "s1"]}
    run_programs(((q, merge_sort(d)) for q, d in data.items()), HashBackend(4),
                 on_done=lambda key, result: finished.append(key))
    assert finished == ["short", "long"]


def test_programs_that_need_no_model_and_empty_steps_finish():
    def trivial():
        answers = yield []  # nothing to ask this round
        assert answers == []
        return "done"

    backend = HashBackend(8)
    assert run_programs([("a", trivial()), ("b", merge_sort(["x"]))], backend) == {"a": "done", "b": ["x"]}
    assert backend.calls == []


def test_at_most_max_active_queries_hold_state():
    started: list[str] = []

    def program(key: str):
        started.append(key)
        yield [compare(key, "other")]
        return key

    backend = HashBackend(2)
    seen_active = []
    original = backend._answer

    def spy(requests):
        seen_active.append(len(started) - len(done))
        return original(requests)

    done: list[str] = []
    backend._answer = spy
    run_programs(((f"q{i}", program(f"q{i}")) for i in range(10)), backend, max_active=3,
                 on_done=lambda key, result: done.append(key))
    assert max(seen_active) <= 3
    assert len(done) == 10
