"""What ``rerank methods`` and ``rerank schema`` show, read from the registries and the configs.

Nothing here is written per stage: a stage's or backend's one line is its class's ``summary``,
its fields and their descriptions are pydantic's ``model_fields``, and the JSON Schema is
pydantic's, assembled from whatever is registered when it is asked for. So a method a plugin
adds with ``register_method`` (or a backend with ``register_backend``) describes itself exactly
like a shipped one, and the documentation cannot drift from the validation.
"""

from __future__ import annotations

import copy
import json
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic.json_schema import models_json_schema

from rerankcli.core.errors import UserError
from rerankcli.core.stage import STAGE_NAME, StageConfig
from rerankcli.llm.backend import Backend, BackendConfig
from rerankcli.llm.registry import BACKENDS
from rerankcli.pipeline.config import PipelineFile
from rerankcli.pipeline.registry import STAGES, load_plugins

#: fields that wire a stage into the pipeline: shown once in a header, not in the field table
WIRING = ("name", "type", "method", "input", "inputs")

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

#: the top level of a pipeline file, for editors (``PipelineFile`` has no field descriptions)
FILE_FIELDS = {
    "name": "the pipeline's name: names its output folder (default runs/<name>)",
    "dataset": "the corpus, queries and qrels files, or irds:<ir_datasets id>",
    "output": "folder for the stages' runs, manifests and metrics (default: runs/<name>), "
              "relative to this file",
    "cache": "cache folder (default: --cache-dir, $RERANK_CACHE_DIR, ~/.cache/rerankcli)",
    "executor": "where LLM rerank stages compute: local, or ray with its actors",
    "stages": "the stages, run in order; each reads the run of the stage before it unless it "
              "names input or inputs",
}


@dataclass(frozen=True)
class Entry:
    """One line of ``rerank methods``: a method, a stage type or a backend."""

    name: str  #: what ``rerank methods NAME`` takes
    group: str  #: the stage type of a method, "stage" for a type without methods, or "backend"
    yaml: str  #: how a pipeline file selects it
    summary: str


@dataclass(frozen=True)
class FieldRow:
    """One YAML field: its readable type, its default as YAML, what it does."""

    name: str
    type: str
    default: Any  #: JSON value of the default; None when the field is required (or defaults to null)
    shown_default: str  #: the default as written in YAML, or "required"
    required: bool
    description: str


@dataclass(frozen=True)
class Description:
    """``rerank methods NAME``: how to select it, what it is, its wiring, its fields."""

    name: str
    group: str
    yaml: str
    summary: str
    notes: list[str] = field(default_factory=list)
    fields: list[FieldRow] = field(default_factory=list)


# -- the catalogue ---------------------------------------------------------------------------------
def _targets() -> list[tuple[Entry, type[StageConfig] | type[Backend]]]:
    """Every registered method, stage type and backend (plugins' too), in registry order."""
    load_plugins()
    found: list[tuple[Entry, type[StageConfig] | type[Backend]]] = []
    for kind, entry in STAGES.items():
        if isinstance(entry, dict):
            for method, cls in entry.items():
                found.append((Entry(method, kind, f"type: {kind}, method: {method}", cls.summary), cls))
        else:
            found.append((Entry(kind, "stage", f"type: {kind}", entry.summary), entry))
    for name, backend in BACKENDS.items():
        found.append((Entry(name, "backend", f"backend: {name}", backend.summary), backend))
    return found


def catalogue(group: str | None = None) -> list[Entry]:
    """Every registered method, stage type and backend with its one line (or those of ``group``)."""
    entries = [entry for entry, _ in _targets()]
    return [e for e in entries if group is None or e.group == group]


def groups() -> list[str]:
    """The stage types that have methods (``retrieve``, ``rerank``): names ``catalogue`` filters on."""
    return [kind for kind, entry in STAGES.items() if isinstance(entry, dict)]


def known_names() -> list[str]:
    """What ``rerank methods NAME`` accepts, in registry order."""
    return list(dict.fromkeys([entry.name for entry in catalogue()] + groups()))


def _lookup(name: str) -> tuple[Entry, type[StageConfig] | type[Backend]]:
    """The method, stage type or backend called ``name`` (or ``type/method`` when ambiguous)."""
    found = [(e, cls) for e, cls in _targets() if name in (e.name, f"{e.group}/{e.name}")]
    if len(found) == 1:
        return found[0]
    if found:
        choices = ", ".join(f"{e.group}/{e.name}" for e, _ in found)
        raise UserError(f"{name!r} names several things; say which: {choices}")
    raise UserError(f"unknown method, stage type or backend {name!r}; known: {', '.join(known_names())}")


def describe(name: str) -> Description:
    """The YAML fields of the method, stage type or backend called ``name``."""
    entry, target = _lookup(name)
    if isinstance(target, type) and issubclass(target, StageConfig):
        pinned = {"name", "type", "input", "inputs"} | ({"method"} if entry.group != "stage" else set())
        rows = _rows(target, skip=pinned)
        return Description(entry.name, entry.group, entry.yaml, entry.summary, _stage_notes(target), rows)
    rows = _rows(target.config_class, skip={"type"})
    kinds = ", ".join(sorted(kind.__name__ for kind in target.answers))
    notes = [f"as a mapping: backend: {{type: {entry.name}, <field>: <value>, ...}}", f"answers: {kinds}"]
    return Description(entry.name, entry.group, entry.yaml, entry.summary, notes, rows)


def _stage_notes(cls: type[StageConfig]) -> list[str]:
    """The wiring of a stage class, said once: its name, and which runs it reads."""
    reads = {
        "none": "reads no run (give no input or inputs)",
        "one": "input: <stage> (default: the run of the last stage before it that makes one)",
        "many": "inputs: [<stage>, ...] (earlier stages)",
    }[cls.reads]
    makes = "metrics" if cls.produces == "metrics" else "a run"
    return [f"name: <stage> (required; names its output files), makes {makes}", reads]


def _rows(config: type[BaseModel], skip: set[str]) -> list[FieldRow]:
    """The fields a user sets, required ones first (what must be written before what may be).

    A field that is a mapping of its own (``analyzer``, ``rm3``) is followed by its fields,
    named ``analyzer.stemmer``: they are set in the same YAML.
    """
    groups: list[list[FieldRow]] = []
    for name, info in config.model_fields.items():
        if name in skip:
            continue
        nested = _nested_model(info.annotation)
        group = [_row(name, info, nested is not None)]
        if nested is not None:
            group += [_row(f"{name}.{sub}", sub_info) for sub, sub_info in nested.model_fields.items()]
        groups.append(group)
    return [row for group in sorted(groups, key=lambda g: not g[0].required) for row in group]


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The config model a field holds (``X`` or ``X | None``), other than a backend's."""
    for candidate in (annotation, *get_args(annotation)):
        if (isinstance(candidate, type) and issubclass(candidate, BaseModel)
                and not issubclass(candidate, BackendConfig)):
            return candidate
    return None


def _row(name: str, info: FieldInfo, has_rows: bool = False) -> FieldRow:
    required = info.is_required()
    default = None if required else _json_default(info)
    shown = "required" if required else "{...}" if has_rows and default is not None else _yaml_text(default)
    return FieldRow(name, type_name(info.annotation), default, shown, required, info.description or "")


# -- readable types and defaults -----------------------------------------------------------------
def type_name(annotation: Any) -> str:
    """``int``, ``literal: sliding|full|first``, ``list[str]``, ``path``, ``backend``, ``mapping``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return type_name(args[0])
    if origin is Literal:
        return "literal: " + "|".join(str(arg) for arg in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in args if arg is not type(None))
    if origin in (list, tuple, set, frozenset):
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BackendConfig):
        return "backend: " + "|".join(BACKENDS) + " or mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _json_default(info: FieldInfo) -> Any:
    """The default as JSON; a backend default is its name, as a pipeline file would write it."""
    value = info.get_default(call_default_factory=True)
    backend = BACKENDS.get(getattr(value, "type", None)) if isinstance(value, BackendConfig) else None
    if backend is not None and value == backend.config_class():
        return value.type
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    return value


def _yaml_text(value: Any) -> str:
    """A JSON value as a YAML flow value: ``null``, ``true``, ``[title, text]``, ``""``."""
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and _plain_yaml(value):
        return value
    return json.dumps(value)


def _plain_yaml(text: str) -> bool:
    """Whether YAML reads ``text`` unquoted as this same string."""
    try:
        return bool(text) and text.strip() == text and yaml.safe_load(text) == text
    except yaml.YAMLError:
        return False


# -- the JSON Schema of a pipeline file ------------------------------------------------------------
def pipeline_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a pipeline YAML file, from what is registered now.

    ``stages`` items are ``oneOf`` the registered stage classes' schemas, each pinning its
    ``type`` (and ``method``); ``backend:`` fields are ``oneOf`` the registered backends
    (``BackendField``). Descriptions and defaults stay in, for editors to show.
    """
    load_plugins()
    registered = _registered_stages()
    classes = list(dict.fromkeys(cls for _, _, cls in registered))
    refs, top = models_json_schema([(cls, "validation") for cls in [*classes, PipelineFile]])
    defs: dict[str, Any] = top["$defs"]
    ref_of = {cls: refs[(cls, "validation")]["$ref"].rsplit("/", 1)[-1] for cls in [*classes, PipelineFile]}
    originals = {cls: copy.deepcopy(defs[ref_of[cls]]) for cls in classes}
    choices, pinned = [], set()
    for kind, method, cls in registered:
        key = ref_of[cls]
        if key in pinned:  # one class registered under two names: each name pins a copy
            key = f"{key}-{kind}-{method}"
            defs[key] = copy.deepcopy(originals[cls])
        _pin_stage(defs[key], cls, kind, method)
        pinned.add(key)
        choices.append({"$ref": f"#/$defs/{key}"})
    file = defs.pop(ref_of[PipelineFile])
    _file_schema(file, choices)
    return {"$schema": JSON_SCHEMA_DIALECT, **file, "$defs": defs}


def _registered_stages() -> list[tuple[str, str | None, type[StageConfig]]]:
    """(type, method or None, class) of every registered stage class."""
    found: list[tuple[str, str | None, type[StageConfig]]] = []
    for kind, entry in STAGES.items():
        if isinstance(entry, dict):
            found.extend((kind, method, cls) for method, cls in entry.items())
        else:
            found.append((kind, None, entry))
    return found


def _pin_stage(schema: dict[str, Any], cls: type[StageConfig], kind: str, method: str | None) -> None:
    """Pin a stage class's schema to its registered ``type``/``method``; add what pydantic omits."""
    properties = schema["properties"]
    pins = {"type": kind} if method is None else {"type": kind, "method": method}
    for key, value in pins.items():
        properties[key] = {k: v for k, v in properties.get(key, {}).items() if k not in ("enum", "default")}
        properties[key].update(type="string", const=value)
        if key not in schema.setdefault("required", []):
            schema["required"].append(key)
    properties["name"]["pattern"] = STAGE_NAME.pattern
    for name, info in cls.model_fields.items():
        if info.default_factory is not None:  # pydantic leaves these out; editors show them
            properties[name]["default"] = _json_default(info)
    schema["title"] = f"{kind}/{method}" if method else kind
    if cls.summary:
        schema["description"] = cls.summary


def _file_schema(file: dict[str, Any], stage_choices: list[dict[str, Any]]) -> None:
    """The top level: described fields, ``dataset: irds:<id>``, stages as ``oneOf`` the classes."""
    properties = file["properties"]
    properties["name"]["pattern"] = STAGE_NAME.pattern
    properties["dataset"]["anyOf"].insert(0, {
        "type": "string", "pattern": "^irds:.+", "description": "an ir_datasets id, e.g. irds:beir/scifact/test"})
    properties["stages"] = {"type": "array", "minItems": 1, "items": {"oneOf": stage_choices}}
    for name, text in FILE_FIELDS.items():
        properties[name].setdefault("description", text)
    file["title"] = "rerank pipeline"
    file["description"] = "A rerankcli pipeline file: a dataset and stages, run with `rerank run FILE`."
