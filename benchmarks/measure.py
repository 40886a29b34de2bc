"""Shared helpers for the benchmarks: the model of a benchmark and its shape; memory is sampled with
:class:`attnlab.report.memory.PeakRSS` every millisecond (``SAMPLE_EVERY``)."""
from __future__ import annotations

SAMPLE_EVERY = 0.001   # seconds between two samples of the resident memory


def load_model(name: str, positions: int):
    """``(model, tokenizer)`` for a benchmark: an attnlab model name, or ``tiny`` with its 512-position limit lifted
    to ``positions`` (its RoPE runs anywhere; the timings are what matter). A real model keeps its own limit."""
    import attnlab
    from attnlab.models.loading import TINY_PATH
    from transformers import AutoTokenizer, LlamaForCausalLM

    if name != "tiny":
        return attnlab.load(name)
    model = LlamaForCausalLM.from_pretrained(TINY_PATH, max_position_embeddings=max(positions, 512),
                                             attn_implementation="sdpa").eval()
    return model, AutoTokenizer.from_pretrained(TINY_PATH)


def model_shape(name: str) -> tuple[int, int]:
    """``(layers, query heads)`` of an attnlab model name, from its config alone (no weights loaded)."""
    from transformers import AutoConfig

    from attnlab.models import gguf
    from attnlab.models.config import text_config
    from attnlab.models.loading import resolve

    target, kind = resolve(name)
    config = text_config(AutoConfig.from_pretrained(gguf.prepare(target)[0] if kind == "gguf" else target))
    return config.num_hidden_layers, config.num_attention_heads
