"""``attnlab.cache``: a streaming KV cache with attention sinks, and attention-guided eviction.

* :class:`SinkCache` -- StreamingLLM (Xiao et al., ICLR 2024): sinks + recent window, positions re-assigned
  inside the cache (per layer type where layers have their own RoPE, e.g. Gemma 3), a transformers 5.x
  ``Cache`` that ``model.generate`` and plain forward loops accept;
* policies behind one scorer + selector API: :class:`StreamingLLM`, :class:`H2O` (Zhang et al., NeurIPS
  2023), :class:`TOVA` (Oren et al., EMNLP 2024), :class:`SnapKV` (Li et al., NeurIPS 2024), whose attention
  comes through attnlab's seam (``with cache.observing(model):``), never from eager attention.
"""
from attnlab.cache.policies import H2O, TOVA, Policy, SnapKV, StreamingLLM, make_policy
from attnlab.cache.rope import FAMILIES, RopeAdapter, rope_adapter, rope_adapters
from attnlab.cache.scorer import CacheScorer
from attnlab.cache.select import group_heads, keep_indices
from attnlab.cache.sink import SinkCache, SinkLayer

__all__ = ["SinkCache", "SinkLayer", "Policy", "StreamingLLM", "H2O", "TOVA", "SnapKV", "make_policy", "CacheScorer",
           "RopeAdapter", "rope_adapter", "rope_adapters", "FAMILIES", "keep_indices", "group_heads"]
