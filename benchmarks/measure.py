"""Shared helpers for the benchmarks: the model of a benchmark and its shape; memory is sampled with
:class:`attnlab.report.memory.PeakRSS` every millisecond (``SAMPLE_EVERY``)."""
from __future__ import annotations

SAMPLE_EVERY = 0.001   # seconds between two samples of the resident memory


# Llama-architecture shapes for timing with random weights (``shape:NAME``), where real weights cannot travel
# (the GPU machine takes 64 MiB of files): exact for timing, meaningless for what the model says.
SHAPES = {
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0, vocab_size=49152,
                    tie_word_embeddings=True),
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0, vocab_size=128256),
}


def load_model(name: str, positions: int, device: str = "cpu", dtype: str = "float32"):
    """``(model, tokenizer)`` for a benchmark: an attnlab model name; ``tiny`` with its 512-position limit lifted
    to ``positions`` (its RoPE runs anywhere; the timings are what matter); or ``shape:NAME`` (``SHAPES``), random
    weights of that shape built on ``device`` in ``dtype``, with tiny's tokenizer. A real model keeps its limit."""
    import torch

    import attnlab
    from attnlab.models.loading import TINY_PATH
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if name.startswith("shape:"):
        if name[6:] not in SHAPES:
            raise SystemExit(f"unknown shape '{name[6:]}': choose from {', '.join(SHAPES)}")
        torch.manual_seed(0)
        config = LlamaConfig(**SHAPES[name[6:]], attn_implementation="sdpa")
        with torch.device(device):
            model = LlamaForCausalLM(config).to(getattr(torch, dtype)).eval()
        return model, AutoTokenizer.from_pretrained(TINY_PATH)
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
