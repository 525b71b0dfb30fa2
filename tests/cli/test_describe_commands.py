"""``rerank methods`` and ``rerank schema``, run as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from tests.cli.test_cli_light import imported_after
from tests.conftest import assert_user_error


def test_methods_lists_stages_methods_and_backends(rerank) -> None:
    result = rerank("methods")
    assert result.code == 0, result.err
    names = [line.split()[0] for line in result.out.splitlines() if line.startswith("  ")]
    assert {"bm25", "dense", "listwise", "pairwise", "icr", "fuse", "load", "evaluate", "hf", "vllm"} <= set(names)


def test_methods_json_lists_each_with_its_summary(rerank) -> None:
    result = rerank("methods", "--format", "json")
    entries = {entry["name"]: entry for entry in json.loads(result.out)}
    assert entries["listwise"]["yaml"] == "type: rerank, method: listwise"
    assert all(entry["summary"] for entry in entries.values())


def test_methods_listwise_shows_window_its_default_and_description(rerank) -> None:
    result = rerank("methods", "listwise")
    assert result.code == 0, result.err
    window = next(line.split(None, 3) for line in result.out.splitlines() if line.startswith("window "))
    assert window == ["window", "int", "20", "candidates per prompt (sliding, first, tdpart)"]


def test_methods_hf_shows_the_backend_fields(rerank) -> None:
    result = rerank("methods", "hf")
    assert result.code == 0, result.err
    assert "backend: hf" in result.out
    assert any(line.split()[:3] == ["batch_size", "int", "8"] for line in result.out.splitlines())


def test_methods_of_an_unknown_name_is_one_error_line(rerank) -> None:
    assert_user_error(rerank("methods", "nope"), "'nope'", "known: ", "listwise", "hf")


def test_schema_prints_a_json_schema(rerank) -> None:
    result = rerank("schema")
    assert result.code == 0, result.err
    jsonschema.Draft202012Validator.check_schema(json.loads(result.out))


def test_schema_output_option_writes_the_same_schema(rerank, tmp_path: Path) -> None:
    target = tmp_path / "pipeline.schema.json"
    result = rerank("schema", "-o", target)
    assert result.code == 0, result.err
    assert result.out == ""
    assert json.loads(target.read_text()) == json.loads(rerank("schema").out)


def test_the_schema_imports_nothing_heavy() -> None:
    assert imported_after("from rerankcli.pipeline.describe import pipeline_schema; pipeline_schema()") == set()
