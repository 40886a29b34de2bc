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


import torch

from attnlab.steer.base import Method, Param, require_spans
from attnlab.steer.dynamic import row_mass


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
        return [], [_SpotLightEdit(self.psi)]


class _SpotLightEdit:
    """The dynamic edit: one bias per (row, layer, step) on the span's keys."""

    def __init__(self, psi: float):
        self.psi = psi

    def reset(self) -> None:
        pass

    def layer_bias(self, layer, query, key, mask, scale, causal, plan):
        batch, heads, q_len, _ = query.shape
        k_len = key.shape[2]
        span = plan.context.key_mask("span:emphasis", k_len)
        q_valid = plan.context.valid_keys(k_len)[:, k_len - q_len:].float()
        mass = row_mass(query, key, mask, scale, causal, span, plan.chunk_elements)               # [B, H, Q]
        p = (mass * q_valid[:, None]).sum((1, 2)) / (q_valid.sum(1) * heads).clamp(min=1)        # [B]
        boost = torch.where(p < self.psi, torch.log(self.psi / p.clamp(min=1e-6)), torch.zeros_like(p))
        q_factors = boost.view(batch, 1, 1, 1).expand(batch, heads, q_len, 1)
        return q_factors, span.float()[..., None]


