"""The protocol of dynamic edits: steering whose bias depends on the layer's own, unsteered attention.

ACT (hidden sinks found on the prompt) and SpotLight (the share of attention on a span, step by step)
cannot be written as a fixed :class:`attnlab.edits.Edit`. A dynamic edit is a small frozen object with one
method, ``layer_bias(view)``, in the spirit of FlexAttention's ``score_mod``: it receives a
:class:`LayerView` -- the layer's sizes, the prompt's :class:`~attnlab.context.TokenContext`, its own memory
for this run and a ``measure`` function that runs probes (:mod:`attnlab.probes.attention`) over the layer's
*unsteered* attention in query chunks -- and returns low-rank bias factors ``(q_factors [B, H, Q, r],
k_factors [B, K, r])`` (bias ``sum_r q_factors[b, h, i, r] * k_factors[b, j, r]`` on the logits) or None
to leave the layer alone. It never sees ``q``, ``k``, the mask or the plan.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from attnlab.context import TokenContext


@dataclass
class LayerView:
    """What a dynamic edit may know about one attention call.

    ``memory`` is this edit's dict for the current run (a new prompt starts a new, empty one): ACT keeps the
    hidden sinks found on the prompt there. ``measure(*probes, heads=None)`` feeds the layer's unsteered
    attention (query heads ``heads`` only, if given) to fresh probes and returns each one's ``[B, H, ...]``.
    """

    layer: int
    n_heads: int
    q_len: int
    k_len: int
    context: TokenContext
    memory: dict
    measure: Callable[..., list[torch.Tensor]]

    @property
    def is_prompt(self) -> bool:
        """Whether this call is the prompt's forward (its keys are the prompt), not a decode step."""
        return self.k_len == self.context.prompt_length


class DynamicEdit(Protocol):
    """A bias computed from the layer's unsteered attention (see the module docstring)."""

    def layer_bias(self, view: LayerView) -> tuple[torch.Tensor, torch.Tensor] | None:
        ...
