"""Plain head edits: scale or ablate a head's output, or change its attention temperature.

Head ablation (output scale 0) is the intervention of Michel et al., "Are Sixteen Heads Really Better
than One?" (NeurIPS 2019); temperature divides the head's ``q . k`` logits (T > 1 flattens, T < 1
sharpens), the knob studied for entropy collapse by Zhai et al. (ICML 2023).
"""
from __future__ import annotations

from attnlab.edits import QUERY_WORDS, Edit
from attnlab.steer.base import Method, Param

HEADS = Param("heads", "heads", None, "heads to edit, e.g. L1H0 or L3", required=True)
QUERIES = Param("queries", "text", "all", "queries whose attention is edited", choices=QUERY_WORDS)


class HeadScale(Method):
    """Multiply the outputs of ``heads`` by ``scale`` (0 ablates them)."""

    name = "head-scale"
    params = (HEADS, Param("scale", "float", 0.0, "factor on the heads' outputs (0 ablates them)"), QUERIES)

    def __init__(self, heads, scale: float = 0.0, queries: str = "all"):
        self.heads, self.scale, self.queries = heads, self.checked("scale", scale), self.checked("queries", queries)

    def build(self, n_layers: int, n_heads: int):
        return [Edit(heads=self.heads, queries=self.queries, output_scale=self.scale)], []


class Temperature(Method):
    """Divide the attention logits of ``heads`` by ``temperature``."""

    name = "temperature"
    params = (HEADS, Param("temperature", "float", 2.0, "divides the heads' attention logits (> 1 flattens, < 1 "
                           "sharpens)", above=0), QUERIES)

    def __init__(self, heads, temperature: float = 2.0, queries: str = "all"):
        self.heads, self.queries = heads, self.checked("queries", queries)
        self.temperature = self.checked("temperature", temperature)

    def build(self, n_layers: int, n_heads: int):
        return [Edit(heads=self.heads, queries=self.queries, temperature=self.temperature)], []
