"""What the viewer shows, computed with attnlab's chunked probes: the head grid, attention maps, steering side by
side and the generation timeline. Every function takes the model and plain values and returns JSON-ready data.

No view ever builds an ``n x n`` array for a long input: :class:`PooledMaps` pools one layer's attention, every head,
into at most ``side x side`` bins while the probabilities stream by in query chunks, and exact rows are computed
only for the queries asked for (the rows in view). Both come from a forward that measures that one layer and stops
there (:class:`MeasureOneLayer`): the layers before it run on the plain SDPA kernel, the layers after it not at all.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import torch

from attnlab.collect import encode, forward_with_probes
from attnlab.errors import AttnlabError
from attnlab.models.config import ModelShape, max_positions
from attnlab.probes.attention import Entropy, FirstTokenMass, Probe, SpanMass, _accumulate
from attnlab.spans import char_range, chat_wrap, has_chat_template, head_name

METRICS = {
    "first_token_mass": "mean attention on the first token (the sink)",
    "entropy": "mean attention entropy, nats",
    "normalized_entropy": "entropy / log(keys seen): 1 uniform, 0 one key",
    "previous_token": "mean attention on the previous token (a head-role score)",
    "span_mass": "mean attention on the selected span",
}
HEAD_ROLE_PREFIX = "heads:"   # metrics of the model (attnlab.heads), not of the user's text
MAX_ROWS = 32          # exact query rows one map request may ask for


@dataclass(frozen=True)
class Limits:
    """What one request may ask for: text size, tokens, map resolution, generated tokens, waiting jobs."""

    max_text_bytes: int = 200_000
    max_tokens: int = 8192
    map_side: int = 256
    grid_rows: int = 512
    max_new_tokens: int = 64
    max_waiting: int = 4


def samples() -> dict[str, str]:
    """The built-in sample texts offered by the page: name -> text (package data, never a user's file)."""
    data = resources.files("attnlab").joinpath("data")
    sample = data.joinpath("sample.txt").read_text(encoding="utf-8").strip()
    haystack = data.joinpath("haystack.txt").read_text(encoding="utf-8").strip()
    return {
        "lighthouse story": sample,
        "instruction + context": "Answer in one word. Context: The capital of France is Paris, and the capital of "
                                 "Italy is Rome. Question: What is the capital of Italy?",
        "repeated sentence (induction)": "The quick brown fox jumps over the lazy dog. " * 3,
        "long haystack": haystack,
    }


class PreviousTokenMass(Probe):
    """Mean attention each head puts on the token just before the query (the previous-token head score)."""

    name = "previous_token"

    def update(self, layer, start, probs, allowed, q_valid) -> None:
        b, h, c, _ = probs.shape
        q_pos = torch.arange(start, start + c) + self.q_offset
        prev = (q_pos - 1).clamp(min=0).view(1, 1, c, 1)
        on_prev = torch.gather(probs, 3, prev.expand(b, h, c, 1)).squeeze(-1)                 # [B, H, c]
        sees_prev = torch.gather(allowed.expand(b, 1, c, -1), 3, prev.expand(b, 1, c, 1)).view(b, c)
        weight = (q_valid & sees_prev & (q_pos > 0)[None, :]).float()
        _accumulate(self.sums, layer, (on_prev * weight[:, None]).sum(-1))
        _accumulate(self.counts, layer, weight.sum(-1))


class LayerDone(Exception):
    """Raised by :class:`LayerRows` once its layer is measured: the forward stops there."""


def pool_edges(n: int, side: int) -> torch.Tensor:
    """The ``min(side, n) + 1`` bin edges that cut ``n`` positions into near-equal runs (one token per bin when
    ``n <= side``)."""
    return torch.linspace(0, n, min(side, n) + 1).round().long()


class PooledMaps(Probe):
    """A layer's attention, every head, pooled into at most ``side x side`` bins.

    Cell ``(r, c)`` is the attention the queries of bin ``r`` put on the keys of bin ``c`` (summed over those
    keys, averaged over those queries), so each row of bins sums to 1, as a row of the exact map does; with
    ``side >= n`` the bins are single tokens and the maps are exact. A layer's mean map is the mean of its heads'
    (pooling is linear). Keys are summed per bin through a cumulative sum, one query chunk at a time; memory:
    ``heads x side^2`` numbers per layer, never ``n^2``.
    """

    name = "attention_maps_pooled"

    def __init__(self, side: int) -> None:
        self.side = side
        super().__init__()

    def reset(self) -> None:
        self.grids: dict[int, torch.Tensor] = {}

    def begin_layer(self, layer, batch, heads, q_len, k_len, context, valid) -> None:
        super().begin_layer(layer, batch, heads, q_len, k_len, context, valid)
        self.edges = pool_edges(k_len, self.side)
        self.bin_of = torch.bucketize(torch.arange(k_len), self.edges[1:], right=True)         # token -> bin
        self.grids[layer] = torch.zeros(heads, len(self.edges) - 1, len(self.edges) - 1)

    def update(self, layer, start, probs, allowed, q_valid) -> None:
        p = probs[0]                                                                           # [H, c, K]
        total = torch.nn.functional.pad(p.cumsum(-1), (1, 0))                                  # [H, c, K + 1]
        pooled = total[..., self.edges[1:]] - total[..., self.edges[:-1]]                      # [H, c, bins]
        q_bins = self.bin_of[start + self.q_offset:start + self.q_offset + p.shape[1]]
        self.grids[layer].index_add_(1, q_bins, pooled)

    def layer_result(self, layer: int) -> "MapSet":
        """``layer``'s pooled maps, ``[H, bins, bins]``, with their bin edges."""
        per_bin = torch.diff(self.edges).clamp(min=1).float()                                  # queries per bin
        return MapSet(maps=self.grids[layer] / per_bin[:, None], edges=self.edges)


@dataclass(frozen=True)
class MapSet:
    """One layer's pooled attention maps of one text (``[heads, bins, bins]``) and their bin edges: what the map
    view shows, computed by the first map request on that layer and kept by the server. ``call`` is the layer's
    input (a :class:`LayerCall`), kept so that exact rows re-run this one layer, not the model."""

    maps: torch.Tensor
    edges: torch.Tensor
    call: "LayerCall | None" = None

    @property
    def exact(self) -> bool:
        """Whether every bin is one token (the text fits in ``map_side``)."""
        return bool((torch.diff(self.edges) == 1).all())

    def view(self, head: int | None) -> torch.Tensor:
        """One head's pooled map, or the mean of the layer's heads (``head`` None)."""
        return self.maps[head] if head is not None else self.maps.mean(0)


@dataclass(frozen=True)
class LayerCall:
    """The arguments one decoder layer was called with for one text (hidden states, mask, rotary embeddings):
    calling the layer again with them recomputes its attention exactly, without the layers before it."""

    layer: int
    args: tuple
    kwargs: dict

    def nbytes(self) -> int:
        """The memory its tensors hold."""
        values = list(self.args) + list(self.kwargs.values())
        flat = [t for v in values for t in (v if isinstance(v, (tuple, list)) else (v,))]
        return sum(t.numel() * t.element_size() for t in flat if isinstance(t, torch.Tensor))


def capture_call(module, layer: int, found: list):
    """A forward pre-hook on ``module`` (a decoder layer) that appends its :class:`LayerCall` to ``found``; a KV
    cache among its arguments is dropped (the call is only ever repeated to be measured)."""
    def hook(mod, args, kwargs):
        kept = {k: v for k, v in kwargs.items() if k not in ("past_key_values", "past_key_value", "use_cache")}
        found.append(LayerCall(layer, tuple(args), kept))
    return module.register_forward_pre_hook(hook, with_kwargs=True)


class LayerRows(Probe):
    """The exact attention rows of queries ``[start, stop)`` in one layer, mean over the heads it is fed."""

    name = "attention_rows"

    def __init__(self, rows: tuple[int, int]) -> None:
        self.rows = rows
        super().__init__()

    def reset(self) -> None:
        self.parts: list[torch.Tensor] = []

    def update(self, layer, start, probs, allowed, q_valid) -> None:
        a, z = max(self.rows[0], start), min(self.rows[1], start + probs.shape[2])
        if a < z:
            self.parts.append(probs[0, :, a - start:z - start].mean(0))                     # [rows, K]

    def layer_result(self, layer: int) -> torch.Tensor:
        return torch.cat(self.parts)


@dataclass(frozen=True)
class MeasureOneLayer:
    """A dynamic edit (:mod:`attnlab.dynamic`) that steers nothing: it feeds one layer's attention (one head, or
    all) to ``probe`` and stops the forward there, so every other layer runs on the plain SDPA kernel and the
    layers after it not at all."""

    layer: int
    head: int | None
    probe: Probe

    def layer_bias(self, view):
        """Measure at :attr:`layer` (then raise :class:`LayerDone`); leave every layer alone."""
        if view.layer == self.layer:
            view.measure(self.probe, heads=None if self.head is None else [self.head])
            raise LayerDone
        return None


def measure_one_layer(model, enc, layer: int, head: int | None, probe: Probe, keep: int | None = None,
                      call: LayerCall | None = None, found: list | None = None):
    """Feed ``layer``'s attention (``head`` only, or every head) of the encoded text to ``probe`` and return its
    ``layer_result``: one forward, plain SDPA before that layer, stopped after it. ``keep``: read only the first
    ``keep`` tokens (for a causal model, later ones cannot change the attention of earlier queries). With ``call``
    (that layer's input, captured before) only the layer runs; ``found`` (a list) receives the layer's input."""
    from attnlab import seam
    from attnlab.collect import model_inputs
    from attnlab.context import TokenContext
    from attnlab.plan import Plan
    from attnlab.serve.jobs import decoder_layers

    ids, mask = enc.input_ids[:, :keep], enc.attention_mask[:, :keep]
    base = getattr(model, "base_model", model)
    plan = Plan(dynamic=[MeasureOneLayer(layer, head, probe)])
    module = decoder_layers(model)[layer]
    hook = capture_call(module, layer, found) if found is not None and call is None else None
    with seam.attached(model, plan, TokenContext(valid=mask.bool())), torch.no_grad():
        try:
            if call is not None:
                module(*call.args, **call.kwargs)
            else:
                base(**model_inputs(base, ids, mask, next(model.parameters()).device))
        except LayerDone:
            pass
        finally:
            if hook is not None:
                hook.remove()
    return probe.layer_result(layer)


def exact_rows(model, enc, layer: int, head: int | None, rows: tuple[int, int],
               call: LayerCall | None = None) -> torch.Tensor:
    """The exact attention rows ``[start, stop)`` of ``layer`` (``head``, or the mean of its heads), ``[rows, n]``,
    from :func:`measure_one_layer`: with the layer's captured input ``call`` only that layer runs; else a causal
    model reads only the first ``stop`` tokens, and the rows are padded with zeros (keys they cannot see)."""
    n = enc.input_ids.shape[1]
    keep = n if call is not None or not ModelShape.of(model).causal else rows[1]
    got = measure_one_layer(model, enc, layer, head, LayerRows(rows), keep, call=call)
    return torch.nn.functional.pad(got, (0, n - got.shape[1]))


def _round(t: torch.Tensor, digits: int = 5) -> list:
    return [[round(float(x), digits) for x in row] for row in t]


def check_text(text, limits: Limits) -> str:
    """``text`` if it is non-empty text within the byte limit, else a one-line :class:`AttnlabError`."""
    if not isinstance(text, str) or not text.strip():
        raise AttnlabError("the text is empty: type, paste or pick some text first")
    size = len(text.encode("utf-8"))
    if size > limits.max_text_bytes:
        raise TooLarge(f"the text has {size:,} bytes; this server takes at most {limits.max_text_bytes:,}: shorten it "
                       "(or start attnlab serve with a larger --max-text-bytes)")
    return text


class TooLarge(AttnlabError):
    """An input over the server's size limits (answered with HTTP 413)."""


def token_limit(model, limits: Limits) -> int:
    """The most tokens one text may have: the server's limit, or the model's positions if fewer."""
    positions = max_positions(model)
    return min(limits.max_tokens, positions) if positions else limits.max_tokens


def encode_text(model, tokenizer, text: str, limits: Limits):
    """Tokenize ``text`` for the views (no template), refusing it past :func:`token_limit` in one line."""
    n = len(tokenizer(check_text(text, limits), truncation=False)["input_ids"])
    if n > token_limit(model, limits):
        raise TooLarge(f"the text has {n:,} tokens; this server takes at most {token_limit(model, limits):,} for this "
                       "model: shorten it")
    return encode(tokenizer, [text], ModelShape.of(model))


def token_labels(enc) -> list[dict]:
    """Each token as the page shows it: its piece of the text (or its name for special tokens) and its offsets."""
    text, offsets = enc.prompts[0].text, enc.offsets[0]
    out = []
    for i, tok in enumerate(enc.tokens[0]):
        s, e = offsets[i] if offsets is not None else (0, 0)
        out.append({"label": text[s:e] if e > s else tok, "start": int(s), "end": int(e), "special": not e > s})
    return out


def span_of(text: str, span) -> tuple[int, int] | None:
    """A span sent by the page (``[start, end]`` character offsets, or null) checked against ``text``."""
    if span is None:
        return None
    if not isinstance(span, (list, tuple)):
        raise AttnlabError(f"cannot read the span {span!r}: send [start, end] character offsets")
    return char_range(text, tuple(span), "the text")


def analyze(model, tokenizer, text: str, span=None, limits: Limits = Limits()) -> dict:
    """The head grid of ``text``: every metric of :data:`METRICS` per (layer, head), and the tokens.

    A text longer than ``limits.grid_rows`` tokens is measured over its last ``grid_rows`` queries only (every key
    still counts): the probes' cost grows with queries x keys, and this keeps a 4,000-token grid to about an
    eighth of it. The response says so (``rows_observed``, and each metric's help).
    """
    enc = encode_text(model, tokenizer, text, limits)
    chosen = span_of(text, span)
    probes = [FirstTokenMass(), Entropy(normalized=False), Entropy(normalized=True), PreviousTokenMass()]
    if chosen is not None:
        probes.append(SpanMass("selected", enc.span_mask(chosen)))
    n_tokens = len(enc.tokens[0])
    last = limits.grid_rows if n_tokens > limits.grid_rows else None
    forward_with_probes(model, enc.input_ids, enc.attention_mask, probes, observe_last=last)
    metrics = {("span_mass" if p.name.startswith("span_mass") else p.name): _round(p.result()[:, 0])
               for p in probes}
    shape = ModelShape.of(model)
    where = "" if last is None else f" (over the last {last} of the {n_tokens} queries)"
    return {"tokens": token_labels(enc), "n_tokens": n_tokens, "layers": shape.n_layers,
            "heads": shape.n_heads, "span": list(chosen) if chosen else None, "metrics": metrics,
            "rows_observed": last or n_tokens, "metric_help": {k: METRICS[k] + where for k in metrics}}


def layer_maps(model, tokenizer, text: str, layer: int, limits: Limits = Limits(), keep_call: bool = False) -> MapSet:
    """Every head's attention map of ``text`` in ``layer``, pooled to ``limits.map_side`` bins (one forward that
    stops after the layer). ``keep_call``: keep the layer's input in the result, for exact rows at the cost of
    one layer (``n x hidden`` numbers, the mask and the rotary tables held)."""
    layer, _ = check_head(model, layer, None)
    found: list = []
    maps = measure_one_layer(model, encode_text(model, tokenizer, text, limits), layer, None,
                             PooledMaps(limits.map_side), found=found if keep_call else None)
    return MapSet(maps.maps, maps.edges, found[0] if found else None)


def head_role_names(model) -> dict[str, str]:
    """The head-role scores of :mod:`attnlab.heads` that apply to ``model``, as grid metrics: ``heads:<score>`` ->
    its definition (listed by the page before they are computed)."""
    from attnlab.heads import SCORES

    kind = "causal" if ModelShape.of(model).causal else "encoder"
    return {HEAD_ROLE_PREFIX + name: spec.description for name, spec in SCORES.items() if spec.models in ("all", kind)}


def head_roles(model, tokenizer) -> dict:
    """Every head-role score of ``model`` (:func:`attnlab.heads.head_scores`, default settings) as grid metrics.

    These are properties of the model measured on synthetic inputs (repeated random tokens, needle copies, the
    built-in prose), not of the user's text: the server computes them once, on the first request, and keeps them.
    A score that could not be measured (no needle copied, say) has no values, and its note says why.
    """
    from attnlab.heads import head_scores

    report = head_scores(model, tokenizer)
    metrics, help_, notes = {}, {}, {}
    for name, score in report.scores.items():
        key = HEAD_ROLE_PREFIX + name
        help_[key] = (f"{score.description} (model property, measured once on {score.inputs}, not on your text; "
                      f"{score.reference})")
        if score.values is None:
            notes[key] = score.note or "could not be measured on this model"
        else:
            metrics[key] = score.values
    return {"metrics": metrics, "metric_help": help_, "notes": notes, "flagged": {
        HEAD_ROLE_PREFIX + name: score.flagged for name, score in report.scores.items() if score.flagged},
            "seconds": round(sum(report.runtime_s.values()), 1)}


def check_head(model, layer, head) -> tuple[int, int | None]:
    """``(layer, head)`` sent by the page, checked against the model (``head`` None: the layer's mean)."""
    shape = ModelShape.of(model)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < shape.n_layers:
        raise AttnlabError(f"there is no layer {layer!r}: this model has layers 0-{shape.n_layers - 1}")
    if head is not None and (isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < shape.n_heads):
        raise AttnlabError(f"there is no head {head!r} in layer {layer}: this model has heads 0-{shape.n_heads - 1}")
    return layer, head


def attention_map(model, tokenizer, text: str, layer: int, head: int | None = None, rows=None,
                  limits: Limits = Limits(), maps: MapSet | None = None) -> dict:
    """One head's (or a layer's mean) attention map of ``text``: pooled to ``limits.map_side`` bins when longer,
    plus the exact query rows ``rows = [start, stop)`` (at most :data:`MAX_ROWS`).

    ``maps`` are the layer's pooled maps of this text if already computed (:func:`layer_maps`); without them they
    are computed here. Exact rows of a pooled map cost one forward up to ``layer`` that measures only it.
    """
    layer, head = check_head(model, layer, head)
    enc = encode_text(model, tokenizer, text, limits)
    n = enc.input_ids.shape[1]
    if rows is not None:
        if (not isinstance(rows, (list, tuple)) or len(rows) != 2 or
                not all(isinstance(x, int) and not isinstance(x, bool) for x in rows)):
            raise AttnlabError(f"cannot read rows {rows!r}: send [start, stop) query positions")
        if not (0 <= rows[0] < rows[1] <= n) or rows[1] - rows[0] > MAX_ROWS:
            raise AttnlabError(f"rows {list(rows)} are outside the text's {n} tokens or more than {MAX_ROWS}: ask "
                               f"for at most {MAX_ROWS} rows within 0-{n}")
    if maps is None or maps.edges[-1] != n or len(maps.edges) - 1 != min(n, limits.map_side):
        maps = layer_maps(model, tokenizer, text, layer, limits)
    grid = maps.view(head)
    if rows is None:
        exact = torch.zeros(0, n)
    elif maps.exact:
        exact = grid[rows[0]:rows[1]]
    else:
        exact = exact_rows(model, enc, layer, head, tuple(rows), maps.call)
    return {"layer": layer, "head": head, "name": head_name(layer, head) if head is not None else f"L{layer} mean",
            "n_tokens": n, "rows_start": rows[0] if rows else None, "edges": maps.edges.tolist(),
            "values": _round(grid), "exact": maps.exact, "rows": _round(exact)}


def steer_side_by_side(model, tokenizer, text: str, method: str, settings: dict, span=None,
                       max_new_tokens: int = 24, chat: bool | None = None, limits: Limits = Limits()) -> dict:
    """Unsteered vs steered generations of ``text`` and the attention on ``span`` per layer, before and after.

    ``settings`` are the method's settings as the form wrote them (text), read by the method registry.
    """
    from attnlab.steer import registry
    from attnlab.steer.compare import compare

    if not model.can_generate():
        raise AttnlabError(f"{type(model).__name__} is an encoder, which cannot generate: serve a causal LM")
    values = registry.parse_settings(method, {k: str(v) for k, v in (settings or {}).items() if str(v).strip()})
    encode_text(model, tokenizer, text, limits)
    check_new_tokens(max_new_tokens, limits)
    chosen = span_of(text, span)
    if registry.method_class(method).span and chosen is None:
        raise AttnlabError(f"{method} acts on a span: select the text to act on with the mouse first")
    chat = has_chat_template(tokenizer) if chat is None else bool(chat)
    # Character ranges index the text as written; inside a chat template the selected words are found instead.
    spans = None if chosen is None else [text[chosen[0]:chosen[1]] if chat else chosen]
    result = compare(model, tokenizer, text, registry.build(method, values, spans), emphasize=spans,
                     max_new_tokens=max_new_tokens, chat=chat)
    result["span"] = list(chosen) if chosen else None
    result["span_text"] = text[chosen[0]:chosen[1]] if chosen else None
    return result


def check_new_tokens(max_new_tokens, limits: Limits) -> int:
    """``max_new_tokens`` if it is a whole number in ``1..limits.max_new_tokens``, else a one-line error."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or \
            not 1 <= max_new_tokens <= limits.max_new_tokens:
        raise AttnlabError(f"max_new_tokens must be a whole number from 1 to {limits.max_new_tokens}, got "
                           f"{max_new_tokens!r}")
    return max_new_tokens


class StepAttention(Probe):
    """The last query row of each layer, mean over heads: its attention on the prompt, on the generated tokens
    and on the first token (the sink), and the lookback ratio of Chuang et al. (2024).

    The lookback ratio is ``A(prompt) / (A(prompt) + A(generated))`` with each ``A`` the *mean* attention per
    token of that part (the paper's definition); it is 1 while nothing was generated. Keys an evicting cache
    re-indexed are mapped back to their positions in the text first.
    """

    name = "step_attention"

    def __init__(self, prompt_length: int) -> None:
        self.prompt_length = prompt_length
        super().__init__()

    def reset(self) -> None:
        self.layers: dict[int, dict] = {}
        self.kept: list[int] | None = None

    def begin_layer(self, layer, batch, heads, q_len, k_len, context, valid) -> None:
        super().begin_layer(layer, batch, heads, q_len, k_len, context, valid)
        positions = context.key_positions(layer, k_len) if context is not None else None
        self.positions = torch.arange(k_len) if positions is None else positions[0].cpu()
        if layer == 0:
            self.kept = self.positions.tolist()
        self.last = q_len - 1

    def update(self, layer, start, probs, allowed, q_valid) -> None:
        if not start <= self.last < start + probs.shape[2]:
            return
        row = probs[0, :, self.last - start].mean(0)                                          # [K]
        in_prompt = self.positions < self.prompt_length
        prompt, generated = float(row[in_prompt].sum()), float(row[~in_prompt].sum())
        n_prompt, n_gen = int(in_prompt.sum()), int((~in_prompt).sum())
        mean_p, mean_g = prompt / max(n_prompt, 1), generated / max(n_gen, 1)
        ratio = 1.0 if n_gen == 0 else mean_p / max(mean_p + mean_g, 1e-12)
        self.layers[layer] = {"prompt": round(prompt, 5), "generated": round(generated, 5),
                              "sink": round(float(row[self.positions == 0].sum()), 5),
                              "lookback_ratio": round(ratio, 5)}

    def result(self) -> list[dict]:
        """Per layer, in order: prompt, generated, sink and lookback_ratio of the last query."""
        return [self.layers[layer] for layer in sorted(self.layers)]


def timeline_events(model, tokenizer, text: str, max_new_tokens: int = 24, chat: bool | None = None,
                    sink_cache: dict | None = None, limits: Limits = Limits()):
    """Generate greedily from ``text``, one token at a time, yielding first the timeline's header (prompt tokens,
    template, cache, layers) and then, as each token is generated, its step: the token and, per layer, where its
    query attends (prompt, generated text, sink; lookback ratio). With ``sink_cache = {"sinks": s, "window": w}``
    generation goes through a :class:`attnlab.cache.SinkCache`, and each step says which text positions it keeps.
    Bad input is refused (one-line :class:`AttnlabError`) before the header.
    """
    from transformers import DynamicCache

    from attnlab import seam
    from attnlab.context import TokenContext
    from attnlab.plan import Plan

    if not model.can_generate():
        raise AttnlabError(f"{type(model).__name__} is an encoder, which cannot generate: serve a causal LM")
    check_new_tokens(max_new_tokens, limits)
    encode_text(model, tokenizer, text, limits)
    chat = has_chat_template(tokenizer) if chat is None else bool(chat)
    prompt = chat_wrap(tokenizer, text)[0] if chat else text
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=not chat).input_ids
    limit = max_positions(model)
    if sink_cache is not None:
        from attnlab.cache import SinkCache

        cache = SinkCache(model, num_sink=_whole(sink_cache, "sinks"), window=_whole(sink_cache, "window"))
    else:
        if limit is not None and ids.shape[1] + max_new_tokens > limit:
            raise TooLarge(f"the prompt ({ids.shape[1]} tokens) + {max_new_tokens} new tokens exceed the model's "
                           f"{limit} positions: shorten the text or generate through a sink cache")
        cache = DynamicCache()
    n_prompt = ids.shape[1]
    device = next(model.parameters()).device
    labels = [tokenizer.decode([i]) for i in ids[0].tolist()]          # readable pieces, not byte-level names
    yield {"prompt_tokens": labels, "n_prompt": n_prompt, "chat": chat, "sink_cache": sink_cache,
           "layers": ModelShape.of(model).n_layers}
    step_ids = ids
    context = TokenContext(valid=torch.ones(1, n_prompt, dtype=torch.bool), cache=cache)
    eos = tokenizer.eos_token_id
    for _ in range(max_new_tokens):
        probe = StepAttention(n_prompt)
        with seam.attached(model, Plan(probes=[probe]), context), torch.no_grad():
            out = model(input_ids=step_ids.to(device), past_key_values=cache, use_cache=True)
        token = int(out.logits[0, -1].argmax())
        yield {"token": tokenizer.decode([token]), "layers": probe.result(),
               "kept": probe.kept if sink_cache is not None else None}
        if token == eos:
            break
        step_ids = torch.tensor([[token]])


def timeline(model, tokenizer, text: str, max_new_tokens: int = 24, chat: bool | None = None,
             sink_cache: dict | None = None, limits: Limits = Limits()) -> dict:
    """The whole generation timeline of :func:`timeline_events` at once: its header and ``steps``."""
    events = timeline_events(model, tokenizer, text, max_new_tokens, chat, sink_cache, limits)
    return {**next(events), "steps": list(events)}


def _whole(values: dict, key: str) -> int:
    value = values.get(key) if isinstance(values, dict) else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise AttnlabError(f"sink cache {key} must be a whole number, got {value!r}")
    return value
