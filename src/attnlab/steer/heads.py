"""Plain head edits: scale or ablate a head's output, or change its attention temperature.

Head ablation (output scale 0) is the intervention of Michel et al., "Are Sixteen Heads Really Better
than One?" (NeurIPS 2019); temperature divides the head's ``q . k`` logits (T > 1 flattens, T < 1
sharpens), the knob studied for entropy collapse by Zhai et al. (ICML 2023).
"""
from __future__ import annotations

from attnlab.edits import Edit
from attnlab.steer.base import Method, check_positive


class HeadScale(Method):
    """Multiply the outputs of ``heads`` by ``scale`` (0 ablates them)."""

    name = "head_scale"

    def __init__(self, heads, scale: float = 0.0, queries: str = "all"):
        self.heads, self.scale, self.queries = heads, float(scale), queries

    def build(self, n_layers: int, n_heads: int):
        return [Edit(heads=self.heads, queries=self.queries, output_scale=self.scale)], []


class Temperature(Method):
    """Divide the attention logits of ``heads`` by ``temperature``."""

    name = "temperature"

    def __init__(self, heads, temperature: float, queries: str = "all"):
        self.heads, self.queries = heads, queries
        self.temperature = check_positive("temperature", temperature, "Temperature")

    def build(self, n_layers: int, n_heads: int):
        return [Edit(heads=self.heads, queries=self.queries, temperature=self.temperature)], []
