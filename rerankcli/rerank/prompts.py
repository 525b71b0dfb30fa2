"""Prompt templates: YAML files with ``user`` (and optionally ``system``, ``answer_prefix``).

A stage's ``prompt:`` names a template shipped in ``prompts/`` or a file (relative to the
pipeline). ``{query}`` and ``{passage}`` are the placeholders; ``{{`` and ``}}`` are literal
braces. Each method says which placeholders a template must have and may have, and a
template that breaks that rule is refused before any model is loaded.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import yaml

from rerankcli.errors import UserError
from rerankcli.hashing import text_digest
from rerankcli.llm.requests import Passage, Prompt

SHIPPED = Path(__file__).parent / "prompts"


@dataclass(frozen=True)
class Template:
    source: str  # the name or path, for messages
    user: str
    system: str | None
    answer_prefix: str
    digest: str

    def prompt(self, query: str, passage: str, max_passage_tokens: int | None = None) -> Prompt:
        """The prompt for one pair: ``{passage}`` becomes a truncatable ``Passage`` part."""
        parts: list = []
        for literal, field, _, _ in string.Formatter().parse(self.user):
            if literal:
                parts.append(literal)
            if field == "query":
                parts.append(query)
            elif field == "passage":
                parts.append(Passage(passage, max_tokens=max_passage_tokens))
        return Prompt(tuple(parts), self.system, self.answer_prefix)


def load_template(spec: str, base_dir: Path, required: set[str], allowed: set[str]) -> Template:
    """Read and check a template; ``spec`` is a shipped name or a YAML file path."""
    shipped = SHIPPED / f"{spec}.yaml"
    path = shipped if shipped.is_file() else (base_dir / spec).expanduser()
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.yaml")))
        raise UserError(f"prompt {spec!r}: no such template file ({path}); shipped templates: {names}")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("user"), str):
        raise UserError(f"{path}: a prompt template is a mapping with a 'user' string")
    unknown = set(data) - {"user", "system", "answer_prefix"}
    if unknown:
        raise UserError(f"{path}: unknown keys {sorted(unknown)}; use user, system, answer_prefix")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(data["user"]) if f is not None]
    except ValueError as exc:
        raise UserError(f"{path}: 'user': {exc} (write literal braces as {{{{ and }}}})") from None
    missing = required - set(fields)
    if missing:
        raise UserError(f"{path}: 'user' lacks the placeholder {{{sorted(missing)[0]}}}")
    extra = set(fields) - allowed
    if extra:
        raise UserError(f"{path}: 'user' has the placeholder {{{sorted(extra)[0]}}}; "
                        f"this method fills only {', '.join('{' + a + '}' for a in sorted(allowed))}")
    return Template(str(spec), data["user"], data.get("system"), str(data.get("answer_prefix") or ""),
                    text_digest(text))
