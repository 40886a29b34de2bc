"""Head importance and pruning (Michel, Levy, Neubig, "Are Sixteen Heads Really Better than One?", NeurIPS 2019).

Each head's attention output is multiplied by a gate ``xi[l, h]`` (the plan's ``head_gate`` in the seam,
outside ``no_grad``). At ``xi = 1`` the importance of head ``h`` is the paper's

    I_h = E_x | dL(x) / d xi_h |

with ``L(x)`` the loss of example ``x`` (mean cross-entropy of its scored tokens; on the ``text`` task the
language-modelling loss of the text). Each example gets its own gate (``head_gate [B, L, H]``), so one backward
over a batch gives every example's own gradient and the absolute value is taken per example, as the formula
reads. As the paper does (following Molchanov et al. 2017), the scores are then normalised per layer by their
l2 norm: ``I[l] / ||I[l]||_2``. The transformers port of the paper's code (``run_bertology.py``) accumulates
the absolute gradient of each *batch* and divides by the token count, then min-max scales to [0, 1]; here the
batch of the expectation is one example and there is no min-max step.

Two companions: the **ablation importance** of a head is how much the task's loss rises (and its accuracy
falls) when that head alone is masked, and the **pruning curve** masks
the least important heads in steps of 10% of all heads, against as many random heads. Importance is computed
once at ``xi = 1``; the bertology port instead re-estimates it after each 10% round (until the metric falls
below 0.9x), so our curve is the cheaper, non-iterative variant.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attnlab.errors import AttnlabError
from attnlab.heads.ablation import (AblationCurves, ablation_curves, batch_losses, make_examples, mask_gate,
                                    ranked_heads, score)
from attnlab.models.config import ModelShape
from attnlab.spans import head_name

FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _pad_id(tokenizer):
    pad = getattr(tokenizer, "pad_token_id", None)
    return pad if pad is not None else getattr(tokenizer, "eos_token_id", None)


def gradient_importance(model, examples, batch_size: int = 4, pad_id: int | None = None) -> torch.Tensor:
    """``[L, H]``: ``E_x |dL(x)/d xi|`` at ``xi = 1`` over the :class:`~attnlab.heads.ablation.ScoredTokens`
    ``examples`` (unnormalised). Only the gate's gradient is computed (``torch.autograd.grad``); the model's
    parameters get no ``.grad``."""
    shape = ModelShape.of(model)
    device = next(model.parameters()).device
    total = torch.zeros(shape.n_layers, shape.n_heads, dtype=torch.float64)
    with torch.enable_grad():
        for start in range(0, len(examples), batch_size):
            rows = examples.ids[start:start + batch_size]
            gate = torch.ones(len(rows), shape.n_layers, shape.n_heads, device=device, requires_grad=True)
            loss, _ = batch_losses(model, rows, examples.scored[start:start + batch_size], gate, pad_id)
            (grad,) = torch.autograd.grad(loss.sum(), gate)
            total += grad.abs().sum(0).double().cpu()
    return total / len(examples)


def normalize_by_layer(scores: torch.Tensor) -> torch.Tensor:
    """Each layer's scores divided by their l2 norm (Michel et al. 2019, after Molchanov et al. 2017; a zero layer stays zero)."""
    return scores / scores.norm(dim=1, keepdim=True).clamp(min=1e-20)


def ablation_importance(model, examples, batch_size: int = 8, pad_id: int | None = None) -> dict:
    """Mask each head alone: ``{"loss": [L, H] rise of the mean loss, "accuracy": [L, H] fall of the accuracy,
    "base_loss", "base_accuracy"}`` against the unmasked model, on ``examples``. Costs L x H evaluations."""
    shape = ModelShape.of(model)
    base_acc, base_loss = score(model, examples, None, batch_size, pad_id)
    loss = torch.zeros(shape.n_layers, shape.n_heads, dtype=torch.float64)
    acc = torch.zeros_like(loss)
    for layer in range(shape.n_layers):
        for head in range(shape.n_heads):
            a, l = score(model, examples, mask_gate([(layer, head)], shape.n_layers, shape.n_heads), batch_size,
                         pad_id)
            loss[layer, head] = float(l.mean() - base_loss.mean())
            acc[layer, head] = float(base_acc.mean() - a.mean())
    return {"loss": loss, "accuracy": acc, "base_loss": float(base_loss.mean()),
            "base_accuracy": float(base_acc.mean())}


@dataclass
class HeadImportance:
    """Importance of every head: ``scores`` (``[L, H]``, normalised per layer if ``normalized``), ``raw`` (before
    normalising) and, when measured, ``ablation`` (:func:`ablation_importance`'s result)."""

    task: str
    params: dict
    scores: torch.Tensor
    raw: torch.Tensor
    normalized: bool
    ablation: dict | None = None

    def ranking(self) -> list[tuple[int, int]]:
        """All heads, most important first."""
        return ranked_heads(self.scores, *self.scores.shape)

    def table(self, top: int | None = None) -> list[dict]:
        """Rows ``{rank, head, importance, raw[, ablation_loss, ablation_accuracy]}``, most important first."""
        rows = []
        for rank, (layer, head) in enumerate(self.ranking()[:top], 1):
            row = {"rank": rank, "head": head_name(layer, head), "importance": float(self.scores[layer, head]),
                   "raw": float(self.raw[layer, head])}
            if self.ablation is not None:
                row["ablation_loss"] = float(self.ablation["loss"][layer, head])
                row["ablation_accuracy"] = float(self.ablation["accuracy"][layer, head])
            rows.append(row)
        return rows

    def to_json(self) -> dict:
        out = {"task": self.task, "params": self.params, "normalized_by_layer": self.normalized,
               "scores": self.scores.tolist(), "raw": self.raw.tolist(), "table": self.table()}
        if self.ablation is not None:
            out["ablation"] = {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in self.ablation.items()}
            out["spearman_gradient_vs_ablation_loss"] = spearman(self.scores, self.ablation["loss"])
        return out

    def plot(self, path) -> Path:
        """Layers x heads heatmaps: the gradient importance and, when measured, the loss rise of ablating each head."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = [(self.scores, "gradient importance " + ("(l2-normalised per layer)" if self.normalized else ""))]
        if self.ablation is not None:
            panels.append((self.ablation["loss"], "loss rise when the head alone is masked"))
        n_layers, n_heads = self.scores.shape
        fig, axes = plt.subplots(1, len(panels), figsize=(3.2 + 0.35 * n_heads * len(panels) + 2 * len(panels),
                                                          2 + 0.22 * n_layers), constrained_layout=True, squeeze=False)
        for ax, (values, title) in zip(axes[0], panels):
            data = np.asarray(values, dtype=float)
            im = ax.imshow(data, cmap="viridis", aspect="auto")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            ax.set_xticks(range(n_heads))
            ax.set_yticks(range(0, n_layers, max(1, n_layers // 15)))
            fig.colorbar(im, ax=ax, fraction=0.05)
        fig.suptitle(f"head importance on '{self.task}' (Michel et al. 2019)", fontsize=10)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return Path(path)


def spearman(a, b) -> float:
    """Spearman rank correlation of two ``[L, H]`` score tensors (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()).statistic)


def head_importance(model, tokenizer, task="text", n: int = 16, seed: int = 0, normalize: bool = True,
                    ablation: bool = False, batch_size: int = 4, **task_params) -> HeadImportance:
    """Head importance of Michel et al. 2019 ("Are Sixteen Heads Really Better than One?"): ``E_x |dL(x)/d xi_h|``
    at ``xi = 1``, normalised per layer by the l2 norm when ``normalize`` (as the paper does); with ``ablation``
    also each head's loss rise and accuracy fall when masked alone (L x H more evaluations).

    ``task``: a name of :data:`attnlab.heads.ablation.TASKS` (``text``: the language-modelling loss of ``n`` prose
    windows) or :class:`~attnlab.heads.ablation.ScoredTokens`.
    """
    examples = make_examples(task, tokenizer, n, seed, **task_params)
    pad = _pad_id(tokenizer)
    raw = gradient_importance(model, examples, batch_size, pad)
    found = ablation_importance(model, examples, batch_size, pad) if ablation else None
    return HeadImportance(examples.name, examples.params, normalize_by_layer(raw) if normalize else raw, raw,
                          normalize, found)


def pruning_curve(model, tokenizer, importance, task="text", fractions=FRACTIONS, draws: int = 3, n: int = 16,
                  seed: int = 0, batch_size: int = 8, **task_params) -> AblationCurves:
    """Mask the least important heads, ``round(f * L * H)`` of them for each ``f`` of ``fractions``, against as many
    random heads (Michel et al. 2019, Figure 3). ``importance``: :class:`HeadImportance` or an ``[L, H]`` tensor
    (higher = more important). Returns :class:`~attnlab.heads.ablation.AblationCurves` labelled
    ``least important first``."""
    scores = importance.scores if isinstance(importance, HeadImportance) else torch.as_tensor(importance)
    shape = ModelShape.of(model)
    if any(not 0 <= f <= 1 for f in fractions):
        raise AttnlabError(f"fractions must lie between 0 and 1, got {list(fractions)}")
    least_first = ranked_heads(-torch.as_tensor(scores, dtype=torch.float64), shape.n_layers, shape.n_heads)
    ks = [round(f * shape.n_layers * shape.n_heads) for f in fractions]
    return ablation_curves(model, tokenizer, least_first, task, ks, draws, n, seed, batch_size,
                           label="least important first", **task_params)
