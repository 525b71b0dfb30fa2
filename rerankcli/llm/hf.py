"""transformers backend: every request kind, on CPU or GPU, batched with padding by length.

Forward-only requests (``NextToken``, ``Continuation``) run left-padded with explicit position
ids, so a padded row computes what it would alone, and only the last positions' logits are
projected onto the vocabulary (Gemma's vocabulary is 262k: full logits would not fit).
``Attention`` runs the shared prefixes of a batch of requests once (left-padded), then all their
probes in one pass on that KV cache, and computes softmax(QKᵀ) only for the probes' rows,
through an attention function registered with transformers (``attention_rows.py``): no forked
modeling code, any decoder-only model.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from rerankcli.core.checks import Check
from rerankcli.core.errors import UserError
from rerankcli.llm.backend import Backend, BackendConfig
from rerankcli.llm.render import Renderer
from rerankcli.llm.requests import (
    Attention,
    AttentionMass,
    Continuation,
    ContinuationLogprobs,
    Generate,
    Generated,
    NextToken,
    Request,
    Response,
    TokenLogprobs,
)

DEFAULT_MAX_LENGTH = 8192  # when the model's context is longer: memory on a CPU is finite


class HFConfig(BackendConfig):
    type: Literal["hf"] = Field("hf", description="hf: transformers in this process")
    device: str = Field("auto", description="auto (cuda when available), cpu, cuda, cuda:1, mps")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on a GPU that has it, else float32")
    batch_size: int = Field(8, gt=0, description="requests per forward pass")
    max_batch_tokens: int = Field(16384, gt=0, description="padded tokens per forward pass, at most")
    attn_implementation: str | None = Field(None, description="eager, sdpa, flash_attention_2 (default: transformers')")
    trust_remote_code: bool = Field(False, description="run code shipped with the model (only models you trust)")

    operational: ClassVar[frozenset[str]] = frozenset({"device", "batch_size", "max_batch_tokens"})


class HFBackend(Backend):
    name = "hf"
    config_class = HFConfig
    answers = frozenset({Generate, NextToken, Continuation, Attention})
    libraries = ("transformers", "tokenizers", "torch")
    summary = "transformers in this process: every request kind (attention too), CPU or GPU"

    def __init__(self, config: HFConfig, folder: Any, log: Callable[[str], None] = print) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise UserError(f"backend hf needs torch and transformers ({exc.name} missing): "
                            "pip install 'rerankcli[llm]'") from None
        self.torch = torch
        self.config = config
        self.batch_size = config.batch_size
        self.device = _device(torch, config.device)
        dtype = _dtype(torch, config.dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=config.trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=dtype, attn_implementation=config.attn_implementation,
            trust_remote_code=config.trust_remote_code).to(self.device).eval()
        self.pad_id = _pad_id(self.tokenizer)
        context = getattr(self.model.config, "max_position_embeddings", None)
        self.renderer = Renderer(self.tokenizer, config.max_length or _capped(context), config.chat)
        log(f"hf: {type(self.model).__name__} on {self.device}, {dtype}, "
            f"max_length {self.renderer.max_length}, chat template {'on' if self.renderer.chat else 'off'}")

    # -- self-description ---------------------------------------------------------------------
    @classmethod
    def context_length(cls, config: BackendConfig, folder: Path, tokenizer: Any) -> int:
        from rerankcli.llm.backend import model_context

        return config.max_length or _capped(model_context(folder, config))

    @classmethod
    def describe(cls, config: BackendConfig) -> str:
        assert isinstance(config, HFConfig)
        device = config.device
        if device == "auto":
            import torch

            device = f"auto: {'cuda' if torch.cuda.is_available() else 'cpu'} here"
        return f"hf on {device}, dtype {config.dtype}, batch {config.batch_size}"

    @classmethod
    def check(cls) -> Check:
        """transformers and torch import; GGUF models also need gguf and accelerate."""
        found = super().check()
        if not found.ok:
            return Check(cls.name, False, f"{found.detail} (pip install 'rerankcli[llm]')")
        try:
            import torch
            import transformers  # noqa: F401  (a torchvision built for another torch breaks this)
        except Exception as exc:  # a broken install raises all sorts of errors
            return Check(cls.name, False, f"transformers does not import ({type(exc).__name__}: {exc})")
        from rerankcli.core.versions import versions

        device = f"CUDA: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU only"
        notes = [f"GGUF models need {name} (pip install {name})"
                 for name, version in versions("gguf", "accelerate").items()
                 if name != "python" and version == "absent"]
        return Check(cls.name, True, f"transformers {transformers.__version__}, torch {torch.__version__}, "
                                     f"{device}", notes)

    # -- dispatch ---------------------------------------------------------------------------
    def _answer(self, requests: list[Request]) -> list[Response]:
        by_kind: dict[type, list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            by_kind[type(request)].append(i)
        out: list[Response | None] = [None] * len(requests)
        handlers = {NextToken: self._next_token, Continuation: self._continuation,
                    Generate: self._generate, Attention: self._attention}
        with self.torch.inference_mode():
            for kind, indices in by_kind.items():
                for i, response in zip(indices, handlers[kind]([requests[i] for i in indices])):
                    out[i] = response
        return out  # type: ignore[return-value]

    # -- forward-only requests ----------------------------------------------------------------
    def _next_token(self, requests: list[NextToken]) -> list[Response]:
        encoded = [self.renderer.encode_request(r) for r in requests]
        rows = self._score([x.ids for x in encoded], [1] * len(requests))
        return [TokenLogprobs(x.prompt_tokens, x.truncated,
                              {c: float(row[0][t]) for c, t in zip(r.candidates, x.targets)})
                for r, x, row in zip(requests, encoded, rows)]

    def _continuation(self, requests: list[Continuation]) -> list[Response]:
        encoded = [self.renderer.encode_request(r) for r in requests]
        rows = self._score([x.ids for x in encoded], [len(x.targets) + 1 for x in encoded])
        out = []
        for x, row in zip(encoded, rows):
            # row[j] predicts the token after position -(len(targets)+1)+j
            logprobs = tuple(float(row[j][token]) for j, token in enumerate(x.targets))
            out.append(ContinuationLogprobs(x.prompt_tokens, x.truncated, logprobs))
        return out

    def _score(self, sequences: list[list[int]], keep: list[int]) -> list[Any]:
        """Log-softmax over the vocabulary at the last ``keep[i]`` positions of each sequence."""
        torch = self.torch
        results: list[Any] = [None] * len(sequences)
        for batch in self._buckets(sequences):
            width = max(len(sequences[i]) for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, width - len(sequences[i]):] = torch.tensor(sequences[i])
                mask[row, width - len(sequences[i]):] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            last = max(keep[i] for i in batch)
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                position_ids=positions.to(self.device), logits_to_keep=last,
                                use_cache=False).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
            for row, i in enumerate(batch):
                # drop the final position (it predicts past the sequence) and keep what was asked
                results[i] = logprobs[row, last - keep[i]:][: keep[i] - 1] if keep[i] > 1 else logprobs[row, -1:]
        return results

    def _buckets(self, sequences: list[list[int]]) -> list[list[int]]:
        """Indices grouped by length (sorted) so padding is small; bounded by batch size and tokens."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        batches, current = [], []
        for i in order:
            width = len(sequences[i])
            if current and (len(current) >= self.batch_size or
                            width * (len(current) + 1) > self.config.max_batch_tokens):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    # -- generation ---------------------------------------------------------------------------
    def _generate(self, requests: list[Generate]) -> list[Response]:
        """Greedy requests in padded batches (grouped by length limit and stop strings), which
        end at their first stop string; sampled ones one at a time, each seeded by its request,
        so an answer never depends on the batch it came in."""
        rendered = [self.renderer.encode_request(r) for r in requests]
        out: list[Response | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            groups[(r.max_new_tokens, r.stop) if r.temperature == 0 else ("sampled", i)].append(i)
        for members in groups.values():
            buckets = self._buckets([rendered[i].ids for i in members]) if len(members) > 1 else [[0]]
            for bucket in buckets:
                batch = [members[j] for j in bucket]
                rows = self._generate_batch([rendered[i].ids for i in batch], requests[batch[0]])
                for i, new in zip(batch, rows):
                    text, stopped_by = _cut_at_stop(self.tokenizer.decode(new, skip_special_tokens=True),
                                                    requests[i].stop)
                    out[i] = Generated(rendered[i].prompt_tokens, rendered[i].truncated, text, len(new), stopped_by)
        return out  # type: ignore[return-value]

    def _generate_batch(self, sequences: list[list[int]], request: Generate) -> list[list[int]]:
        """The new tokens of each left-padded sequence, up to its end or first stop string."""
        torch = self.torch
        width = max(len(ids) for ids in sequences)
        ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            ids[row, width - len(sequence):] = torch.tensor(sequence)
            mask[row, width - len(sequence):] = 1
        options: dict[str, Any] = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        if request.temperature > 0:
            torch.manual_seed(request.seed)
            options = {"do_sample": True, "temperature": request.temperature, "top_p": 1.0, "top_k": 0}
        if request.stop:
            options["stopping_criteria"] = [_StopInNewText(self.tokenizer, request.stop, width, torch)]
        generated = self.model.generate(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
            max_new_tokens=request.max_new_tokens, pad_token_id=self.pad_id, **options)
        return [_until_eos(generated[row, width:].tolist(), self.model.generation_config, self.pad_id)
                for row in range(len(sequences))]

    # -- attention ----------------------------------------------------------------------------
    def _attention(self, requests: list[Attention]) -> list[Response]:
        """Prefixes of up to ``batch_size`` requests in one left-padded pass; then every probe of
        those requests in one pass on the prefixes' KV cache, recording only the probes' rows."""
        layers_total = self.model.config.get_text_config().num_hidden_layers
        rendered = []
        for request in requests:
            layers = set(request.layers) if request.layers is not None else set(range(layers_total))
            if not layers <= set(range(layers_total)):
                raise UserError(f"layers {sorted(layers)}: the model has {layers_total} (0..{layers_total - 1})")
            probes = self.renderer.render_probes(request.prompt, request.probes, reserve=0)
            if not all(probes.probe_rows):
                raise UserError("an attention probe is empty in model tokens")
            rendered.append((frozenset(layers), probes))
        out: list[Response | None] = [None] * len(requests)
        by_layers: dict[frozenset[int], list[int]] = defaultdict(list)
        for i, (layers, _) in enumerate(rendered):
            by_layers[layers].append(i)
        for layers, indices in by_layers.items():
            prefixes = [rendered[i][1].prefix.ids for i in indices]
            for batch in self._buckets(prefixes):
                group = [indices[j] for j in batch]
                for i, received in zip(group, self._attention_batch([rendered[i][1] for i in group], layers)):
                    probes = rendered[i][1]
                    tokens = len(probes.prefix.ids) + max(len(s) for s in probes.suffixes)
                    out[i] = AttentionMass(tokens, probes.prefix.truncated, received, probes.prefix.spans)
        return out  # type: ignore[return-value]

    def _attention_batch(self, rendered: list[Any], layers: frozenset[int]) -> list[tuple[tuple[float, ...], ...]]:
        from rerankcli.llm.attention_rows import recording, use_row_attention

        torch, device = self.torch, self.device
        lengths = [len(r.prefix.ids) for r in rendered]
        width = max(lengths)
        ids = torch.full((len(rendered), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rendered), width), dtype=torch.long)
        for row, r in enumerate(rendered):
            ids[row, width - lengths[row]:] = torch.tensor(r.prefix.ids)
            mask[row, width - lengths[row]:] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # every (request, probe) pair is one row of the second pass, on its request's cache
        items = [(row, k) for row, r in enumerate(rendered) for k in range(len(r.suffixes))]
        suffixes = [rendered[row].suffixes[k] for row, k in items]
        tail = max(len(s) for s in suffixes)
        tail_ids = torch.full((len(items), tail), self.pad_id, dtype=torch.long)
        tail_mask = torch.zeros((len(items), tail), dtype=torch.long)
        for n, suffix in enumerate(suffixes):
            tail_ids[n, : len(suffix)] = torch.tensor(suffix)
            tail_mask[n, : len(suffix)] = 1
        owner = torch.tensor([row for row, _ in items])
        tail_positions = torch.tensor([lengths[row] for row, _ in items])[:, None] + torch.arange(tail)[None, :]
        with use_row_attention(self.model):
            cache = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                               position_ids=positions.to(device), use_cache=True).past_key_values
            cache.reorder_cache(owner.to(device))
            rows = [rendered[row].probe_rows[k] for row, k in items]  # positions in the tail
            with recording(rows, set(layers)) as record:
                self.model(input_ids=tail_ids.to(device),
                           attention_mask=torch.cat([mask[owner], tail_mask], dim=1).to(device),
                           position_ids=tail_positions.to(device), past_key_values=cache, use_cache=True)
            total = record.total()  # [items, keys], keys right-aligned on the last tail position
        received: list[list[tuple[float, ...]]] = [[] for _ in rendered]
        for n, (row, _) in enumerate(items):
            start = total.shape[-1] - tail - lengths[row]
            received[row].append(tuple(total[n, start: start + lengths[row]].tolist()))
        return [tuple(r) for r in received]

    def close(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()


def _capped(context: int | None) -> int:
    """The model's context, at most ``DEFAULT_MAX_LENGTH``: memory on a CPU is finite."""
    return min(context or DEFAULT_MAX_LENGTH, DEFAULT_MAX_LENGTH)


def _device(torch: Any, wanted: str) -> str:
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {wanted}: no CUDA device is visible (torch {torch.__version__})")
    return wanted


def _dtype(torch: Any, wanted: str, device: str) -> Any:
    if wanted == "auto":
        gpu_bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if gpu_bf16 else torch.float32
    return getattr(torch, wanted)


def _pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def _until_eos(tokens: list[int], generation_config: Any, pad_id: int) -> list[int]:
    eos = generation_config.eos_token_id
    stops = set(eos if isinstance(eos, list) else [eos] if eos is not None else []) | {pad_id}
    for n, token in enumerate(tokens):
        if token in stops:
            return tokens[:n]
    return tokens


class _StopInNewText:
    """Ends a row once its *generated* text contains a stop string.

    transformers' own ``stop_strings`` also match across the prompt's end ("Answer:" then "::"
    matches ":::"), which vLLM and OpenAI-compatible servers never do; this looks only at the
    new tokens, decoding just their tail at each step.
    """

    def __init__(self, tokenizer: Any, stops: tuple[str, ...], width: int, torch: Any) -> None:
        self.tokenizer, self.stops, self.width, self.torch = tokenizer, stops, width, torch
        self.tail = 4 * max(len(stop) for stop in stops) + 4  # tokens enough to hold any stop string

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        start = max(self.width, input_ids.shape[1] - self.tail)  # the tail only: a long budget costs no more
        done = []
        for row in input_ids[:, start:].tolist():
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            done.append(any(stop in text for stop in self.stops))
        return self.torch.tensor(done, dtype=self.torch.bool, device=input_ids.device)


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, str | None]:
    """The text before its first stop string, and that string (None if none occurs)."""
    found = [(text.find(s), s) for s in stops if s in text]
    if not found:
        return text, None
    cut, stop = min(found)
    return text[:cut], stop
