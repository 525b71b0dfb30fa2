"""An on-disk cache of model calls: request -> response, in SQLite under the cache folder.

Stage keys cache whole stages; this caches single calls, so that a stage whose config changed
in a way that repeats some calls (another window size, heapsort after allpair over the same
candidates, a deeper list) asks the model only for what it has not answered before. A call's
key hashes the model's content identity, the backend settings that change answers, the
versions of the libraries that compute them, and the request itself (the structured prompt
and its parameters), so only an identical call on an identical setup is reused.

Attention requests (ICR) pass through uncached: their answers are long vectors and one stage
never repeats them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from rerankcli.core.errors import UserError
from rerankcli.llm.requests import (
    Attention,
    ContinuationLogprobs,
    Generated,
    Request,
    Response,
    TokenLogprobs,
)

RESPONSES: dict[str, type] = {cls.__name__: cls for cls in (Generated, TokenLogprobs, ContinuationLogprobs)}


def request_key(namespace: str, request: Request) -> str:
    """The hash that identifies a call: setup namespace, request kind and content."""
    parts = [[type(p).__name__, p if isinstance(p, str) else asdict(p)] for p in request.prompt.parts]
    prompt = {**asdict(request.prompt), "parts": parts}
    for added in ("raw", "thinking", "room"):  # added later: plain prompts keep the keys they always had
        if not prompt[added]:
            del prompt[added]
    body = {**asdict(request), "prompt": prompt}
    for added, default in (("temperature", 0.0), ("seed", 0), ("reasoning_effort", None)):  # likewise
        if body.get(added, default) == default:
            body.pop(added, None)
    text = json.dumps([namespace, type(request).__name__, body], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def encode(response: Response) -> str:
    values = asdict(response)
    if values.get("stopped_by", "") is None:  # added later: an older rerankcli can still read the entry
        del values["stopped_by"]
    return json.dumps([type(response).__name__, values])


def decode(text: str) -> Response:
    kind, values = json.loads(text)
    cls = RESPONSES[kind]
    for f in fields(cls):
        if isinstance(values.get(f.name), list):  # JSON turns tuples into lists
            values[f.name] = tuple(values[f.name])
    return cls(**values)


class CallCache:
    """The SQLite table of answered calls; safe for several processes (SQLite's own locking).

    ``namespace`` is what besides the request decides an answer (see ``namespace()``): one
    cache object serves one stage's setup.
    """

    def __init__(self, path: Path, namespace: str) -> None:
        self.namespace, self.path = namespace, path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._faults():
            self.db = sqlite3.connect(path, timeout=120.0, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, response TEXT NOT NULL)")

    def get(self, keys: list[str]) -> dict[str, Response]:
        found: dict[str, Response] = {}
        with self._faults():
            for start in range(0, len(keys), 500):  # SQLite caps the number of parameters
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for key, text in self.db.execute(f"SELECT key, response FROM calls WHERE key IN ({marks})", chunk):
                    found[key] = decode(text)
        return found

    def put(self, items: dict[str, Response]) -> None:
        with self._faults(), self.db:  # one transaction per batch
            self.db.executemany("INSERT OR IGNORE INTO calls VALUES (?, ?)",
                                [(key, encode(response)) for key, response in items.items()])

    @contextlib.contextmanager
    def _faults(self) -> Iterator[None]:
        """SQLite's errors as the exit-code contract wants them: a full disk, a read-only folder or
        an I/O error is the OSError it is (exit 75, naming the file); a damaged file is one line."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            message = str(exc)
            for phrase, code in _SQLITE_FAULTS:
                if phrase in message.lower():
                    raise OSError(code, f"{os.strerror(code)} ({message})", str(self.path)) from None
            raise UserError(f"{self.path}: the LLM call cache cannot be read ({message}); delete the file "
                            "(it only saves repeated model calls)") from None

    def close(self) -> None:
        self.db.close()


_SQLITE_FAULTS = (("disk is full", errno.ENOSPC), ("readonly", errno.EROFS), ("read-only", errno.EROFS),
                  ("disk i/o error", errno.EIO), ("unable to open", errno.EACCES), ("out of memory", errno.ENOMEM))


def answer_through(cache: CallCache | None, answer: Callable[[list[Request]], list[Response]],
                   requests: list[Request]) -> tuple[list[Response], list[bool]]:
    """Answers to ``requests``: known calls from ``cache``, the rest from ``answer`` (the model,
    called once, and only if something is left to ask).

    Returns the answers in order and, per request, whether the cache gave it (the first request
    of a computed call was not a hit; a repeat of it in the same batch was).
    """
    if cache is None:
        return (answer(requests) if requests else []), [False] * len(requests)
    keys = [None if isinstance(r, Attention) else request_key(cache.namespace, r) for r in requests]
    known = cache.get([k for k in keys if k is not None])
    missing: dict[str, Request] = {}
    passing: list[int] = []
    for i, (key, request) in enumerate(zip(keys, requests)):
        if key is None:
            passing.append(i)
        elif key not in known:
            missing.setdefault(key, request)
    asked = [requests[i] for i in passing] + list(missing.values())
    responses = answer(asked) if asked else []
    fresh = dict(zip(missing, responses[len(passing):]))
    cache.put(fresh)
    answers = {**known, **fresh}
    passed = dict(zip(passing, responses[: len(passing)]))
    computed, hits = set(missing), []
    for key in keys:
        first = key in computed
        computed.discard(key)  # type: ignore[arg-type]
        hits.append(key is not None and not first)
    return [passed[i] if key is None else answers[key] for i, key in enumerate(keys)], hits


def namespace(model_identity: str, backend_identity: dict[str, Any], versions: dict[str, str]) -> str:
    """What besides the request decides an answer: the model, the backend settings, library versions."""
    text = json.dumps({"model": model_identity, "backend": backend_identity, "versions": versions},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
