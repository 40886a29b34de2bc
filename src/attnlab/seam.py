"""The one seam: an attention function registered with transformers' ``AttentionInterface``.

A model is *attached* by switching its ``attn_implementation`` to ``"attnlab"``; every attention layer
then calls :func:`attention_forward`, which asks the current :class:`~attnlab.plan.PlanRun` for the layer's
steering (static and dynamic edits), attends with SDPA on one of three paths (decode step with a bias,
prefill with a bias folded into q/k, plain), feeds the plan's probes and scales the outputs. Leaving
:func:`attached` (also by an exception) restores the model's implementation exactly as it was.

A run starts when :func:`attached` is entered (with the context it was given) and again at every
:meth:`Attachment.start` -- which the forward pre-hook of :func:`attnlab.steer` calls for each new prompt.
"""
from __future__ import annotations

import dataclasses
import re
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch

from attnlab.context import TokenContext
from attnlab.edits import LayerSteering
from attnlab.errors import AttnlabError
from attnlab.plan import Plan, PlanRun

NAME = "attnlab"
SUPPORTED_FAMILIES = ("Llama", "Qwen2", "Qwen3", "Mistral", "Gemma", "Phi3", "GPT-2", "BERT", "and other models "
                      "whose attention goes through transformers' AttentionInterface")


@dataclass
class Attachment:
    """What the attention function needs while a model is attached: the plan, its current run, each layer's index."""

    plan: Plan
    layer_of: dict[int, int]
    run: PlanRun | None = None
    calls: int = 0
    seen_layers: set = field(default_factory=set)

    def start(self, context: TokenContext | None) -> PlanRun:
        """Begin a new run of the plan over the prompt ``context`` describes (called once per new prompt)."""
        self.run = self.plan.start(context)
        return self.run


_ACTIVE: ContextVar[Attachment | None] = ContextVar("attnlab_attachment", default=None)


def _register() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # without it, padded batches silently get no mask


def layer_index_map(model: torch.nn.Module) -> dict[int, int]:
    """Map each submodule (by id) to its layer index: ``module.layer_idx``, else the first number in its name."""
    mapping = {}
    for name, module in model.named_modules():
        idx = getattr(module, "layer_idx", None)
        if not isinstance(idx, int):
            found = re.search(r"(?:^|\.)(\d+)(?:\.|$)", name)
            idx = int(found.group(1)) if found else None
        if idx is not None:
            mapping[id(module)] = idx
    return mapping


def check_supported(model) -> None:
    """Raise a one-line error when the model's attention does not go through ``AttentionInterface``."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise AttnlabError(f"{type(model).__name__} is not a transformers PreTrainedModel; load it with attnlab.load")
    if not (type(model).is_backend_compatible() and type(model)._can_set_attn_implementation()):
        raise AttnlabError(f"{type(model).__name__} does not route attention through transformers' AttentionInterface, "
                           f"so attnlab cannot attach to it; supported: {', '.join(SUPPORTED_FAMILIES)}")


def _all_configs(model):
    configs = {}
    for module in model.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation_internal"):
            configs[id(cfg)] = cfg
            for key in getattr(cfg, "sub_configs", {}):
                sub = getattr(cfg, key, None)
                if sub is not None and hasattr(sub, "_attn_implementation_internal"):
                    configs[id(sub)] = sub
    return list(configs.values())


@contextmanager
def attached(model, plan: Plan, context: TokenContext | None = None):
    """Run ``model`` through attnlab's attention function with ``plan`` for the duration of the block.

    ``context`` (the batch's real tokens and spans) starts the first run; :func:`attnlab.steer` starts one per
    prompt instead.
    """
    check_supported(model)
    if _ACTIVE.get() is not None:
        raise AttnlabError("attnlab is already attached to a model in this block; combine probes and edits in one Plan")
    _register()
    saved = [(cfg, cfg._attn_implementation_internal) for cfg in _all_configs(model)]
    model.set_attn_implementation(NAME)
    attachment = Attachment(plan=plan, layer_of=layer_index_map(model))
    attachment.start(context)
    token = _ACTIVE.set(attachment)
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)
        for cfg, impl in saved:
            cfg._attn_implementation_internal = impl


def attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                      is_causal=None, **kwargs):
    """transformers attention function: apply the current plan run, then attend with SDPA.

    ``query`` is ``[B, H, Q, D]``, ``key``/``value`` ``[B, Hkv, K, D]`` (RoPE applied, cache included);
    ``attention_mask`` is transformers' boolean SDPA mask (True = attend) or None for the causal fast path.
    Returns ``([B, Q, H, D], None)`` like transformers' own SDPA function.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    attachment = _ACTIVE.get()
    run = None if attachment is None else attachment.run
    if attachment is not None:
        layer = attachment.layer_of.get(id(module))
        if layer is None:
            raise AttnlabError(f"cannot tell which layer {type(module).__name__} is; attnlab supports "
                               f"{', '.join(SUPPORTED_FAMILIES)}")
        attachment.calls += 1
        attachment.seen_layers.add(layer)
        _check_no_unsupported_terms(module, kwargs)
    if run is None or run.plan.is_empty:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", True))
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    with torch.no_grad():
        steering = _on_device(run.steering(layer, query, key, attention_mask, scale, causal), query.device)
    if steering.temperature is not None:
        query = query / steering.temperature[..., None].to(query.dtype)
    if steering.has_bias and query.shape[2] == 1:
        out = _decode_step(run, layer, query, key, value, attention_mask, steering, scale, causal, dropout)
    elif steering.has_bias:
        out = _biased_prefill(run, layer, query, key, value, attention_mask, steering, scale, causal, dropout)
    else:
        out = _plain(run, layer, module, query, key, value, attention_mask, scale, causal, dropout, is_causal, kwargs)
    if steering.output_scale is not None:
        out = out * steering.output_scale.transpose(1, 2)[..., None].to(out.dtype)              # [B, Q, H, 1]
    if run.plan.head_gate is not None:
        out = out * _layer_gate(run.plan.head_gate, layer, out.shape[2]).to(out)
    return out.contiguous(), None


def _on_device(steering: LayerSteering, device: torch.device) -> LayerSteering:
    """``steering`` with its tensors on ``device``: with a device_map each layer attends on its own device."""
    moved = {f.name: getattr(steering, f.name) for f in dataclasses.fields(steering)}
    return LayerSteering(**{name: value.to(device) if isinstance(value, torch.Tensor) else value
                            for name, value in moved.items()})


def _layer_gate(gate, layer: int, n_heads: int):
    """``layer``'s row of the plan's head gate, shaped to multiply a ``[B, Q, H, D]`` output (gradients kept)."""
    if gate.shape[-2] <= layer or gate.shape[-1] != n_heads:
        raise AttnlabError(f"head_gate has shape {list(gate.shape)} but layer {layer} has {n_heads} heads: give it "
                           "[layers, heads] of the model (or [batch, layers, heads])")
    row = gate[..., layer, :]                                                   # [H] or [B, H]
    return row[..., None, :, None]                                             # [1, H, 1] or [B, 1, H, 1]


def _check_no_unsupported_terms(module, kwargs) -> None:
    """Refuse attention terms SDPA cannot take (soft-capping, learned sink logits): results would be wrong."""
    unsupported = [k for k in ("softcap", "s_aux") if kwargs.get(k) is not None]
    if unsupported:
        what = {"softcap": "attention logit soft-capping (Gemma 2)", "s_aux": "learned sink logits (GPT-OSS)"}
        raise AttnlabError(f"{type(module).__name__} uses {what[unsupported[0]]}, which attnlab's SDPA seam cannot "
                           "apply, so its probes and steering would be wrong; this architecture is not supported yet")


def _decode_step(run: PlanRun, layer, query, key, value, mask, steering: LayerSteering, scale, causal, dropout):
    """One query row with a bias: the bias (one row per head; a view of a per-layer buffer for static edits) is
    SDPA's mask, which is as fast as the unmasked kernel."""
    bias = steering.dense_bias().to(query.dtype)
    if mask is not None:
        bias = bias.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else bias + mask
    with torch.no_grad():
        run.observe(layer, query, key, bias, scale, causal)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=bias, dropout_p=dropout, scale=scale, enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2)


def _biased_prefill(run: PlanRun, layer, query, key, value, mask, steering: LayerSteering, scale, causal, dropout):
    """Many query rows with a bias: the low-rank factors ride as extra q/k channels (:func:`biased_sdpa`)."""
    if run.plan.probes:
        with torch.no_grad():
            run.observe(layer, *augment(query, key, value, steering, scale)[:2], mask, scale, causal)
    return biased_sdpa(query, key, value, mask, steering, scale, causal, dropout)


def _plain(run: PlanRun, layer, module, query, key, value, mask, scale, causal, dropout, is_causal, kwargs):
    """No bias on this layer (maybe a temperature or an output scale): transformers' own SDPA function."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    with torch.no_grad():
        run.observe(layer, query, key, mask, scale, causal)
    out, _ = sdpa_attention_forward(module, query, key, value, mask, dropout=dropout, scaling=scale,
                                    is_causal=is_causal, **kwargs)
    return out


def biased_sdpa(query, key, value, mask, steering, scale: float, causal: bool, dropout: float = 0.0):
    """SDPA with the low-rank bias folded in as extra q/k channels, one KV group at a time.

    ``q' . k' = q . k + a . b`` (see :func:`augment`) keeps the causal flag and SDPA's fused kernel where a
    dense bias would need a ``[B, H, Q, K]`` float mask. Going group by group keeps the widened copies of q, k and v to ``1 / n_kv_heads`` of their size, so
    steering adds little to the peak memory of prefill. Returns ``[B, Q, H, D]`` like transformers' SDPA.
    """
    batch, heads, q_len, head_dim = query.shape
    n_kv = key.shape[1]
    rep = heads // n_kv
    is_causal = causal and q_len > 1 and mask is None
    out = query.new_empty(max(batch, key.shape[0]), heads, q_len, head_dim)
    for g in range(n_kv):
        sl = slice(g * rep, (g + 1) * rep)
        part = steering_for_heads(steering, sl)
        q, k, v = augment(query[:, sl], key[:, g:g + 1], value[:, g:g + 1], part, scale)
        o = torch.nn.functional.scaled_dot_product_attention(
            q, k.expand(-1, rep, -1, -1), v.expand(-1, rep, -1, -1), attn_mask=mask, dropout_p=dropout,
            is_causal=is_causal, scale=scale)
        out[:, sl] = o[..., :head_dim]
    return out.transpose(1, 2)


def steering_for_heads(steering, heads: slice):
    """The bias factors of a subset of query heads (key factors are shared by all heads)."""
    return LayerSteering(q_factors=steering.q_factors[:, heads], k_factors=steering.k_factors)


def augment(query, key, value, steering, scale: float):
    """Append the bias factors as channels: ``q' = [q, a]``, ``k' = [k, b / scale]``, ``v' = [v, 0]``.

    Then ``scale * q' . k' = scale * q . k + sum_r a_r b_r`` exactly, for every query head; the key
    channels are shared by the query heads of a GQA group, which is why bias factors are per key only.
    """
    qf = steering.q_factors.to(query.dtype)                                  # [B, H, Q, r]
    kf = (steering.k_factors / scale).to(key.dtype)                          # [B, K, r]
    batch = max(query.shape[0], kf.shape[0])
    query = torch.cat([query.expand(batch, -1, -1, -1), qf.expand(batch, -1, -1, -1)], dim=-1)
    kf = kf[:, None].expand(batch, key.shape[1], -1, -1)
    key = torch.cat([key.expand(batch, -1, -1, -1), kf], dim=-1)
    pad = query.shape[-1] - value.shape[-1]
    value = torch.cat([value, value.new_zeros(*value.shape[:-1], pad)], dim=-1)
    return query, key, value
