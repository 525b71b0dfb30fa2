"""``rerank doctor``'s verdict on one backend: usable here or not, and why."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Check:
    backend: str
    ok: bool
    detail: str
    notes: list[str] = field(default_factory=list)  # e.g. every Java runtime considered
