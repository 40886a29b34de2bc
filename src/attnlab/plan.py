"""Plan: what to do to the attention of one forward pass or one ``generate`` call.

The attention function of :mod:`attnlab.seam` hands each layer's ``q``, ``k``, ``v`` and mask to the
plan. Edits become low-rank bias factors, temperatures and output scales (:mod:`attnlab.edits`);
dynamic edits (ACT, SpotLight) first measure the unsteered attention of the same layer with the
chunked machinery; probes then see the *steered* attention, recomputed in query chunks
(:mod:`attnlab.probes.chunked`), so no ``[batch, heads, q, k]`` tensor is kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from attnlab.context import KeyMappedContext, TokenContext
from attnlab.edits import LayerSteering, static_layer_steering
from attnlab.errors import AttnlabError
from attnlab.probes.chunked import attention_chunks


@dataclass
class Plan:
    """Probes, static edits and dynamic edits to apply in one attached forward or generation.

    ``heads_of`` maps ``id(edit)`` to its resolved (layer, head) pairs (filled by :func:`attnlab.steer`).
    """

    probes: list = field(default_factory=list)
    context: TokenContext | None = None
    edits: list = field(default_factory=list)
    dynamic: list = field(default_factory=list)
    heads_of: dict = field(default_factory=dict)
    chunk_elements: int = 2 ** 22
    _head_masks: dict = field(default_factory=dict, repr=False)
    _decode: dict = field(default_factory=dict, repr=False)

    def head_masks(self, n_heads: int) -> dict:
        """``{(id(edit), layer): [H] float 0/1}`` for every layer an edit touches (computed once)."""
        if not self._head_masks and self.edits:
            for edit in self.edits:
                for layer, head in self.heads_of[id(edit)]:
                    mask = self._head_masks.setdefault((id(edit), layer), torch.zeros(n_heads))
                    mask[head] = 1.0
        return self._head_masks

    @property
    def is_empty(self) -> bool:
        return not (self.probes or self.edits or self.dynamic)

    def steering(self, layer: int, query, key, mask, scale: float, causal: bool) -> LayerSteering:
        """Everything the edits ask of ``layer`` for this call (identity when none touches it)."""
        heads, q_len, k_len = query.shape[1], query.shape[2], key.shape[2]
        out = LayerSteering()
        positions = self.context.key_positions(layer, k_len) if self.context is not None else None
        if positions is not None:
            return self._evicted_steering(layer, heads, q_len, k_len, positions)
        if self.edits and q_len == 1 and k_len > self.context.prompt_length:
            out = self._decode_static(layer, heads, k_len)
        elif self.edits:
            out = static_layer_steering(self.edits, layer, self.head_masks(heads), heads, q_len, k_len, self.context)
        for edit in self.dynamic:
            extra = edit.layer_bias(layer, query, key, mask, scale, causal, self)
            if extra is not None:
                out.add_bias(*extra)
        return out

    def _evicted_steering(self, layer: int, heads: int, q_len: int, k_len: int, positions) -> LayerSteering:
        """Static edits over keys a cache re-indexed (an evicting cache, or a sliding-window layer past its window):
        masks are mapped through the keys' original positions."""
        if self.dynamic:
            names = ", ".join(sorted({type(e).__name__ for e in self.dynamic}))
            if self.context.evicting:
                raise AttnlabError(f"dynamic steering ({names}) measures attention over prompt positions and cannot "
                                   "follow a cache that evicts tokens: use a static method (PASTA, ZeroTuning, "
                                   "InstABoost, head scaling) or a window larger than the generation")
            raise AttnlabError(f"dynamic steering ({names}) measures attention over prompt positions and cannot follow "
                               f"layer {layer}'s sliding window once the sequence is longer than it ({k_len} keys): "
                               "use a static method (PASTA, ZeroTuning, InstABoost, head scaling) or a shorter input")
        if not self.edits:
            return LayerSteering()
        ctx = self.context.remap(positions)
        return static_layer_steering(self.edits, layer, self.head_masks(heads), heads, q_len, k_len, ctx)

    def _decode_static(self, layer: int, heads: int, k_len: int) -> LayerSteering:
        """Static edits at a decode step: a dense ``[B, H, 1, K]`` bias sliced from a per-layer buffer.

        After the prompt every static selector is constant over new queries and new keys, so the buffer is
        built once (for twice the keys seen) and each step only takes a view of it.
        """
        cached = self._decode.get(layer)
        if cached is None or cached[0] is not self.context or cached[1].bias is not None and \
                cached[1].bias.shape[-1] < k_len:
            capacity = max(2 * k_len, 64)
            full = static_layer_steering(self.edits, layer, self.head_masks(heads), heads, 1, capacity, self.context)
            full = LayerSteering(bias=full.dense_bias(), temperature=full.temperature, output_scale=full.output_scale)
            cached = (self.context, full)
            self._decode[layer] = cached
        full = cached[1]
        return LayerSteering(bias=None if full.bias is None else full.bias[..., :k_len],
                             temperature=full.temperature, output_scale=full.output_scale)

    def observe(self, layer: int, query, key, mask, scale: float, causal: bool) -> None:
        """Feed the attention probabilities of ``layer``, chunk by chunk, to every probe."""
        batch, _, q_len, _ = query.shape
        k_len = key.shape[2]
        if self.context is None:
            valid = torch.ones(batch, k_len, dtype=torch.bool)
        else:
            positions = self.context.key_positions(layer, k_len)
            context = self.context if positions is None else KeyMappedContext(self.context, positions)
            valid = context.valid_keys(k_len)
        q_valid = valid[:, k_len - q_len:]
        for probe in self.probes:
            probe.begin_layer(layer, batch, query.shape[1], q_len, k_len, self.context, valid)
        for start, probs, allowed in attention_chunks(query, key, mask, scale, causal, self.chunk_elements):
            qv = q_valid[:, start:start + probs.shape[2]]
            for probe in self.probes:
                probe.update(layer, start, probs, allowed, qv)
