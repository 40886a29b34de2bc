"""Edits: which heads, which queries, which keys, and what to do to their attention.

An :class:`Edit` is one of

* ``bias``  -- an additive logit bias on the selected (head, query, key) entries. By the bias lemma,
  multiplying the post-softmax weights of a key set by ``f`` and renormalising is exactly adding
  ``log f`` to their logits (``softmax(z + log f)_j = f e^{z_j} / sum_k f_k e^{z_k}``), so PASTA,
  ZeroTuning and InstABoost are bias edits;
* ``temperature`` -- the selected heads' ``q . k`` logits are divided by ``T`` (biases and masks are not);
* ``output_scale`` -- the selected heads' outputs are multiplied by ``s`` (``0`` ablates the head).

**Composition.** Several edits add their biases, multiply their temperatures and multiply their
output scales: ``logits_h = (q_h . k) * scale / (T_1 T_2 ...) + sum_e bias_e + mask`` and
``out_h = softmax(logits_h) V * s_1 s_2 ...``. Order does not matter.

**Selectors** (resolved per batch row against the prompt, see :class:`attnlab.context.TokenContext`):

* keys: ``"span:NAME"`` (the span's tokens), ``"first"`` (the first real token), ``"prompt"``,
  ``"generated"`` (keys after the prompt), a tuple of token indices counted from the first real token;
  ``"~X"`` for the prompt's real tokens that ``X`` does not pick (``"~span:NAME"``: outside the span), and
  several of these joined by ``&`` for the keys all of them pick (e.g. ``"~span:emphasis&~first"``);
* queries: ``"all"``, ``"prompt"``, ``"generated"`` or ``"span:NAME"``.

Keys generated after the prompt are never selected unless ``keys="generated"``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from attnlab.context import TokenContext
from attnlab.errors import AttnlabError
from attnlab.spans import HeadSet

KEY_WORDS = ("first", "prompt", "generated")
QUERY_WORDS = ("all", "prompt", "generated")


def head_set(heads, n_layers: int, n_heads: int) -> HeadSet:
    """Resolve ``"all"``, ``"L3H1,L5H0-7"``, a :class:`HeadSet`, or a PASTA config ``{"3": [1, 2]}``."""
    if isinstance(heads, HeadSet):
        bad = [(l, h) for l, h in heads if l >= n_layers or h >= n_heads]
        if bad:
            raise AttnlabError(f"head L{bad[0][0]}H{bad[0][1]} does not exist: the model has {n_layers} layers x "
                               f"{n_heads} heads")
        return heads
    if isinstance(heads, dict):
        spec = ",".join(f"L{int(l)}H{int(h)}" for l, hs in heads.items() for h in hs)
        return HeadSet.parse(spec, n_layers, n_heads)
    if isinstance(heads, (list, tuple, set, frozenset)):
        return HeadSet.parse(",".join(f"L{int(l)}H{int(h)}" for l, h in heads), n_layers, n_heads)
    return HeadSet.parse(str(heads), n_layers, n_heads)


def _check_selector(value, words, kind: str) -> None:
    if kind == "keys" and isinstance(value, str) and "&" in value:
        for part in value.split("&"):
            _check_selector(part, words, kind)
        return
    if isinstance(value, tuple):
        if kind == "keys" and all(isinstance(i, int) and i >= 0 for i in value) and value:
            return
        raise AttnlabError(f"{kind} as a tuple must be non-negative token indices, got {value}")
    if kind == "keys" and isinstance(value, str) and value.startswith("~"):
        _check_selector(value[1:], words, kind)
        return
    if value in words or (isinstance(value, str) and value.startswith("span:")):
        return
    allowed = ", ".join(words) + ", span:NAME" + (", (i, j, ...), ~A, A&B" if kind == "keys" else "")
    raise AttnlabError(f"unknown {kind} selector '{value}': use one of {allowed}")


@dataclass(frozen=True)
class Edit:
    """One intervention on attention (see the module docstring for the meaning of each field)."""

    heads: object = "all"
    keys: object = "prompt"
    queries: str = "all"
    bias: float | None = None
    temperature: float | None = None
    output_scale: float | None = None

    def __post_init__(self):
        kinds = [k for k in ("bias", "temperature", "output_scale") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise AttnlabError("an Edit sets exactly one of bias, temperature or output_scale")
        if self.bias is not None and not math.isfinite(self.bias):
            raise AttnlabError(f"bias must be a finite number (log of a factor), got {self.bias}")
        if self.temperature is not None and not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise AttnlabError(f"temperature must be > 0, got {self.temperature}")
        if self.output_scale is not None and not math.isfinite(self.output_scale):
            raise AttnlabError(f"output_scale must be finite, got {self.output_scale}")
        _check_selector(self.keys, KEY_WORDS, "keys")
        _check_selector(self.queries, QUERY_WORDS, "queries")

    @property
    def span_names(self) -> set[str]:
        names = set()
        for sel in (self.keys, self.queries):
            for part in sel.split("&") if isinstance(sel, str) else ():
                if "span:" in part:
                    names.add(part.split("span:", 1)[1])
        return names


@dataclass
class LayerSteering:
    """What the edits of one layer amount to: low-rank bias factors, per-(head, query) temperature and scale.

    ``bias[b, h, i, j] = sum_r q_factors[b, h, i, r] * k_factors[b, j, r]``.
    """

    q_factors: torch.Tensor | None = None     # [B, H, Q, r]
    k_factors: torch.Tensor | None = None     # [B, K, r]
    bias: torch.Tensor | None = None          # [B, H, Q, K] dense part (decode steps: Q is 1)
    temperature: torch.Tensor | None = None   # [B, H, Q]
    output_scale: torch.Tensor | None = None  # [B, H, Q]

    def add_bias(self, q_factors: torch.Tensor, k_factors: torch.Tensor) -> None:
        if self.q_factors is None:
            self.q_factors, self.k_factors = q_factors, k_factors
        else:
            self.q_factors = torch.cat([self.q_factors, q_factors], dim=-1)
            self.k_factors = torch.cat([self.k_factors, k_factors], dim=-1)

    def dense_bias(self) -> torch.Tensor | None:
        """The full ``[B, H, Q, K]`` bias: used at decode steps (Q = 1), where it is one row per head."""
        low_rank = None if self.q_factors is None else torch.einsum("bhqr,bkr->bhqk", self.q_factors, self.k_factors)
        if self.bias is None:
            return low_rank
        return self.bias if low_rank is None else self.bias + low_rank

    @property
    def has_bias(self) -> bool:
        return self.q_factors is not None or self.bias is not None


def static_layer_steering(edits, layer: int, head_masks: dict, n_heads: int, q_len: int, k_len: int,
                          ctx: TokenContext) -> LayerSteering:
    """Resolve the static edits that touch ``layer`` into a :class:`LayerSteering`.

    ``head_masks[(i, layer)]`` is edit ``i``'s ``[H]`` 0/1 head mask for the layer (absent = untouched).
    """
    out = LayerSteering()
    for i, edit in enumerate(edits):
        head_mask = head_masks.get((i, layer))
        if head_mask is None:
            continue
        if edit.queries == "all":
            sel = head_mask[None, :, None].expand(ctx.valid.shape[0], n_heads, q_len)
        else:
            sel = head_mask[None, :, None] * ctx.query_mask(edit.queries, q_len, k_len)[:, None, :].float()
        if edit.bias is not None:
            out.add_bias((sel * edit.bias)[..., None], ctx.key_mask(edit.keys, k_len).float()[..., None])
        elif edit.temperature is not None:
            factor = 1 + sel * (edit.temperature - 1)
            out.temperature = factor if out.temperature is None else out.temperature * factor
        else:
            factor = 1 + sel * (edit.output_scale - 1)
            out.output_scale = factor if out.output_scale is None else out.output_scale * factor
    return out
