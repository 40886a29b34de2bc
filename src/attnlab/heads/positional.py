"""Local / positional head scores on natural text: attention inside a short window, and mean attention distance.

With ``A`` a head's attention and ``first`` the first real token of a row (after left padding):

* local = mean, over real queries at least ``window`` tokens after the first, of ``sum_{|i - j| < window}
  A[i, j]`` (for a causal model the ``window`` most recent keys, the query itself included; the window never
  reaches the first token, so an attention sink does not count as local);
* mean distance = mean over all real queries of ``sum_j A[i, j] * |i - j|`` in tokens.

Clark et al. 2019 ("What Does BERT Look At?") measure the fixed offsets ``i - 1`` / ``i + 1``; the window and
the distance are the broader "local vs global" reading of the same maps (Voita et al. 2019 call heads that
attend within a few tokens positional).
"""
from __future__ import annotations

import torch

from attnlab.context import first_real_index
from attnlab.probes.attention import Probe, _accumulate


class _Positional(Probe):
    """Query and key positions of a chunk (real positions, counted from each row's first real token)."""

    def begin_layer(self, layer, batch, heads, q_len, k_len, context, valid) -> None:
        super().begin_layer(layer, batch, heads, q_len, k_len, context, valid)
        self.first = first_real_index(valid)

    def distances(self, start: int, c: int, k: int) -> torch.Tensor:
        """``[c, K]`` ``|i - j|`` between the chunk's queries and every key."""
        q_pos = torch.arange(start, start + c) + self.q_offset
        return (q_pos[:, None] - torch.arange(k)[None, :]).abs()


class LocalMass(_Positional):
    """Mean attention on the keys within ``window`` tokens of the query (see the module docstring)."""

    name = "local"

    def __init__(self, window: int = 4) -> None:
        self.window = window
        super().__init__()

    def update(self, layer, start, probs, allowed, q_valid) -> None:
        b, _, c, k = probs.shape
        near = (self.distances(start, c, k) < self.window).float()                               # [c, K]
        mass = (probs * near).sum(-1)                                                            # [B, H, c]
        q_pos = torch.arange(start, start + c) + self.q_offset
        weight = (q_valid & (q_pos[None, :] - self.first[:, None] >= self.window)).float()       # [B, c]
        _accumulate(self.sums, layer, (mass * weight[:, None]).sum(-1))
        _accumulate(self.counts, layer, weight.sum(-1))


class MeanDistance(_Positional):
    """Mean ``sum_j A[i, j] |i - j|`` over real queries, in tokens (see the module docstring)."""

    name = "mean_distance"

    def update(self, layer, start, probs, allowed, q_valid) -> None:
        c, k = probs.shape[2], probs.shape[3]
        dist = (probs * self.distances(start, c, k).float()).sum(-1)                             # [B, H, c]
        weight = q_valid.float()
        _accumulate(self.sums, layer, (dist * weight[:, None]).sum(-1))
        _accumulate(self.counts, layer, weight.sum(-1))
