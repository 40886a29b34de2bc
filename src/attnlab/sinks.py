"""Attention-sink metrics computed from probe results.

* :func:`sink_ratio` -- Gu et al., "When Attention Sink Emerges in Language Models: An Empirical View"
  (ICLR 2025): the percentage of (layer, head) pairs whose mean received attention on the first token,
  ``alpha^{l,h}(first)``, exceeds ``epsilon`` (0.3 by default).
* :func:`hidden_sinks` -- Yu et al., "Unveiling and Harnessing Hidden Attention Sinks" (ACT, ICML 2024):
  keys other than the first whose mean received attention exceeds ``threshold`` (0.1 by default).
"""
from __future__ import annotations

import torch

EPSILON = 0.3
HIDDEN_SINK_THRESHOLD = 0.1


def sink_ratio(received: torch.Tensor, epsilon: float = EPSILON) -> torch.Tensor:
    """Per layer: percentage of heads with ``alpha(first) > epsilon``; ``received`` is ``[L, H, n]`` of one text.

    The text's first real token is index 0 of ``received`` (results are trimmed to real tokens). The
    overall Sink_1^epsilon of the paper is the mean of this vector.
    """
    return 100.0 * (received[:, :, 0] > epsilon).float().mean(dim=1)


def hidden_sinks(received: torch.Tensor, threshold: float = HIDDEN_SINK_THRESHOLD, min_queries: int = 1) -> list[dict]:
    """Keys other than the first with ``alpha > threshold``, as ``{layer, head, token, score}``.

    ACT scores a key by the mean attention it receives from the queries that can see it, so in a causal
    model the last few keys (seen by few queries) can pass the threshold trivially; ``min_queries`` drops
    keys seen by fewer queries (1 = exactly ACT's definition). Assumes causal order for that count.
    """
    n = received.shape[-1]
    seen_by = torch.arange(n, 0, -1)
    hits = (received > threshold) & (seen_by >= min_queries)
    hits[:, :, 0] = False
    return [{"layer": int(l), "head": int(h), "token": int(k), "score": round(float(received[l, h, k]), 4)}
            for l, h, k in hits.nonzero().tolist()]
