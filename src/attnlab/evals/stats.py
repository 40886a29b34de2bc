"""Paired statistics for unsteered vs steered accuracy on the same prompts."""
from __future__ import annotations

import math

import numpy as np


def paired_bootstrap(unsteered, steered, *, resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> dict:
    """Difference of means (steered - unsteered) with a percentile bootstrap CI over paired examples."""
    u = np.asarray(unsteered, dtype=float)
    s = np.asarray(steered, dtype=float)
    if u.shape != s.shape or u.size == 0:
        raise ValueError("paired_bootstrap needs two equal-length, non-empty score lists")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, u.size, size=(resamples, u.size))
    diffs = (s[idx] - u[idx]).mean(axis=1)
    lo, hi = np.quantile(diffs, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"difference": float((s - u).mean()), "ci_low": float(lo), "ci_high": float(hi), "level": level,
            "resamples": resamples}


def mcnemar_exact(unsteered, steered) -> dict:
    """Exact two-sided McNemar test on paired 0/1 outcomes: ``b`` lost, ``c`` gained by steering."""
    u = np.asarray(unsteered, dtype=bool)
    s = np.asarray(steered, dtype=bool)
    b, c = int((u & ~s).sum()), int((~u & s).sum())
    n = b + c
    if n == 0:
        return {"lost": b, "gained": c, "p_value": 1.0}
    k = min(b, c)
    p = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return {"lost": b, "gained": c, "p_value": min(1.0, 2 * p)}
