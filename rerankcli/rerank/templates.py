"""Prompt templates: YAML files with ``user`` (and optionally ``system``, ``answer_prefix``), all text.

A stage's ``prompt:`` names a template shipped in ``prompts/`` or a file (relative to the
pipeline). Pointwise templates use ``{query}`` and ``{passage}``; pairwise ones ``{query}``,
``{passage_a}`` and ``{passage_b}``. Listwise templates use
``{query}``, ``{num}`` and ``{passages}``, which expands to one ``item`` per candidate (default
``"[{id}] {passage}\n"``; an item may also show the candidate's first-stage ``{score}``).
``{{`` and ``}}`` are literal braces. Each method says which placeholders a template must have
and may have (ICR templates are listwise ones whose ``{query}`` comes last, as the attention
probe), and a template that breaks that rule is refused before any model is loaded.

Three optional keys serve trained rerankers that must be prompted exactly as their authors do:
``raw: true`` sends ``user`` as the model's whole input (no chat template: the text carries its
own special tokens), ``instruction`` is the default text of an ``{instruction}`` placeholder,
and ``answers`` maps the method's answers to the exact tokens to read (e.g. ``yes: "yes"``)
instead of every surface form. A reasoning preset's ``think_close`` is what closes the model's
reasoning before ``answer_prefix`` (default ``"\n</think>\n\n"``; Rank1 reads its answer right
after ``"\n</think>"``).
"""

from __future__ import annotations

import dataclasses
import difflib
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rerankcli.core.errors import UserError, shown, where
from rerankcli.core.hashing import text_digest
from rerankcli.core.paths import expand_path
from rerankcli.core.yaml_source import line_of, load_yaml
from rerankcli.llm.requests import Passage, Probe, Prompt

SHIPPED = Path(__file__).parent / "prompts"


@dataclass(frozen=True)
class Template:
    source: str  # the name or path, for messages
    user: str
    system: str | None
    answer_prefix: str
    digest: str
    item: str = "[{id}] {passage}\n"
    raw: bool = False
    instruction: str | None = None
    answers: dict[str, str] | None = None
    think_close: str | None = None

    def prompt(self, query: str, passage: str, max_passage_tokens: int | None = None) -> Prompt:
        """The prompt for one pair: ``{passage}`` becomes a truncatable ``Passage`` part."""
        parts = _fill(self.user, {"query": query, "passage": Passage(passage, max_tokens=max_passage_tokens),
                                  **self._values({})})
        return Prompt(tuple(parts), self.system, self.answer_prefix, self.raw)

    def pair_prompt(self, query: str, passage_a: str, passage_b: str,
                    max_passage_tokens: int | None = None) -> Prompt:
        """A pairwise prompt: both passages truncatable, each on its own."""
        parts = _fill(self.user, {"query": query,
                                  "passage_a": Passage(passage_a, max_tokens=max_passage_tokens),
                                  "passage_b": Passage(passage_b, max_tokens=max_passage_tokens),
                                  **self._values({})})
        return Prompt(tuple(parts), self.system, self.answer_prefix, self.raw)

    def list_prompt(self, query: str, passages: list[str], ids: list[str],
                    max_passage_tokens: int | None = None, scores: list[str] | None = None,
                    values: dict[str, str] | None = None) -> Prompt:
        """A listwise prompt: ``{passages}`` becomes one ``item`` per passage, in order.

        ``scores`` fill the items' ``{score}`` (the candidates' first-stage scores, as text);
        ``values`` fill a method's own placeholders (e.g. ``{keep}``).
        """
        shown = scores if scores is not None else [""] * len(passages)
        items = [part for identifier, passage, score in zip(ids, passages, shown) for part in _fill(
            self.item, {"id": identifier, "passage": Passage(passage, max_tokens=max_passage_tokens),
                        "score": score})]
        parts = _fill(self.user, {"query": query, "num": str(len(passages)), "passages": items,
                                  **self._values(values or {})})
        return Prompt(tuple(parts), self.system, self.answer_prefix, self.raw)

    def attention_prompt(self, passages: list[str], ids: list[str],
                         max_passage_tokens: int | None = None) -> Prompt:
        """An ICR prompt: ``{query}`` becomes the ``Probe`` slot, passage k is labelled ``str(k)``."""
        items = [part for k, (identifier, passage) in enumerate(zip(ids, passages)) for part in _fill(
            self.item, {"id": identifier, "passage": Passage(passage, str(k), max_passage_tokens)})]
        parts = _fill(self.user, {"query": Probe(), "num": str(len(passages)), "passages": items})
        return Prompt(tuple(parts), self.system, self.answer_prefix, self.raw)

    def instructed(self, instruction: str | None, stage: str) -> Template:
        """The template with a stage's ``instruction`` in its ``{instruction}`` (None: its own)."""
        if instruction is None:
            return self
        if "instruction" not in self.fields():
            raise UserError(f"stage '{stage}': instruction is set, but the template "
                            f"{self.source} has no {{instruction}} placeholder")
        return dataclasses.replace(self, instruction=instruction)

    def fields(self) -> list[str]:
        """The placeholders of ``user``, in order."""
        return [f for _, f, _, _ in string.Formatter().parse(self.user) if f is not None]

    def item_fields(self) -> set[str]:
        """The placeholders of ``item``."""
        return {f for _, f, _, _ in string.Formatter().parse(self.item) if f is not None}

    def _values(self, values: dict[str, str]) -> dict[str, str]:
        """A method's own placeholder values, with the template's default ``{instruction}``."""
        return {"instruction": self.instruction or "", **values}


def _fill(text: str, values: dict[str, Any]) -> list[Any]:
    """The template's literal pieces and its placeholders' values, in order (lists spliced in)."""
    parts: list[Any] = []
    for literal, field, _, _ in string.Formatter().parse(text):
        if literal:
            parts.append(literal)
        if field is not None:
            value = values[field]
            parts.extend(value if isinstance(value, list) else [value])
    return parts


def _placeholders(text: str, path: Path, key: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise UserError(f"{path}: '{key}': {exc} (write literal braces as {{{{ and }}}})") from None


def _template_path(spec: str, base_dir: Path) -> Path:
    """The shipped template ``spec`` names, or the file (``~`` and ``$VAR`` expanded)."""
    shipped = SHIPPED / f"{spec}.yaml"
    if "/" not in spec and shipped.is_file():
        return shipped
    try:
        path = base_dir / expand_path(spec)
    except ValueError as exc:
        raise UserError(f"prompt {shown(spec)}: {exc}") from None
    if not path.exists():  # anything else that is no template (a folder, a FIFO, 1 GB) load_yaml names
        raise UserError(f"prompt {shown(spec)}: no such template file ({path}); {_shipped_hint(spec)}")
    return path


def _shipped_hint(spec: str) -> str:
    """The shipped templates a mistyped name was probably meant as, or all of them.

    Only the near names when there are some: the full list (seventeen and growing) made the
    error line longer than a terminal's width twice over.
    """
    names = sorted(p.stem for p in SHIPPED.glob("*.yaml"))
    close = difflib.get_close_matches(Path(spec).stem, names, n=3, cutoff=0.7)
    if close:
        return "did you mean " + " or ".join(repr(name) for name in close) + "?"
    return "shipped templates: " + " ".join(names)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", bool: "true/false", int: "a number", float: "a number",
            type(None): "nothing"}.get(type(value), type(value).__name__)


def _template_fields(path: Path, listwise: bool) -> dict[str, Any]:
    """The template's fields, each text (or left out): a list or a number is refused by name and line."""
    data, lines = load_yaml(path, "prompt template")
    if not isinstance(data, dict) or "user" not in data:
        raise UserError(f"{path}: a prompt template is a mapping with a 'user' string")
    keys = ({"user", "system", "answer_prefix", "instruction", "raw", "answers", "think_close"}
            | ({"item"} if listwise else set()))
    unknown = sorted(set(map(str, data)) - keys)
    if unknown:
        raise UserError(f"{path}: unknown keys {unknown}; use {', '.join(sorted(keys))}")
    if not isinstance(data.get("raw", False), bool):
        raise UserError(f"{where(path, line_of(lines, ('raw',)))}: field 'raw' must be true or false, "
                        f"found {_kind(data['raw'])}")
    answers = data.get("answers")
    if answers is not None and not (isinstance(answers, dict) and answers
                                    and all(isinstance(v, str) and v for v in answers.values())):
        raise UserError(f"{where(path, line_of(lines, ('answers',)))}: field 'answers' must map each answer "
                        "to its exact token text (e.g. yes: \"yes\")")
    for key, value in data.items():
        if key in ("raw", "answers"):
            continue
        if not isinstance(value, str) and (key == "user" or value is not None):
            raise UserError(f"{where(path, line_of(lines, (key,)))}: field '{key}' must be text, found {_kind(value)}"
                            + (" (quote it)" if isinstance(value, (int, float, bool)) else ""))
    return data


def load_template(spec: str, base_dir: Path, required: set[str], allowed: set[str],
                  listwise: bool = False, item_score: bool = False) -> Template:
    """Read and check a template; ``spec`` is a shipped name or a YAML file path.

    ``item_score``: the method shows first-stage scores, so a listwise ``item`` must have
    ``{score}`` (otherwise it must not).
    """
    path = _template_path(spec, base_dir)
    data = _template_fields(path, listwise)
    text = path.read_text(encoding="utf-8")  # valid UTF-8: load_yaml read it
    fields = _placeholders(data["user"], path, "user")
    item = data.get("item") or Template.item
    if listwise:
        item_fields = set(_placeholders(item, path, "item"))
        wanted = {"id", "passage"} | ({"score"} if item_score else set())
        if item_fields != wanted:
            names = " and ".join("{" + f + "}" for f in sorted(wanted))
            hint = (" (first_stage_scores: true shows each candidate's score there)" if item_score
                    else " ({score} needs first_stage_scores: true)" if "score" in item_fields else "")
            raise UserError(f"{path}: 'item' must have the placeholders {names} and no others{hint}")
    if data.get("instruction") is not None:  # a template with a default instruction may place it
        allowed = allowed | {"instruction"}
    missing = required - set(fields)
    if missing:
        raise UserError(f"{path}: 'user' lacks the placeholder {{{sorted(missing)[0]}}}")
    extra = set(fields) - allowed
    if extra:
        raise UserError(f"{path}: 'user' has the placeholder {{{sorted(extra)[0]}}}; "
                        f"this method fills only {', '.join('{' + a + '}' for a in sorted(allowed))}")
    return Template(str(spec), data["user"], data.get("system"), data.get("answer_prefix") or "",
                    text_digest(text), item, bool(data.get("raw", False)), data.get("instruction"),
                    data.get("answers"), data.get("think_close"))
