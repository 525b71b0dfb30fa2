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

import hashlib
import json
import sqlite3
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from rerankcli.llm.backend import Backend
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
    body = {**asdict(request), "prompt": {**asdict(request.prompt), "parts": parts}}
    text = json.dumps([namespace, type(request).__name__, body], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def encode(response: Response) -> str:
    return json.dumps([type(response).__name__, asdict(response)])


def decode(text: str) -> Response:
    kind, values = json.loads(text)
    cls = RESPONSES[kind]
    for f in fields(cls):
        if isinstance(values.get(f.name), list):  # JSON turns tuples into lists
            values[f.name] = tuple(values[f.name])
    return cls(**values)


class CallCache:
    """The SQLite table of answered calls; safe for several processes (SQLite's own locking)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=120.0, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, response TEXT NOT NULL)")

    def get(self, keys: list[str]) -> dict[str, Response]:
        found: dict[str, Response] = {}
        for start in range(0, len(keys), 500):  # SQLite caps the number of parameters
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for key, text in self.db.execute(f"SELECT key, response FROM calls WHERE key IN ({marks})", chunk):
                found[key] = decode(text)
        return found

    def put(self, items: dict[str, Response]) -> None:
        with self.db:  # one transaction per batch
            self.db.executemany("INSERT OR IGNORE INTO calls VALUES (?, ?)",
                                [(key, encode(response)) for key, response in items.items()])

    def close(self) -> None:
        self.db.close()


class CachedBackend(Backend):
    """A backend that answers known calls from a ``CallCache`` and sends the rest to ``inner``.

    Its accounting is the inner backend's: calls and tokens there are what the model computed;
    ``cache_hits`` counts the answers that came from the cache instead.
    """

    def __init__(self, inner: Backend, cache: CallCache, namespace: str) -> None:
        self.inner, self.cache, self.namespace = inner, cache, namespace
        self.name = inner.name  # type: ignore[misc]
        self.answers = inner.answers  # type: ignore[misc]

    @property  # type: ignore[override]
    def renderer(self):
        return self.inner.renderer

    @property  # type: ignore[override]
    def batch_size(self) -> int:
        return self.inner.batch_size

    @property  # type: ignore[override]
    def accounting(self):
        return self.inner.accounting

    @accounting.setter
    def accounting(self, value) -> None:
        self.inner.accounting = value

    def answer(self, requests: list[Request]) -> list[Response]:
        keys = [None if isinstance(r, Attention) else request_key(self.namespace, r) for r in requests]
        known = self.cache.get([k for k in keys if k is not None])
        missing: dict[str, Request] = {}
        passing: list[int] = []
        for i, (key, request) in enumerate(zip(keys, requests)):
            if key is None:
                passing.append(i)
            elif key not in known:
                missing.setdefault(key, request)
        asked = [requests[i] for i in passing] + list(missing.values())
        responses = self.inner.answer(asked) if asked else []
        fresh = dict(zip(missing, responses[len(passing):]))
        self.cache.put(fresh)
        self.inner.accounting.cache_hits += sum(k is not None for k in keys) - len(missing)
        self.hits = self._hits(keys, set(missing))
        answers = {**known, **fresh}
        passed = dict(zip(passing, responses[: len(passing)]))
        return [passed[i] if key is None else answers[key] for i, key in enumerate(keys)]

    @staticmethod
    def _hits(keys: list[str | None], computed: set[str]) -> list[bool]:
        """Per request: answered from the cache? The first request of a computed key was not."""
        hits = []
        for key in keys:
            first = key in computed
            computed.discard(key)  # type: ignore[arg-type]
            hits.append(key is not None and not first)
        return hits

    def _answer(self, requests: list[Request]) -> list[Response]:  # pragma: no cover - answer() overrides
        return self.inner._answer(requests)

    def single_tokens(self, texts) -> list[str]:
        return self.inner.single_tokens(texts)

    def close(self) -> None:
        self.cache.close()  # the inner backend belongs to the registry, which closes it


def namespace(model_identity: str, backend_identity: dict[str, Any], versions: dict[str, str]) -> str:
    """What besides the request decides an answer: the model, the backend settings, library versions."""
    text = json.dumps({"model": model_identity, "backend": backend_identity, "versions": versions},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
