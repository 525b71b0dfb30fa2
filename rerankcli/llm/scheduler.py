"""Keep the backend's batch full across queries.

A rerank method writes one *program* per query: a generator that yields a list of requests (a
window, a round of comparisons, a set of pairs), receives their responses, and yields again
until it returns the query's result. The scheduler runs many programs at once: every yielded
request joins one queue; each backend call takes the oldest ``backend.batch_size`` of them;
as soon as all of one program's requests are answered, its next requests join the queue for
the very next call. No query waits for another query's window to finish, and because every
request's answer depends only on the request, the results equal a query-by-query run.

The scheduler also counts what each program's requests cost (``Usage``), so a stage can
journal every query's cost with its result, and times each batch the model computes. With a
``CallCache`` it answers calls it has seen before from there and sends only the rest on.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, Hashable

from rerankcli.llm.accounting import Accounting, Usage
from rerankcli.llm.backend import Backend
from rerankcli.llm.call_cache import CallCache, answer_through
from rerankcli.llm.requests import Request, Response

Program = Generator[list[Request], list[Response], Any]


@dataclass
class _Running:
    program: Program
    waiting: int = 0
    answers: list[Response | None] = field(default_factory=list)


def run_programs(programs: Iterable[tuple[Hashable, Program]], backend: Backend,
                 max_active: int | None = None,
                 on_done: Callable[[Hashable, Any], None] | None = None,
                 usage: dict[Hashable, Usage] | None = None, cache: CallCache | None = None,
                 batches: Accounting | None = None) -> dict[Hashable, Any]:
    """Run every program to completion; their results by key, in the order they finished.

    ``max_active`` bounds how many programs hold state at once (memory); by default enough to
    fill four batches. ``on_done`` is called with each result as soon as it exists. ``usage``,
    if given, receives each program's ``Usage`` (complete by the time ``on_done`` is called);
    ``batches``, the size and wall time of every batch the model computed.
    """
    usage = {} if usage is None else usage
    batches = Accounting() if batches is None else batches
    limit = max_active or 4 * backend.batch_size
    pending = iter(programs)
    running: dict[Hashable, _Running] = {}
    queue: deque[tuple[Hashable, int, Request]] = deque()
    results: dict[Hashable, Any] = {}

    def advance(key: Hashable, sent: list[Response] | None) -> None:
        """Step one program until it yields requests or returns."""
        state = running[key]
        while True:
            try:
                requests = state.program.send(sent) if sent is not None else next(state.program)
            except StopIteration as stop:
                del running[key]
                results[key] = stop.value
                if on_done is not None:
                    on_done(key, stop.value)
                return
            if requests:
                state.waiting = len(requests)
                state.answers = [None] * len(requests)
                queue.extend((key, i, r) for i, r in enumerate(requests))
                return
            sent = []  # an empty step: answer it at once

    def admit() -> None:
        while len(running) < limit:
            try:
                key, program = next(pending)
            except StopIteration:
                return
            if key in running or key in results:
                raise ValueError(f"program key {key!r} given twice")
            running[key] = _Running(program)
            usage[key] = Usage()
            advance(key, None)

    def timed(requests: list[Request]) -> list[Response]:
        """The model's answers to one batch, its size and wall time recorded."""
        started = time.perf_counter()
        responses = backend.answer(requests)
        batches.record_batch(len(requests), time.perf_counter() - started)
        return responses

    admit()
    while queue:
        batch = [queue.popleft() for _ in range(min(backend.batch_size, len(queue)))]
        responses, hits = answer_through(cache, timed, [request for _, _, request in batch])
        finished = []
        for (key, i, request), response, hit in zip(batch, responses, hits):
            usage[key].add(request, response, hit)
            state = running[key]
            state.answers[i] = response
            state.waiting -= 1
            if state.waiting == 0:
                finished.append(key)
        for key in finished:
            advance(key, running[key].answers)  # type: ignore[arg-type]
        admit()
    return results
