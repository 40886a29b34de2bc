"""ACT -- Yu et al., "Unveiling and Harnessing Hidden Attention Sinks: Enhancing LLMs without Training
through Attention Calibration" (ICML 2024).

For each steered head: hidden sinks ``S`` are the prompt keys other than the first real token whose
mean received attention ``c_j`` (over the queries that can see them) exceeds ``threshold`` (0.1). Their
attention is scaled by ``beta`` (0.4) and the freed mass goes to every other key in proportion to its
weight: ``A'_ij = beta A_ij`` on S, ``A_ij (1 - beta m_i) / (1 - m_i)`` elsewhere, ``m_i`` the row's mass
on S -- exactly the row-dependent bias ``log beta - log((1 - beta m_i) / (1 - m_i))`` on S, applied
through one extra q/k channel per steered head.

**Differences from the official code (each a documented bug there):** the first real token is
excluded from S (the code drops the first element of the sorted candidates, which is the BOS sink only
when BOS passes the threshold); every batch row is calibrated (the code edits row 0 only); at decode
steps S stays the set found on the prompt and the current query row is calibrated with the same formula
(the code's decode path breaks the row normalisation). Head filtering: pass ``heads`` from
:func:`attnlab.steer.selection.rank_heads` (per-head calibration on labelled data, as the paper does);
the default steers all heads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from attnlab.dynamic import LayerView
from attnlab.edits import head_set
from attnlab.errors import AttnlabError
from attnlab.probes.attention import ReceivedAttention, RowMass
from attnlab.spans import HeadSet
from attnlab.steer.base import Method, Param


class ACT(Method):
    """Attention calibration of hidden sinks (defaults beta = 0.4, threshold = 0.1)."""

    name = "act"
    params = (Param("beta", "float", 0.4, "factor on the attention to the hidden sinks", above=0, below=1),
              Param("threshold", "float", 0.1, "mean attention a key receives to count as a hidden sink", above=0,
                    below=1),
              Param("heads", "heads", "all", "heads to calibrate: all, L3, L3H1,L5H0-7"))
    selectable = {"heads": (Param("layers", "int", 0, "coarse-to-fine: rank whole layers first, then try single "
                                  "heads of the best this many layers only (0: try every head)", above=-1),)}

    def __init__(self, beta: float = 0.4, threshold: float = 0.1, heads="all"):
        self.beta = self.checked("beta", beta)
        self.threshold = self.checked("threshold", threshold)
        self.heads = heads

    def build(self, n_layers: int, n_heads: int):
        return [], [ACTCalibration(self.beta, self.threshold, head_set(self.heads, n_layers, n_heads))]

    def hyperparameters(self) -> dict:
        return {"beta": self.beta, "threshold": self.threshold, "heads": str(self.heads)}


@dataclass(frozen=True)
class ACTCalibration:
    """ACT's dynamic edit: find the hidden sinks on the prompt, then calibrate every query row's mass on them."""

    beta: float
    threshold: float
    heads: HeadSet

    def layer_bias(self, view: LayerView):
        heads = [h for layer, h in self.heads if layer == view.layer]
        if not heads:
            return None
        sinks = self.hidden_sinks(view)                                                             # [B, H, P]
        sinks = torch.cat([sinks, sinks.new_zeros(*sinks.shape[:2], view.k_len - sinks.shape[2])], dim=2)
        sinks = sinks[:, heads]                                                                     # [B, r, K]
        (mass,) = view.measure(RowMass(sinks), heads=heads)                                         # [B, r, Q]
        mass = mass.clamp(max=1 - 1e-6)
        coef = math.log(self.beta) - torch.log((1 - self.beta * mass) / (1 - mass))
        q_factors = coef.new_zeros(coef.shape[0], view.n_heads, view.q_len, len(heads))
        for r, h in enumerate(heads):
            q_factors[:, h, :, r] = coef[:, r]
        return q_factors, sinks.permute(0, 2, 1).float()                                            # [B, K, r]

    def hidden_sinks(self, view: LayerView) -> torch.Tensor:
        """``[B, H, P]`` bool over the prompt: found on the prompt's forward, kept in the run for decoding."""
        if view.layer not in view.memory:
            if not view.is_prompt:
                raise AttnlabError("ACT finds hidden sinks on the prompt's forward: enter attnlab.steer before the "
                                   "prompt is run (not in the middle of a generation)")
            (alpha,) = view.measure(ReceivedAttention())                                            # [B, H, P]
            ctx = view.context
            candidates = ctx.valid & ~ctx.key_mask("first", ctx.prompt_length)
            view.memory[view.layer] = (alpha > self.threshold) & candidates[:, None, :]
        return view.memory[view.layer]
