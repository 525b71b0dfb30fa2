"""The one map from ``backend:`` names to config and backend classes, and how to open one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import BeforeValidator, Field

from rerankcli.llm.backend import Backend, BackendConfig
from rerankcli.llm.hf import HFBackend, HFConfig
from rerankcli.llm.openai import OpenAIBackend, OpenAIConfig
from rerankcli.llm.vllm import VLLMBackend, VLLMConfig
from rerankcli.models import ResolvedModel
from rerankcli.store import Store

BACKENDS: dict[str, tuple[type[BackendConfig], type[Backend]]] = {
    "hf": (HFConfig, HFBackend),
    "vllm": (VLLMConfig, VLLMBackend),
    "openai": (OpenAIConfig, OpenAIBackend),
}


def _name_to_mapping(value: Any) -> Any:
    """``backend: hf`` is short for ``backend: {type: hf}``."""
    return {"type": value} if isinstance(value, str) else value


#: what a stage declares as its ``backend:`` field
BackendField = Annotated[
    Union[HFConfig, VLLMConfig, OpenAIConfig],
    BeforeValidator(_name_to_mapping),
    Field(discriminator="type"),
]


def open_backend(config: BackendConfig, model: ResolvedModel, store: Store,
                 log: Callable[[str], None] = print) -> Backend:
    """Load ``model`` on the backend ``config`` names (converting a GGUF model once)."""
    from rerankcli.llm.gguf import hf_folder

    folder = hf_folder(model, store, log)
    _, backend = BACKENDS[config.type]
    return backend(config, folder, log)  # type: ignore[call-arg]
