"""Probes: per-head statistics reduced from attention probabilities one query chunk at a time.

Each probe receives ``probs [B, H, c, K]`` (float32 attention of ``c`` queries), ``allowed
[B|1, 1, c, K]`` (which keys those queries may see) and ``q_valid [B, c]`` (which queries are real
tokens), and keeps only per-head (or per-key) sums, so memory never grows with ``n^2`` except for
:class:`FullMaps`, which is refused for inputs whose maps would not fit (see :mod:`attnlab.collect`).
Results come back per layer as ``[B, H, ...]``; ``token_dims`` says how many trailing dims index tokens.
"""
from __future__ import annotations

import torch

from attnlab.context import first_real_index


class Probe:
    """Base class: one statistic per (layer, head), accumulated over query chunks."""

    name = "probe"
    token_dims = 0

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[int, torch.Tensor] = {}
        self.counts: dict[int, torch.Tensor] = {}

    def begin_layer(self, layer, batch, heads, q_len, k_len, context, valid) -> None:
        self.q_offset = k_len - q_len

    def update(self, layer, start, probs, allowed, q_valid) -> None:
        raise NotImplementedError

    def layer_result(self, layer: int) -> torch.Tensor:
        return self.sums[layer] / self.counts[layer].clamp(min=1)[:, None]

    def result(self) -> torch.Tensor:
        """``[L, B, H, ...]`` over the layers seen, in layer order, on the CPU (layers may sit on other devices)."""
        return torch.stack([self.layer_result(layer).cpu() for layer in sorted(self.sums)])


def _accumulate(store: dict, layer: int, value: torch.Tensor) -> None:
    store[layer] = store[layer] + value if layer in store else value


class FirstTokenMass(Probe):
    """Mean attention each head puts on the first real token (BOS / [CLS]; after left padding too).

    Averaged over the real queries that can see the first token, the first token itself excluded.
    This is the "attention sink" mass (Xiao et al. 2024, StreamingLLM; Gu et al. 2025).
    """

    name = "first_token_mass"

    def begin_layer(self, layer, batch, heads, q_len, k_len, context, valid) -> None:
        super().begin_layer(layer, batch, heads, q_len, k_len, context, valid)
        self.first = first_real_index(valid)

    def update(self, layer, start, probs, allowed, q_valid) -> None:
        b, h, c, _ = probs.shape
        first = self.first.view(b, 1, 1, 1)
        on_first = torch.gather(probs, 3, first.expand(b, h, c, 1)).squeeze(-1)                # [B, H, c]
        sees_first = torch.gather(allowed.expand(b, 1, c, -1), 3, first.expand(b, 1, c, 1)).view(b, c)
        q_pos = torch.arange(start, start + c, device=probs.device) + self.q_offset
        weight = (q_valid & sees_first & (q_pos[None, :] != self.first[:, None])).float()       # [B, c]
        _accumulate(self.sums, layer, (on_first * weight[:, None]).sum(-1))
        _accumulate(self.counts, layer, weight.sum(-1))


class SpanMass(Probe):
    """Mean total attention each head puts on a named span, over the real queries that can see part of it.

    ``key_mask`` is ``[B, K]`` bool (the span's tokens in each row), built by :mod:`attnlab.spans`.
    """

    def __init__(self, name: str, key_mask: torch.Tensor) -> None:
        self.name, self.key_mask = f"span_mass:{name}", key_mask
        super().__init__()

    def update(self, layer, start, probs, allowed, q_valid) -> None:
        km = self.key_mask[:, None, None, :].to(probs.device)
        mass = (probs * km).sum(-1)                                                            # [B, H, c]
        weight = (q_valid & (allowed & km).any(-1)[:, 0]).float()
        _accumulate(self.sums, layer, (mass * weight[:, None]).sum(-1))
        _accumulate(self.counts, layer, weight.sum(-1))


class ReceivedAttention(Probe):
    """Per key ``k``: the mean attention it receives from the real queries that can see it.

    Gu et al.'s ``alpha^{l,h}(k) = 1/(T-k+1) * sum_{i>=k} A[i,k]`` for causal models, generalised to
    any mask (bidirectional, sliding window) by counting the queries that may attend to ``k``.
    Result ``[B, H, K]``; it drives the sink ratio and ACT's hidden sinks.
    """

    name = "received_attention"
    token_dims = 1

    def update(self, layer, start, probs, allowed, q_valid) -> None:
        qv = q_valid.float()
        _accumulate(self.sums, layer, (probs * qv[:, None, :, None]).sum(2))
        seen = (allowed[:, 0].float() * qv[:, :, None]).sum(1)                                 # [B, K]
        _accumulate(self.counts, layer, seen)

    def layer_result(self, layer: int) -> torch.Tensor:
        return self.sums[layer] / self.counts[layer].clamp(min=1)[:, None, :]


class RowMass(Probe):
    """Per query row: the attention each head puts on a set of keys, ``[B, H, Q]`` (no averaging).

    ``keys`` is ``[B, K]`` (the same keys for every head) or ``[B, H, K]``. It is the statistic dynamic
    steering reads (SpotLight's share on the span, ACT's mass on the hidden sinks); padding rows are 0.
    """

    name = "row_mass"
    token_dims = 1

    def __init__(self, keys: torch.Tensor) -> None:
        sel = keys.float()
        self.keys = sel[:, None, None, :] if sel.dim() == 2 else sel[:, :, None, :]
        super().__init__()

    def reset(self) -> None:
        self.rows: dict[int, list[torch.Tensor]] = {}

    def update(self, layer, start, probs, allowed, q_valid) -> None:
        self.rows.setdefault(layer, []).append((probs * self.keys).sum(-1) * q_valid[:, None, :])

    def layer_result(self, layer: int) -> torch.Tensor:
        return torch.cat(self.rows[layer], dim=2)

    def result(self) -> torch.Tensor:
        return torch.stack([self.layer_result(layer).cpu() for layer in sorted(self.rows)])


class Entropy(Probe):
    """Mean Shannon entropy (nats) of each head's attention rows over real queries.

    With ``normalized=True`` each row's entropy is divided by ``log(#keys it may see)`` (rows that see one
    key are skipped), so 1 means uniform and 0 means one key (Zhai et al. 2023, entropy collapse).
    """

    token_dims = 0

    def __init__(self, normalized: bool = False) -> None:
        self.normalized = normalized
        self.name = "normalized_entropy" if normalized else "entropy"
        super().__init__()

    def update(self, layer, start, probs, allowed, q_valid) -> None:
        ent = -(probs * torch.log(probs.clamp(min=1e-30))).sum(-1)                             # [B, H, c]
        weight = q_valid.float()
        if self.normalized:
            n_keys = allowed[:, 0].sum(-1).float()                                             # [B|1, c]
            ent = ent / torch.log(n_keys.clamp(min=2))[:, None, :]
            weight = weight * (n_keys > 1).float()
        _accumulate(self.sums, layer, (ent * weight[:, None]).sum(-1))
        _accumulate(self.counts, layer, weight.sum(-1))


class FullMaps(Probe):
    """The full attention maps ``[B, H, Q, K]`` of every layer: for short inputs only.

    Equal to eager ``output_attentions=True``. :func:`attnlab.collect.collect` refuses, before any
    allocation, inputs whose maps would exceed its memory budget.
    """

    name = "attention_maps"
    token_dims = 2

    def reset(self) -> None:
        super().reset()
        self.maps: dict[int, list[torch.Tensor]] = {}

    def update(self, layer, start, probs, allowed, q_valid) -> None:
        self.maps.setdefault(layer, []).append(probs * q_valid[:, None, :, None])

    def layer_result(self, layer: int) -> torch.Tensor:
        return torch.cat(self.maps[layer], dim=2)

    def result(self) -> torch.Tensor:
        return torch.stack([self.layer_result(layer).cpu() for layer in sorted(self.maps)])
