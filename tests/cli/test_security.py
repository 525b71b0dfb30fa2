"""Security: pipelines construct no objects, models run no code of their own unless trusted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import DEMO, assert_user_error, snapshot

CUSTOM_CODE = '''"""A model with code of its own: importing it leaves a marker file."""
import os
import pathlib

from transformers import LlamaConfig, LlamaForCausalLM

pathlib.Path(os.environ["MARKER"]).write_text("custom code ran")


class MarkedConfig(LlamaConfig):
    model_type = "marked_llama"


class MarkedForCausalLM(LlamaForCausalLM):
    config_class = MarkedConfig
'''


def test_a_python_tag_is_never_constructed(rerank, tmp_path: Path) -> None:
    marker = tmp_path / "constructed"
    path = tmp_path / "p.yaml"
    path.write_text(f"name: x\nstages:\n  - !!python/object/apply:os.system ['touch {marker}']\n")
    assert_user_error(rerank("run", path), f"{path}:3:", "is not allowed")
    assert not marker.exists()


def test_every_trust_remote_code_switch_defaults_to_off() -> None:
    from rerankcli.llm.registry import BACKENDS
    from rerankcli.pipeline.registry import STAGES

    classes = [c for entry in STAGES.values() for c in (entry.values() if isinstance(entry, dict) else [entry])]
    classes += [backend.config_class for backend in BACKENDS.values()]
    switches = [c for c in classes if "trust_remote_code" in c.model_fields]
    assert len(switches) >= 4  # dense, cross-encoder, hf, vllm
    assert all(c.model_fields["trust_remote_code"].default is False for c in switches)


@pytest.fixture
def custom_code_model(tiny_llama: Path, tmp_path: Path) -> Path:
    """The tiny Llama, declared as a custom architecture whose code is in the folder (auto_map)."""
    folder = tmp_path / "marked-model"
    shutil.copytree(tiny_llama, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="marked_llama", architectures=["MarkedForCausalLM"],
                  auto_map={"AutoConfig": "marked.MarkedConfig", "AutoModelForCausalLM": "marked.MarkedForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "marked.py").write_text(CUSTOM_CODE)
    return folder


def pointwise_pipeline(folder: Path, model: Path, backend: dict) -> Path:
    queries = (DEMO / "queries.tsv").read_text().splitlines(keepends=True)[:2]
    (folder / "queries.tsv").write_text("".join(queries))
    (folder / "p.yaml").write_text(json.dumps({
        "name": "trust", "output": "out",
        "dataset": {"corpus": str(DEMO / "corpus.jsonl"), "queries": "queries.tsv"},
        "stages": [{"name": "bm25", "type": "retrieve", "method": "bm25", "k": 3},
                   {"name": "yesno", "type": "rerank", "method": "yes-no", "model": str(model), "depth": 3,
                    "backend": backend}]}))
    return folder / "p.yaml"


def test_a_model_with_its_own_code_is_refused_before_anything_runs(rerank, custom_code_model, tmp_path) -> None:
    marker = tmp_path / "marker"
    pipeline = pointwise_pipeline(tmp_path, custom_code_model, {"type": "hf"})
    before = snapshot(tmp_path)
    result = rerank("run", pipeline, env={"MARKER": str(marker)})
    assert_user_error(result, "ships Python code of its own", "config.json auto_map", "trust_remote_code: true")
    assert not marker.exists()
    assert snapshot(tmp_path) == before


def test_trust_remote_code_runs_the_models_code(rerank, custom_code_model, tmp_path) -> None:
    marker = tmp_path / "marker"
    pipeline = pointwise_pipeline(tmp_path, custom_code_model, {"type": "hf", "trust_remote_code": True})
    result = rerank("run", pipeline, env={"MARKER": str(marker)})
    assert result.code == 0, result.err
    assert marker.read_text() == "custom code ran"
    assert len((tmp_path / "out" / "yesno.trec").read_text().splitlines()) == 6
