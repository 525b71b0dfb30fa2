"""Attention weights of a few query rows, read from any transformers model without forking it.

transformers lets a program register its own attention function by name. Ours returns what
SDPA returns (so the model's outputs are unchanged) and, while a recording is active, also
computes softmax(QKᵀ·scale + mask) for the requested rows only, in float32, summed over heads:
O(rows × keys) memory per layer instead of the O(keys²) that ``output_attentions`` needs.
The mask comes from transformers' eager mask function, so padding and sliding-window layers
(Gemma 3) mask exactly as the model does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

NAME = "rerankcli_rows"
_active: list[Recording] = []


class Recording:
    def __init__(self, rows: list[int], layers: set[int]) -> None:
        self.rows = rows
        self.layers = layers
        self.sums: Any = None

    def add(self, received: Any) -> None:
        self.sums = received if self.sums is None else self.sums + received

    def total(self) -> Any:
        """Attention received by each key position, summed over layers and heads, mean over rows."""
        if self.sums is None:
            raise RuntimeError("no attention was recorded (is the model's attention pluggable?)")
        return self.sums.cpu()


@contextlib.contextmanager
def recording(rows: list[int], layers: set[int]) -> Iterator[Recording]:
    record = Recording(rows, layers)
    _active.append(record)
    try:
        yield record
    finally:
        _active.pop()


def _rows_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                    scaling: float | None = None, dropout: float = 0.0, **kwargs: Any) -> Any:
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    output = sdpa_attention_forward(module, query, key, value, attention_mask,
                                    scaling=scaling, dropout=dropout, **kwargs)
    record = _active[-1] if _active else None
    if record is not None and getattr(module, "layer_idx", None) in record.layers:
        rows = torch.tensor(record.rows, device=query.device)
        q = query.index_select(2, rows).float()
        k = repeat_kv(key, query.shape[1] // key.shape[1]).float()
        scale = scaling if scaling is not None else q.shape[-1] ** -0.5
        scores = q @ k.transpose(-1, -2) * scale
        softcap = kwargs.get("softcap")
        if softcap:
            scores = torch.tanh(scores / softcap) * softcap
        if attention_mask is not None:
            mask = attention_mask[:, :, :, : k.shape[-2]].index_select(2, rows)
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
        else:  # causal, query rows are the last positions of the keys
            offset = k.shape[-2] - query.shape[2]
            allowed = torch.arange(k.shape[-2], device=q.device)[None, :] <= (rows[:, None] + offset)
            scores = scores.masked_fill(~allowed, float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # [batch, heads, rows, keys]
        record.add(weights.sum(dim=1).mean(dim=1)[0])
    return output


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, _rows_attention)
    AttentionMaskInterface.register(NAME, eager_mask)


@contextlib.contextmanager
def use_row_attention(model: Any) -> Iterator[None]:
    """Switch ``model`` to the row-recording attention for the duration, then back."""
    _register()
    before = model.config._attn_implementation
    model.set_attn_implementation(NAME)
    try:
        yield
    finally:
        model.set_attn_implementation(before)
