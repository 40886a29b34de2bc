"""Lookback Lens features: mean lookback ratio over a span of reply tokens, one ``[L*H]`` vector per span.

The two settings of Chuang et al. 2024 (``step03_lookback_lens.py``), from per-token labels (1 faithful,
0 hallucinated):

* ``span`` (predefined span): a faithful reply is one example (label 1); a hallucinated one gives the tokens
  before its first hallucinated token (label 1, if any), its hallucinated tokens concatenated (label 0), and the
  tokens after its last hallucinated token (label 1, if any).
* ``window`` (sliding window, 8 tokens in the paper): every ``window`` consecutive tokens of a reply, labelled
  with the smallest token label inside (any hallucinated token makes the window hallucinated); replies shorter
  than the window give none, as in the paper's code.

Baselines use the same token sets: mean log-probability, mean entropy, mean last-layer hidden state.
"""
from __future__ import annotations

import numpy as np

from attnlab.errors import AttnlabError


def span_units(labels) -> list[tuple[np.ndarray, int]]:
    """The predefined-span examples of one reply (Chuang et al. 2024): ``(token indices, label)`` pairs (see the
    module docstring)."""
    labels = np.asarray(labels)
    bad = np.flatnonzero(labels == 0)
    if bad.size == 0:
        return [(np.arange(labels.size), 1)]
    units = [(np.arange(bad[0]), 1)] if bad[0] > 0 else []
    units.append((bad, 0))
    if bad[-1] < labels.size - 1:
        units.append((np.arange(bad[-1] + 1, labels.size), 1))
    return units


def window_units(labels, window: int = 8) -> list[tuple[np.ndarray, int]]:
    """The sliding-window examples of one reply (Chuang et al. 2024): each ``window`` consecutive tokens, labelled by
    their minimum."""
    labels = np.asarray(labels)
    return [(np.arange(j - window + 1, j + 1), int(labels[j - window + 1:j + 1].min()))
            for j in range(window - 1, labels.size)]


def units(labels, setting: str, window: int = 8) -> list[tuple[np.ndarray, int]]:
    """The examples the Lookback Lens ``setting`` (``span`` or ``window``) makes of one reply's token labels."""
    if setting == "span":
        return span_units(labels)
    if setting == "window":
        return window_units(labels, window)
    raise AttnlabError(f"unknown feature setting '{setting}': choose span or window")


def lookback_features(ratios: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """``[L*H]``: the mean lookback ratio of each head over ``tokens`` of a reply's ``ratios [L, H, T]``, the
    Lookback Lens feature vector (Chuang et al. 2024; layer-major, as the paper flattens it)."""
    return ratios[:, :, tokens].mean(-1).reshape(-1)


def table(traces, items, setting: str, window: int = 8) -> dict:
    """Every Lookback Lens example (Chuang et al. 2024) of ``setting`` over labelled replies, as arrays.

    ``traces`` are :class:`attnlab.lookback.probe.Trace` of the ``items`` (dicts with ``token_labels`` and
    ``group``). Returns ``lookback [N, L*H]``, ``hidden [N, D]``, ``logprob [N]``, ``entropy [N]`` (means over each
    example's tokens), ``y [N]`` (1 faithful) and ``group [N]`` (the example the reply answers, for splits and
    the bootstrap).
    """
    rows = {"lookback": [], "hidden": [], "logprob": [], "entropy": [], "y": [], "group": []}
    for trace, item in zip(traces, items):
        for tokens, lab in units(item["token_labels"], setting, window):
            rows["lookback"].append(lookback_features(trace.ratios, tokens))
            rows["hidden"].append(trace.hidden[tokens].mean(0))
            rows["logprob"].append(trace.logprob[tokens].mean())
            rows["entropy"].append(trace.entropy[tokens].mean())
            rows["y"].append(lab)
            rows["group"].append(item["group"])
    if not rows["y"]:
        raise AttnlabError(f"no {setting} examples in these replies (all shorter than the window of {window})")
    return {k: np.asarray(v) for k, v in rows.items()}
