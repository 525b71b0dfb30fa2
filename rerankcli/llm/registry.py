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
    Annotated[Union[HFConfig, VLLMConfig, OpenAIConfig], Field(discriminator="type")],
    BeforeValidator(_name_to_mapping),
]


#: backends opened in this process, by (model, config): stages of one pipeline that use the
#: same model on the same backend share it instead of loading it (or starting vLLM) again
_OPEN: dict[tuple[str, str], Backend] = {}


def backend_class(name: str) -> type[Backend]:
    return BACKENDS[name][1]


def open_backend(config: BackendConfig, model: ResolvedModel, store: Store,
                 log: Callable[[str], None] = print) -> Backend:
    """Load ``model`` on the backend ``config`` names (converting a GGUF model once)."""
    from rerankcli.llm.gguf import hf_folder

    key = (model.identity, config.model_dump_json())
    if key not in _OPEN:
        folder = hf_folder(model, store, log)
        _OPEN[key] = backend_class(config.type)(config, folder, log)  # type: ignore[call-arg]
    return _OPEN[key]


def close_backends() -> None:
    """Release every backend this process opened (end of a pipeline run)."""
    while _OPEN:
        _, backend = _OPEN.popitem()
        backend.close()
