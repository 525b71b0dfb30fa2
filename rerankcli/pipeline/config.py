"""The pipeline YAML: validated completely before any stage runs.

Every problem becomes one ``UserError`` line naming the file, the line, the stage and the
field, e.g. ``p.yaml:7: stage 'bm25' (stages[0]): field 'k': Input should be a valid integer``.

Before a config class reads a mapping, what pydantic would silently accept is refused or
expanded here, for every class alike (``_user_values``): ``~`` and ``$VAR`` in path fields
(``core/paths.py``), empty paths, ``true`` where a number belongs, and ``.nan``/``.inf``.
After the stages are read: stage names that are one file name on a case-insensitive file
system, and a run's metric that two evaluate stages would both write into ``metrics.json``.
"""

from __future__ import annotations

import difflib
import math
import os
import types
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from rerankcli.core.bright import LayoutError, locate
from rerankcli.core.dataset import DatasetConfig
from rerankcli.core.errors import UserError, shown, where
from rerankcli.core.models import spec_problem
from rerankcli.core.paths import expand_path, file_above
from rerankcli.core.stage import StageConfig, file_name
from rerankcli.core.user_files import file_problem
from rerankcli.core.yaml_source import Location, line_of, load_yaml
from rerankcli.execution.executor_config import ExecutorConfig
from rerankcli.pipeline.registry import STAGES, load_plugins


class PipelineFile(BaseModel):
    """The top level of a pipeline file; stages are validated by their own classes."""

    model_config = ConfigDict(extra="forbid")

    name: str
    dataset: DatasetConfig | None = None
    output: Path | None = None
    cache: Path | None = None
    executor: ExecutorConfig = ExecutorConfig()
    stages: list[dict[str, Any]]

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, value: str) -> str:
        file_name(value, "pipeline")
        problem = unportable(value)
        if problem:
            raise ValueError(f"the name of the output folder {problem}")
        return value


#: a stage's name is the stem of its output files (``<name>.manifest.json``, the longest, and
#: ``shards/<name>.<i>-of-<N>.manifest.json``); file names end at 255 bytes
MAX_NAME = 100
#: names Windows reserves for devices, whatever the extension (``nul.trec`` is the null device)
WINDOWS_DEVICES = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                             *(f"lpt{i}" for i in range(1, 10))})


#: stage names that mean something else on the command line
def unportable(name: str) -> str | None:
    """Why ``name`` is no safe file name on every system (beyond ``file_name``'s characters), or None."""
    if len(name) > MAX_NAME:
        return f"has {len(name)} characters; at most {MAX_NAME}"
    if name.split(".", 1)[0].lower() in WINDOWS_DEVICES:
        return f"begins with {name.split('.', 1)[0]!r}, a device name on Windows, not a file name"
    if name.endswith("."):
        return "ends in '.', which Windows drops from file names"
    return None


class Pipeline(BaseModel):
    """A validated pipeline: paths absolute, stages typed, inputs wired by name."""

    name: str
    source: Path
    dataset: DatasetConfig
    output: Path
    cache: Path | None
    executor: ExecutorConfig = ExecutorConfig()
    stages: list[StageConfig]
    inputs: dict[str, list[str]]  # stage -> names of the stages it reads


def _first_error(exc: ValidationError) -> dict[str, Any]:
    """The error to show: a misspelt field explains a "missing" one, so unknown fields first."""
    errors = exc.errors()
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def _describe(error: dict[str, Any], model: type[BaseModel] | None = None) -> str:
    loc = [part for part in error["loc"] if not isinstance(part, int)]
    field = ".".join(str(part) for part in loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(field, list(model.model_fields), n=1) if model else []
        return f"unknown field '{field}'" + (f" (did you mean '{close[0]}'?)" if close else "")
    if kind == "missing":
        return f"missing required field '{field}'"
    message = error["msg"].removeprefix("Value error, ")
    return f"field '{field}': {message}" if field else message


def _fail(path: Path, lines: dict[Location, int], location: Location, message: str) -> UserError:
    return UserError(f"{where(path, line_of(lines, location))}: {message}")


#: text fields that hold a path or a name (a model folder or hub id, a template file or shipped
#: template, a Lucene index folder or prebuilt index): expanded like ``Path`` fields; a name has
#: no ``~`` or ``$`` to expand
PATH_OR_NAME = frozenset({"model", "prompt", "index"})

Fail = Callable[[Location, str], UserError]


def _field_kinds(annotation: Any) -> tuple[bool, bool, bool, list[type[BaseModel]]]:
    """(holds a path, holds text, holds a number, the config classes it holds) of a field's type."""
    path = text = number = False
    models: list[type[BaseModel]] = []
    pending = [annotation]
    while pending:
        kind = pending.pop()
        origin = get_origin(kind)
        if origin is Annotated:
            pending.append(get_args(kind)[0])
        elif origin in (Union, types.UnionType, list, tuple, set, frozenset):
            pending += [a for a in get_args(kind) if a is not Ellipsis]
        elif origin is None and isinstance(kind, type):
            if issubclass(kind, PurePath):
                path = True
            elif kind is str:
                text = True
            elif kind in (int, float):
                number = True
            elif issubclass(kind, BaseModel):
                models.append(kind)
    return path, text, number, models


def _chosen_class(base: type[BaseModel], raw: dict[str, Any]) -> type[BaseModel]:
    """The config class a mapping selects with ``type:`` among ``base``'s subclasses (backends)."""
    pending = list(base.__subclasses__())
    while pending:
        cls = pending.pop()
        field = cls.model_fields.get("type")
        literal = field is not None and get_origin(field.annotation) is Literal
        if literal and raw.get("type") in get_args(field.annotation):
            return cls
        pending += cls.__subclasses__()
    return base


def _user_values(cls: type[BaseModel], raw: dict[str, Any], fail: Fail, prefix: Location = ()) -> dict[str, Any]:
    """``raw`` with its path fields expanded; what pydantic would read wrongly refused first.

    Pydantic reads ``true`` as the number 1 and ``.nan`` as a float, and ``""`` as the path
    ``.`` (the pipeline's own folder); none of them is what the user meant.
    """
    values = dict(raw)
    for name, info in cls.model_fields.items():
        value = raw.get(name)
        if value is None:
            continue
        location = prefix + (name,)
        label = ".".join(str(part) for part in location)
        path, text, number, models = _field_kinds(info.annotation)
        items = value if isinstance(value, list) else [value]
        if path or (text and name in PATH_OR_NAME):
            expanded = [_expanded(item, location, label, fail) for item in items]
            values[name] = expanded if isinstance(value, list) else expanded[0]
            problem = spec_problem(value) if name == "model" and isinstance(value, str) else None
            if problem:
                raise fail(location, f"field '{label}': {problem}")
        if number:
            for item in items:
                _check_number(item, location, label, fail)
        for model in models:
            if isinstance(value, dict):
                values[name] = _user_values(_chosen_class(model, value), value, fail, location)
    return values


def _expanded(value: Any, location: Location, label: str, fail: Fail) -> Any:
    if not isinstance(value, str):
        return value  # not text: pydantic names the wrong type
    if not value.strip():
        raise fail(location, f"field '{label}' is empty")
    try:
        return expand_path(value)
    except ValueError as exc:
        raise fail(location, f"field '{label}': {shown(value)}: {exc}") from None


def _check_number(value: Any, location: Location, label: str, fail: Fail) -> None:
    if isinstance(value, bool):
        raise fail(location, f"field '{label}': {str(value).lower()} is a boolean, not a number")
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return  # pydantic says it is not a number
    if isinstance(number, float) and not math.isfinite(number):
        raise fail(location, f"field '{label}': {shown(value)} is not a finite number")


def _stage_class(raw: dict[str, Any], label: str, fail) -> type[StageConfig]:
    kind = raw.get("type")
    if kind is None:
        raise fail(("type",), f"{label}: missing required field 'type' (one of {', '.join(STAGES)})")
    entry = STAGES.get(kind) if isinstance(kind, str) else None
    if entry is None:
        raise fail(("type",), f"{label}: unknown stage type {kind!r}; known: {', '.join(STAGES)}")
    if isinstance(entry, dict):
        method = raw.get("method")
        if not isinstance(method, str) or method not in entry:
            known = ", ".join(entry)
            what = "missing field 'method'" if method is None else f"unknown method {method!r}"
            raise fail(("method",), f"{label}: {what} for a '{kind}' stage; known: {known}")
        return entry[method]
    return entry


def load_pipeline(path: str | Path) -> Pipeline:
    """Read, validate and wire a pipeline file, or raise one ``UserError`` line."""
    path = Path(path)
    load_plugins()
    data, lines = load_yaml(path)
    if not isinstance(data, dict):
        raise UserError(f"{where(path, 1)}: a pipeline file is a mapping with name, dataset, stages")
    data = _user_values(PipelineFile, data, lambda loc, msg: _fail(path, lines, loc, msg))
    try:
        top = PipelineFile.model_validate(data)
    except ValidationError as exc:
        error = _first_error(exc)
        raise _fail(path, lines, tuple(error["loc"]), _describe(error, PipelineFile)) from None
    base = path.resolve().parent
    stages: list[StageConfig] = []
    for index, raw in enumerate(top.stages):
        label = f"stage {shown(str(raw.get('name', index)), 40)} (stages[{index}])"

        def fail(loc: Location, message: str, _i: int = index) -> UserError:
            return _fail(path, lines, ("stages", _i) + loc, message)

        cls = _stage_class(raw, label, fail)
        raw = _user_values(cls, raw, lambda loc, msg, _label=label, _fail=fail: _fail(loc, f"{_label}: {msg}"))
        try:
            stages.append(cls.model_validate(raw, context={"base_dir": base}))
        except ValidationError as exc:
            error = _first_error(exc)
            raise fail(tuple(error["loc"]), f"{label}: {_describe(error, cls)}") from None
    if not stages:
        raise _fail(path, lines, ("stages",), "the pipeline has no stages")
    inputs = _wire(stages, lambda i, loc, msg: _fail(path, lines, ("stages", i) + loc, msg),
                   lambda i: line_of(lines, ("stages", i, "name")))
    _check_metric_keys(stages, inputs, lambda i, loc, msg: _fail(path, lines, ("stages", i) + loc, msg))
    dataset = (top.dataset or DatasetConfig()).resolved(base)
    _check_dataset(dataset, stages, lambda loc, msg: _fail(path, lines, loc, msg))
    output = base / (top.output if top.output is not None else Path("runs") / top.name)
    cache = (base / top.cache).resolve() if top.cache is not None else None
    for field, folder in (("output", output), ("cache", cache)):
        blocker = folder if folder is not None and folder.exists() and not folder.is_dir() else (
            file_above(folder) if folder is not None else None)
        if blocker is not None:
            raise _fail(path, lines, (field,), f"field '{field}': {blocker.resolve()} is a file, not a folder")
    return Pipeline(
        name=top.name,
        source=path,
        dataset=dataset,
        output=output.resolve(),
        cache=cache,
        executor=top.executor,
        stages=stages,
        inputs=inputs,
    )


def _wire(stages: list[StageConfig], fail, line: Callable[[int], int | None] = lambda index: None
          ) -> dict[str, list[str]]:
    """Resolve each stage's inputs; only earlier stages can be named, so there are no cycles.

    Names are checked here too: a stage's name is the stem of its output files, so two names
    that differ only in case are one file on macOS and Windows, and a name must be a file
    name on every system.
    """
    position: dict[str, int] = {}
    folded: dict[str, int] = {}
    inputs: dict[str, list[str]] = {}
    for index, stage in enumerate(stages):
        label = f"stage {shown(stage.name, 40)}"
        if stage.name in position:
            raise fail(index, ("name",), f"{label}: the name is already used by stages[{position[stage.name]}]")
        other = folded.get(stage.name.casefold())
        if other is not None:
            at = f"line {line(other)}" if line(other) is not None else f"stages[{other}]"
            raise fail(index, ("name",), f"{label}: the name differs only in case from stage '{stages[other].name}' "
                                         f"({at}); on a case-insensitive file system (macOS, Windows) their output "
                                         "files are the same files")
        problem = unportable(stage.name)
        if problem:
            raise fail(index, ("name",), f"{label}: field 'name': the stem of its output files {problem}")
        folded[stage.name.casefold()] = index
        named = stage.input_names()
        if named == [] and stage.reads != "none":
            raise fail(index, ("inputs",), f"{label}: field 'inputs' is empty; name the stages it reads, "
                                           "or leave it out to read the stage before it")
        field = "input" if stage.input is not None else "inputs"
        if stage.reads == "none":
            chosen: list[str] = []
        elif named is None:
            runs_before = [s.name for s in stages[:index] if s.produces == "run"]
            if not runs_before:
                raise fail(index, ("type",), f"{label}: needs an input run, but no stage before it makes one")
            chosen = [runs_before[-1]]
        else:
            chosen = named
            for name in named:
                if name == stage.name:
                    raise fail(index, (field,), f"{label}: field '{field}': a stage cannot read itself")
                if name not in position:
                    later = any(s.name == name for s in stages)
                    why = "comes later (stages run in order)" if later else "does not exist"
                    raise fail(index, (field,), f"{label}: field '{field}': stage '{name}' {why}")
                if stages[position[name]].produces != "run":
                    raise fail(index, (field,), f"{label}: field '{field}': stage '{name}' makes no run")
            if len(set(named)) != len(named):
                raise fail(index, (field,), f"{label}: field '{field}': a stage is named twice")
        position[stage.name] = index
        inputs[stage.name] = chosen
    return inputs


def _check_metric_keys(stages: list[StageConfig], inputs: dict[str, list[str]], fail) -> None:
    """Refuse a run's metric that two evaluate stages would both write into ``metrics.json``.

    ``metrics.json`` keeps one value per run and metric, so the second would overwrite the
    first (with other qrels or another relevance level, a different number under the same name).
    """
    first: dict[tuple[str, str], int] = {}
    for index, stage in enumerate(stages):
        if stage.produces != "metrics":
            continue
        for metric in getattr(stage, "metrics", []):
            for run in inputs[stage.name]:
                earlier = first.setdefault((run, metric), index)
                if earlier != index:
                    raise fail(index, ("metrics",), f"stage '{stage.name}': field 'metrics': {metric} of run "
                                                    f"'{run}' is already evaluated by stage '{stages[earlier].name}'; "
                                                    "metrics.json holds one value per run and metric")


def _check_dataset(dataset: DatasetConfig, stages: list[StageConfig], fail) -> None:
    """Every part a stage needs is configured, and every configured file exists.

    A BRIGHT folder is checked for the tables of its domain (not their columns: reading them
    is ``check_inputs``' job, before any stage computes).
    """
    for index, stage in enumerate(stages):
        for part in sorted(stage.dataset_parts()):
            if not dataset.sets(part):
                raise fail(("stages", index, "type"), f"stage '{stage.name}' needs dataset.{part}, which is not set")
    if dataset.bright is not None:
        try:
            locate(dataset.bright, dataset.domain or "", dataset.documents)
        except LayoutError as exc:
            raise fail(("dataset", exc.field), f"dataset.{exc.field}: {exc}") from None
    elif dataset.irds is None:
        for part in ("corpus", "queries", "qrels"):
            path = getattr(dataset, part)
            problem = None if path is None else file_problem(path, part)
            if problem is not None:  # missing, or a FIFO, device, folder, link loop: say which
                detail = f"file not found: {path}" if not os.path.lexists(path) else problem
                raise fail(("dataset", part), f"dataset.{part}: {detail}")
