"""Render tables for the terminal, markdown, LaTeX, CSV and JSON.

``render`` prints the metric table of ``rerank eval`` (one row per run, one column per metric);
``render_comparison`` and ``render_per_query`` print ``rerank compare``. All of them go
through ``grid``, so the formats agree on alignment and escaping.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np

from rerankcli.evaluate.compare import Comparison
from rerankcli.evaluate.overlap import QueryAgreement

FORMATS = ("table", "markdown", "latex", "csv", "json")
BETTER, WORSE = "▲", "▼"
LATEX_MARKS = {BETTER: r"$^{\uparrow}$", WORSE: r"$^{\downarrow}$"}
LATEX_SPECIAL = {ch: "\\" + ch for ch in "&%$#_{}"}


def _latex(text: str) -> str:
    for mark, command in LATEX_MARKS.items():
        if text.endswith(mark):
            return _latex(text[: -len(mark)]) + command
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)


def _numeric(cell: str) -> bool:
    return not cell.strip() or cell[0].isdigit() or cell[0] in "+-<."


def grid(header: list[str], rows: list[list[str]], fmt: str) -> str:
    """A table of text cells: columns of numbers right-aligned, the first and text ones left."""
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerows([header, *rows])
        return out.getvalue()
    if fmt == "latex":
        spec = "".join("r" if i > 0 and all(_numeric(row[i]) for row in rows) else "l"
                       for i in range(len(header)))
        body = [" & ".join(_latex(c) for c in row) + r" \\" for row in rows]
        return "\n".join([rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
                          " & ".join(_latex(c) for c in header) + r" \\", r"\midrule", *body,
                          r"\bottomrule", r"\end{tabular}"]) + "\n"
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    numeric = [i > 0 and all(_numeric(row[i]) for row in rows) for i in range(len(header))]

    def line(row: list[str]) -> str:
        padded = [c.rjust(w) if right else c.ljust(w) for c, w, right in zip(row, widths, numeric)]
        return ("| " + " | ".join(padded) + " |") if fmt == "markdown" else "  ".join(padded)

    if fmt == "markdown":
        rule = "|" + "|".join("-" * (w + 1) + (":" if right else "-") for w, right in zip(widths, numeric)) + "|"
    else:
        rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)]) + "\n"


def render(rows: dict[str, dict[str, float]], fmt: str, digits: int = 4) -> str:
    """``rows[run_name][metric] = value`` in one of ``FORMATS``."""
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    metrics = list(dict.fromkeys(m for values in rows.values() for m in values))
    empty = "" if fmt == "csv" else "-"
    cells = [[name, *(f"{values[m]:.{digits}f}" if m in values else empty for m in metrics)]
             for name, values in rows.items()]
    return grid(["run", *metrics], cells, fmt)


def _p(value: float) -> str:
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def _marked(comparison: Comparison, metric: str, run: str, digits: int) -> str:
    text = f"{comparison.mean(metric, run):.{digits}f}"
    result = comparison.tests[metric].get(run)
    if result is None or not result.significant:
        return text + " "
    return text + (BETTER if result.delta > 0 else WORSE)


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    """The comparison as plain data: means, tests and left-out queries (no per-query values)."""
    return {
        "baseline": comparison.baseline, "test": comparison.test, "correction": comparison.correction,
        "alpha": comparison.alpha, "queries": len(comparison.queries),
        "means": {run: {m: comparison.mean(m, run) for m in comparison.metrics} for run in comparison.runs},
        "tests": {run: {m: vars(comparison.tests[m][run]) for m in comparison.metrics}
                  for run in comparison.runs if run != comparison.baseline},
        "left_out_queries": {run: qids for run, qids in comparison.left_out.items() if qids},
        "judged_queries_absent": {run: qids for run, qids in comparison.absent.items() if qids},
    }


def render_comparison(comparison: Comparison, fmt: str, digits: int = 4) -> str:
    """Means with significance marks against the baseline, then the tests and W/T/L per query."""
    if fmt == "json":
        return json.dumps(comparison_json(comparison), indent=2) + "\n"
    others = [run for run in comparison.runs if run != comparison.baseline]
    if fmt == "csv":
        rows = []
        for run in comparison.runs:
            for metric in comparison.metrics:
                result = comparison.tests[metric].get(run)
                tested = [] if result is None else [
                    f"{result.delta:.6f}", f"{result.p:.6g}", f"{result.p_adjusted:.6g}",
                    str(result.significant).lower(), str(result.wins), str(result.ties), str(result.losses)]
                rows.append([run, metric, f"{comparison.mean(metric, run):.6f}", *(tested or [""] * 7)])
        header = ["run", "metric", "mean", "delta", "p", "p_adjusted", "significant", "wins", "ties", "losses"]
        return grid(header, rows, fmt)
    means = [[run, *(_marked(comparison, m, run, digits) for m in comparison.metrics)]
             for run in comparison.runs]
    main = grid(["run", *comparison.metrics], means, fmt)
    legend = f"{BETTER} {WORSE}: significantly better / worse than the baseline ({comparison.describe()})"
    if fmt == "latex":
        return main + f"% {legend}\n".replace(BETTER, r"\uparrow").replace(WORSE, r"\downarrow")
    p_header = "p" if comparison.correction == "none" else f"p ({comparison.correction})"
    rows = []
    for run in others:
        for metric in comparison.metrics:
            result = comparison.tests[metric][run]
            rows.append([run, metric, f"{result.delta:+.{digits}f}", _p(result.p), _p(result.p_adjusted),
                         f"{result.wins}/{result.ties}/{result.losses}"])
    tests = grid(["run", "metric", "delta", "p", p_header, "wins/ties/losses"], rows, fmt) if rows else ""
    return main + "\n" + legend + "\n" + ("\n" + tests if tests else "")


def render_per_query(comparison: Comparison, fmt: str, digits: int = 4) -> str:
    """One row per query and metric, one column per run (the values ``compare`` tested)."""
    if fmt == "json":
        data = {metric: {run: dict(zip(comparison.queries, values[run].tolist())) for run in comparison.runs}
                for metric, values in comparison.values.items()}
        return json.dumps({"baseline": comparison.baseline, "queries": comparison.queries,
                           "per_query": data}, indent=2) + "\n"
    rows = [[qid, metric, *(f"{comparison.values[metric][run][i]:.{digits}f}" for run in comparison.runs)]
            for metric in comparison.metrics for i, qid in enumerate(comparison.queries)]
    return grid(["query", "metric", *comparison.runs], rows, fmt)


def render_diff(rows: list[QueryAgreement], names: tuple[str, str], only: tuple[list[str], list[str]],
                depth: int, p: float, top: int, fmt: str) -> str:
    """``rerank diff``: mean agreement, then the ``top`` queries with the lowest RBO.

    CSV and JSON carry every query (CSV sorted by RBO, lowest first), for further analysis.
    """
    taus = [row.tau for row in rows if row.tau is not None]
    means = {f"overlap@{depth}": float(np.mean([r.overlap for r in rows])),
             f"rbo@{depth}": float(np.mean([r.rbo for r in rows])),
             "kendall_tau": float(np.mean(taus)) if taus else None}
    changed = sorted(rows, key=lambda r: (r.rbo, r.overlap, r.query))
    if fmt == "json":
        return json.dumps({"runs": list(names), "depth": depth, "rbo_p": p, "queries": len(rows),
                           "only_in_first": only[0], "only_in_second": only[1], "mean": means,
                           "per_query": [vars(r) for r in changed]}, indent=2) + "\n"
    header = ["query", f"overlap@{depth}", f"rbo@{depth}", "kendall_tau", "shared"]

    def cells(row: QueryAgreement) -> list[str]:
        tau = "" if row.tau is None else f"{row.tau:.4f}"
        return [row.query, f"{row.overlap:.4f}", f"{row.rbo:.4f}", tau or "-", str(row.shared)]

    if fmt == "csv":
        return grid(header, [[c if c != "-" else "" for c in cells(r)] for r in changed], fmt)
    tau_text = "-" if means["kendall_tau"] is None else f"{means['kendall_tau']:.4f}"
    summary = grid(["", f"overlap@{depth}", f"rbo@{depth} (p={p:g})", "kendall_tau"],
                   [["mean", f"{means[f'overlap@{depth}']:.4f}", f"{means[f'rbo@{depth}']:.4f}", tau_text]], fmt)
    head = (f"{names[0]} vs {names[1]}: {len(rows)} queries in both, {len(only[0])} only in the first, "
            f"{len(only[1])} only in the second; tau over the documents both runs hold")
    if fmt == "latex":
        head = "% " + head
    changed_table = grid(header, [cells(r) for r in changed[:top]], fmt) if top else ""
    title = f"the {min(top, len(rows))} queries that changed most (lowest RBO):"
    if fmt == "latex":
        title = "% " + title
    return head + "\n" + summary + ("\n" + title + "\n" + changed_table if changed_table else "")
