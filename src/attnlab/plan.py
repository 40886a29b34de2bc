"""Plan: what to do to the attention of one forward pass (probes now; steering edits build on it).

The attention function of :mod:`attnlab.seam` hands each layer's ``q``, ``k`` and mask to
:meth:`Plan.observe`, which recomputes attention in query chunks (:mod:`attnlab.probes.chunked`) and
lets every probe reduce each chunk at once, so no ``[batch, heads, q, k]`` tensor is ever kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from attnlab.probes.chunked import attention_chunks


@dataclass
class TokenContext:
    """Which tokens of the batch are real (not padding), and each row's first real token.

    ``valid`` is ``[B, T]`` bool, from the tokenizer's 2-D attention mask; with left padding the first
    real token of row ``b`` is at ``first[b] > 0``.
    """

    valid: torch.Tensor
    spans: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    @property
    def first(self) -> torch.Tensor:
        return self.valid.int().argmax(dim=1)


@dataclass
class Plan:
    """Probes (and, from the steering issue on, edits) to apply in one attached forward."""

    probes: list = field(default_factory=list)
    context: TokenContext | None = None
    chunk_elements: int = 2 ** 22

    @property
    def is_empty(self) -> bool:
        return not self.probes

    def observe(self, layer: int, query, key, mask, scale: float, causal: bool) -> None:
        """Feed the attention probabilities of ``layer``, chunk by chunk, to every probe."""
        batch, heads, q_len, _ = query.shape
        k_len = key.shape[2]
        valid = self.context.valid if self.context is not None else torch.ones(batch, k_len, dtype=torch.bool)
        if valid.shape[1] != k_len:
            raise ValueError(f"probe context has {valid.shape[1]} tokens but layer {layer} sees {k_len} keys")
        q_valid = valid[:, k_len - q_len:]
        for probe in self.probes:
            probe.begin_layer(layer, batch, heads, q_len, k_len, self.context, valid)
        for start, probs, allowed in attention_chunks(query, key, mask, scale, causal, self.chunk_elements):
            stop = start + probs.shape[2]
            qv = q_valid[:, start:stop]
            for probe in self.probes:
                probe.update(layer, start, probs, allowed, qv)
