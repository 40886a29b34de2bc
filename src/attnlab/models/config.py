"""What attnlab reads from a model's config, in one place: the text config, layers, heads and positions.

Multimodal models (Gemma 3 with vision, Llava, ...) keep the language model's settings in a sub-config;
:func:`text_config` returns it (or the config itself), and everything else here reads from it.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass


def text_config(model_or_config):
    """The language model's config of a model or a config: ``config.get_text_config()`` where it has one."""
    config = getattr(model_or_config, "config", model_or_config)
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def max_positions(model_or_config) -> int | None:
    """How many positions the model was trained on (``max_position_embeddings``, GPT-2's ``n_positions``), if said."""
    config = text_config(model_or_config)
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def forward_accepts(model, name: str) -> bool:
    """Whether ``model.forward`` takes the keyword ``name`` (``logits_to_keep``, ``position_ids``: not every
    transformers model does)."""
    return name in inspect.signature(model.forward).parameters


@dataclass
class ModelShape:
    """Layers, query heads and maximum positions read from the model's config, and whether it is causal."""

    n_layers: int
    n_heads: int
    max_positions: int | None
    causal: bool

    @classmethod
    def of(cls, model) -> "ModelShape":
        """The shape of a loaded model."""
        cfg = text_config(model)
        n_layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer")
        n_heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head")
        causal = any(getattr(m, "is_causal", False) is True for m in model.modules())
        return cls(n_layers, n_heads, max_positions(cfg), causal)
