"""The one map from ``backend:`` names to backend classes, and the models a process has open.

Adding a backend is one module (a ``Backend`` subclass with its ``config_class``) and one line
in ``BACKENDS``, or ``register_backend(cls)`` from outside the package. A stage's ``backend:``
field is validated against whatever is registered when the pipeline is read, so a backend
registered by a plugin or a test is as good as a shipped one (``BackendField``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationError
from pydantic_core import PydanticCustomError, core_schema

from rerankcli.core.errors import UserError
from rerankcli.core.models import ResolvedModel
from rerankcli.core.store import Store
from rerankcli.llm.backend import Backend, BackendConfig
from rerankcli.llm.hf import HFBackend
from rerankcli.llm.openai import OpenAIBackend
from rerankcli.llm.vllm import VLLMBackend

BACKENDS: dict[str, type[Backend]] = {
    "hf": HFBackend,
    "vllm": VLLMBackend,
    "openai": OpenAIBackend,
}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Make ``backend: {type: cls.name}`` available to every stage (usable as a decorator)."""
    BACKENDS[cls.name] = cls
    return cls


def backend_class(name: str) -> type[Backend]:
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def require(backend: type[Backend], kinds: Iterable[type], method: str) -> None:
    """Stop before compute when ``backend`` cannot answer what ``method`` asks."""
    missing = [k for k in kinds if k not in backend.answers]
    if missing:
        able = sorted(n for n, cls in BACKENDS.items() if all(k in cls.answers for k in kinds))
        names = ", ".join(k.__name__ for k in missing)
        raise UserError(f"method {method} needs {names} requests, which backend {backend.name} "
                        f"cannot answer; use backend: {' or '.join(able)}")


class _RegisteredBackend:
    """Validates ``backend:`` with the config class registered under its ``type``.

    ``backend: hf`` is short for ``backend: {type: hf}``. Errors read as pydantic's own for a
    union tagged by ``type`` (the registry is open, so it cannot be a static union): inside the
    mapping they keep the backend in their location (``backend.hf.batch_size``), so the
    pipeline's error line points at the field.
    """

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _validate, serialization=core_schema.plain_serializer_function_ser_schema(_dump, info_arg=True))

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        """Each registered name, or its config mapping with its ``type``; read at schema time, so
        plugins appear."""
        choices = []
        for name, backend in BACKENDS.items():
            choices.append({"type": "string", "const": name})
            mapping = handler(backend.config_class.__pydantic_core_schema__)
            choices.append({**mapping, "required": sorted({*mapping.get("required", []), "type"})})
        return {"oneOf": choices, "description": "a backend name, or a mapping with type: and its fields"}


def _validate(value: Any) -> BackendConfig:
    if isinstance(value, BackendConfig):
        return value
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict):
        raise PydanticCustomError("model_attributes_type",
                                  "Input should be a valid dictionary or object to extract fields from")
    if "type" not in value:
        raise PydanticCustomError("union_tag_not_found", "Unable to extract tag using discriminator {discriminator}",
                                  {"discriminator": "'type'"})
    kind = value["type"]
    if not isinstance(kind, str) or kind not in BACKENDS:
        raise PydanticCustomError(
            "union_tag_invalid",
            "Input tag '{tag}' found using {discriminator} does not match any of the expected tags: {expected_tags}",
            {"discriminator": "'type'", "tag": str(kind), "expected_tags": ", ".join(f"'{n}'" for n in BACKENDS)})
    try:
        return BACKENDS[kind].config_class.model_validate(value)
    except ValidationError as exc:  # the backend's name joins the location, as in a tagged union
        raise ValidationError.from_exception_data(exc.title, [
            {"type": e["type"], "loc": (kind, *e["loc"]), "input": e["input"], **({"ctx": e["ctx"]} if "ctx" in e else {})}
            for e in exc.errors()]) from None


def _dump(config: BackendConfig, info: Any) -> dict[str, Any]:
    return config.model_dump(mode=info.mode, by_alias=info.by_alias, exclude_unset=info.exclude_unset,
                             exclude_defaults=info.exclude_defaults, exclude_none=info.exclude_none,
                             round_trip=info.round_trip)


#: what a stage declares as its ``backend:`` field
BackendField = Annotated[BackendConfig, _RegisteredBackend]


class OpenBackends:
    """The models one process has loaded, by (model, backend config).

    Stages of one pipeline that use the same model on the same backend share it instead of
    loading it (or starting vLLM) again. Whoever creates the pool closes it: the pipeline
    runner at the end of a run, a Ray actor when the driver is done with it.
    """

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], Backend] = {}

    def open(self, config: BackendConfig, model: ResolvedModel, store: Store,
             log: Callable[[str], None] = print) -> Backend:
        """``model`` on the backend ``config`` names (a GGUF model is converted once)."""
        from rerankcli.llm.gguf import hf_folder

        key = (model.identity, config.model_dump_json())
        if key not in self._open:
            folder = hf_folder(model, store, log)
            self._open[key] = backend_class(config.type)(config, folder, log)
        return self._open[key]

    def close(self) -> None:
        """Release every model this pool opened; one that fails to close does not keep the others open."""
        failed: BaseException | None = None
        while self._open:
            _, backend = self._open.popitem()
            try:
                backend.close()
            except Exception as exc:  # an engine that dies on shutdown: close the rest, then say so
                failed = failed or exc
        if failed is not None:
            raise failed


def model_folder(model: ResolvedModel, store: Store, log: Callable[[str], None] = print) -> Path:
    """The transformers folder of ``model`` (a GGUF converted once), for tokenizer-only uses."""
    from rerankcli.llm.gguf import hf_folder

    return hf_folder(model, store, log)
