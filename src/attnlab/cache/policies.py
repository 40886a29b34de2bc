"""Eviction policies for :class:`attnlab.cache.SinkCache`: one *scorer* per method, one shared *selector*.

A policy turns attention probabilities into per-token scores (:meth:`Policy.observe`, fed by
:class:`attnlab.cache.scorer.CacheScorer` through attnlab's seam and its chunked recomputation -- never
eager attention) and picks the tokens to keep with :func:`attnlab.cache.select.keep_indices`: the sinks
and the ``recent`` newest tokens always stay, the rest of the budget goes to the top scores.

Scores live in the cache layer as float32 ``[B, Hs, n]``, aligned with the stored tokens; ``Hs`` is the
number of KV heads (per-head selection) or 1 (one selection shared by the layer's heads, as in TOVA).
Query heads are aggregated onto their KV head (GQA) with :func:`attnlab.cache.select.group_heads`.
"""
from __future__ import annotations

import torch

from attnlab.cache.select import group_heads, keep_indices
from attnlab.errors import AttnlabError


class Policy:
    """Base policy: positional (no scores). Subclasses override :meth:`observe` and :meth:`scores_for_selection`."""

    name = "policy"
    needs_attention = False
    per_head = False      # True: each KV head keeps its own tokens (steering cannot follow such a cache)

    def __init__(self, recent: int | None = None, reduce: str = "mean") -> None:
        if recent is not None and recent < 0:
            raise AttnlabError(f"recent must be >= 0, got {recent}")
        if reduce not in ("mean", "max"):
            raise AttnlabError(f"unknown GQA reduction '{reduce}': use 'mean' or 'max'")
        self.recent, self.reduce = recent, reduce

    def default_recent(self, window: int) -> int:
        """How many of the newest tokens are protected when ``recent`` is not given: the whole window."""
        return window

    def protected_recent(self, window: int) -> int:
        """How many of the newest tokens are always kept, for a cache of ``num_sink + window`` tokens."""
        recent = self.default_recent(window) if self.recent is None else self.recent
        if recent > window:
            raise AttnlabError(f"{self.name}: recent={recent} is larger than the window ({window}); "
                               "the sinks plus the recent tokens must fit in the cache")
        return recent

    def due(self, n: int, capacity: int, last_q_len: int) -> bool:
        """Whether the ``n`` stored tokens must be cut to ``capacity`` before the next forward."""
        return n > capacity

    def extend(self, scores: torch.Tensor | None, q: int) -> torch.Tensor | None:
        """Scores for ``q`` newly appended tokens (zero until observed)."""
        if scores is None:
            return None
        return torch.cat([scores, scores.new_zeros(*scores.shape[:-1], q)], dim=-1)

    def observe(self, scores, start: int, q_len: int, probs: torch.Tensor, n_kv: int):
        """Update ``scores`` with the attention ``probs [B, H, c, K]`` of queries ``start:start+c`` of ``q_len``."""
        return scores

    def scores_for_selection(self, scores, batch: int, n: int, device) -> torch.Tensor:
        """The scores the selector ranks ``[B, Hs, n]``: the observed ones (all equal when none were observed)."""
        return torch.zeros(batch, 1, n, device=device) if scores is None else scores

    def select(self, scores, batch: int, n: int, num_sink: int, recent: int, capacity: int, device) -> torch.Tensor:
        """Indices ``[B, Hs, capacity]`` of the tokens to keep."""
        return keep_indices(self.scores_for_selection(scores, batch, n, device), num_sink, recent, capacity)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(recent={self.recent})"


class StreamingLLM(Policy):
    """Keep the first ``num_sink`` tokens and the most recent ``window`` (Xiao et al., ICLR 2024).

    Purely positional: no attention is needed. Eviction is applied before the next forward, so each
    forward attends to at most ``num_sink + window + q`` keys, as in the paper's per-token evaluation.
    """

    name = "sink"

    def __init__(self) -> None:
        super().__init__(recent=None)


class H2O(Policy):
    """Heavy-Hitter Oracle (Zhang et al., NeurIPS 2023): keep the tokens with the most *accumulated* attention.

    Score of a key = sum over every query that has attended to it so far (prompt queries included) of its
    attention probability, per head; scores of kept tokens carry over evictions. ``recent`` newest tokens
    are protected (default: half the window, the paper's equal heavy/recent split). Deviations from the
    official code: selection is per batch row (the official cache supports batch size 1) and the scores
    of the query heads of one GQA group are combined by ``reduce`` (the paper's models are MHA); sinks
    are protected in addition (the paper keeps none explicitly).
    """

    name = "h2o"
    needs_attention = True
    per_head = True

    def default_recent(self, window: int) -> int:
        """Half the window, the paper's equal split between heavy hitters and recent tokens."""
        return window // 2

    def observe(self, scores, start, q_len, probs, n_kv):
        """Add the attention each key received from these queries (summed over them, combined per KV head)."""
        received = group_heads(probs.sum(2), n_kv, self.reduce)                     # [B, n_kv, K]
        if scores is None:
            return received
        return scores + received


class TOVA(Policy):
    """Token Omission Via Attention (Oren et al., "Transformers are Multi-State RNNs", EMNLP 2024).

    Score of a key = attention from the *last* query only, averaged over all query heads of the layer;
    one selection shared by the layer's heads. Deviation: the sinks and ``recent`` newest tokens
    (default 1, the current token, as kvpress does) are protected; the paper protects nothing.
    """

    name = "tova"
    needs_attention = True

    def default_recent(self, window: int) -> int:
        """One: the current token, as kvpress protects it."""
        return 1

    def observe(self, scores, start, q_len, probs, n_kv):
        """The attention of the forward's last query, averaged over the layer's heads (older scores replaced)."""
        last = q_len - 1 - start
        if not 0 <= last < probs.shape[2]:
            return scores
        return probs[:, :, last].mean(1, keepdim=True)                              # [B, 1, K]


class SnapKV(Policy):
    """SnapKV (Li et al., NeurIPS 2024): compress each prompt with the votes of its last ``window_size`` queries.

    Votes = attention of the observation window (the last ``window_size`` queries of the forward) summed
    over those queries, combined over each GQA group by ``reduce`` (SnapKV's GQA fix / kvpress), then
    pooled over neighbouring keys (``kernel_size``, ``pooling`` avg or max) before the top-k; the
    observation window itself is always kept. As in the paper, only prompt forwards (more than one query)
    compress: decoding appends without eviction, so the cache grows again until the next prompt chunk.
    Deviations: sinks are protected, and positions follow the cache's ``positions`` option (the paper
    keeps the original positions, ``positions="original"`` here).
    """

    name = "snapkv"
    needs_attention = True
    per_head = True

    def __init__(self, window_size: int = 32, kernel_size: int = 5, pooling: str = "avg", reduce: str = "mean"):
        if window_size < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise AttnlabError(f"SnapKV needs window_size >= 1 and an odd kernel_size >= 1, got {window_size}, "
                               f"{kernel_size}")
        if pooling not in ("avg", "max"):
            raise AttnlabError(f"unknown SnapKV pooling '{pooling}': use 'avg' or 'max'")
        super().__init__(recent=window_size, reduce=reduce)
        self.window_size, self.kernel_size, self.pooling = window_size, kernel_size, pooling

    def due(self, n, capacity, last_q_len):
        """Only after a prompt forward (more than one query) that left more than ``capacity`` tokens."""
        return last_q_len > 1 and n > capacity

    def observe(self, scores, start, q_len, probs, n_kv):
        """The votes of the observation window (the forward's last ``window_size`` queries) on each key."""
        c = probs.shape[2]
        first = max(q_len - self.window_size, 0)
        if start == 0:
            scores = None                                                            # votes of this forward only
        lo = max(first - start, 0)
        if lo >= c:
            return scores
        votes = group_heads(probs[:, :, lo:].sum(2), n_kv, self.reduce)              # [B, n_kv, K]
        return votes if scores is None else scores + votes

    def scores_for_selection(self, scores, batch, n, device):
        """The votes, pooled over neighbouring keys outside the observation window; refused before any vote."""
        if scores is None:
            raise AttnlabError("SnapKV has no votes for this prompt: run the model inside `with cache.observing(model):`")
        prefix = max(n - self.window_size, 0)
        head = scores[..., :prefix]
        if self.kernel_size > 1 and prefix > 0:
            b, h, _ = head.shape
            pool = torch.nn.functional.avg_pool1d if self.pooling == "avg" else torch.nn.functional.max_pool1d
            head = pool(head.reshape(b * h, 1, prefix), self.kernel_size, stride=1,
                        padding=self.kernel_size // 2).reshape(b, h, prefix)
        return torch.cat([head, scores[..., prefix:]], dim=-1)

    def __repr__(self) -> str:
        return f"SnapKV(window_size={self.window_size}, kernel_size={self.kernel_size}, pooling={self.pooling!r})"


POLICIES = {policy.name: policy for policy in (StreamingLLM, H2O, TOVA, SnapKV)}   # the spelling everywhere


def make_policy(policy) -> Policy:
    """A :class:`Policy` from an instance, ``None`` (StreamingLLM) or a name of :data:`POLICIES` (``sink``, ``h2o``, ...)."""
    if policy is None:
        return StreamingLLM()
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str) and policy.lower() in POLICIES:
        return POLICIES[policy.lower()]()
    raise AttnlabError(f"unknown eviction policy {policy!r}: use one of {', '.join(POLICIES)} or a Policy instance")
