"""RoPE adapters: rotate cached keys to new positions, one shot, in float32.

StreamingLLM (Xiao et al., ICLR 2024) gives the tokens kept in the cache the positions of their *cache
slots*, not of the original text. transformers 5.x applies RoPE before ``cache.update`` and passes no
sin/cos to the cache, so the cache needs its own rotation. RoPE composes (``R(a) R(b) = R(a + b)``), so a
key the model rotated at slot ``p`` is moved to slot ``s`` by rotating it once by ``s - p`` (design (a) of
the design notes, section 2.5): always from the key as the model produced it, in float32, never
incrementally, so nothing drifts in half precision.

The frequencies are read from ``model.model.rotary_emb.inv_freq`` (they already contain linear / llama3 /
YaRN frequency changes); ``attention_scaling`` (YaRN's mscale) is already in the stored key and is not
applied again. Partial rotary (``partial_rotary_factor``, e.g. Phi-3) rotates the first
``2 * len(inv_freq)`` channels only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from attnlab.errors import AttnlabError

# model_type -> family name; all of them use the "rotate half" (GPT-NeoX) layout of RoPE
FAMILIES = {"llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3", "mistral": "Mistral", "gemma": "Gemma",
            "phi3": "Phi3"}
# rope types whose frequencies change with the sequence length: a rotation by a delta would be wrong
_LENGTH_DEPENDENT = {"dynamic", "longrope"}


def supported_families() -> str:
    return ", ".join(FAMILIES.values())


@dataclass(frozen=True)
class RopeAdapter:
    """How one architecture family rotates keys: its frequencies and how many channels rotate.

    ``inv_freq`` is float32 ``[rotary_dim / 2]``; ``head_dim`` the full key width.
    """

    family: str
    inv_freq: torch.Tensor
    head_dim: int

    @property
    def rotary_dim(self) -> int:
        return 2 * self.inv_freq.numel()

    def rotate(self, keys: torch.Tensor, delta: torch.Tensor, memo: dict | None = None) -> torch.Tensor:
        """Rotate ``keys [..., n, D]`` by ``delta`` positions (int, broadcastable to ``keys.shape[:-1]``).

        This is StreamingLLM's position shift (Xiao et al., ICLR 2024) done one shot from the model's own key
        instead of re-applying RoPE to a pre-RoPE key (the official code); both give the same key up to float32
        rounding. Returns float32. A delta of 0 returns the key unchanged (cos 0 = 1, sin 0 = 0 exactly). ``memo`` (a
        dict) keeps the cos/sin of the last ``delta``: StreamingLLM's deltas are the same for every layer and,
        once the window is full, for every step, so they are computed once.
        """
        k = keys.float()
        cos_sin = None
        if memo is not None:
            last = memo.get("delta")
            if last is not None and last.shape == delta.shape and torch.equal(last, delta):
                cos_sin = memo["cos_sin"]
        if cos_sin is None:
            cos_sin = self._cos_signed_sin(delta, k.device)
            if memo is not None:
                memo["delta"], memo["cos_sin"] = delta.clone(), cos_sin
        cos, signed_sin = cos_sin
        rot = self.rotary_dim
        if rot == k.shape[-1]:
            return torch.addcmul(k * cos, k.roll(rot // 2, dims=-1), signed_sin)
        head, tail = k[..., :rot], k[..., rot:]
        return torch.cat((torch.addcmul(head * cos, head.roll(rot // 2, dims=-1), signed_sin), tail), dim=-1)

    def _cos_signed_sin(self, delta: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos`` and ``[-sin, sin]`` of ``delta * inv_freq``.

        RoPE's ``rotate_half(x) * sin`` (``[x1, x2] -> [-x2, x1]``) is then ``roll(x, r/2) * [-sin, sin]``: one
        kernel instead of a negation, two slices and a concatenation.
        """
        ang = delta.to(torch.float32)[..., None] * self.inv_freq.to(device)     # float32 [..., n, r/2]
        return torch.cat((ang, ang), dim=-1).cos(), torch.cat((-ang.sin(), ang.sin()), dim=-1)


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _rotary_module(model):
    for owner in (getattr(model, "model", None), model):
        rotary = getattr(owner, "rotary_emb", None) if owner is not None else None
        if rotary is not None and hasattr(rotary, "inv_freq"):
            return rotary
    return None


def rope_adapter(model) -> RopeAdapter:
    """The :class:`RopeAdapter` of ``model``, or a one-line :class:`AttnlabError` naming the supported families.

    Position handling follows StreamingLLM (Xiao et al., ICLR 2024): keys are re-rotated to their cache
    slots. Refused: families outside :data:`FAMILIES` (other RoPE layouts, ALiBi, learned absolute
    positions, MLA), and RoPE variants whose frequencies depend on the sequence length (dynamic NTK,
    LongRoPE), since a fixed rotation by a delta cannot reproduce them.
    """
    config = _text_config(getattr(model, "config", model))
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise AttnlabError(f"the sink cache cannot re-assign positions for model type '{model_type}'; "
                           f"supported: {supported_families()} (rotary position embeddings)")
    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope_type in _LENGTH_DEPENDENT:
        raise AttnlabError(f"the sink cache cannot re-rotate keys under '{rope_type}' RoPE scaling, whose frequencies "
                           "depend on the sequence length; use a model with default, linear, llama3 or yarn RoPE")
    rotary = _rotary_module(model)
    if rotary is None:
        raise AttnlabError(f"{type(model).__name__} has no rotary_emb with inv_freq; pass the loaded causal LM itself "
                           f"(supported: {supported_families()})")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    inv_freq = rotary.inv_freq.detach().float().clone()
    if 2 * inv_freq.numel() > head_dim:
        raise AttnlabError(f"rotary width {2 * inv_freq.numel()} exceeds head_dim {head_dim}; this RoPE layout is "
                           f"not supported (supported: {supported_families()})")
    return RopeAdapter(family=FAMILIES[model_type], inv_freq=inv_freq, head_dim=head_dim)


def max_positions(model) -> int | None:
    """The number of positions the model was trained on (``max_position_embeddings``), if the config says.

    StreamingLLM (Xiao et al., ICLR 2024) needs ``num_sink + window`` below it: the cache reuses positions
    ``0 .. num_sink + window`` forever.
    """
    config = _text_config(getattr(model, "config", model))
    return getattr(config, "max_position_embeddings", None)
