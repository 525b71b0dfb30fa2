"""Safe YAML loading that remembers where each value came from.

Validation errors must say which line of the pipeline file is wrong, so loading keeps a map
from a value's path (``("stages", 1, "k")``) to its line. Only the safe loader is used:
tags such as ``!!python/object`` are rejected, never constructed. The file must be a regular
file of at most ``MAX_TEXT_BYTES`` (a pipeline is a page of YAML; a FIFO or ``/dev/zero`` is not).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from rerankcli.core.errors import UserError, shown, where
from rerankcli.core.user_files import MAX_TEXT_BYTES, read_text

Location = tuple[Any, ...]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping key and sequence item."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """A scalar PyYAML cannot build (``2001-13-45`` as a date, an integer of 5000 digits)
        raises a plain ValueError without a line: make it a marked error at the value's line."""
        try:
            return super().construct_object(node, deep=deep)
        except ValueError as exc:
            value = shown(node.value, 40) if isinstance(node, yaml.ScalarNode) else "this value"
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {value} ({str(exc).split(':')[0]}); quote it to make it text",
                node.start_mark) from None


def _lines_of(node: yaml.Node, path: Location, lines: dict[Location, int], source: Path,
              seen: set[int] | None = None) -> None:
    """Record lines below ``node``; refuse duplicate keys.

    A node reached again through an alias is not walked again: an alias names the same
    value, and walking every path to it is exponential in a 'billion laughs' file.
    """
    seen = set() if seen is None else seen
    lines.setdefault(path, node.start_mark.line + 1)
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key, line = key_node.value, key_node.start_mark.line + 1
            if key != "<<" and isinstance(key_node, yaml.ScalarNode):
                if key in first:
                    raise UserError(f"{where(source, line)}: duplicate key {shown(key)}, first on line {first[key]}")
                first[key] = line
            lines[path + (key,)] = line
            _lines_of(value_node, path + (key,), lines, source, seen)
            lines[path + (key,)] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _lines_of(item, path + (index,), lines, source, seen)


def load_yaml(path: Path, what: str = "pipeline") -> tuple[Any, dict[Location, int]]:
    """Parse ``path`` safely; return the data and a map from value paths to line numbers.

    ``what`` names the file in messages ("pipeline", "prompt template").
    """
    text = read_text(path, what, MAX_TEXT_BYTES)  # a regular file of a few MiB at most
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        if "could not determine a constructor" in str(exc):
            tag = re.search(r"'([^']+)'", problem)
            shown = tag.group(1) if tag else "this tag"
            problem = f"the tag {shown} is not allowed: pipelines are plain YAML"
        raise UserError(f"{where(path, line)}: {problem}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML ({exc})") from None
    except RecursionError:  # PyYAML's parser recurses once per level: "[[[[...]]]]"
        raise UserError(f"{path}: YAML nested too deeply (a pipeline is a few levels deep)") from None
    lines: dict[Location, int] = {}
    if node is not None:
        try:
            _lines_of(node, (), lines, path)
        except RecursionError:
            raise UserError(f"{path}: YAML nested too deeply (a pipeline is a few levels deep)") from None
    return data, lines


def line_of(lines: dict[Location, int], location: Location) -> int | None:
    """Line of the deepest recorded prefix of ``location`` (pydantic locations go deeper)."""
    for end in range(len(location), -1, -1):
        if location[:end] in lines:
            return lines[location[:end]]
    return None
