"""Pictures of evaluation results: accuracy per bucket, sweep curves, and the differences of a whole table."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from attnlab.evals.harness import wilson  # noqa: E402
from attnlab.report.plots import finish  # noqa: E402


def bucket_plot(result: dict, path: Path) -> Path:
    """Grouped bars per bucket with 95% Wilson intervals, and the paired difference in the title."""
    names = list(result["buckets"])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 2), 3.6), constrained_layout=True)
    for offset, key, colour in ((-0.2, "unsteered", "#888888"), (0.2, "steered", "#1f77b4")):
        acc = [result["buckets"][b][key] for b in names]
        ns = [result["buckets"][b]["n"] for b in names]
        lo_hi = [wilson(a * n, n) for a, n in zip(acc, ns)]
        err = np.clip(np.array([[a - lo, hi - a] for a, (lo, hi) in zip(acc, lo_hi)]).T, 0, None)
        ax.bar(x + offset, acc, 0.4, yerr=err, capsize=3, label=key, color=colour)
    ax.set_xticks(x, names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center",
                  fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(result.get("metric", "accuracy"))
    p = result["paired"]
    method = result["method"]["name"] if result["method"] else "none"
    return finish(fig, ax, f"{result['task']['name']} · {method}: difference {p['difference']:+.3f} "
                  f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}] (n={result['n']})", path)


def sweep_plot(results: list[tuple[float, dict]], parameter: str, path: Path) -> Path:
    """Steered accuracy (with its 95% interval) against the swept value; the unsteered level dashed."""
    values = [v for v, _ in results]
    acc = [r["steered"]["accuracy"] for _, r in results]
    lo = [r["steered"]["ci95"][0] for _, r in results]
    hi = [r["steered"]["ci95"][1] for _, r in results]
    fig, ax = plt.subplots(figsize=(5, 3.4), constrained_layout=True)
    ax.plot(range(len(values)), acc, marker="o", label="steered")
    ax.fill_between(range(len(values)), lo, hi, alpha=0.2)
    ax.axhline(results[0][1]["unsteered"]["accuracy"], color="grey", ls="--", label="unsteered")
    ax.set_xticks(range(len(values)), [str(v) for v in values])
    ax.set_xlabel(parameter)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.05)
    return finish(fig, ax, f"{results[0][1]['task']['name']} · {results[0][1]['method']['name']} sweep over "
                  f"{parameter}", path)


VERDICT_COLOURS = {"helps": "#2ca02c", "hurts": "#d62728", "no clear effect": "#7f7f7f"}


def verdict(paired: dict) -> str:
    """``helps`` / ``hurts`` when the paired 95% CI lies above / below zero, else ``no clear effect``."""
    return "helps" if paired["ci_low"] > 0 else "hurts" if paired["ci_high"] < 0 else "no clear effect"


def difference_plot(rows: list[tuple[str, dict]], path: Path) -> Path:
    """One line per evaluation ``(label, report)``: the paired difference steered − unsteered with its 95% CI,
    coloured by :func:`verdict` (a forest plot of a whole results table)."""
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(rows) + 1.2), constrained_layout=True)
    for y, (label, report) in enumerate(reversed(rows)):
        p = report["paired"]
        ax.errorbar(p["difference"], y, xerr=[[p["difference"] - p["ci_low"]], [p["ci_high"] - p["difference"]]],
                    fmt="o", capsize=3, color=VERDICT_COLOURS[verdict(p)])
    for name, colour in VERDICT_COLOURS.items():
        ax.plot([], [], "o", color=colour, label=name)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [label for label, _ in reversed(rows)], fontsize=7)
    ax.set_xlabel("steered − unsteered (paired, 95% CI)")
    return finish(fig, ax, "each method on its task: difference in the primary metric", path)
