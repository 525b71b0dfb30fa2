"""The interface every model backend implements, and the config fields they share.

A backend describes itself in its own module: its config class, the request kinds it answers
(``answers``: a stage whose method asks for something else is refused before compute), the
libraries whose versions enter stage keys, its context length (read without loading weights,
so ``rerank plan`` counts tokens as the backend would), a one-line description of where it
runs, and a ``doctor`` check. Nobody outside keeps a table keyed by backend name.

``answer`` takes a whole batch: the backend is free to reorder, pad and bucket inside it. What
a batch costs is counted by the scheduler that sends it, not stored on the backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from rerankcli.core.checks import Check
from rerankcli.core.errors import UserError
from rerankcli.llm.render import Renderer
from rerankcli.llm.requests import Request, Response


class BackendConfig(BaseModel):
    """Fields every backend has. Subclasses add theirs and name the operational ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(description="the backend: hf, vllm, openai, or one a plugin registered")
    max_length: int | None = Field(None, gt=0, description=(
        "prompt plus answer, in model tokens (default: the model's own context length)"))
    chat: bool | None = Field(None, description="apply the chat template (default: if the model has one)")

    #: fields that change speed or resources but not answers: left out of stage keys
    operational: ClassVar[frozenset[str]] = frozenset()

    def identity(self) -> dict[str, Any]:
        return self.model_dump(exclude=set(self.operational), exclude_none=True)


class Backend(ABC):
    """A model that answers batches of requests.

    Registered backends are built as ``cls(config, folder, log)``: ``config`` an instance of
    ``config_class``, ``folder`` the model as a transformers folder (a GGUF model is
    converted once), ``log`` a function for one-line messages.
    """

    #: the ``backend: {type: ...}`` name
    name: ClassVar[str]
    #: the pydantic config of ``backend:``; its ``type`` field is ``Literal[name]``
    config_class: ClassVar[type[BackendConfig]]
    #: request classes this backend answers
    answers: ClassVar[frozenset[type]]
    #: distributions whose versions can change this backend's answers (stage keys, doctor)
    libraries: ClassVar[tuple[str, ...]] = ()
    #: one line for ``rerank methods``
    summary: ClassVar[str] = ""

    renderer: Renderer
    #: requests per batch that keep the device busy; the scheduler fills batches to this size
    batch_size: int

    def answer(self, requests: list[Request]) -> list[Response]:
        """Answer a batch, in order."""
        unsupported = {type(r).__name__ for r in requests if type(r) not in self.answers}
        if unsupported:
            raise UserError(f"backend {self.name} cannot answer {', '.join(sorted(unsupported))} requests")
        return self._answer(requests)

    def single_tokens(self, texts: Iterable[str]) -> list[str]:
        """The texts this model's tokenizer keeps as one token (answers must be single tokens)."""
        return [t for t in texts if len(self.renderer.encode(t)) == 1]

    @abstractmethod
    def _answer(self, requests: list[Request]) -> list[Response]: ...

    def close(self) -> None:
        """Release the model (GPU memory, engine processes, connections)."""

    # -- self-description, without loading a model ------------------------------------------------
    @classmethod
    def context_length(cls, config: BackendConfig, folder: Path, tokenizer: Any) -> int:
        """Tokens of prompt plus answer this backend allows for the model in ``folder``."""
        return config.max_length or model_context(folder, config) or 4096

    @classmethod
    def describe(cls, config: BackendConfig) -> str:
        """Where this backend computes, in a few words (``rerank plan``)."""
        return cls.name

    @classmethod
    def check(cls) -> Check:
        """Whether this backend can run here (``rerank doctor``)."""
        from rerankcli.core.versions import versions

        found = versions(*cls.libraries)
        missing = [name for name in cls.libraries if found[name] == "absent"]
        if missing:
            return Check(cls.name, False, f"{', '.join(missing)} not installed")
        return Check(cls.name, True, ", ".join(f"{n} {found[n]}" for n in cls.libraries))


def model_context(folder: Path, config: BackendConfig) -> int | None:
    """The model's own context length from its config file (no weights read).

    A missing or broken config file raises (OSError, ValueError): ``rerank plan`` then says
    it could not count tokens rather than count them with a guessed length.
    """
    from transformers import AutoConfig

    trust = bool(getattr(config, "trust_remote_code", False))
    return getattr(AutoConfig.from_pretrained(folder, trust_remote_code=trust), "max_position_embeddings", None)
