"""Recompute attention probabilities from ``q`` and ``k`` in query chunks, never the whole ``n x n`` map.

This is the eager softmax (``softmax(q k^T * scale + mask)``), computed in float32 for ``c`` queries at a
time, with ``c`` chosen so that one chunk holds about ``chunk_elements`` numbers. Memory therefore grows
with the sequence length ``n`` (one ``[B, H, c, n]`` chunk), not with ``n^2``.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch


def repeat_kv(states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """``[B, Hkv, K, D] -> [B, Hkv * n_rep, K, D]``: each KV head serves ``n_rep`` query heads (GQA)."""
    if n_rep == 1:
        return states
    b, h, k, d = states.shape
    return states[:, :, None].expand(b, h, n_rep, k, d).reshape(b, h * n_rep, k, d)


def allowed_keys(mask, start: int, stop: int, q_len: int, k_len: int, causal: bool, device) -> torch.Tensor:
    """Boolean ``[B|1, 1, c, K]``: which keys queries ``start:stop`` may attend to, as SDPA would apply it.

    ``mask`` is transformers' boolean SDPA mask, a float additive mask, or None (then causal iff
    ``causal`` and more than one query, the queries being the last ``q_len`` of ``k_len`` positions).
    """
    if mask is None:
        if causal and q_len > 1:
            q_pos = torch.arange(start, stop, device=device) + (k_len - q_len)
            return (torch.arange(k_len, device=device)[None, :] <= q_pos[:, None])[None, None]
        return torch.ones(1, 1, stop - start, k_len, dtype=torch.bool, device=device)
    chunk = mask[:, :, start:stop] if mask.shape[2] > 1 else mask
    if chunk.dtype == torch.bool:
        return chunk
    return chunk > torch.finfo(chunk.dtype).min / 2


def attention_chunks(query, key, mask, scale: float, causal: bool,
                     chunk_elements: int = 2 ** 22) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield ``(start, probs [B, H, c, K] float32, allowed [B|1, 1, c, K])`` over query chunks.

    Rows with no allowed key (padding queries) come out as zeros, not NaN.
    """
    batch, heads, q_len, _ = query.shape
    k_len = key.shape[2]
    keys = repeat_kv(key, heads // key.shape[1]).float()
    step = max(1, chunk_elements // max(1, batch * heads * k_len))
    for start in range(0, q_len, step):
        stop = min(q_len, start + step)
        scores = torch.matmul(query[:, :, start:stop].float(), keys.transpose(-1, -2)) * scale
        allowed = allowed_keys(mask, start, stop, q_len, k_len, causal, query.device)
        if mask is not None and mask.dtype != torch.bool:
            scores = scores + (mask[:, :, start:stop] if mask.shape[2] > 1 else mask).float()
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        yield start, probs, allowed
