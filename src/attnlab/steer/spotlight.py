"""SpotLight -- Venkateswaran & Contractor, "Spotlight Your Instructions: Instruction-following with Dynamic
Attention Steering" (arXiv 2505.12025).

At every layer and every forward step, per batch row: ``p`` = the share of attention on the emphasised
span, over all heads and the query rows of this step, of the *unsteered* attention. If ``p < psi``
(default 0.2), ``log(psi / p)`` is added to the span's logits for all heads and queries; otherwise
nothing changes (never down-weights). Like the official code the achieved share is not exactly ``psi``
(one aggregate bias, rows renormalise). **Differences from the official code:** the logits themselves
are biased (the code biases ``log(A + 1e-10)``, which differs by that epsilon); ``p`` is floored at 1e-6
so a step where no query can see the span gets a finite bias; statistics come from attnlab's chunked
recomputation instead of eager maps, and static edits of other methods in the same block are not
included in ``p``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from attnlab.dynamic import LayerView
from attnlab.probes.attention import RowMass
from attnlab.steer.base import Method, Param, require_spans


class SpotLight(Method):
    """Keep at least ``psi`` of the attention on the emphasised span, layer by layer and step by step."""

    name = "spotlight"
    span = "emphasis"
    params = (Param("psi", "float", 0.2, "share of attention the emphasised text keeps at least", above=0, below=1),)

    def __init__(self, emphasize=None, psi: float = 0.2, *, spans=None):
        self.emphasize = require_spans(emphasize if emphasize is not None else spans, "SpotLight",
                                       "spans to emphasise")
        self.psi = self.checked("psi", psi)

    def spans(self) -> dict:
        return {"emphasis": self.emphasize}

    def build(self, n_layers: int, n_heads: int):
        return [], [SpotLightBoost(self.psi)]


@dataclass(frozen=True)
class SpotLightBoost:
    """SpotLight's dynamic edit: one bias per (row, layer, step) on the span's keys, when its share is below psi."""

    psi: float
    span: str = "emphasis"

    def layer_bias(self, view: LayerView):
        span = view.context.key_mask(f"span:{self.span}", view.k_len)
        q_valid = view.context.valid_keys(view.k_len)[:, view.k_len - view.q_len:].float()
        (mass,) = view.measure(RowMass(span))                                                       # [B, H, Q]
        p = (mass * q_valid[:, None]).sum((1, 2)) / (q_valid.sum(1) * view.n_heads).clamp(min=1)   # [B]
        boost = torch.where(p < self.psi, torch.log(self.psi / p.clamp(min=1e-6)), torch.zeros_like(p))
        q_factors = boost.view(-1, 1, 1, 1).expand(-1, view.n_heads, view.q_len, 1)
        return q_factors, span.float()[..., None]
