"""What a rerank method may ask of a language model, and what it gets back.

Four kinds of request cover every LLM reranking method:
- ``Generate``: greedy text (listwise permutations, PRP in generation mode);
- ``NextToken``: log-probabilities of a few single-token answers after the prompt (yes/no,
  graded labels, "A"/"B", FIRST's identifiers), from one forward pass, no decoding;
- ``Continuation``: log-probabilities of each token of a given continuation (query likelihood);
- ``Attention``: how much attention the tokens of a probe (the query) pay to each prompt token
  (ICR), for several probes over the same prefix.

A prompt is structured rather than a string so that the backend, which owns the tokenizer, can
apply the chat template, put the answer slot after it, and truncate passages in model tokens
without ever cutting the instruction or the template's suffix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class Passage:
    """Text that may be shortened (in model tokens) when the prompt does not fit.

    ``label`` names the passage so that backends can report where its tokens are (ICR).
    ``max_tokens`` caps this passage on its own, whatever room is left.
    """

    text: str
    label: str | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class Probe:
    """The slot where an ``Attention`` request puts each of its probe texts (e.g. the query)."""


Part = Union[str, Passage, Probe]


@dataclass(frozen=True)
class Prompt:
    """A user turn made of parts, an optional system turn, and the answer slot.

    ``answer_prefix`` opens the assistant's turn after the chat template's generation prompt
    (e.g. ``"Answer:"``): the requested tokens follow it directly, so neither a thinking
    model's preamble nor truncation can come between the question and the answer.
    ``raw``: the parts are the model's whole input, special tokens written out (a trained
    reranker's exact template); no chat template is applied.
    ``thinking``: the assistant's turn opens inside a think block (``<think>``), which the
    renderer opens unless the chat template or the raw text already did; ``answer_prefix``
    then continues the reasoning. Without it, a think block a template opens is closed empty.
    ``room``: tokens kept after the user parts for the answer prefix and the answer (a
    reasoning call's budget); passages are then cut as if the answer prefix were empty, so a
    think call and its answer call show the model the same passages.
    """

    parts: tuple[Part, ...]
    system: str | None = None
    answer_prefix: str = ""
    raw: bool = False
    thinking: bool = False
    room: int | None = None

    @staticmethod
    def of(*parts: Part, system: str | None = None, answer_prefix: str = "", raw: bool = False,
           thinking: bool = False) -> Prompt:
        return Prompt(tuple(parts), system, answer_prefix, raw, thinking)


@dataclass(frozen=True)
class Generate:
    """Text after the prompt, up to ``max_new_tokens``, ending before the first ``stop`` string.

    ``temperature`` 0 is greedy; above 0 the backend samples with ``seed``, so that a request
    gets the same answer whatever batch it is in. ``reasoning_effort`` is passed to servers
    that take it (OpenAI-compatible ones); local backends have no such setting.
    """

    prompt: Prompt
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    seed: int = 0
    reasoning_effort: str | None = None


@dataclass(frozen=True)
class NextToken:
    """Log-probabilities (over the whole vocabulary) of single-token ``candidates``."""

    prompt: Prompt
    candidates: tuple[str, ...]


@dataclass(frozen=True)
class Continuation:
    """Log-probability of each token of ``continuation`` following the prompt."""

    prompt: Prompt
    continuation: str


@dataclass(frozen=True)
class Attention:
    """Attention from each probe's tokens to every token before them, summed over layers and heads.

    The prompt must contain exactly one ``Probe()``; the shared prefix before it is computed
    once and reused for every probe. ``layers`` selects layers (None: all).
    """

    prompt: Prompt
    probes: tuple[str, ...]
    layers: tuple[int, ...] | None = None


Request = Union[Generate, NextToken, Continuation, Attention]


@dataclass(frozen=True)
class Answer:
    """What every response carries for accounting."""

    prompt_tokens: int
    truncated: int  # passages shortened to make the prompt fit


@dataclass(frozen=True)
class Generated(Answer):
    """``text`` excludes the stop string; ``new_tokens`` counts every token the model generated
    (the stop string's too); ``stopped_by`` is the request's stop string that ended the text,
    or None when the model ended it itself or ran out of ``max_new_tokens``."""

    text: str = ""
    new_tokens: int = 0
    stopped_by: str | None = None


@dataclass(frozen=True)
class TokenLogprobs(Answer):
    logprobs: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ContinuationLogprobs(Answer):
    logprobs: tuple[float, ...] = ()

    @property
    def mean(self) -> float:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else float("-inf")


@dataclass(frozen=True)
class AttentionMass(Answer):
    """Per probe: the attention each prefix token receives (mean over the probe's tokens).

    ``spans`` maps each labelled passage to its [start, end) token positions in the prefix.
    """

    received: tuple[tuple[float, ...], ...] = ()
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)

    def per_label(self, probe: int = 0) -> dict[str, float]:
        row = self.received[probe]
        return {label: sum(row[a:b]) for label, (a, b) in self.spans.items()}


Response = Union[Generated, TokenLogprobs, ContinuationLogprobs, AttentionMass]
