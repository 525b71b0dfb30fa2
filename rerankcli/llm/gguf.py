"""GGUF models, converted once into a transformers folder that both hf and vLLM load.

transformers reads GGUF (with the ``gguf`` package) by dequantizing every tensor, which takes
half a minute even for a 135M model; the converted folder is cached as an artefact keyed on the
GGUF's content, so that cost is paid once. The weights are the dequantized values, stored in
float32 so nothing is rounded again; they are the quantized model's weights, never the hub's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from rerankcli.core.atomic import library_writes, write_text
from rerankcli.core.errors import UserError
from rerankcli.core.models import ResolvedModel, local_model_path
from rerankcli.core.store import Store


def hf_folder(model: ResolvedModel, store: Store, log: Callable[[str], None] = print) -> Path:
    """A folder transformers and vLLM can load: the model's own, or the GGUF converted."""
    if not model.gguf:
        return local_model_path(model)
    key = model.identity.replace("sha256:", "").replace("parts:", "parts-")
    final = store.artifact_dir("hf-from-gguf", key)
    if store.has_artifact("hf-from-gguf", key):
        return final
    log(f"converting GGUF {model.spec} for transformers (once; cached in {final})")
    staging = store.staging()
    try:
        with library_writes(staging):
            source = _single_file(model.gguf, staging)
            _convert(source, staging / "model")
        write_text(staging / "model" / "rerankcli-source.json", json.dumps(
            {"spec": model.spec, "gguf": [str(p) for p in model.gguf], "identity": model.identity}))
        if source.parent == staging:
            source.unlink()
        store.publish(staging / "model", final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _single_file(parts: tuple[Path, ...], staging: Path) -> Path:
    """The GGUF as one file: itself, or its parts joined (checked against a shipped SHA256SUMS)."""
    if len(parts) == 1:
        return parts[0]
    joined = staging / parts[0].name.split(".part")[0]
    digest = hashlib.sha256()
    with open(joined, "wb") as out:
        for part in parts:
            with open(part, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
                    out.write(block)
    expected = _published_sha256(parts, joined.name)
    if expected is not None and expected != digest.hexdigest():
        raise UserError(f"GGUF {joined.name}: joined parts do not match the published sha256 "
                        f"{expected[:12]}… (a part is damaged or missing)")
    return joined


def _published_sha256(parts: tuple[Path, ...], name: str) -> str | None:
    """The sha256 a SHA256SUMS file near the parts publishes for ``name``, if any."""
    for folder in {p.parent.parent for p in parts} | {p.parent for p in parts}:
        for sums in folder.parent.glob("*/data/SHA256SUMS"):
            for line in sums.read_text().splitlines():
                fields = line.split()
                if len(fields) == 2 and fields[1].lstrip("*") == name:
                    return fields[0]
    return None


def _convert(gguf: Path, target: Path) -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise UserError(f"GGUF models need transformers and torch ({exc.name} missing): "
                        "pip install 'rerankcli[llm]'") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as exc:
        raise UserError(f"reading GGUF needs the gguf and accelerate packages: {exc}") from None
    except (ValueError, KeyError, RuntimeError) as exc:
        raise UserError(f"GGUF {gguf.name}: transformers cannot load it: {exc}") from None
    # Saved as a plain float32 model: a quantizer left attached would make loaders expect GGUF.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
