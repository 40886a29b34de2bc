"""``attnlab.steer``: apply steering methods around ordinary ``model(...)`` and ``model.generate(...)``.

A forward pre-hook on the model sees each call's ``input_ids``, ``attention_mask`` and cache. A call with
an empty cache is a new prompt: its real tokens and spans are resolved then (text spans through the
tokenizer's offsets) and kept for the decode steps that follow, so keys generated after the prompt are
never biased unless an edit asks for ``keys="generated"``.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from attnlab import seam
from attnlab.collect import ModelShape
from attnlab.context import TokenContext
from attnlab.edits import Edit, head_set
from attnlab.errors import AttnlabError
from attnlab.plan import Plan
from attnlab.spans import Spans
from attnlab.steer.base import Method


class Steering:
    """The handle ``with attnlab.steer(...) as s`` yields: the (frozen) plan and the run of the current prompt."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.run = None

    @property
    def context(self) -> TokenContext | None:
        """The current (or, after the block, the last) prompt's tokens and spans."""
        return None if self.run is None else self.run.context

    @property
    def evicted_spans(self) -> dict[str, int]:
        """Per steered span, how many of its tokens an evicting cache (``SinkCache``) no longer holds.

        Empty while nothing was evicted. The steering of those tokens has stopped; it goes on for the rest.
        Kept after the block ends, for the last generation.
        """
        ctx = self.context
        return {} if ctx is None else {name: n for name, n in ctx.evicted.items() if n}


def build_plan(model, methods, probes=()) -> tuple[Plan, dict]:
    """Resolve ``methods`` into a frozen Plan and the span specs it needs.

    A method is a :class:`~attnlab.steer.base.Method` (PASTA, ACT, ...), a raw :class:`~attnlab.edits.Edit`, or
    any object with ``layer_bias(view)`` -- a dynamic edit of the :mod:`attnlab.dynamic` protocol.
    """
    if not methods:
        raise AttnlabError("attnlab.steer needs at least one method, e.g. attnlab.PASTA(emphasize='...')")
    shape = ModelShape.of(model)
    edits, dynamic, span_specs = [], [], {}
    for method in methods:
        if isinstance(method, Edit):
            edits.append(method)
            continue
        if callable(getattr(method, "layer_bias", None)):
            dynamic.append(method)
            continue
        if not isinstance(method, Method):
            raise AttnlabError(f"unknown steering method {method!r}: use PASTA, ACT, ZeroTuning, InstABoost, "
                               "SpotLight, HeadScale, Temperature, an Edit or a dynamic edit (attnlab.dynamic)")
        static, dyn = method.build(shape.n_layers, shape.n_heads)
        edits += static
        dynamic += dyn
        for name, spec in method.spans().items():
            if name in span_specs and span_specs[name] is not spec:
                raise AttnlabError(f"two methods name a span '{name}' differently: steer them in separate blocks")
            span_specs[name] = spec
    edit_heads = [head_set(e.heads, shape.n_layers, shape.n_heads).pairs for e in edits]
    missing = {n for e in edits for n in e.span_names} - set(span_specs)
    if missing:
        raise AttnlabError(f"an edit uses span '{sorted(missing)[0]}' that no method defines")
    return Plan(probes=probes, edits=edits, dynamic=dynamic, edit_heads=edit_heads), span_specs


@contextmanager
def steer(model, *methods, tokenizer=None, probes=()):
    """Steer ``model`` with ``methods`` inside the block; leaving it (also by an exception) restores it exactly.

    ``tokenizer`` is needed for spans given as text (models from :func:`attnlab.load` carry theirs).
    ``probes`` (from :mod:`attnlab.probes.attention`) observe the *steered* attention.
    """
    plan, span_specs = build_plan(model, methods, probes)
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "attnlab_tokenizer", None)

    def on_forward(module, args, kwargs):
        """Start a new run of the plan at each forward that brings a new prompt (an empty cache)."""
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        cache = kwargs.get("past_key_values")
        cached = cache.get_seq_length() if cache is not None and hasattr(cache, "get_seq_length") else 0
        if cached and handle.run is not None:
            return None
        if cached:
            raise AttnlabError("steering started in the middle of a generation: enter attnlab.steer before the "
                               "prompt's forward")
        if input_ids is None:
            if span_specs:
                raise AttnlabError("steering with spans needs input_ids (not inputs_embeds)")
            embeds = kwargs.get("inputs_embeds")
            shape = embeds.shape[:2]
        else:
            shape = input_ids.shape
        valid = mask.bool().cpu() if mask is not None and mask.dim() == 2 else torch.ones(shape, dtype=torch.bool)
        spans = {name: Spans.resolve(tokenizer, input_ids.cpu(), valid, spec, name)
                 for name, spec in span_specs.items()}
        if hasattr(cache, "key_positions"):
            cache.check_steerable(model)
        handle.run = attachment.start(TokenContext(valid=valid, spans=spans, cache=cache))
        return None

    handle = Steering(plan)
    hook = model.register_forward_pre_hook(on_forward, with_kwargs=True)
    try:
        with seam.attached(model, plan) as attachment:
            yield handle
    finally:
        hook.remove()
