"""The picture of ``attnlab heads``: one layers x heads panel per score, coloured by its value."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from attnlab.heads.report import HeadReport  # noqa: E402


def heads_grid(report: HeadReport, path: Path, scores: list[str] | None = None) -> Path:
    """A grid of layer x head heatmaps, one per score (in ``scores`` order, default all), flagged heads boxed."""
    names = list(scores or report.scores)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    n_layers, n_heads = report.model.n_layers, report.model.n_heads
    size = (3.0 + 0.12 * n_heads, 2.2 + 0.09 * n_layers)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False,
                             constrained_layout=True)
    for ax, name in zip(axes.flat, names):
        score = report.scores[name]
        ax.set_title(name if score.threshold is None else f"{name} ({len(score.flagged)} past {score.threshold:g})",
                     fontsize=9)
        ax.set_xlabel("head", fontsize=8)
        ax.set_ylabel("layer", fontsize=8)
        if score.values is None:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        data = np.asarray(score.values)
        im = ax.imshow(data, cmap="viridis" if score.order == "high" else "viridis_r", aspect="auto",
                       interpolation="nearest")
        ax.set_xticks(range(0, n_heads, max(1, n_heads // 12)))
        ax.set_yticks(range(0, n_layers, max(1, n_layers // 12)))
        ax.tick_params(labelsize=7)
        for head in score.flagged:
            layer, h = (int(x) for x in head[1:].split("H"))
            ax.add_patch(plt.Rectangle((h - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1))
        plt.colorbar(im, ax=ax, fraction=0.046)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"{report.model.name}: head roles (red boxes: past the threshold)", fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
