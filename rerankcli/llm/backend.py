"""The interface every model backend implements, and the config fields they share.

A backend declares which request kinds it answers (``answers``), so a stage can refuse before
any compute when its method needs something the backend cannot give (ICR's attention on vLLM).
``answer`` takes a whole batch: the backend is free to reorder, pad and bucket inside it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from rerankcli.errors import UserError
from rerankcli.llm.accounting import Accounting
from rerankcli.llm.render import Renderer
from rerankcli.llm.requests import Request, Response


class BackendConfig(BaseModel):
    """Fields every backend has. Subclasses add theirs and name the operational ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    max_length: int | None = Field(None, gt=0, description=(
        "prompt plus answer, in model tokens (default: the model's own context length)"))
    chat: bool | None = Field(None, description="apply the chat template (default: if the model has one)")

    #: fields that change speed or resources but not answers: left out of stage keys
    operational: ClassVar[frozenset[str]] = frozenset()

    def identity(self) -> dict[str, Any]:
        return self.model_dump(exclude=set(self.operational), exclude_none=True)


class Backend(ABC):
    name: ClassVar[str]
    #: request classes this backend answers
    answers: ClassVar[frozenset[type]]

    renderer: Renderer
    #: requests per batch that keep the device busy; the scheduler fills batches to this size
    batch_size: int
    #: which answers of the last batch came from a cache rather than the model (None: none did)
    hits: list[bool] | None = None

    def __init__(self) -> None:
        self.accounting = Accounting()

    def answer(self, requests: list[Request]) -> list[Response]:
        """Answer a batch, in order, and account for it."""
        unsupported = {type(r).__name__ for r in requests if type(r) not in self.answers}
        if unsupported:
            raise UserError(f"backend {self.name} cannot answer {', '.join(sorted(unsupported))} requests")
        start = time.perf_counter()
        responses = self._answer(requests)
        self.accounting.record(requests, responses, time.perf_counter() - start)
        return responses

    def single_tokens(self, texts: Iterable[str]) -> list[str]:
        """The texts this model's tokenizer keeps as one token (answers must be single tokens)."""
        return [t for t in texts if len(self.renderer.encode(t)) == 1]

    @abstractmethod
    def _answer(self, requests: list[Request]) -> list[Response]: ...

    def close(self) -> None:
        """Release the model (GPU memory, engine processes, connections)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def require(backend: type[Backend], kinds: Iterable[type], method: str) -> None:
    """Stop before compute when ``backend`` cannot answer what ``method`` asks."""
    from rerankcli.llm.registry import BACKENDS

    missing = [k for k in kinds if k not in backend.answers]
    if missing:
        able = sorted(n for n, (_, cls) in BACKENDS.items() if all(k in cls.answers for k in kinds))
        names = ", ".join(k.__name__ for k in missing)
        raise UserError(f"method {method} needs {names} requests, which backend {backend.name} "
                        f"cannot answer; use backend: {' or '.join(able)}")
