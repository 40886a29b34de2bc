"""The streaming-perplexity picture (matplotlib, Agg): running perplexity against tokens, one line per mode."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from attnlab.report.plots import finish  # noqa: E402

COLOURS = {"dense": "#888888", "window": "#d62728", "recompute": "#2ca02c", "sink": "#1f77b4", "h2o": "#9467bd",
           "tova": "#ff7f0e", "snapkv": "#8c564b"}


def stream_plot(report: dict, path: Path) -> Path:
    """Running perplexity (log scale) vs tokens for every mode of a :func:`stream_perplexity` report.

    Dotted verticals mark where the bounded caches start to evict (``num_sink + window``) and where the
    model's trained positions end (dense attention goes on past them only to show what happens there).
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.8), constrained_layout=True)
    for mode, curve in report["curves"].items():
        if curve["tokens"]:
            marker = "o" if mode == "recompute" and len(curve["tokens"]) < 60 else None
            ax.plot(curve["tokens"], curve["ppl"], label=mode, color=COLOURS.get(mode), marker=marker, markersize=3,
                    lw=1.4)
    ax.set_yscale("log")
    ax.axvline(report["cache_size"], color="black", ls=":", lw=0.8)
    ax.text(report["cache_size"], 1.0, " cache full", transform=ax.get_xaxis_transform(), fontsize=7, va="top")
    positions = report.get("model_positions")
    if positions and positions < report["tokens"]:
        ax.axvline(positions, color="grey", ls=":", lw=0.8)
        ax.text(positions, 0.93, " model positions", transform=ax.get_xaxis_transform(), fontsize=7, va="top",
                color="grey")
    ax.set_xlabel("tokens")
    ax.set_ylabel("running perplexity")
    return finish(fig, ax, f"streaming perplexity - {report['model']}, cache {report['num_sink']}+{report['window']}, "
                  f"{report['tokens']} tokens", path)
