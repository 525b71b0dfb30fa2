"""The pipeline YAML: validated completely before any stage runs.

Every problem becomes one ``UserError`` line naming the file, the line, the stage and the
field, e.g. ``p.yaml:7: stage 'bm25' (stages[0]): field 'k': Input should be a valid integer``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from rerankcli.core.dataset import DatasetConfig
from rerankcli.core.errors import UserError, where
from rerankcli.core.stage import StageConfig, file_name
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
        return file_name(value, "pipeline")


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
    try:
        top = PipelineFile.model_validate(data)
    except ValidationError as exc:
        error = _first_error(exc)
        raise _fail(path, lines, tuple(error["loc"]), _describe(error, PipelineFile)) from None
    base = path.resolve().parent
    stages: list[StageConfig] = []
    for index, raw in enumerate(top.stages):
        label = f"stage '{raw.get('name', index)}' (stages[{index}])"

        def fail(loc: Location, message: str, _i: int = index) -> UserError:
            return _fail(path, lines, ("stages", _i) + loc, message)

        cls = _stage_class(raw, label, fail)
        try:
            stages.append(cls.model_validate(raw, context={"base_dir": base}))
        except ValidationError as exc:
            error = _first_error(exc)
            raise fail(tuple(error["loc"]), f"{label}: {_describe(error, cls)}") from None
    if not stages:
        raise _fail(path, lines, ("stages",), "the pipeline has no stages")
    inputs = _wire(stages, lambda i, loc, msg: _fail(path, lines, ("stages", i) + loc, msg))
    dataset = (top.dataset or DatasetConfig()).resolved(base)
    _check_dataset(dataset, stages, lambda loc, msg: _fail(path, lines, loc, msg))
    output = base / (top.output if top.output is not None else Path("runs") / top.name)
    cache = (base / top.cache).resolve() if top.cache is not None else None
    for field, folder in (("output", output), ("cache", cache)):
        if folder is not None and folder.exists() and not folder.is_dir():
            raise _fail(path, lines, (field,), f"field '{field}': {folder.resolve()} is a file, not a folder")
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


def _wire(stages: list[StageConfig], fail) -> dict[str, list[str]]:
    """Resolve each stage's inputs; only earlier stages can be named, so there are no cycles."""
    position: dict[str, int] = {}
    inputs: dict[str, list[str]] = {}
    for index, stage in enumerate(stages):
        label = f"stage '{stage.name}'"
        if stage.name in position:
            raise fail(index, ("name",), f"{label}: the name is already used by stages[{position[stage.name]}]")
        named = stage.input_names()
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


def _check_dataset(dataset: DatasetConfig, stages: list[StageConfig], fail) -> None:
    """Every part a stage needs is configured, and every configured file exists."""
    for index, stage in enumerate(stages):
        for part in sorted(stage.dataset_parts()):
            if dataset.irds is None and getattr(dataset, part) is None:
                raise fail(("stages", index, "type"), f"stage '{stage.name}' needs dataset.{part}, which is not set")
    if dataset.irds is None:
        for part in ("corpus", "queries", "qrels"):
            path = getattr(dataset, part)
            if path is not None and not path.is_file():
                raise fail(("dataset", part), f"dataset.{part}: file not found: {path}")
