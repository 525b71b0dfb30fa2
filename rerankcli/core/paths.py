"""``~`` and environment variables in the paths a user writes: pipeline fields and command options.

A shell expands ``~`` and ``$VAR`` in an unquoted command line, but not inside a YAML file or
quotes, so ``corpus: ~/data/corpus.jsonl`` would otherwise name a folder called ``~`` beside
the pipeline file. Every path a user writes goes through ``expand_path``:

* ``~`` and ``~user`` at the start become that home folder;
* ``$VAR`` and ``${VAR}`` anywhere become the variable's value; ``$$`` is a literal ``$``, and
  a ``$`` followed by anything else stays as it is;
* a variable that is unset, or set to nothing, is refused rather than replaced by nothing:
  ``$DATA/corpus.jsonl`` with ``DATA`` unset must not quietly become ``/corpus.jsonl``;
* an empty path is refused: it would silently mean the current folder.

The result is then read as the field or option always was (a relative path is relative to the
pipeline file, or to the current folder for an option).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: ``$$``, ``$NAME``, ``${...}``, or a ``${`` that never closes
_VARIABLE = re.compile(r"\$(?:(?P<dollar>\$)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|\{(?P<braced>[^}]*)\}|(?P<open>\{))")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def expand_path(text: str) -> str:
    """``text`` with ``~`` and ``$VAR`` expanded; ``ValueError`` (one short sentence) if it cannot be."""
    if not text.strip():
        raise ValueError("an empty path names no file" if not text else "a path of only white space names no file")
    if "\0" in text:
        raise ValueError("a path cannot contain a NUL character")
    return _expand_variables(_expand_home(text))


def file_above(path: Path) -> Path | None:
    """The nearest existing folder above ``path`` if it is not a folder (a file), else None.

    Writing ``data/qrels.txt/out`` would fail deep inside ``mkdir`` with ENOTDIR; this
    names the file in the way instead.
    """
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            return None if parent.is_dir() else parent
    return None


def _expand_home(text: str) -> str:
    if not text.startswith("~"):
        return text
    user = text[1:].split("/", 1)[0]
    if not user and os.environ.get("HOME") == "":
        raise ValueError("~ needs $HOME, which is set to nothing")
    expanded = os.path.expanduser(text)
    if expanded.startswith("~"):
        raise ValueError(f"~{user}: no such user (write ./~{user} for a folder of that name)")
    return expanded


def _expand_variables(text: str) -> str:
    def value(match: re.Match[str]) -> str:
        if match.group("dollar"):
            return "$"
        if match.group("open"):
            raise ValueError("'${' is never closed by '}'")
        name = match.group("name") or match.group("braced")
        if not _NAME.match(name):
            raise ValueError(f"${{{name}}} is not a variable name (write ${{NAME}} or $NAME)")
        found = os.environ.get(name)
        if found is None:
            raise ValueError(f"${name} is not set")
        if not found:
            raise ValueError(f"${name} is set to nothing")
        return found

    return _VARIABLE.sub(value, text)
