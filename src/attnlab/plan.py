"""Plan: what to do to the attention of a forward pass or a ``generate`` call; PlanRun: one run of it.

A :class:`Plan` is frozen: probes, static edits (:mod:`attnlab.edits`) with the heads each one resolved to,
and dynamic edits (:mod:`attnlab.dynamic`). The same plan serves any number of prompts, and
:meth:`Plan.describe` shows it as JSON. Everything that belongs to one prompt lives in a :class:`PlanRun`:
the prompt's :class:`~attnlab.context.TokenContext`, the head masks and decode-step bias buffers built for
it, and the dynamic edits' memory (ACT's hidden sinks).

**Where a run starts.** :func:`attnlab.seam.attached` starts one when its block is entered, with the context
it is given (:func:`attnlab.collect.forward_with_probes` gives the padded batch's). Under
:func:`attnlab.steer`, the forward pre-hook in :mod:`attnlab.steer.session` starts a new run at each forward
that brings a new prompt (an empty KV cache); the decode steps that follow use that run.

The attention function of :mod:`attnlab.seam` hands each layer's ``q``, ``k`` and mask to the run. Static
edits become low-rank bias factors, temperatures and output scales; dynamic edits first measure the layer's
unsteered attention through the probes they name; probes then see the *steered* attention, recomputed in
query chunks (:mod:`attnlab.probes.chunked`), so no ``[batch, heads, q, k]`` tensor is kept.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial

import torch

from attnlab.context import KeyMappedContext, TokenContext
from attnlab.dynamic import LayerView
from attnlab.edits import LayerSteering, static_layer_steering
from attnlab.errors import AttnlabError
from attnlab.probes.chunked import attention_chunks, repeat_kv
from attnlab.spans import head_name


@dataclass(frozen=True)
class Plan:
    """Probes, static edits (with ``edit_heads[i]``, the (layer, head) pairs edit ``i`` acts on) and dynamic
    edits, applied in every attached forward. Build one for steering with :func:`attnlab.steer.session.build_plan`.

    ``head_gate`` (``[L, H]``, or ``[B, L, H]`` for one gate per batch row) multiplies each head's attention
    output after the edits, outside ``no_grad``: the differentiable head mask ``xi`` of Michel et al., "Are Sixteen
    Heads Really Better than One?" (NeurIPS 2019), whose gradient :mod:`attnlab.heads.importance` reads.
    ``observe_last`` (N) limits what the probes see to the last N query rows of each forward (see
    :meth:`PlanRun.observe`).
    """

    probes: tuple = ()
    edits: tuple = ()
    dynamic: tuple = ()
    edit_heads: tuple = ()
    chunk_elements: int = 2 ** 22
    head_gate: torch.Tensor | None = field(default=None, compare=False)
    observe_last: int | None = None

    def __post_init__(self):
        for name in ("probes", "edits", "dynamic"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "edit_heads", tuple(frozenset(heads) for heads in self.edit_heads))
        if len(self.edit_heads) != len(self.edits):
            raise AttnlabError(f"the plan has {len(self.edits)} edits but heads for {len(self.edit_heads)}: build it "
                               "with attnlab.steer.session.build_plan, which resolves each edit's heads")
        if not (isinstance(self.chunk_elements, int) and self.chunk_elements >= 1):
            raise AttnlabError(f"chunk_elements must be a positive integer, got {self.chunk_elements!r}")
        if self.observe_last is not None and not (isinstance(self.observe_last, int) and self.observe_last >= 1):
            raise AttnlabError(f"observe_last must be a positive number of query rows, got {self.observe_last!r}")
        if self.head_gate is not None and not (isinstance(self.head_gate, torch.Tensor) and
                                               self.head_gate.dim() in (2, 3)):
            raise AttnlabError("head_gate must be a [layers, heads] (or [batch, layers, heads]) tensor, got "
                               f"{getattr(self.head_gate, 'shape', type(self.head_gate).__name__)}")

    @property
    def is_empty(self) -> bool:
        return not (self.probes or self.edits or self.dynamic) and self.head_gate is None

    @property
    def steers(self) -> bool:
        return bool(self.edits or self.dynamic)

    def start(self, context: TokenContext | None) -> "PlanRun":
        """A new run of this plan over the prompt ``context`` describes."""
        return PlanRun(self, context)

    def describe(self) -> dict:
        """The plan as JSON-serialisable data: probe names, each edit with its resolved heads, dynamic edits' settings."""
        edits = []
        for edit, heads in zip(self.edits, self.edit_heads):
            fields = {k: _jsonable(v) for k, v in dataclasses.asdict(edit).items() if v is not None}
            edits.append({**fields, "heads": [head_name(layer, head) for layer, head in sorted(heads)]})
        dynamic = [{"type": type(d).__name__, **{f.name: _jsonable(getattr(d, f.name)) for f in dataclasses.fields(d)}}
                   for d in self.dynamic]
        gate = None if self.head_gate is None else list(self.head_gate.shape)
        return {"probes": [p.name for p in self.probes], "edits": edits, "dynamic": dynamic,
                "chunk_elements": self.chunk_elements, "head_gate": gate, "observe_last": self.observe_last}


def _jsonable(value):
    """Selectors, head sets and numbers as JSON values (head sets as ``L3H1`` names)."""
    if isinstance(value, (frozenset, set)) or type(value).__name__ == "HeadSet":
        return [head_name(layer, head) for layer, head in sorted(value)]
    if isinstance(value, tuple):
        return list(value)
    return value


class PlanRun:
    """One run of a :class:`Plan`: the prompt's context and what the plan builds from it (see the module docstring)."""

    def __init__(self, plan: Plan, context: TokenContext | None) -> None:
        self.plan, self.context = plan, context
        self.memory = tuple({} for _ in plan.dynamic)
        self._head_masks: dict | None = None
        self._decode: dict[int, LayerSteering] = {}

    def head_masks(self, n_heads: int) -> dict:
        """``{(i, layer): [H] float 0/1}`` for every layer edit ``i`` touches (built once per run)."""
        if self._head_masks is None:
            self._head_masks = {}
            for i, heads in enumerate(self.plan.edit_heads):
                for layer, head in heads:
                    self._head_masks.setdefault((i, layer), torch.zeros(n_heads))[head] = 1.0
        return self._head_masks

    def steering(self, layer: int, query, key, mask, scale: float, causal: bool) -> LayerSteering:
        """Everything the edits ask of ``layer`` for this call (identity when none touches it)."""
        if not self.plan.steers:
            return LayerSteering()
        if self.context is None:
            raise AttnlabError("steering needs the prompt's tokens: steer inside `with attnlab.steer(model, ...)`, "
                               "which reads them from each forward")
        heads, q_len, k_len = query.shape[1], query.shape[2], key.shape[2]
        positions = self.context.key_positions(layer, k_len)
        if positions is not None:
            return self._evicted_steering(layer, heads, q_len, k_len, positions)
        if self.plan.edits and q_len == 1 and k_len > self.context.prompt_length:
            out = self._decode_static(layer, heads, k_len)
        else:
            out = static_layer_steering(self.plan.edits, layer, self.head_masks(heads), heads, q_len, k_len,
                                        self.context)
        measure = partial(self.measure, layer, query, key, mask, scale, causal)
        for edit, memory in zip(self.plan.dynamic, self.memory):
            extra = edit.layer_bias(LayerView(layer, heads, q_len, k_len, self.context, memory, measure))
            if extra is not None:
                out.add_bias(*extra)
        return out

    def _evicted_steering(self, layer: int, heads: int, q_len: int, k_len: int, positions) -> LayerSteering:
        """Static edits over keys a cache re-indexed (an evicting cache, or a sliding-window layer past its window):
        masks are mapped through the keys' original positions."""
        if self.plan.dynamic:
            names = ", ".join(sorted({type(e).__name__ for e in self.plan.dynamic}))
            if self.context.evicting:
                raise AttnlabError(f"dynamic steering ({names}) measures attention over prompt positions and cannot "
                                   "follow a cache that evicts tokens: use a static method (PASTA, ZeroTuning, "
                                   "InstABoost, head scaling) or a window larger than the generation")
            raise AttnlabError(f"dynamic steering ({names}) measures attention over prompt positions and cannot follow "
                               f"layer {layer}'s sliding window once the sequence is longer than it ({k_len} keys): "
                               "use a static method (PASTA, ZeroTuning, InstABoost, head scaling) or a shorter input")
        if not self.plan.edits:
            return LayerSteering()
        ctx = self.context.remap(positions)
        return static_layer_steering(self.plan.edits, layer, self.head_masks(heads), heads, q_len, k_len, ctx)

    def _decode_static(self, layer: int, heads: int, k_len: int) -> LayerSteering:
        """Static edits at a decode step: a dense ``[B, H, 1, K]`` bias sliced from a per-layer buffer.

        After the prompt every static selector is constant over new queries and new keys, so the buffer is
        built once (for twice the keys seen) and each step only takes a view of it.
        """
        full = self._decode.get(layer)
        if full is None or full.bias is not None and full.bias.shape[-1] < k_len:
            capacity = max(2 * k_len, 64)
            built = static_layer_steering(self.plan.edits, layer, self.head_masks(heads), heads, 1, capacity,
                                          self.context)
            full = LayerSteering(bias=built.dense_bias(), temperature=built.temperature,
                                 output_scale=built.output_scale)
            self._decode[layer] = full
        return LayerSteering(bias=None if full.bias is None else full.bias[..., :k_len],
                             temperature=full.temperature, output_scale=full.output_scale)

    def measure(self, layer: int, query, key, mask, scale: float, causal: bool, *probes, heads=None) -> list:
        """Feed ``layer``'s attention (``query`` heads ``heads`` only, if given) to ``probes``; each one's result."""
        if heads is not None:
            key = repeat_kv(key, query.shape[1] // key.shape[1])[:, heads]
            query = query[:, heads]
        feed_probes(probes, layer, query, key, mask, scale, causal, self.context, self.plan.chunk_elements)
        return [probe.layer_result(layer) for probe in probes]

    def observe(self, layer: int, query, key, mask, scale: float, causal: bool) -> None:
        """Feed the (steered) attention probabilities of ``layer`` to the plan's probes.

        With ``plan.observe_last = N`` the probes see only the last ``N`` query rows of a longer forward (the keys
        stay whole), as if those rows were decoded after the others: their statistics cost ``N / q_len`` of the
        full ones, for views of long texts that can say "over the last N queries".
        """
        last = self.plan.observe_last
        if last is not None and query.shape[2] > last:
            query = query[:, :, -last:]
            mask = mask[:, :, -last:] if mask is not None and mask.shape[2] > 1 else mask
        if self.plan.probes:
            feed_probes(self.plan.probes, layer, query, key, mask, scale, causal, self.context,
                        self.plan.chunk_elements)


def feed_probes(probes, layer: int, query, key, mask, scale: float, causal: bool, context: TokenContext | None,
                chunk_elements: int) -> None:
    """Recompute ``layer``'s attention probabilities chunk by chunk and hand each chunk to every probe.

    Real keys and queries come from ``context`` (all real without one); keys a cache re-indexed are mapped to
    their original positions first.
    """
    batch, heads, q_len, _ = query.shape
    k_len = key.shape[2]
    if context is None:
        valid = torch.ones(batch, k_len, dtype=torch.bool)
    else:
        positions = context.key_positions(layer, k_len)
        mapped = context if positions is None else KeyMappedContext(context, positions)
        valid = mapped.valid_keys(k_len)
    valid = valid.to(query.device)                       # each layer's probes work on that layer's device
    q_valid = valid[:, k_len - q_len:]
    for probe in probes:
        probe.begin_layer(layer, batch, heads, q_len, k_len, context, valid)
    for start, probs, allowed in attention_chunks(query, key, mask, scale, causal, chunk_elements):
        rows = q_valid[:, start:start + probs.shape[2]]
        for probe in probes:
            probe.update(layer, start, probs, allowed, rows)
