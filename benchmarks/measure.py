"""Shared helpers for the benchmarks: peak resident memory of a block, sampled every millisecond."""
from __future__ import annotations

import threading
import time


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class PeakSampler:
    """``with PeakSampler() as s: ...``; ``s.peak`` is the maximum RSS above the level at entry, in bytes."""

    def __enter__(self):
        self.base, self.peak, self._stop = rss_bytes(), 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, rss_bytes() - self.base)
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop = True
        self.thread.join()
        self.peak = max(self.peak, rss_bytes() - self.base)


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
    from attnlab.models.loading import resolve

    target, kind = resolve(name)
    config = AutoConfig.from_pretrained(gguf.prepare(target)[0] if kind == "gguf" else target)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return config.num_hidden_layers, config.num_attention_heads
