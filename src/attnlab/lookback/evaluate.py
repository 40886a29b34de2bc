"""Lookback Lens evaluation: in-domain and transfer AUROC with baselines, and guided decoding's hallucination rate.

Follows Chuang et al. 2024 (``step03_lookback_lens.py``): train on task A, AUROC on A's held-out part and on all of
task B (transfer). Differences from the paper's code: the 80/20 split is by example (every reply, span and window
of an example on one side; the paper splits spans or windows at random, two-fold), and each AUROC carries a 95%
bootstrap CI resampling examples, not rows. Baselines on the same rows: mean token log-probability and mean
negative entropy (higher = faithful), a hidden-state probe (standardised mean last-layer state, logistic
regression; the paper's hidden-state comparison), and the paper's trivial baseline, the mean lookback ratio over
all heads.
"""
from __future__ import annotations

import numpy as np

from attnlab.evals.stats import paired_bootstrap
from attnlab.lookback.detector import LookbackDetector


def auroc(y, scores) -> float:
    """Area under the ROC curve of ``scores`` for labels ``y`` (1 = positive), ties counted half: the Mann-Whitney
    statistic, equal to scikit-learn's ``roc_auc_score`` without its per-call checks (the bootstrap calls it often)."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    _, where, counts = np.unique(np.asarray(scores, dtype=float), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[where]                 # 1-based ranks, ties averaged
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_ci(y, scores, groups, *, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """AUROC of ``scores`` for labels ``y`` (1 = faithful), the Lookback Lens paper's metric, with a percentile
    bootstrap over ``groups`` (the paper reports none)."""
    y, scores, groups = np.asarray(y), np.asarray(scores, dtype=float), np.asarray(groups)
    out = {"n": int(y.size), "n_faithful": int(y.sum()), "n_examples": int(np.unique(groups).size)}
    if np.unique(y).size < 2:
        return {**out, "auroc": None, "ci_low": None, "ci_high": None}
    distinct = np.unique(groups)
    rows = [np.flatnonzero(groups == g) for g in distinct]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        take = np.concatenate([rows[i] for i in rng.integers(0, len(rows), len(rows))])
        if np.unique(y[take]).size == 2:
            values.append(auroc(y[take], scores[take]))
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {**out, "auroc": auroc(y, scores), "ci_low": float(lo), "ci_high": float(hi)}


def _rows(tab: dict, keep: np.ndarray) -> dict:
    return {k: v[keep] for k, v in tab.items()}


def _hidden_probe(train: dict):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(train["hidden"], train["y"])


def detection(tables: dict, test_groups: dict, shape: tuple, setting: str, *, window: int = 8,
              model_name: str = "", resamples: int = 1000) -> dict:
    """For each task A of ``tables`` (task -> :func:`attnlab.lookback.features.table` of one ``setting``): fit a
    :class:`LookbackDetector` and the hidden probe on A's training examples, and score A's held-out examples
    (``test_groups[A]``) and every other task (transfer), next to the baselines."""
    results = {}
    for task, tab in tables.items():
        held = np.isin(tab["group"], list(test_groups[task]))
        train = _rows(tab, ~held)
        det = LookbackDetector(*shape, setting=setting, window=window, model_name=model_name)
        det.fit(train["lookback"], train["y"])
        probe = _hidden_probe(train)
        targets = {"test": _rows(tab, held)}
        targets.update({f"transfer:{other}": t for other, t in tables.items() if other != task})
        entry = {"train": auroc_ci(train["y"], det.predict_proba(train["lookback"])[:, 1], train["group"],
                                   resamples=resamples)}
        for name, rows in targets.items():
            scores = {"lookback_lens": det.predict_proba(rows["lookback"])[:, 1],
                      "mean_lookback_ratio": rows["lookback"].mean(1),
                      "logprob": rows["logprob"], "neg_entropy": -rows["entropy"],
                      "hidden_probe": probe.predict_proba(rows["hidden"])[:, 1]}
            entry[name] = {k: auroc_ci(rows["y"], s, rows["group"], resamples=resamples) for k, s in scores.items()}
        results[task] = entry
    return results


def decoding_comparison(hallucinated: dict, *, resamples: int = 10_000) -> dict:
    """Hallucination rates per decoding (``name -> [0/1 per prompt]``) and guided minus each other, paired CI; the
    paper (Chuang et al. 2024) reports GPT-4o-judged rates on XSum and exact match on NQ, without CIs."""
    rates = {k: float(np.mean(v)) for k, v in hallucinated.items()}
    paired = {f"guided-{k}": paired_bootstrap(v, hallucinated["guided"], resamples=resamples)
              for k, v in hallucinated.items() if k != "guided"}
    return {"n": len(hallucinated["guided"]), "hallucination_rate": rates, "paired": paired}
