"""What a stage's model calls cost, for its manifest: requests, tokens, batches, wall time.

``Usage`` is what one query's calls cost. It is counted per query (the scheduler knows which
query asked each request) so that a resumed, sharded or Ray-run stage can add up the usage of
queries computed by other processes and report the same totals as one uninterrupted run.
``Accounting`` adds what only a process can see: its batches and their wall time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rerankcli.llm.requests import Generated, Request, Response

USAGE_FIELDS = ("prompt_tokens", "generated_tokens", "truncated_passages", "truncated_prompts", "cache_hits")


@dataclass
class Usage:
    requests: Counter = field(default_factory=Counter)  # by request kind, answered by the model
    prompt_tokens: int = 0
    generated_tokens: int = 0
    truncated_passages: int = 0
    truncated_prompts: int = 0
    cache_hits: int = 0  # answers the LLM call cache gave instead of the model (not in requests)

    def add(self, request: Request, response: Response, hit: bool = False) -> None:
        """Count one answered request; a cache hit costs no model compute, so only counts as a hit."""
        if hit:
            self.cache_hits += 1
            return
        self.requests[type(request).__name__] += 1
        self.prompt_tokens += response.prompt_tokens
        self.truncated_passages += response.truncated
        self.truncated_prompts += response.truncated > 0
        if isinstance(response, Generated):
            self.generated_tokens += response.new_tokens

    def update(self, other: Usage) -> None:
        self.requests.update(other.requests)
        for name in USAGE_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_json(self) -> dict[str, Any]:
        return {"requests": dict(sorted(self.requests.items())), **{n: getattr(self, n) for n in USAGE_FIELDS}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Usage:
        return cls(Counter(data["requests"]), **{n: data[n] for n in USAGE_FIELDS})


@dataclass
class Accounting(Usage):
    batch_sizes: list[int] = field(default_factory=list)
    wall_s: float = 0.0
    repairs: Counter = field(default_factory=Counter)  # parse repairs, counted by the methods

    def record_batch(self, size: int, seconds: float) -> None:
        """One batch the model computed (the scheduler times every call it makes)."""
        self.batch_sizes.append(size)
        self.wall_s += seconds

    def manifest(self) -> dict[str, Any]:
        sizes = self.batch_sizes
        return {
            "requests": dict(sorted(self.requests.items())),
            "calls": sum(self.requests.values()),
            "batches": len(sizes),
            "batch_size": {"min": min(sizes), "mean": round(sum(sizes) / len(sizes), 2),
                           "max": max(sizes)} if sizes else None,
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": self.generated_tokens,
            "truncated_passages": self.truncated_passages,
            "truncated_prompts": self.truncated_prompts,
            "wall_s": round(self.wall_s, 3),
            "parse_repairs": dict(sorted(self.repairs.items())),
            "cache_hits": self.cache_hits,
        }
