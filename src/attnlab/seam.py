"""The one seam: an attention function registered with transformers' ``AttentionInterface``.

A model is *attached* by switching its ``attn_implementation`` to ``"attnlab"``; every attention layer
then calls :func:`attention_forward`, which runs the active :class:`~attnlab.plan.Plan` (probes now,
edits later) and delegates the attention itself to transformers' own SDPA function. Leaving
:func:`attached` (also by an exception) restores the model's implementation exactly as it was.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch

from attnlab.errors import AttnlabError
from attnlab.plan import Plan

NAME = "attnlab"
SUPPORTED_FAMILIES = ("Llama", "Qwen2", "Qwen3", "Mistral", "Gemma", "Phi3", "GPT-2", "BERT", "and other models "
                      "whose attention goes through transformers' AttentionInterface")


@dataclass
class Attachment:
    """What the attention function needs during one attached forward: the plan and where each layer sits."""

    plan: Plan
    layer_of: dict[int, int]
    calls: int = 0
    seen_layers: set = field(default_factory=set)


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
def attached(model, plan: Plan):
    """Run ``model`` through attnlab's attention function with ``plan`` for the duration of the block."""
    check_supported(model)
    if _ACTIVE.get() is not None:
        raise AttnlabError("attnlab is already attached to a model in this block; combine probes and edits in one Plan")
    _register()
    saved = [(cfg, cfg._attn_implementation_internal) for cfg in _all_configs(model)]
    model.set_attn_implementation(NAME)
    token = _ACTIVE.set(Attachment(plan=plan, layer_of=layer_index_map(model)))
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)
        for cfg, impl in saved:
            cfg._attn_implementation_internal = impl


def attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                      is_causal=None, **kwargs):
    """transformers attention function: apply the active plan, then attend with SDPA.

    ``query`` is ``[B, H, Q, D]``, ``key``/``value`` ``[B, Hkv, K, D]`` (RoPE applied, cache included);
    ``attention_mask`` is transformers' boolean SDPA mask (True = attend) or None for the causal fast path.
    Bias edits are folded into the dot product by appending their low-rank factors as extra q/k
    channels (``q . k + a_q . b_k``), which keeps the causal flag and SDPA's fused kernel; ``v`` gets as
    many zero channels (SDPA falls back to its n^2 math kernel when q and v widths differ).
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    attachment = _ACTIVE.get()
    if attachment is not None:
        layer = attachment.layer_of.get(id(module))
        if layer is None:
            raise AttnlabError(f"cannot tell which layer {type(module).__name__} is; attnlab supports "
                               f"{', '.join(SUPPORTED_FAMILIES)}")
        attachment.calls += 1
        attachment.seen_layers.add(layer)
    unsupported = [k for k in ("softcap", "s_aux") if kwargs.get(k) is not None]
    if attachment is not None and unsupported:
        what = {"softcap": "attention logit soft-capping (Gemma 2)", "s_aux": "learned sink logits (GPT-OSS)"}
        raise AttnlabError(f"{type(module).__name__} uses {what[unsupported[0]]}, which attnlab's SDPA seam cannot "
                           "apply, so its probes and steering would be wrong; this architecture is not supported yet")
    if attachment is None or attachment.plan.is_empty:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    plan = attachment.plan
    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", True))
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    head_dim = value.shape[-1]
    with torch.no_grad():
        steering = plan.steering(layer, query, key, attention_mask, scale, causal)
    if steering.temperature is not None:
        query = query / steering.temperature[..., None].to(query.dtype)
    if steering.has_bias and query.shape[2] == 1:
        # decode step: the bias is one row per head, passed to SDPA as its mask (a view of a per-layer buffer
        # for static edits), which is as fast as the unmasked kernel
        bias = steering.dense_bias().to(query.dtype)
        if attention_mask is not None:
            bias = bias.masked_fill(~attention_mask, float("-inf")) if attention_mask.dtype == torch.bool \
                else bias + attention_mask
        if plan.probes:
            with torch.no_grad():
                plan.observe(layer, query, key, bias, scale, causal)
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=bias, dropout_p=dropout, scale=scale, enable_gqa=query.shape[1] != key.shape[1])
        out = out.transpose(1, 2)
        if steering.output_scale is not None:
            out = out * steering.output_scale.transpose(1, 2)[..., None].to(out.dtype)
        return out.contiguous(), None
    elif steering.has_bias:
        if plan.probes:
            with torch.no_grad():
                plan.observe(layer, *augment(query, key, value, steering, scale)[:2], attention_mask, scale, causal)
        out = biased_sdpa(query, key, value, attention_mask, steering, scale, causal, dropout)
        if steering.output_scale is not None:
            out = out * steering.output_scale.transpose(1, 2)[..., None].to(out.dtype)
        return out, None
    if plan.probes:
        with torch.no_grad():
            plan.observe(layer, query, key, attention_mask, scale, causal)
    out, weights = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scale,
                                          is_causal=is_causal, **kwargs)
    out = out[..., :head_dim]
    if steering.output_scale is not None:
        out = out * steering.output_scale.transpose(1, 2)[..., None].to(out.dtype)   # [B, Q, H, 1]
    return out, weights


def biased_sdpa(query, key, value, mask, steering, scale: float, causal: bool, dropout: float = 0.0):
    """SDPA with the low-rank bias folded in as extra q/k channels, one KV group at a time.

    Going group by group keeps the widened copies of q, k and v to ``1 / n_kv_heads`` of their size, so
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
    return out.transpose(1, 2).contiguous()


def steering_for_heads(steering, heads: slice):
    """The bias factors of a subset of query heads (key factors are shared by all heads)."""
    from attnlab.edits import LayerSteering

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
