"""Turn a structured ``Prompt`` into model tokens: chat template, answer slot, truncation.

Truncation happens in model tokens and only inside ``Passage`` parts: the instruction, the
query and the template's suffix (the assistant turn where the answer goes) are never cut. When
a prompt is too long, every passage longer than a common cap is cut to that cap (the cap is
the largest that fits), so one long passage cannot crowd out the others.

A raw prompt (``Prompt.raw``: a trained reranker's exact input, e.g. Qwen3-Reranker's) gets no
chat frame and no special tokens added by the tokenizer: its text writes them out, and each
marker it writes (``<|im_start|>``, ``<think>``, ...) must be one token of this tokenizer, or
the prompt is refused rather than sent as the marker's pieces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rerankcli.core.errors import UserError
from rerankcli.llm.requests import Continuation, Generate, NextToken, Passage, Probe, Prompt, Request

_MARK = "\u2063RERANK-USER-CONTENT\u2063"
#: what a raw prompt's special tokens look like: ChatML-style markers. Thinking tags are left
#: out: a model without them as tokens (Rank1's Qwen2.5) reads them as the text it was trained on
_MARKER = re.compile(r"<\|[^|<>\s]+\|>")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class Rendered:
    ids: list[int]
    truncated: int = 0
    #: labelled passages -> [start, end) token positions in ``ids``
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: the common cap (tokens per passage) the prompt needed to fit; None when none was needed
    cap: int | None = None


@dataclass(frozen=True)
class Encoded:
    """A forward-only or generating request as the model sees it (every backend alike).

    ``ids`` is what goes to the model; ``prompt_tokens`` and ``truncated`` are what the
    response reports. ``targets`` are the token ids to read back: the candidates' single
    tokens (``NextToken``) or the continuation's tokens, appended to ``ids`` (``Continuation``).
    """

    ids: list[int]
    prompt_tokens: int
    truncated: int
    targets: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class RenderedProbes:
    """An ``Attention`` prompt: the shared prefix once, then one suffix per probe."""

    prefix: Rendered
    suffixes: list[list[int]]
    #: per probe, the positions (within its suffix) of the probe's own tokens
    probe_rows: list[list[int]]


class Renderer:
    """Renders prompts for one tokenizer; ``chat`` None means: use its chat template if any."""

    def __init__(self, tokenizer: Any, max_length: int, chat: bool | None = None) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if chat and not has_template:
            raise UserError("chat: true, but the model's tokenizer has no chat template")
        self.chat = has_template if chat is None else chat
        self._frame = self._template_frame()
        self._known_markers: set[str] = set()

    # -- public -------------------------------------------------------------------------
    def render(self, prompt: Prompt, reserve: int = 0) -> Rendered:
        """Token ids of ``prompt`` leaving ``reserve`` tokens of room (answer, continuation).

        A prompt with ``room`` (a reasoning call) is fitted without its answer prefix and with
        ``room`` tokens kept instead of ``reserve``: its think call and its answer call, whose
        prefix holds the reasoning, then cut every passage at the same place.
        """
        texts, cut, cap = self._fit(prompt, reserve, probe="")
        text, char_spans, _ = self._text(prompt, texts, probe="")
        ids, offsets = self._encode(text, special=self._special(prompt))
        if prompt.room is not None and len(ids) + reserve > self.max_length:
            raise UserError(f"the prompt with its reasoning ({len(ids)} tokens) leaves no room for the answer "
                            f"within max_length {self.max_length}; raise max_length or lower reasoning.max_tokens")
        return Rendered(ids, cut, _token_spans(char_spans, offsets), cap)

    def encode_request(self, request: Request) -> Encoded:
        """The tokens of a ``NextToken``, ``Continuation`` or ``Generate`` request, with room
        left for what is read back (one token, the continuation, ``max_new_tokens``)."""
        if isinstance(request, NextToken):
            rendered = self.render(request.prompt, reserve=1)
            targets = [self.single_token(c) for c in request.candidates]
            return Encoded(rendered.ids, len(rendered.ids), rendered.truncated, targets)
        if isinstance(request, Continuation):
            tail = self.encode(request.continuation)
            rendered = self.render(request.prompt, reserve=len(tail))
            return Encoded(rendered.ids + tail, len(rendered.ids), rendered.truncated, tail)
        if isinstance(request, Generate):
            rendered = self.render(request.prompt, reserve=request.max_new_tokens)
            return Encoded(rendered.ids, len(rendered.ids), rendered.truncated)
        raise TypeError(f"{type(request).__name__} requests are rendered with render_probes")

    def render_probes(self, prompt: Prompt, probes: tuple[str, ...], reserve: int = 0) -> RenderedProbes:
        """Prefix (up to the ``Probe``) tokenized once; each probe and the rest after it."""
        if sum(isinstance(p, Probe) for p in prompt.parts) != 1:
            raise ValueError("an Attention prompt needs exactly one Probe() part")
        longest = max(probes, key=lambda p: len(self.encode(p)))
        texts, cut, cap = self._fit(prompt, reserve, probe=longest)
        suffixes, rows, prefix = [], [], None
        for probe in probes:
            text, char_spans, probe_span = self._text(prompt, texts, probe)
            start, end = probe_span
            head_ids, head_offsets = self._encode(text[:start], special=self._special(prompt))
            if prefix is None:
                prefix = Rendered(head_ids, cut, _token_spans(char_spans, head_offsets), cap)
            tail_ids, tail_offsets = self._encode(text[start:], special=False)
            suffixes.append(tail_ids)
            rows.append([i for i, (a, b) in enumerate(tail_offsets) if a < end - start and b > 0])
        assert prefix is not None
        return RenderedProbes(prefix, suffixes, rows)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def single_token(self, text: str) -> int:
        """The id of ``text`` if the tokenizer keeps it as one token; a clear error if not."""
        ids = self.encode(text)
        if len(ids) != 1:
            pieces = self.tokenizer.convert_ids_to_tokens(ids)
            raise UserError(f"answer {text!r} is {len(ids)} tokens for this model's tokenizer "
                            f"({pieces}); choose answers that are single tokens")
        return ids[0]

    # -- internals ------------------------------------------------------------------------
    def _template_frame(self, system: str | None = None, thinking: bool = False) -> tuple[str, str] | None:
        """The chat template's text before and after the user content (None without chat)."""
        if not self.chat:
            return None
        messages = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": _MARK}]
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking)
        if text.count(_MARK) != 1:
            raise UserError("the chat template does not place the user message verbatim")
        head, tail = text.split(_MARK)
        return head, tail

    def _special(self, prompt: Prompt) -> bool:
        """Whether the tokenizer adds its special tokens (BOS, ...): only to plain, non-chat text."""
        return not self.chat and not prompt.raw

    def _frame_for(self, prompt: Prompt) -> tuple[str, str]:
        """Text before and after the user parts: the chat frame (or none), with the think block
        opened for a reasoning prompt and closed for any other (``_think_edge``)."""
        if prompt.raw:
            if prompt.system is not None:
                raise UserError("a raw prompt is the model's whole input: write its system turn into "
                                "the text instead of 'system'")
            self._check_markers(prompt)
            # the template's own ending decides, not a query that happens to mention "<think>"
            ending = prompt.parts[-1] if prompt.parts and isinstance(prompt.parts[-1], str) else ""
            return "", _think_edge(ending, prompt.thinking)
        system = prompt.system
        if not self.chat:
            return ((system + "\n\n") if system else "", _think_edge("", prompt.thinking))
        if system is None and not prompt.thinking:
            assert self._frame is not None
            head, tail = self._frame
        else:
            frame = self._template_frame(system, prompt.thinking)
            assert frame is not None
            head, tail = frame
        return head, tail + _think_edge(tail, prompt.thinking)

    def _check_markers(self, prompt: Prompt) -> None:
        """Each special-token marker a raw prompt's own text writes must be one token here."""
        fixed = "".join(p for p in prompt.parts if isinstance(p, str)) + prompt.answer_prefix
        for marker in dict.fromkeys(_MARKER.findall(fixed)):
            if marker not in self._known_markers:
                if len(self.encode(marker)) != 1:
                    raise UserError(f"the raw prompt writes {marker!r}, which this model's tokenizer does not "
                                    "know as one token: the prompt is meant for another model family")
                self._known_markers.add(marker)

    def _text(self, prompt: Prompt, passages: list[str], probe: str, answer: bool = True
              ) -> tuple[str, dict[str, tuple[int, int]], tuple[int, int]]:
        """The full prompt text, labelled passages' character spans, and the probe's span."""
        head, tail = self._frame_for(prompt)
        pieces, spans, probe_span, pos, it = [head], {}, (0, 0), len(head), iter(passages)
        for part in prompt.parts:
            if isinstance(part, Passage):
                piece = next(it)
                if part.label is not None:
                    spans[part.label] = (pos, pos + len(piece))
            elif isinstance(part, Probe):
                piece = probe
                probe_span = (pos, pos + len(piece))
            else:
                piece = part
            pieces.append(piece)
            pos += len(piece)
        pieces += [tail, prompt.answer_prefix if answer else ""]
        return "".join(pieces), spans, probe_span

    def _encode(self, text: str, special: bool) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self.tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    def _fit(self, prompt: Prompt, reserve: int, probe: str) -> tuple[list[str], int, int | None]:
        """Passage texts, cut in tokens so the whole prompt fits; how many were cut; the common cap."""
        passages = [p for p in prompt.parts if isinstance(p, Passage)]
        ids = [self.encode(p.text) for p in passages]
        caps = [len(t) if p.max_tokens is None else min(len(t), p.max_tokens)
                for p, t in zip(passages, ids)]
        fitted = prompt.room is None  # a reasoning call fits its passages without its answer prefix
        limit = self.max_length - (reserve if fitted else prompt.room)  # type: ignore[operator]
        special = self._special(prompt)
        empty_text, _, _ = self._text(prompt, [""] * len(passages), probe, answer=fitted)
        budget = limit - len(self._encode(empty_text, special=special)[0])
        for _ in range(8):
            if budget < 0:
                raise UserError(f"the prompt's fixed text alone is longer than max_length "
                                f"({self.max_length} tokens, {reserve} kept for the answer)")
            lengths = _water_fill(caps, budget)
            texts = [p.text if n == len(t) else self.tokenizer.decode(t[:n])
                     for p, t, n in zip(passages, ids, lengths)]
            text, _, _ = self._text(prompt, texts, probe, answer=fitted)
            over = len(self._encode(text, special=special)[0]) - limit
            if over <= 0:
                cap = max(lengths) if sum(caps) > budget else None
                return texts, sum(n < len(t) for t, n in zip(ids, lengths)), cap
            budget -= over
        raise UserError(f"could not fit the prompt into max_length {self.max_length}")


def _think_edge(before: str, thinking: bool) -> str:
    """What the frame needs after ``before`` so the answer slot is where it should be.

    A reasoning prompt (``thinking``) must end inside a think block: open one unless the
    template (Qwen3 with thinking on, DeepSeek-R1's distills) or the raw text already did. Any
    other prompt must not: a block the template opens is closed empty, as Qwen3 does itself
    with thinking off, so a thinking model answers at once instead of reasoning where the
    answer's token is read (the think guard).
    """
    is_open = before.rfind(THINK_OPEN) > before.rfind(THINK_CLOSE)
    if thinking and not is_open:
        return THINK_OPEN + "\n"
    if not thinking and is_open:
        return "\n" + THINK_CLOSE + "\n\n"
    return ""


def _water_fill(lengths: list[int], budget: int) -> list[int]:
    """Largest common cap c with sum(min(n, c)) <= budget; lengths capped at c."""
    if sum(lengths) <= budget:
        return list(lengths)
    low, high = 0, max(lengths)
    while low < high:
        mid = (low + high + 1) // 2
        if sum(min(n, mid) for n in lengths) <= budget:
            low = mid
        else:
            high = mid - 1
    return [min(n, low) for n in lengths]


def _token_spans(char_spans: dict[str, tuple[int, int]], offsets: list[tuple[int, int]]
                 ) -> dict[str, tuple[int, int]]:
    """Map character spans to [first, last+1) token positions whose text overlaps them."""
    spans = {}
    for label, (a, b) in char_spans.items():
        inside = [i for i, (s, e) in enumerate(offsets) if s < b and e > a and e > s]
        spans[label] = (inside[0], inside[-1] + 1) if inside else (0, 0)
    return spans
