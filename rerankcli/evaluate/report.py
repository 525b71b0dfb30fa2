"""Render metric tables for the terminal, CSV and JSON (one row per run, one column per metric)."""

from __future__ import annotations

import csv
import io
import json


def render(rows: dict[str, dict[str, float]], fmt: str, digits: int = 4) -> str:
    """``rows[run_name][metric] = value`` as ``table``, ``csv``, ``json`` or ``markdown``."""
    metrics = list(dict.fromkeys(m for values in rows.values() for m in values))
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["run", *metrics])
        for name, values in rows.items():
            writer.writerow([name, *(f"{values[m]:.{digits}f}" if m in values else "" for m in metrics)])
        return out.getvalue()
    cells = [[name, *(f"{values[m]:.{digits}f}" if m in values else "-" for m in metrics)]
             for name, values in rows.items()]
    header = ["run", *metrics]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        padded = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return ("| " + " | ".join(padded) + " |") if fmt == "markdown" else "  ".join(padded)

    rule = ("|" + "|".join("-" * (w + 2) for w in widths) + "|") if fmt == "markdown" else \
        "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in cells)]) + "\n"
