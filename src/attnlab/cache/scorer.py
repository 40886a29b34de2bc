"""CacheScorer: the probe through which attention-guided policies see attention, via attnlab's seam.

The cache only receives keys and values; H2O, TOVA and SnapKV need attention rows, which need queries.
attnlab's attention function (:mod:`attnlab.seam`) already recomputes attention probabilities in query
chunks for its probes (:mod:`attnlab.probes.chunked`, float32, never eager, never the whole ``n x n``
map kept), so a policy's scorer is simply a probe that forwards each chunk to the cache layer it belongs
to. The keys the seam sees are exactly the keys the cache returned from ``update`` (in cache order).
"""
from __future__ import annotations

import torch

from attnlab.errors import AttnlabError
from attnlab.probes.attention import Probe


class CacheScorer(Probe):
    """Feeds each layer's attention probabilities to ``cache.layers[layer].observe``.

    The signal H2O (Zhang et al., NeurIPS 2023), TOVA (Oren et al., EMNLP 2024) and SnapKV (Li et al.,
    NeurIPS 2024) read from eager attention maps in their official code, recomputed here from q and k.

    Put it in a :class:`attnlab.Plan`'s probes (``cache.observing(model)`` does that for you). Padding
    queries are ignored by the cache (the sink cache refuses padded batches anyway).
    """

    name = "cache_scores"

    def __init__(self, cache) -> None:
        self.cache = cache
        super().__init__()

    def begin_layer(self, layer, batch, heads, q_len, k_len, context, valid) -> None:
        """Check that the layer's keys are the cache's (the model runs with this cache)."""
        self.q_len = q_len
        stored = self.cache.layers[layer].stored
        if stored != k_len:
            raise AttnlabError(f"the attention of layer {layer} sees {k_len} keys but the sink cache holds {stored}: "
                               "pass the same cache as past_key_values to the model you observe")

    def update(self, layer, start, probs, allowed, q_valid) -> None:
        """Hand a chunk of the layer's attention probabilities to the cache layer's policy."""
        self.cache.layers[layer].observe(start, self.q_len, probs)

    def result(self) -> torch.Tensor:
        """Nothing: the scores live in the cache."""
        return torch.empty(0)
