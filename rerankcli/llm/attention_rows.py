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
    """Rows to record for each sequence of the batch (positions in the current input)."""

    def __init__(self, rows: list[list[int]], layers: set[int]) -> None:
        self.rows = rows
        self.layers = layers
        self.sums: Any = None
        self._index: Any = None

    def index(self, device: Any) -> tuple[Any, Any]:
        """[batch, rows] positions (short lists padded by repeating their first row) and the
        weight of each, 1/len(rows) or 0 for padding, so a weighted sum is each sequence's mean."""
        if self._index is None:
            import torch

            width = max(len(r) for r in self.rows)
            index = torch.tensor([r + [r[0]] * (width - len(r)) for r in self.rows])
            weight = torch.tensor([[1.0 / len(r)] * len(r) + [0.0] * (width - len(r)) for r in self.rows])
            self._index = (index, weight)
        return self._index[0].to(device), self._index[1].to(device)

    def add(self, received: Any) -> None:
        """Add one layer's row; a sliding-window layer (Gemma 3) caches only the last keys.

        Every layer's keys end at the current token, so rows are aligned on the right and the
        positions a sliding layer no longer sees received nothing from it.
        """
        if self.sums is None:
            self.sums = received
            return
        import torch.nn.functional as F

        width = max(self.sums.shape[-1], received.shape[-1])
        self.sums = F.pad(self.sums, (width - self.sums.shape[-1], 0)) + F.pad(received, (width - received.shape[-1], 0))

    def total(self) -> Any:
        """[batch, keys]: attention each key received, summed over layers and heads, mean over rows."""
        if self.sums is None:
            raise RuntimeError("no attention was recorded (is the model's attention pluggable?)")
        return self.sums.cpu()


@contextlib.contextmanager
def recording(rows: list[list[int]], layers: set[int]) -> Iterator[Recording]:
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
        rows, weight = record.index(query.device)  # [batch, rows]
        batch, heads, _, dim = query.shape
        q = query.gather(2, rows[:, None, :, None].expand(batch, heads, rows.shape[1], dim)).float()
        k = repeat_kv(key, heads // key.shape[1]).float()
        scale = scaling if scaling is not None else dim ** -0.5
        scores = q @ k.transpose(-1, -2) * scale  # [batch, heads, rows, keys]
        softcap = kwargs.get("softcap")
        if softcap:
            scores = torch.tanh(scores / softcap) * softcap
        keys = k.shape[-2]
        if attention_mask is not None:
            mask = attention_mask[:, :, :, :keys]
            mask = mask.expand(batch, 1, mask.shape[2], keys).gather(2, rows[:, None, :, None].expand(batch, 1, rows.shape[1], keys))
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
        else:  # causal, no padding: the input's rows are the last positions of the keys
            offset = keys - query.shape[2]
            allowed = torch.arange(keys, device=q.device)[None, None, :] <= (rows[:, :, None] + offset)
            scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        weights = torch.softmax(scores, dim=-1).sum(dim=1)  # [batch, rows, keys], summed over heads
        record.add((weights * weight[:, :, None]).sum(dim=1))
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
