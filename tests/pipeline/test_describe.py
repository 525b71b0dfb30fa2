"""Self-description: every stage and backend says what it is and what each field does, and the
pipeline JSON Schema accepts the shipped pipelines and refuses what the loader refuses."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, Field

from rerankcli.core.errors import UserError
from rerankcli.llm.registry import BACKENDS
from rerankcli.pipeline.describe import catalogue, describe, pipeline_schema
from rerankcli.pipeline.registry import STAGES, register_method, stage_classes
from rerankcli.rerank.listwise import ListwiseStage
from rerankcli.rerank.pointwise import YesNoStage
from tests.conftest import ROOT

PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))

MINIMAL = {
    "name": "p",
    "dataset": {"corpus": "c.jsonl", "queries": "q.tsv", "qrels": "r.txt"},
    "stages": [
        {"name": "bm25", "type": "retrieve", "method": "bm25", "k": 100},
        {"name": "ll", "type": "rerank", "method": "listwise", "model": "m", "backend": {"type": "vllm"}},
        {"name": "eval", "type": "evaluate", "inputs": ["bm25", "ll"]},
    ],
}


class Undescribed(YesNoStage):
    method: Literal["undescribed"] = Field(description="a method whose one new field lacks a description")
    loudness: int = 3


def configs() -> dict[str, type[BaseModel]]:
    """Every registered stage class and backend config, and the mappings their fields hold."""
    found: dict[str, type[BaseModel]] = {**stage_classes(),
                                         **{f"backend/{n}": b.config_class for n, b in BACKENDS.items()}}
    for label, cls in list(found.items()):
        for name, info in cls.model_fields.items():
            for inner in (info.annotation, *getattr(info.annotation, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    found.setdefault(f"{label}.{name}", inner)
    return found


def undescribed() -> list[str]:
    """``label.field`` of every field without a description, ``label`` of every class without a
    summary of its own (an inherited one would describe the parent)."""
    missing = [f"{label}.{name}" for label, cls in configs().items()
               for name, info in cls.model_fields.items() if not (info.description or "").strip()]
    summaries = {**stage_classes(), **{f"backend/{n}": b for n, b in BACKENDS.items()}}
    return missing + [label for label, cls in summaries.items() if not vars(cls).get("summary", "").strip()]


def validator() -> jsonschema.Draft202012Validator:
    schema = pipeline_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def with_stage(**fields) -> dict:
    pipeline = copy.deepcopy(MINIMAL)
    pipeline["stages"][1].update(fields)
    return pipeline


def test_every_stage_backend_and_field_is_described() -> None:
    assert undescribed() == []


def test_a_method_without_descriptions_is_caught(monkeypatch) -> None:
    monkeypatch.setitem(STAGES["rerank"], "undescribed", Undescribed)
    assert undescribed() == ["rerank/undescribed.loudness", "rerank/undescribed"]


@pytest.mark.parametrize("path", PIPELINES, ids=[p.stem for p in PIPELINES])
def test_shipped_pipeline_files_match_the_schema(path: Path) -> None:
    assert list(validator().iter_errors(yaml.safe_load(path.read_text()))) == []


def test_the_minimal_pipeline_matches_the_schema() -> None:
    """The pipeline the rejection tests below change is itself valid."""
    assert validator().is_valid(MINIMAL)


def test_the_schema_rejects_an_unknown_stage_field() -> None:
    assert not validator().is_valid(with_stage(windw=10))


def test_the_schema_rejects_an_unknown_method() -> None:
    assert not validator().is_valid(with_stage(method="listwize"))


def test_the_schema_rejects_a_wrongly_typed_field() -> None:
    assert not validator().is_valid(with_stage(window="many"))


def test_the_schema_takes_the_shorthands_the_loader_takes() -> None:
    """``dataset: irds:<id>``, ``rm3: true``, and a backend by name alone."""
    pipeline = with_stage(backend="vllm")
    pipeline["dataset"] = "irds:beir/scifact/test"
    pipeline["stages"][0].update(backend="pyserini", rm3=True)
    assert list(validator().iter_errors(pipeline)) == []


def test_the_schema_rejects_a_backend_field_of_another_backend() -> None:
    assert not validator().is_valid(with_stage(backend={"type": "vllm", "device": "cpu"}))


def test_the_schema_wants_a_backend_mapping_to_name_its_type() -> None:
    """As the loader does: ``{batch_size: 4}`` could be any backend's."""
    assert not validator().is_valid(with_stage(backend={"batch_size": 4}))


def test_a_method_registered_at_run_time_is_described(monkeypatch) -> None:
    """register_method, then: listed, described, and accepted by the schema (and only then)."""
    class Shouty(YesNoStage):
        method: Literal["shouty"] = Field(description="yes-no, in capitals")
        summary = "pointwise: P(YES), shouted"

    shouty = with_stage(method="shouty", yes="YES")
    assert not validator().is_valid(shouty)
    monkeypatch.setitem(STAGES, "rerank", dict(STAGES["rerank"]))  # the original is put back after the test
    register_method("rerank", "shouty", Shouty)
    assert ("shouty", "pointwise: P(YES), shouted") in [(e.name, e.summary) for e in catalogue("rerank")]
    assert "yes" in [row.name for row in describe("shouty").fields]
    assert validator().is_valid(shouty)


def test_describe_gives_type_default_and_description_of_a_field() -> None:
    window = next(row for row in describe("listwise").fields if row.name == "window")
    assert (window.type, window.default, window.shown_default) == ("int", 20, "20")
    assert window.description == ListwiseStage.model_fields["window"].description != ""


def test_describe_names_the_default_backend() -> None:
    backend = next(row for row in describe("yes-no").fields if row.name == "backend")
    assert (backend.default, backend.required) == ("hf", False)


def test_describe_of_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match="unknown .* 'nope'; known: .*listwise.*hf"):
        describe("nope")
