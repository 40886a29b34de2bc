"""Statistics of a layer's *unsteered* attention, for dynamic edits (ACT, SpotLight).

Computed from the layer's ``q`` and ``k`` in query chunks (:func:`attnlab.probes.chunked.attention_chunks`),
so memory grows with n, never n^2.
"""
from __future__ import annotations

import torch

from attnlab.probes.chunked import attention_chunks


def row_mass(query, key, mask, scale, causal, keys: torch.Tensor, chunk_elements: int) -> torch.Tensor:
    """``[B, H, Q]``: each query row's attention on ``keys`` (``[B, K]`` or per head ``[B, H, K]``)."""
    sel = keys.float()
    sel = sel[:, None, None, :] if sel.dim() == 2 else sel[:, :, None, :]
    parts = [(probs * sel).sum(-1) for _, probs, _ in attention_chunks(query, key, mask, scale, causal,
                                                                       chunk_elements)]
    return torch.cat(parts, dim=2)


def received(query, key, mask, scale, causal, q_valid: torch.Tensor, chunk_elements: int) -> torch.Tensor:
    """``[B, H, K]``: mean attention each key receives from the real queries that can see it (Gu's alpha)."""
    total, seen = None, None
    for start, probs, allowed in attention_chunks(query, key, mask, scale, causal, chunk_elements):
        qv = q_valid[:, start:start + probs.shape[2]].float()
        part = (probs * qv[:, None, :, None]).sum(2)
        count = (allowed[:, 0].float() * qv[:, :, None]).sum(1)
        total = part if total is None else total + part
        seen = count if seen is None else seen + count
    return total / seen.clamp(min=1)[:, None, :]
