"""An independent eager reference for steering: the papers' post-softmax formulas applied to eager maps.

``run_reference(model, input_ids, attention_mask, edit)`` runs a full forward (no cache) through an
attention function that computes ``A = softmax(q k^T * scale + mask)`` by hand, then ``A' = edit(A,
layer)`` (multiply and renormalise, as each paper writes it), then ``A' V``. Nothing in here uses
attnlab's bias machinery.
"""
import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import sdpa_mask

NAME = "attnlab_test_reference"
_EDIT = {}


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    n_rep = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(n_rep, dim=1).double()
    value = value.repeat_interleave(n_rep, dim=1).double()
    scores = query.double() @ key.transpose(-1, -2) * (scaling if scaling is not None else query.shape[-1] ** -0.5)
    q_len, k_len = scores.shape[-2:]
    if attention_mask is None:
        allowed = torch.ones(q_len, k_len, dtype=torch.bool)
        if getattr(module, "is_causal", True):                # encoders (BERT) see every key
            allowed = allowed.tril(k_len - q_len)
    elif attention_mask.dtype == torch.bool:
        allowed = attention_mask
    else:                                                     # an additive float mask
        allowed = attention_mask > torch.finfo(attention_mask.dtype).min / 2
    scores = scores.masked_fill(~allowed, float("-inf"))
    attn = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    attn = _EDIT["fn"](attn, module.layer_idx)
    out = attn @ value
    scale = _EDIT.get("head_scale")
    if scale is not None:
        s = scale(module.layer_idx)
        out = out * (s[None, :, None, None] if s.dim() == 1 else s)   # [H], or [B, H, Q, 1] per query
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, _attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def run_reference(model, input_ids, attention_mask, edit, head_scale=None):
    """Logits (an encoder: last hidden states) of a full forward with ``edit(A, layer) -> A'`` applied to every
    layer's eager attention, and each head's output times ``head_scale(layer)`` (``[H]`` or ``[B, H, Q, 1]``)."""
    _EDIT["fn"], _EDIT["head_scale"] = edit, head_scale
    before = model.config._attn_implementation
    model.set_attn_implementation(NAME)
    try:
        with torch.no_grad():
            pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos)
            return out.logits if hasattr(out, "logits") else out.last_hidden_state
    finally:
        model.set_attn_implementation(before)


def reweight(attn, factor):
    """The papers' post-softmax edit: multiply by ``factor`` and renormalise each row."""
    out = attn * factor
    return out / out.sum(-1, keepdim=True).clamp(min=1e-300)
