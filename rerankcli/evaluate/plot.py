"""Per-query differences against the baseline as a PNG: one panel per metric, queries sorted.

A sorted difference plot shows at a glance what a mean hides: how many queries a reranker
helps, how many it hurts, and by how much. matplotlib draws headless (Agg) and is imported only
here, so commands that draw nothing do not pay for it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from rerankcli.core.atomic import atomic_open
from rerankcli.evaluate.compare import Comparison


def plot_differences(comparison: Comparison, path: str | Path) -> None:
    """Write the per-query difference plot of ``comparison`` to ``path`` (PNG, atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    others = [run for run in comparison.runs if run != comparison.baseline]
    panels = len(comparison.metrics)
    figure = Figure(figsize=(7, 2.6 * panels), layout="constrained")
    axes = figure.subplots(panels, 1, squeeze=False)[:, 0]
    positions = np.arange(1, len(comparison.queries) + 1)
    for ax, metric in zip(axes, comparison.metrics):
        base = comparison.values[metric][comparison.baseline]
        for run in others:
            diff = np.sort(comparison.values[metric][run] - base)[::-1]
            if len(others) == 1:
                colours = np.where(diff >= 0, "#2a7fbf", "#d0553a")
                ax.bar(positions, diff, width=1.0, color=colours, label=run)
            else:
                ax.step(positions, diff, where="mid", label=run)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_title(f"{metric}: run - {comparison.baseline}, per query (sorted)", fontsize=10)
        ax.set_xlim(0.5, len(positions) + 0.5)
        ax.set_ylabel(f"Δ {metric}")
        ax.legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel(f"queries ({len(positions)}), sorted by difference")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())
