"""What a stage's model calls cost, for its manifest: requests, tokens, batches, wall time."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rerankcli.llm.requests import Generated, Request, Response


@dataclass
class Accounting:
    requests: Counter = field(default_factory=Counter)  # by request kind
    batch_sizes: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    truncated_passages: int = 0
    truncated_prompts: int = 0
    wall_s: float = 0.0
    repairs: Counter = field(default_factory=Counter)  # parse repairs, counted by the methods
    cache_hits: int = 0  # answers the LLM call cache gave instead of the model (not in requests)

    def record(self, requests: list[Request], responses: list[Response], seconds: float) -> None:
        self.batch_sizes.append(len(requests))
        self.wall_s += seconds
        for request, response in zip(requests, responses):
            self.requests[type(request).__name__] += 1
            self.prompt_tokens += response.prompt_tokens
            self.truncated_passages += response.truncated
            self.truncated_prompts += response.truncated > 0
            if isinstance(response, Generated):
                self.generated_tokens += response.new_tokens

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
