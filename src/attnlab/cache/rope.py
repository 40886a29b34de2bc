"""RoPE adapters: rotate cached keys to new positions, one shot, in float32.

StreamingLLM (Xiao et al., ICLR 2024) gives the tokens kept in the cache the positions of their *cache
slots*, not of the original text. transformers 5.x applies RoPE before ``cache.update`` and passes no
sin/cos to the cache, so the cache needs its own rotation. RoPE composes (``R(a) R(b) = R(a + b)``), so a
key the model rotated at slot ``p`` is moved to slot ``s`` by rotating it once by ``s - p`` (design (a) of
the design notes, section 2.5): always from the key as the model produced it, in float32, never
incrementally, so nothing drifts in half precision.

The frequencies are read from the model's rotary module (they already contain linear / llama3 / YaRN
frequency changes): ``model.model.rotary_emb.inv_freq`` for one RoPE shared by every layer, or
``rotary_emb.<layer_type>_inv_freq`` for models whose layer types have their own RoPE (Gemma 3: local
``sliding_attention`` layers with base 10,000, global ``full_attention`` layers with base 1,000,000 and their
own scaling), so :func:`rope_adapters` gives one adapter per decoder layer. ``attention_scaling`` (YaRN's
mscale, per layer type on Gemma 3) multiplies cos and sin, so it is already in the stored key and a pure
rotation keeps it: it is not applied again. Partial rotary (``partial_rotary_factor``, e.g. Phi-3) rotates
the first ``2 * len(inv_freq)`` channels only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from attnlab.errors import AttnlabError
from attnlab.models.config import text_config

# model_type -> family name; all of them use the "rotate half" (GPT-NeoX) layout of RoPE. Gemma 3's sliding
# and full attention layers each rotate with their own frequencies (one adapter per layer type).
FAMILIES = {"llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3", "mistral": "Mistral", "gemma": "Gemma",
            "phi3": "Phi3", "gemma3_text": "Gemma3"}
# rope types whose frequencies change with the sequence length: a rotation by a delta would be wrong
_LENGTH_DEPENDENT = {"dynamic", "longrope"}


def supported_families() -> str:
    """The supported architecture families, comma-separated, for error messages and docs."""
    return ", ".join(FAMILIES.values())


@dataclass(frozen=True)
class RopeAdapter:
    """How one architecture family (one layer type of it) rotates keys: its frequencies and rotating channels.

    ``inv_freq`` is float32 ``[rotary_dim / 2]``; ``layer_type`` the
    ``config.layer_types`` entry these frequencies belong to, or None when every layer shares them.
    """

    family: str
    inv_freq: torch.Tensor
    layer_type: str | None = None

    @property
    def rotary_dim(self) -> int:
        """How many leading channels of a key rotate (all of them unless partial rotary)."""
        return 2 * self.inv_freq.numel()

    def rotate(self, keys: torch.Tensor, delta: torch.Tensor, memo: dict | None = None) -> torch.Tensor:
        """Rotate ``keys [..., n, D]`` by ``delta`` positions (int, broadcastable to ``keys.shape[:-1]``).

        This is StreamingLLM's position shift (Xiao et al., ICLR 2024) done one shot from the model's own key
        instead of re-applying RoPE to a pre-RoPE key (the official code); both give the same key up to float32
        rounding. Returns float32. A delta of 0 returns the key unchanged (cos 0 = 1, sin 0 = 0 exactly). ``memo`` (a
        dict) keeps the cos/sin of the last ``delta``: StreamingLLM's deltas are the same for every layer and,
        once the window is full, for every step, so they are computed once per adapter. A memo is reused only
        by the adapter that filled it (layers with other frequencies recompute), so pass one memo per adapter.
        """
        k = keys.float()
        cos_sin = None
        if memo is not None:
            last = memo.get("delta")
            if (memo.get("inv_freq") is self.inv_freq and last is not None and last.shape == delta.shape
                    and torch.equal(last, delta)):
                cos_sin = memo["cos_sin"]
        if cos_sin is None:
            cos_sin = self._cos_signed_sin(delta, k.device)
            if memo is not None:
                memo["inv_freq"], memo["delta"], memo["cos_sin"] = self.inv_freq, delta.clone(), cos_sin
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


def _rope_parameters(config, layer_type: str | None) -> dict:
    """The RoPE parameters of ``layer_type``: ``rope_parameters[layer_type]`` when nested by layer type."""
    params = getattr(config, "rope_parameters", None) or {}
    nested = params.get(layer_type) if layer_type is not None else None
    return nested if isinstance(nested, dict) else params


def _rotary_module(model):
    for owner in (getattr(model, "model", None), model):
        rotary = getattr(owner, "rotary_emb", None) if owner is not None else None
        if rotary is not None:
            return rotary
    return None


def _frequencies(rotary, layer_type: str | None) -> tuple[str | None, torch.Tensor] | None:
    """``(owner, inv_freq)``: ``rotary.<layer_type>_inv_freq`` (owner ``layer_type``) where the layer type has its
    own RoPE, else ``rotary.inv_freq``, shared by every layer (owner None); None when it has neither."""
    for owner in (layer_type, None) if layer_type is not None else (None,):
        freq = getattr(rotary, "inv_freq" if owner is None else f"{owner}_inv_freq", None)
        if isinstance(freq, torch.Tensor):
            return owner, freq
    return None


def rope_adapters(model) -> list[RopeAdapter]:
    """One :class:`RopeAdapter` per decoder layer of ``model``, or a one-line :class:`AttnlabError`.

    Layers that share frequencies share one adapter object (every layer for Llama-like models; one per
    layer type for Gemma 3, whose sliding and full attention layers have different RoPE bases). Position
    handling follows StreamingLLM (Xiao et al., ICLR 2024): keys are re-rotated to their cache slots. Refused:
    families outside :data:`FAMILIES` (other RoPE layouts, ALiBi, learned absolute positions, MLA), and RoPE
    variants whose frequencies depend on the sequence length (dynamic NTK, LongRoPE), since a fixed rotation
    by a delta cannot reproduce them.
    """
    config = text_config(model)
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise AttnlabError(f"the sink cache cannot re-assign positions for model type '{model_type}'; "
                           f"supported: {supported_families()} (rotary position embeddings)")
    if getattr(config, "use_bidirectional_attention", False):
        raise AttnlabError(f"this {FAMILIES[model_type]} model attends bidirectionally (an encoder); the sink cache "
                           "needs a causal decoder")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    types = getattr(config, "layer_types", None) or [None] * config.num_hidden_layers
    rotary = _rotary_module(model)
    by_owner: dict[str | None, RopeAdapter] = {}
    adapters = []
    for layer_type in types:
        found = None if rotary is None else _frequencies(rotary, layer_type)
        if found is None:
            raise AttnlabError(f"{type(model).__name__} has no rotary_emb with inv_freq; pass the loaded causal LM "
                               f"itself (supported: {supported_families()})")
        owner, freq = found
        if owner not in by_owner:
            by_owner[owner] = _adapter(config, owner, freq, head_dim)
        adapters.append(by_owner[owner])
    return adapters


def _adapter(config, layer_type: str | None, freq: torch.Tensor, head_dim: int) -> RopeAdapter:
    """The adapter of the frequencies ``freq`` of ``layer_type`` (None: the model's only RoPE).

    Refuses what a fixed rotation cannot reproduce.
    """
    rope_type = _rope_parameters(config, layer_type).get("rope_type", "default")
    if rope_type in _LENGTH_DEPENDENT:
        raise AttnlabError(f"the sink cache cannot re-rotate keys under '{rope_type}' RoPE scaling, whose frequencies "
                           "depend on the sequence length; use a model with default, linear, llama3 or yarn RoPE")
    inv_freq = freq.detach().float().clone()
    if 2 * inv_freq.numel() > head_dim:
        raise AttnlabError(f"rotary width {2 * inv_freq.numel()} exceeds head_dim {head_dim}; this RoPE layout is "
                           f"not supported (supported: {supported_families()})")
    return RopeAdapter(family=FAMILIES[config.model_type], inv_freq=inv_freq, layer_type=layer_type)


def rope_adapter(model, layer: int = 0) -> RopeAdapter:
    """The :class:`RopeAdapter` of decoder layer ``layer`` of ``model`` (see :func:`rope_adapters`).

    For models with one RoPE for every layer (Llama, Qwen2, ...) every layer gives the same adapter.
    """
    adapters = rope_adapters(model)
    if not 0 <= layer < len(adapters):
        raise AttnlabError(f"layer {layer} is out of range: the model has {len(adapters)} layers")
    return adapters[layer]
