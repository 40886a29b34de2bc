"""The selector shared by every eviction policy: keep the sinks, the most recent tokens, and the top scores.

Pure tensor functions, so they can be tested on hand-made scores:

* :func:`keep_indices` -- sorted indices of the tokens to keep, per batch row and per (KV) head;
* :func:`group_heads` -- GQA aggregation of per-query-head scores onto the KV head each group shares.
"""
from __future__ import annotations

import torch

from attnlab.errors import AttnlabError


def keep_indices(scores: torch.Tensor, num_sink: int, recent: int, capacity: int) -> torch.Tensor:
    """Indices ``[B, H, min(n, capacity)]`` (ascending) of the tokens to keep among ``n = scores.shape[-1]``.

    The first ``num_sink`` tokens (attention sinks, Xiao et al. ICLR 2024) and the last ``recent`` tokens are
    always kept; the rest of the budget goes to the highest ``scores [B, H, n]`` among the other tokens (H2O,
    Zhang et al. NeurIPS 2023; TOVA, Oren et al. EMNLP 2024; SnapKV, Li et al. NeurIPS 2024). Ties go to
    the earlier token. ``H`` may be 1 for a selection shared by all heads.
    """
    if num_sink < 0 or recent < 0 or capacity < 1:
        raise AttnlabError(f"bad selection sizes: num_sink={num_sink}, recent={recent}, capacity={capacity}")
    n = scores.shape[-1]
    if n <= capacity:
        return torch.arange(n, device=scores.device).expand(*scores.shape[:-1], n)
    if num_sink + recent > capacity:
        raise AttnlabError(f"num_sink ({num_sink}) + recent ({recent}) exceed the cache capacity ({capacity})")
    idx = torch.arange(n, device=scores.device)
    protected = (idx < num_sink) | (idx >= n - recent)
    free = capacity - int(protected.sum())
    # stable sort: among equal scores the earlier token wins
    candidates = scores.float().masked_fill(protected, float("-inf"))
    order = torch.argsort(candidates, dim=-1, descending=True, stable=True)[..., :free]
    chosen = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    chosen.scatter_(-1, order, True)
    chosen |= protected
    return idx.expand_as(chosen)[chosen].view(*scores.shape[:-1], capacity)


def group_heads(scores: torch.Tensor, n_kv: int, reduce: str = "mean") -> torch.Tensor:
    """``[B, H, ...] -> [B, n_kv, ...]``: combine the ``H / n_kv`` query heads that share each KV head (GQA).

    ``reduce`` is ``"mean"`` (kvpress, and the GQA fix of SnapKV, Li et al. NeurIPS 2024) or ``"max"`` (a token
    any head of the group needs is kept). H2O (Zhang et al., NeurIPS 2023) was defined for MHA models, where
    no aggregation is needed.
    """
    b, h = scores.shape[:2]
    if h % n_kv:
        raise AttnlabError(f"{h} query heads cannot be grouped onto {n_kv} KV heads")
    grouped = scores.reshape(b, n_kv, h // n_kv, *scores.shape[2:])
    if reduce == "mean":
        return grouped.mean(2)
    if reduce == "max":
        return grouped.amax(2)
    raise AttnlabError(f"unknown GQA reduction '{reduce}': use 'mean' or 'max'")
