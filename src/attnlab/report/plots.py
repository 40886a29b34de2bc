"""Static pictures (matplotlib, Agg): layer x head heatmaps and attention maps."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402
import numpy as np  # noqa: E402

from attnlab.report.schema import Report  # noqa: E402


def finish(fig, ax, title: str, path: Path) -> Path:
    """Title, legend, save as PNG (dpi 120) and close: the common end of attnlab's line and bar plots."""
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _heatmap(ax, values, title: str, cmap: str, vmin=None, vmax=None) -> None:
    data = np.asarray(values)
    im = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(0, data.shape[1], max(1, data.shape[1] // 16)))
    ax.set_yticks(range(0, data.shape[0], max(1, data.shape[0] // 16)))      # at most ~16 labels per axis
    if data.size <= 256:
        for (l, h), v in np.ndenumerate(data):
            ax.text(h, l, f"{v:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if (vmax is not None and v < 0.5 * vmax) else "black")
    plt.colorbar(im, ax=ax, fraction=0.046)


def profile_heatmap(report: Report, path: Path) -> Path:
    """Two panels, layers x heads: mean first-token mass and mean attention entropy."""
    s = report.summary
    n_panels = 2 + len(s.span_mass)
    height = 3.4 + 0.05 * max(0, len(s.first_token_mass) - 12)     # taller for deep models (30 layers)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels, height), constrained_layout=True)
    _heatmap(axes[0], s.first_token_mass, f"attention on first token ({report.texts[0].first_token})", "viridis", 0, 1)
    _heatmap(axes[1], s.entropy, "attention entropy (nats)", "magma")
    for ax, (name, values) in zip(axes[2:], s.span_mass.items()):
        _heatmap(ax, values, f"attention on '{name[:24]}'", "viridis", 0, 1)
    fig.suptitle(f"{report.model.name} - Sink ratio {s.sink_ratio:.0f}%", fontsize=11)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def attention_maps(maps, heads, tokens: list[str], path: Path) -> Path:
    """A grid of full attention maps (rows = queries, columns = keys) for the given (layer, head) pairs."""
    heads = list(heads)
    cols = min(4, len(heads))
    rows = (len(heads) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False, constrained_layout=True)
    labels = [t.replace("Ġ", "").replace("Ċ", "\\n")[:8] for t in tokens]
    for ax, (l, h) in zip(axes.flat, heads):
        ax.imshow(np.asarray(maps[l, h]), cmap="viridis", norm=PowerNorm(0.5, vmin=0, vmax=1))  # sqrt: small weights show
        ax.set_title(f"L{l}H{h}", fontsize=9)
        if len(tokens) <= 40:
            ax.set_xticks(range(len(tokens)), labels, rotation=90, fontsize=5)
            ax.set_yticks(range(len(tokens)), labels, fontsize=5)
    for ax in list(axes.flat)[len(heads):]:
        ax.axis("off")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
