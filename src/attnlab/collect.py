"""Run a model over texts with probes attached and return per-text statistics.

``collect`` tokenizes each text on its own (the tokenizer is never modified), pads the batch (left for
causal models, right for encoders), attaches attnlab's attention function with a plan of probes,
runs the base model (no LM head), and trims every result to each text's real tokens.

The module is callable: ``attnlab.collect(model, tok, texts)`` is :func:`collect` (see
:mod:`attnlab.callable_module`).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch

from attnlab import seam
from attnlab.batching import pad_rows, position_ids
from attnlab.callable_module import make_callable
from attnlab.errors import AttnlabError
from attnlab.plan import Plan, TokenContext
from attnlab.probes.attention import Entropy, FirstTokenMass, FullMaps, ReceivedAttention, SpanMass
from attnlab.probes.massive import massive_activation_hooks
from attnlab.models.config import ModelShape
from attnlab.models.loading import input_device
from attnlab.spans import PromptTokens, span_mask

PROBES = {
    "first_token_mass": FirstTokenMass,
    "received_attention": ReceivedAttention,
    "entropy": lambda: Entropy(normalized=False),
    "normalized_entropy": lambda: Entropy(normalized=True),
    "attention_maps": FullMaps,
}
MAP_BUDGET_BYTES = 2 * 1024 ** 3


@dataclass
class Encoded:
    """One padded batch: ids, 2-D mask, each text as spans see it (its tokens' offsets and columns), token strings."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompts: list[PromptTokens]
    tokens: list[list[str]]

    @property
    def offsets(self) -> list:
        """Per text, each token's character range in it (None for a slow tokenizer)."""
        return [p.offsets for p in self.prompts]

    def span_mask(self, spec) -> torch.Tensor:
        """``[B, T]`` bool: the tokens of ``spec`` (a substring or character range, or a list) in each text."""
        return span_mask(self.prompts, spec, self.input_ids.shape[1], noun="text")


def encode(tokenizer, texts: list[str], shape: ModelShape, *, truncate: bool = False, left_pad: bool = True) -> Encoded:
    """Tokenize texts one by one and pad them into a batch; refuse empty or too-long texts with a clear line."""
    rows, offsets, tokens = [], [], []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise AttnlabError(f"text {i + 1} is a {type(text).__name__}, not text: give each text as a str")
        if not text.strip():
            raise AttnlabError(f"text {i + 1} is empty: give some text to analyse")
        kwargs = {"return_offsets_mapping": True} if getattr(tokenizer, "is_fast", False) else {}
        enc = tokenizer(text, truncation=False, **kwargs)
        ids = list(enc["input_ids"])
        limit = shape.max_positions
        if limit and len(ids) > limit:
            if not truncate:
                raise AttnlabError(f"text {i + 1} has {len(ids)} tokens but the model takes at most {limit}: shorten it "
                                   "or pass --truncate (truncate=True) to keep the first tokens")
            ids = ids[:limit]
        rows.append(ids)
        offsets.append(list(enc["offset_mapping"])[:len(ids)] if "offset_mapping" in enc else None)
        tokens.append(tokenizer.convert_ids_to_tokens(ids))
    input_ids, mask = pad_rows(rows, tokenizer.pad_token_id, left=left_pad)
    width = input_ids.shape[1]
    prompts = [PromptTokens(text, offs, list(range(width - len(ids), width) if left_pad else range(len(ids))))
               for text, offs, ids in zip(texts, offsets, rows)]
    return Encoded(input_ids, mask, prompts, tokens)


@dataclass
class Collected:
    """Per-text results: ``stats[name][i]`` is a tensor ``[L, H, ...]`` over text ``i``'s real tokens."""

    stats: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    massive: list[dict] = field(default_factory=list)
    tokens: list[list[str]] = field(default_factory=list)
    input_ids: list[list[int]] = field(default_factory=list)


def model_inputs(model, input_ids, attention_mask, device) -> dict:
    """Forward arguments for a padded batch, with :func:`attnlab.batching.position_ids` where the model takes them."""
    inputs = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
    if "position_ids" in inspect.signature(model.forward).parameters:
        inputs["position_ids"] = position_ids(attention_mask).to(device)
    return inputs


def forward_with_probes(model, input_ids, attention_mask, probes, *, massive: bool = False,
                        observe_last: int | None = None) -> dict:
    """One attached forward of the base model (no LM head) over a padded batch, feeding ``probes``.

    ``observe_last``: the probes see only the last N query rows (:class:`~attnlab.plan.Plan`). Returns the
    massive-activation summaries per layer when ``massive`` is set, else ``{}``.
    """
    valid = attention_mask.bool()
    plan = Plan(probes=probes, observe_last=observe_last)
    base = getattr(model, "base_model", model)
    device = input_device(model)
    found: dict = {}
    with seam.attached(model, plan, TokenContext(valid=valid)) as attachment, torch.no_grad():
        inputs = model_inputs(base, input_ids, attention_mask, device)
        if massive:
            with massive_activation_hooks(base, valid.to(device)) as found:
                base(**inputs)
        else:
            base(**inputs)
    if not attachment.seen_layers:
        raise AttnlabError(f"{type(model).__name__} never called the attention interface: attnlab cannot "
                           f"probe it; supported: {', '.join(seam.SUPPORTED_FAMILIES)}")
    return found


def check_map_budget(shape: ModelShape, batch: int, n_tokens: int, budget: int = MAP_BUDGET_BYTES) -> None:
    """Refuse full attention maps that would take more than ``budget`` bytes, before any is computed."""
    need = 4 * shape.n_layers * shape.n_heads * batch * n_tokens ** 2
    if need > budget:
        raise AttnlabError(f"full attention maps of {n_tokens} tokens need {need / 1024 ** 3:.1f} GiB (budget "
                           f"{budget / 1024 ** 3:.1f} GiB): use the reduced probes (first_token_mass, "
                           "received_attention, entropy) or a shorter text")


def as_texts(texts) -> list[str]:
    """``texts`` (one str, or a list or tuple of them) as a non-empty list; each text is checked by :func:`encode`."""
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, (list, tuple)):
        raise AttnlabError(f"cannot read texts given as a {type(texts).__name__}: give a str or a list of str")
    if not texts:
        raise AttnlabError("no text given: pass at least one text")
    return list(texts)


def collect(model, tokenizer, texts, probes=("first_token_mass", "received_attention", "entropy"), *,
            spans: dict | None = None, batch_size: int = 8, truncate: bool = False, massive: bool = False,
            map_budget_bytes: int = MAP_BUDGET_BYTES, on_batch=None) -> Collected:
    """Run ``model`` over ``texts`` with the named probes (see ``PROBES``) and return per-text statistics.

    ``spans`` maps a name to a substring (or character range) present in every text; each adds a
    ``span_mass:NAME`` result. ``massive=True`` adds massive-activation summaries per layer.
    """
    texts = as_texts(texts)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AttnlabError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        raise AttnlabError(f"unknown probe '{unknown[0]}': choose from {', '.join(PROBES)}")
    seam.check_supported(model)
    shape = ModelShape.of(model)
    out = Collected()
    for first in range(0, len(texts), batch_size):
        chunk = texts[first:first + batch_size]
        enc = encode(tokenizer, chunk, shape, truncate=truncate, left_pad=shape.causal)
        if "attention_maps" in probes:
            check_map_budget(shape, len(chunk), enc.input_ids.shape[1], map_budget_bytes)
        batch_probes = [PROBES[name]() for name in probes]
        for name, span in (spans or {}).items():
            batch_probes.append(SpanMass(name, enc.span_mask(span)))
        valid = enc.attention_mask.bool()
        found = forward_with_probes(model, enc.input_ids, enc.attention_mask, batch_probes, massive=massive)
        for probe in batch_probes:
            result = probe.result()                                                          # [L, B, H, ...]
            for b in range(len(chunk)):
                keep = valid[b]
                value = result[:, b]
                for dim in range(probe.token_dims):
                    value = value.index_select(value.dim() - 1 - dim, keep.nonzero().flatten())
                out.stats.setdefault(probe.name, []).append(value)
        if massive:
            out.massive += [{layer: rows[b] for layer, rows in sorted(found.items())} for b in range(len(chunk))]
        out.tokens += enc.tokens
        out.input_ids += [enc.input_ids[b][valid[b]].tolist() for b in range(len(chunk))]
        if on_batch:
            on_batch(len(chunk))
    return out


make_callable(__name__)
