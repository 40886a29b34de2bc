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

import torch

from attnlab.edits import head_set
from attnlab.steer.base import Method, Param
from attnlab.steer.dynamic import received, row_mass


class ACT(Method):
    """Attention calibration of hidden sinks (defaults beta = 0.4, threshold = 0.1)."""

    name = "act"
    params = (Param("beta", "float", 0.4, "factor on the attention to the hidden sinks", above=0, below=1),
              Param("threshold", "float", 0.1, "mean attention a key receives to count as a hidden sink", above=0,
                    below=1),
              Param("heads", "heads", "all", "heads to calibrate: all, L3, L3H1,L5H0-7"))
    selectable = {"heads": ()}

    def __init__(self, beta: float = 0.4, threshold: float = 0.1, heads="all"):
        self.beta = self.checked("beta", beta)
        self.threshold = self.checked("threshold", threshold)
        self.heads = heads

    def build(self, n_layers: int, n_heads: int):
        return [], [_ACTEdit(self.beta, self.threshold, head_set(self.heads, n_layers, n_heads))]

    def hyperparameters(self) -> dict:
        return {"beta": self.beta, "threshold": self.threshold, "heads": str(self.heads)}


class _ACTEdit:
    def __init__(self, beta: float, threshold: float, heads):
        self.beta, self.threshold, self.heads = beta, threshold, heads
        self.sinks: dict[int, torch.Tensor] = {}

    def reset(self) -> None:
        self.sinks = {}

    def hidden_sinks(self, layer, query, key, mask, scale, causal, plan) -> torch.Tensor:
        """``[B, H, P]`` bool over the prompt, detected on the prefill forward and kept for decoding."""
        ctx = plan.context
        p = ctx.prompt_length
        if layer not in self.sinks:
            if key.shape[2] != p:
                raise RuntimeError("ACT needs to see the prompt forward first")
            q_valid = ctx.valid_keys(p)[:, p - query.shape[2]:]
            alpha = received(query, key, mask, scale, causal, q_valid, plan.chunk_elements)      # [B, H, P]
            first = torch.zeros_like(ctx.valid)
            first[torch.arange(first.shape[0]), ctx.first] = True
            self.sinks[layer] = (alpha > self.threshold) & (ctx.valid & ~first)[:, None, :]
        return self.sinks[layer]

    def layer_bias(self, layer, query, key, mask, scale, causal, plan):
        heads = [h for l, h in self.heads if l == layer]
        if not heads:
            return None
        batch, n_heads, q_len, _ = query.shape
        k_len = key.shape[2]
        sinks = self.hidden_sinks(layer, query, key, mask, scale, causal, plan)
        sinks = torch.cat([sinks, sinks.new_zeros(*sinks.shape[:2], k_len - sinks.shape[2])], dim=2)
        sinks = sinks[:, heads]                                                                   # [B, r, K]
        m = row_mass(query[:, heads], _gqa(key, n_heads)[:, heads],
                     mask, scale, causal, sinks, plan.chunk_elements)                             # [B, r, Q]
        m = m.clamp(max=1 - 1e-6)
        coef = math.log(self.beta) - torch.log((1 - self.beta * m) / (1 - m))
        q_factors = query.new_zeros(batch, n_heads, q_len, len(heads), dtype=torch.float32)
        for r, h in enumerate(heads):
            q_factors[:, h, :, r] = coef[:, r]
        return q_factors, sinks.permute(0, 2, 1).float()                                          # [B, K, r]


def _gqa(key: torch.Tensor, n_heads: int) -> torch.Tensor:
    from attnlab.probes.chunked import repeat_kv

    return repeat_kv(key, n_heads // key.shape[1])
