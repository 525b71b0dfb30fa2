"""Commands that describe what a pipeline file may say: methods, schema.

Both read the registries at call time (imported inside the commands, so ``rerank --help``
stays fast), so methods and backends added by plugins are listed like the shipped ones.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from rerankcli.cli.app import app, path_value

if TYPE_CHECKING:
    from rerankcli.pipeline.describe import Description, Entry


class Shape(str, Enum):
    table = "table"
    json = "json"


GROUP_TITLES = {"stage": "stages (type: NAME)", "backend": "LLM backends (backend: NAME)"}


@app.command("methods")
def methods_command(
    name: Annotated[Optional[str], typer.Argument(
        help="A method (listwise), a stage type (fuse, rerank) or a backend (hf): show its fields.")] = None,
    fmt: Annotated[Shape, typer.Option("--format", "-f", help="table (aligned text) or json.")] = Shape.table,
) -> None:
    """List the stages, methods and LLM backends a pipeline can use, or the YAML fields of one."""
    from rerankcli.pipeline.describe import catalogue, describe, groups

    if name is None or name in groups():
        entries = catalogue(name)
        text = json.dumps([asdict(e) for e in entries], indent=2) if fmt is Shape.json else _catalogue_table(entries)
    else:
        found = describe(name)
        text = json.dumps(asdict(found), indent=2) if fmt is Shape.json else _description_table(found)
    sys.stdout.write(text + "\n")


@app.command("schema")
def schema_command(
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write the schema to this file (atomically) instead of stdout.",
        parser=path_value)] = None,
) -> None:
    """Print the JSON Schema of a pipeline file, for editors (yaml-language-server) and CI checks."""
    from rerankcli.core.atomic import write_text
    from rerankcli.pipeline.describe import pipeline_schema

    text = json.dumps(pipeline_schema(), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    write_text(output, text)
    print(f"wrote {output}", file=sys.stderr)


def _catalogue_table(entries: list[Entry]) -> str:
    """Entries under a heading per group, names aligned across groups."""
    width = max((len(e.name) for e in entries), default=0) + 2
    lines: list[str] = []
    for group in dict.fromkeys(e.group for e in entries):
        if lines:
            lines.append("")
        lines.append(GROUP_TITLES.get(group, f"{group} methods (type: {group}, method: NAME)"))
        lines += [f"  {e.name:<{width}}{e.summary}".rstrip() for e in entries if e.group == group]
    lines += ["", "rerank methods NAME shows the YAML fields of one."]
    return "\n".join(lines)


def _description_table(found: Description) -> str:
    """A heading (what it is, how a pipeline selects it, its wiring), then its fields aligned."""
    lines = [f"{found.yaml}  ({found.group}/{found.name})", f"  {found.summary}"]
    lines += [f"  {note}" for note in found.notes]
    rows = [("FIELD", "TYPE", "DEFAULT", "DESCRIPTION")]
    rows += [(r.name, r.type, r.shown_default, r.description) for r in found.fields]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines.append("")
    lines += [("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3]).rstrip()
              for row in rows]
    return "\n".join(lines)
