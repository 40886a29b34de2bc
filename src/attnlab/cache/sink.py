"""SinkCache: attention-sink tokens + a recent window (or an attention-guided budget) for transformers 5.x.

StreamingLLM (Xiao et al., "Efficient Streaming Language Models with Attention Sinks", ICLR 2024) keeps
the first ``num_sink`` tokens and the ``window`` most recent ones, and gives them the positions of their
*cache slots*. transformers 5.x has no sink cache (removed in v5; the Hub ``custom_generate`` one is
broken on 5.x), so this is a ``transformers.Cache`` made of :class:`SinkLayer` objects.

How positions work (design (a) of the design notes, section 2.5): each layer stores keys exactly as the
model produced them, with the position each was rotated at. ``update`` returns the stored keys rotated,
once and in float32, by ``slot - written_position`` with the layer's own
:class:`attnlab.cache.rope.RopeAdapter` (one per layer type where the types have their own RoPE, as
Gemma 3's local and global layers do); nothing is re-rotated incrementally, so half precision does not
drift. As long as nothing was evicted no rotation happens at all and the cache behaves bit-for-bit like a
``DynamicCache`` of full layers.

Eviction is applied at the start of the *next* ``update`` (so policies can use the attention of the step
that just ran), and ``get_seq_length`` / ``get_mask_sizes`` already count the tokens that will remain.
Hence every forward attends to at most ``num_sink + window + q`` keys (StreamingLLM's per-token evaluation).

The cache decides the positions: ``positions="cache"`` (StreamingLLM, for unbounded streams: the query of
a forward sits at slot ``num_sink + window`` at most) or ``positions="original"`` (positions in the text,
as H2O / TOVA / SnapKV do inside the trained context). A forward pre-hook on the decoder, installed by
the cache and removed when it is garbage-collected, replaces the ``position_ids`` that ``generate``
derives from the attention mask (absolute positions) by the cache's own.

Sliding-window layers (Gemma 3's local layers): every layer keeps the same ``num_sink + window`` tokens
and reports the same ``(kv_length, kv_offset) = (kept + q, 0)`` with the query at slots ``kept ..
kept + q - 1`` (``is_sliding`` stays False, so transformers sizes the sliding mask from layer 0, which
holds as many tokens). transformers' sliding mask (``slot_q - window < slot_k <= slot_q``) is then the
mask of a fresh forward of the kept tokens at their slots, also when ``num_sink + window + q`` passes the
window: those layers then no longer see the sinks, while the full attention layers still do.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager

import torch
from transformers.cache_utils import Cache, DynamicLayer

from attnlab.cache.policies import Policy, StreamingLLM, make_policy
from attnlab.cache.rope import RopeAdapter, rope_adapters
from attnlab.errors import AttnlabError
from attnlab.models.config import max_positions, text_config

POSITION_MODES = ("cache", "original")


class SinkLayer(DynamicLayer):
    """One layer of a :class:`SinkCache`: raw keys, values, written positions and policy scores, kept in sync.

    ``keys`` / ``values`` are ``[B, Hkv, n, D]`` as the model produced them; ``written [B, Hkv, n]`` the
    position each key was rotated at; ``origin [B, Hkv, n]`` each token's position in the original text
    (what steering maps its key masks through); ``scores [B, Hs, n]`` float32 or None (see
    :mod:`attnlab.cache.policies`).
    """

    is_croppable = False

    def __init__(self, num_sink: int, window: int, rope: RopeAdapter | None, policy: Policy,
                 positions: str = "cache", memo: dict | None = None) -> None:
        super().__init__()
        self.memo = {} if memo is None else memo      # cos/sin of the last rotation, shared by layers with this rope
        self.num_sink, self.window, self.capacity = num_sink, window, num_sink + window
        self.rope, self.policy, self.positions = rope, policy, positions
        self.recent = policy.protected_recent(window)
        self._reset_state()

    def _reset_state(self) -> None:
        self.written: torch.Tensor | None = None
        self.origin: torch.Tensor | None = None
        self.scores: torch.Tensor | None = None
        self.seen = 0                 # tokens ever appended (original positions)
        self.last_q_len = 0
        self.observed = False         # attention of the last forward reached this layer
        self.evictions = 0

    # ---- sizes ---------------------------------------------------------------------------------------------
    @property
    def stored(self) -> int:
        """How many tokens the layer holds now (before a pending eviction)."""
        return 0 if self.keys is None or not self.is_initialized else self.keys.shape[-2]

    def _kept(self) -> int:
        """Stored tokens once the pending eviction (if any) is applied."""
        n = self.stored
        return self.capacity if self.policy.due(n, self.capacity, self.last_q_len) else n

    def get_seq_length(self) -> int:
        """Tokens before the next query: in-cache count (``positions="cache"``) or tokens seen (``"original"``)."""
        return self._kept() if self.positions == "cache" else self.seen

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """``(kv_length, kv_offset)``: ``kv_length`` is exactly the number of keys ``update`` will return."""
        kept = self._kept()
        offset = 0 if self.positions == "cache" else self.seen - kept
        return kept + query_length, offset

    def get_max_length(self) -> int:
        return -1                     # an unbounded stream fits

    # ---- update ------------------------------------------------------------------------------------------------
    def lazy_initialization(self, key_states, value_states) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        b, h, _, d = key_states.shape
        self.keys = key_states.new_empty(b, h, 0, d)
        self.values = value_states.new_empty(b, h, 0, value_states.shape[-1])
        self.written = torch.empty(b, h, 0, dtype=torch.long, device=self.device)
        self.origin = torch.empty(b, h, 0, dtype=torch.long, device=self.device)
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        """Apply the pending eviction, append the new tokens, return all keys (at their slots) and values."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        cut = self._evict_if_due()
        q = key_states.shape[-2]
        kept = self.stored if cut is None else self.num_sink + self.stored - cut
        start = kept if self.positions == "cache" else self.seen
        new_pos = torch.arange(start, start + q, device=self.device).expand(*key_states.shape[:2], q)
        origin = torch.arange(self.seen, self.seen + q, device=self.device).expand(*key_states.shape[:2], q)
        for name, new in (("keys", key_states), ("values", value_states), ("written", new_pos), ("origin", origin)):
            old = getattr(self, name)
            parts = [old] if cut is None else [old[:, :, :self.num_sink], old[:, :, cut:]]
            setattr(self, name, torch.cat(parts + [new], dim=2))     # StreamingLLM: evict and append in one copy
        self.scores = self.policy.extend(self.scores, q)
        self.seen += q
        self.last_q_len = q
        self.observed = False
        return self.current_keys(), self.values

    def current_keys(self) -> torch.Tensor:
        """Stored keys as attention must see them: rotated to their slots (cache positions) in float32."""
        if self.positions == "original" or self.evictions == 0:
            return self.keys
        slots = torch.arange(self.stored, device=self.device)
        delta = slots - self.written
        return self.rope.rotate(self.keys, delta, self.memo).to(self.keys.dtype)

    def _evict_if_due(self) -> int | None:
        """Apply a due attention-guided eviction; for StreamingLLM return where the kept recent tokens start.

        StreamingLLM's eviction is positional (the sinks and everything from the returned index on), so
        :meth:`update` does it in the same copy that appends the new tokens. None otherwise.
        """
        n = self.stored
        if not self.policy.due(n, self.capacity, self.last_q_len):
            return None
        if self.policy.needs_attention and not self.observed:
            raise AttnlabError(f"the {self.policy.name} policy needs the attention of the last forward: run the model "
                               "inside `with cache.observing(model):` (or add cache.scorer() to your Plan's probes)")
        self.evictions += 1
        if isinstance(self.policy, StreamingLLM):
            return n - self.recent
        b, h = self.keys.shape[:2]
        idx = self.policy.select(self.scores, b, n, self.num_sink, self.recent, self.capacity, self.device)
        idx_kv = idx.expand(b, h, idx.shape[-1])
        gather = idx_kv[..., None].expand(-1, -1, -1, self.keys.shape[-1])
        self.keys = self.keys.gather(2, gather)
        self.values = self.values.gather(2, idx_kv[..., None].expand(-1, -1, -1, self.values.shape[-1]))
        self.written = self.written.gather(2, idx_kv)
        self.origin = self.origin.gather(2, idx_kv)
        if self.scores is not None:
            self.scores = self.scores.gather(2, idx.expand(b, self.scores.shape[1], idx.shape[-1]))
        return None

    def observe(self, start: int, q_len: int, probs: torch.Tensor) -> None:
        """Hand the attention probabilities ``[B, H, c, K]`` of queries ``start:start+c`` to the policy."""
        self.scores = self.policy.observe(self.scores, start, q_len, probs, self.keys.shape[1])
        self.observed = True

    # ---- batch / beam operations -------------------------------------------------------------------------------
    def _map_batch(self, fn) -> None:
        for name in ("keys", "values", "written", "origin", "scores"):
            tensor = getattr(self, name)
            if tensor is not None and tensor.shape[0] > 0:
                setattr(self, name, fn(tensor))

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.is_initialized:
            self._map_batch(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self._map_batch(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._map_batch(lambda t: t[indices, ...])

    def crop(self, tokens_to_remove: int) -> None:
        raise AttnlabError("the sink cache cannot be cropped (evicted tokens cannot be restored); assisted or "
                           "speculative decoding is not supported with it")

    def reset(self) -> None:
        super().reset()
        self._reset_state()


class SinkCache(Cache):
    """A transformers ``Cache`` keeping ``num_sink`` attention sinks + a ``window`` of other tokens per layer.

    StreamingLLM (Xiao et al., ICLR 2024) by default; pass ``policy`` (``"h2o"``, ``"tova"``, ``"snapkv"``
    or a :class:`attnlab.cache.policies.Policy`) for attention-guided eviction under the same budget of
    ``num_sink + window`` tokens; those policies need the attention, so run the model inside
    ``with cache.observing(model):``. Usage::

        cache = SinkCache(model, num_sink=4, window=252)
        out = model.generate(ids, past_key_values=cache, max_new_tokens=2000)      # memory stays bounded

    Supported architectures: Llama, Qwen2, Qwen3, Mistral, Gemma, Phi3, Gemma3 (rotate-half RoPE; each
    layer is re-rotated with its own layer type's frequencies, e.g. Gemma 3's local and global RoPE).
    Sliding-window layers (Gemma 3's local layers) get transformers' sliding mask over the cache slots, so
    they see what a fresh forward of the kept tokens at their slots would see: once ``num_sink + window + q``
    exceeds the sliding window, the sinks drop out of their view and only the full attention layers keep
    them (a model whose every layer slides is refused a cache that reaches its window; ``positions="original"``
    is refused on models with sliding layers). Padded batches, cropping (assisted decoding) and
    ``torch.compile`` are not supported.
    """

    def __init__(self, model, num_sink: int = 4, window: int = 1020, policy=None, positions: str = "cache") -> None:
        _check_sizes(model, num_sink, window, positions)
        policy = make_policy(policy)
        ropes = rope_adapters(model)  # also the architecture check, so every mode refuses the same models
        memos: dict[int, dict] = {}   # one cos/sin memo per adapter: layers with other frequencies never share it
        layers = [SinkLayer(num_sink, window, rope if positions == "cache" else None, policy, positions,
                            memos.setdefault(id(rope), {})) for rope in ropes]
        super().__init__(layers=layers)
        self.num_sink, self.window, self.policy, self.positions = num_sink, window, policy, positions
        self._install_position_hook(model)

    @property
    def capacity(self) -> int:
        """The cache's budget in tokens: ``num_sink + window``."""
        return self.num_sink + self.window

    def scorer(self):
        """A probe that feeds attention to this cache's policy (for a :class:`attnlab.Plan` you build yourself)."""
        from attnlab.cache.scorer import CacheScorer

        return CacheScorer(self)

    @contextmanager
    def observing(self, model):
        """Run ``model`` through attnlab's seam with this cache's scorer, so attention-guided policies see attention.

        Attention probabilities are recomputed by attnlab's chunked machinery (never eager attention).
        """
        from attnlab.plan import Plan
        from attnlab.seam import attached

        with attached(model, Plan(probes=[self.scorer()])):
            yield self

    def key_positions(self, layer: int) -> torch.Tensor | None:
        """``[B, K]``: the original text position of each key layer ``layer`` holds, or None before any eviction.

        Before the first eviction the keys are the text's tokens in order, so no mapping is needed. Steering
        (:func:`attnlab.steer`) maps its key masks through these positions; a per-head policy (H2O, SnapKV)
        keeps different tokens per KV head, which a per-key mask cannot follow, hence the error.
        """
        cached = self.layers[layer]
        if not cached.is_initialized or cached.evictions == 0:
            return None
        origin = cached.origin
        if origin.shape[1] > 1 and not bool((origin == origin[:, :1]).all()):
            raise AttnlabError(f"the {self.policy.name} policy keeps different tokens per KV head, which steering "
                               "cannot follow: steer with the default StreamingLLM policy or TOVA")
        return origin[:, 0]

    def check_steerable(self, model) -> None:
        """Refuse, before generation starts, a cache whose evictions steering could not follow."""
        config = text_config(model)
        n_kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        if self.policy.per_head and n_kv > 1:
            raise AttnlabError(f"the {self.policy.name} policy keeps different tokens per KV head, which steering "
                               "cannot follow: steer with the default StreamingLLM policy or TOVA")

    def _install_position_hook(self, model) -> None:
        decoder = getattr(model, "model", model)
        ref = weakref.ref(self)

        def assign_positions(module, args, kwargs):
            cache = ref()
            if cache is None or kwargs.get("past_key_values") is not cache:
                return None
            ids = kwargs.get("input_ids")
            if ids is None and args:
                ids = args[0]
            embeds = kwargs.get("inputs_embeds")
            q = (ids if ids is not None else embeds).shape[1]
            mask = kwargs.get("attention_mask")
            if isinstance(mask, torch.Tensor) and mask.dim() == 2 and not bool(mask.all()):
                raise AttnlabError("the sink cache does not support padded batches: run one sequence per row, "
                                   "without padding")
            start = cache.get_seq_length()
            device = (ids if ids is not None else embeds).device
            kwargs["position_ids"] = torch.arange(start, start + q, device=device)[None]
            return args, kwargs

        handle = decoder.register_forward_pre_hook(assign_positions, with_kwargs=True)
        weakref.finalize(self, handle.remove)


def _check_sizes(model, num_sink, window, positions) -> None:
    """Refuse, in one line, what the cache cannot hold exactly: no model, bad sizes, a size past the positions."""
    if not hasattr(model, "config") or not hasattr(model, "modules"):
        raise AttnlabError(f"SinkCache needs the loaded model, got {type(model).__name__}: "
                           "SinkCache(model, num_sink=4, window=252)")
    if not isinstance(num_sink, int) or num_sink < 0:
        raise AttnlabError(f"num_sink must be an integer >= 0, got {num_sink!r}")
    if not isinstance(window, int) or window <= 0:
        raise AttnlabError(f"window must be an integer > 0, got {window!r}")
    if positions not in POSITION_MODES:
        raise AttnlabError(f"positions must be one of {', '.join(POSITION_MODES)}, got {positions!r}")
    limit = max_positions(model)
    if positions == "cache" and limit is not None and num_sink + window >= limit:
        raise AttnlabError(f"num_sink + window = {num_sink + window} does not fit the model's {limit} positions "
                           f"(the new token needs one more slot): use num_sink + window <= {limit - 1}")
    config = text_config(model)
    sliding, flags = getattr(config, "sliding_window", None), sliding_layers(config)
    if any(flags) and positions == "original":
        raise AttnlabError(f"positions='original' cannot be exact on the model's sliding-window layers (window "
                           f"{sliding}): transformers' mask numbers the kept keys as if consecutive, so the sinks and "
                           "other old kept tokens would stay visible past the window; use positions='cache'")
    if sliding is not None and all(flags) and num_sink + window >= sliding:
        raise AttnlabError(f"num_sink + window = {num_sink + window} reaches the model's sliding window ({sliding}), "
                           f"whose mask would hide the sinks: use num_sink + window <= {sliding - 1}")


def sliding_layers(config) -> list[bool]:
    """Per decoder layer of the (text) ``config``: whether transformers masks its attention to ``sliding_window``.

    From ``config.layer_types`` where the config has them (Gemma 3's local layers; Qwen2 / Qwen3 with
    ``use_sliding_window``), else every layer when ``sliding_window`` is set (Mistral, Phi-3). With
    ``positions="cache"`` those layers get the sliding mask over the cache slots: exactly the view of a
    fresh forward of the kept tokens at their slots. A model whose every layer slides would hide the sinks
    from all of them, hence :class:`SinkCache` refuses a cache that reaches the window there.
    """
    n = config.num_hidden_layers
    if getattr(config, "sliding_window", None) is None:
        return [False] * n
    types = getattr(config, "layer_types", None)
    if types:
        return [t == "sliding_attention" for t in types]
    return [bool(getattr(config, "use_sliding_window", True))] * n
