"""``attnlab.flow``: attention rollout and attention flow -- which input tokens an output position draws on.

Abnar & Zuidema, "Quantifying Attention Flow in Transformers" (ACL 2020, arXiv 2005.00928; code
``samiraabnar/attention_flow``). Per layer ``l`` the heads' attention is averaged, ``W^l = (1/H) sum_h A^{l,h}``,
and the residual connection is added, ``Â^l = (1 - r) W^l + r I`` with ``r = 0.5`` in the paper (``residual``
here), rows renormalised. Then:

* **rollout**: ``R = Â^L ... Â^1``; row ``i`` is how much output position ``i`` draws on each input token (rows sum
  to 1; lower-triangular for a causal model).
* **max-flow**: the paper's graph, node ``(l, j)`` for layer ``l = 0..L`` and token ``j``, edge ``(l, i) -> (l-1, j)``
  of capacity ``Â^l[i, j]``; the relevance of input ``j`` for output ``i`` is the maximum flow from ``(L, i)`` to
  ``(0, j)``, each output's flows normalised to sum to 1, as the paper's code does.

Differences from the paper's code: head-averaged maps come from attnlab's chunked probe (one query chunk at a
time, the same probabilities as eager attention) instead of ``output_attentions``; max-flow is solved with SciPy's
Dinic algorithm on integer capacities (``Â`` times ``FLOW_SCALE``, rounded) instead of networkx's Edmonds-Karp on
floats -- the same maximum flow, about 100x faster; ``exclude_sink`` is attnlab's option, not the paper's.

The module is callable: ``attnlab.flow(model, tokenizer, text)`` is :func:`flow` (see :mod:`attnlab.callable_module`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attnlab.callable_module import make_callable
from attnlab.errors import AttnlabError
from attnlab.probes.attention import Probe

METHODS = ("rollout", "maxflow")
ROLLOUT_MAX_TOKENS = 1024   # n x n float32 map per layer: 120 MiB for SmolLM2's 30 layers at 1024 tokens
FLOW_MAX_TOKENS = 128       # n max-flow problems per output position on ~L n^2 / 2 edges: ~13 s at 128 tokens
FLOW_SCALE = 10 ** 9        # capacities become integers Â * FLOW_SCALE (SciPy's max-flow takes int32)
PAPER = "Abnar & Zuidema, Quantifying Attention Flow in Transformers (ACL 2020, arXiv 2005.00928)"


class HeadMeanMaps(Probe):
    """Per layer, the attention averaged over heads, ``[B, Q, K]``, accumulated one query chunk at a time.

    It keeps ``n^2`` numbers per layer (``L n^2`` in all): rollout and flow need every layer's whole head-averaged
    map, so this memory is inherent to them; :func:`flow` refuses long texts before the forward. Padding rows are 0.
    """

    name = "head_mean_maps"
    token_dims = 2

    def reset(self) -> None:
        self.rows: dict[int, list[torch.Tensor]] = {}

    def update(self, layer, start, probs, allowed, q_valid) -> None:
        self.rows.setdefault(layer, []).append(probs.mean(1) * q_valid[:, :, None])          # [B, c, K]

    def result(self) -> torch.Tensor:
        """``[L, B, Q, K]`` over the layers seen, in layer order."""
        return torch.stack([torch.cat(self.rows[layer], dim=1) for layer in sorted(self.rows)])


def residual_attention(maps: np.ndarray, residual: float = 0.5, exclude_sink: bool = False) -> np.ndarray:
    """``Â^l = (1 - residual) W^l + residual I``, rows renormalised, from head-averaged maps ``W`` ``[L, n, n]``.

    Abnar & Zuidema (2020) use ``residual = 0.5``. ``exclude_sink`` (attnlab's option, not the paper's) first
    zeroes the first token's column (the attention sink) in every layer and renormalises each row over the other
    tokens; a row left with nothing (the first token's own row in a causal model) keeps its attention. Every later
    position then gets exactly 0 relevance on the first token from rollout and from max-flow. In a causal model
    rollout still drains towards the earliest token it keeps, whose row sees only itself: on SmolLM2 (30 layers,
    residual 0.5) every row puts 1.00 on the first token, and with ``exclude_sink`` 0.99 on the second; a larger
    ``residual`` spreads it out.
    """
    maps = np.array(maps, dtype=np.float64)
    if exclude_sink:
        kept = maps.copy()
        kept[:, :, 0] = 0.0
        mass = kept.sum(-1, keepdims=True)
        maps = np.where(mass > 0, kept / np.where(mass > 0, mass, 1.0), maps)
    adjusted = (1.0 - residual) * maps + residual * np.eye(maps.shape[-1])
    return adjusted / adjusted.sum(-1, keepdims=True)


def rollout(adjusted: np.ndarray) -> np.ndarray:
    """Attention rollout of Abnar & Zuidema (2020): ``Â^L ... Â^1`` from ``Â`` ``[L, n, n]`` (first layer first)."""
    product = adjusted[0]
    for layer in adjusted[1:]:
        product = layer @ product
    return product


def max_flows(adjusted: np.ndarray, positions: list[int]) -> np.ndarray:
    """Attention flow of Abnar & Zuidema (2020): ``[len(positions), n]`` maximum flows, not normalised.

    Graph: node ``l * n + j`` is token ``j`` after layer ``l`` (``l = 0`` the inputs); edge ``(l, i) -> (l-1, j)`` has
    capacity ``Â^l[i, j]`` (``adjusted[l - 1]``). Entry ``[p, j]`` is the maximum flow from ``(L, positions[p])`` to
    ``(0, j)``. Cost: ``n`` max-flow problems per position (SciPy's Dinic, ``O(V^2 E)`` each) on ``V = (L + 1) n``
    nodes and ``E = L n^2`` edges (``L n (n + 1) / 2`` for a causal model). Capacities are rounded to multiples of
    ``1 / FLOW_SCALE`` (1e-9), so each value is within (edges in a minimum cut) x 5e-10 of the real-valued
    maximum flow: below 1e-5 for any graph of 128 tokens.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    n_layers, n, _ = adjusted.shape
    capacity = np.rint(adjusted * FLOW_SCALE).astype(np.int64)
    layer, i, j = np.nonzero(capacity)
    nodes = (n_layers + 1) * n
    graph = csr_matrix((capacity[layer, i, j].astype(np.int32), ((layer + 1) * n + i, layer * n + j)),
                       shape=(nodes, nodes))
    values = np.zeros((len(positions), n))
    for row, position in enumerate(positions):
        for token in range(n):
            values[row, token] = maximum_flow(graph, n_layers * n + position, token).flow_value / FLOW_SCALE
    return values


@dataclass
class FlowResult:
    """What :func:`flow` found: ``relevance[r, j]`` is how much output position ``positions[r]`` draws on token ``j``.

    Rollout gives every position (``[n, n]``, rows sum to 1); max-flow the positions asked for, each row normalised
    to sum to 1 as in Abnar & Zuidema's code, with the maximum-flow values themselves in ``max_flow``.
    """

    method: str
    model: str
    tokens: list[str]
    positions: list[int]
    relevance: np.ndarray
    residual: float
    exclude_sink: bool
    max_flow: np.ndarray | None = None

    def row(self, position: int) -> np.ndarray:
        """The relevance of every token for output ``position`` (negative counts from the end), one of ``positions``."""
        p = _position(position, len(self.tokens))
        if p not in self.positions:
            raise AttnlabError(f"position {position} was not computed: choose one of {self.positions}")
        return self.relevance[self.positions.index(p)]

    def top(self, position: int = -1, k: int = 5) -> list[tuple[int, str, float]]:
        """The ``k`` most relevant tokens for output ``position``: ``(index, token, relevance)``, largest first."""
        values = self.row(position)
        order = np.argsort(-values, kind="stable")[:k]
        return [(int(j), self.tokens[j], float(values[j])) for j in order]

    def to_json(self) -> str:
        """Everything as JSON: method, settings, tokens, positions, relevance (and max-flow values), the paper."""
        data = {"method": self.method, "model": self.model, "paper": PAPER, "residual": self.residual,
                "exclude_sink": self.exclude_sink, "tokens": self.tokens, "positions": self.positions,
                "relevance": np.round(self.relevance, 6).tolist()}
        if self.max_flow is not None:
            data["max_flow"] = np.round(self.max_flow, 9).tolist()
        return json.dumps(data, indent=1, ensure_ascii=False)

    def plot(self, path) -> Path:
        """Draw the relevance as a heatmap (rows: output positions, columns: input tokens, labelled) to a PNG."""
        from attnlab.report.plots import plt
        from matplotlib.colors import PowerNorm

        path = Path(path)
        rows, n = self.relevance.shape
        fig, ax = plt.subplots(figsize=(min(24.0, 3.0 + 0.22 * n), min(24.0, 2.0 + 0.22 * rows)),
                               constrained_layout=True)
        image = ax.imshow(self.relevance, cmap="viridis", norm=PowerNorm(0.5, vmin=0, vmax=1), aspect="auto")
        labels = [_label(t) for t in self.tokens]
        step = max(1, n // 80)                                 # at most ~80 labels per axis
        ax.set_xticks(range(0, n, step), labels[::step], rotation=90, fontsize=6)
        ax.set_yticks(range(0, rows, max(1, rows // 80)), [labels[p] for p in self.positions][::max(1, rows // 80)],
                      fontsize=6)
        ax.set_xlabel("input token")
        ax.set_ylabel("output position")
        sink = ", first token excluded" if self.exclude_sink else ""
        ax.set_title(f"{self.model}: attention {self.method} (residual {self.residual}{sink})", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def _label(token: str) -> str:
    return token.replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\\n")[:10]


def _position(position, n: int) -> int:
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or not -n <= position < n:
        raise AttnlabError(f"position {position!r} is not a token position of this {n}-token text: give a whole "
                           f"number from {-n} to {n - 1} (-1 is the last token)")
    return int(position) % n


def _check(method, residual, max_tokens) -> None:
    if method not in METHODS:
        raise AttnlabError(f"unknown method {method!r}: choose from {', '.join(METHODS)}")
    if isinstance(residual, bool) or not isinstance(residual, (int, float)) or not 0 <= residual <= 1:
        raise AttnlabError(f"residual must be a number from 0 to 1 (the paper uses 0.5), got {residual!r}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise AttnlabError(f"max_tokens must be a whole number >= 1, got {max_tokens!r}")


def _check_length(method: str, n: int, n_layers: int, max_tokens: int | None) -> None:
    limit = max_tokens or (ROLLOUT_MAX_TOKENS if method == "rollout" else FLOW_MAX_TOKENS)
    if n <= limit:
        return
    if method == "rollout":
        raise AttnlabError(f"the text has {n} tokens, more than rollout's limit of {limit}: rollout keeps one n x n "
                           f"map per layer ({4 * n_layers * n * n / 1024 ** 3:.1f} GiB here); shorten the text or "
                           "raise max_tokens (--max-tokens)")
    raise AttnlabError(f"the text has {n} tokens, more than max-flow's limit of {limit}: it solves {n} max-flow "
                       f"problems per position on {(n_layers + 1) * n} nodes and up to {n_layers * n * n} edges; "
                       "shorten the text, use method='rollout' (--method rollout) or raise max_tokens (--max-tokens)")


def flow(model, tokenizer, text: str, *, method: str = "rollout", residual: float = 0.5, exclude_sink: bool = False,
         position=-1, max_tokens: int | None = None) -> FlowResult:
    """Attention rollout or attention flow (Abnar & Zuidema, ACL 2020) of ``model`` over one ``text``.

    ``model`` is a loaded ``PreTrainedModel`` with its ``tokenizer``, or anything :func:`attnlab.load` takes
    (``"tiny"``, ``"smollm2"``, a folder; then ``tokenizer`` may be None). ``method``: ``"rollout"`` gives the
    ``[n, n]`` relevance of every output position; ``"maxflow"`` the relevance for ``position`` (an int or a list,
    negative counting from the end; default the last token). ``residual`` is the weight of the identity in
    ``Â = (1 - residual) W + residual I`` (0.5 in the paper, a heuristic). ``exclude_sink`` (attnlab's option, not
    in the paper) removes the first token's column from every layer's attention and renormalises the rows, so
    the attention sink does not swamp the picture (see :func:`residual_attention`).

    Cost: one probed forward keeping a head-averaged ``n x n`` map per layer (``4 L n^2`` bytes, inherent to both
    methods); max-flow then solves ``n`` max-flow problems per position on ``(L + 1) n`` nodes and up to ``L n^2``
    edges (see :func:`max_flows`; 13 s per position at 128 tokens on SmolLM2's 30 layers, shared 2-core CPU). Longer
    texts than ``max_tokens`` (default ``ROLLOUT_MAX_TOKENS`` = 1024 for rollout, ``FLOW_MAX_TOKENS`` = 128 for
    max-flow) are refused before the forward.
    """
    from attnlab import seam
    from attnlab.collect import encode, forward_with_probes
    from attnlab.models.config import ModelShape
    from attnlab.models.loading import load

    _check(method, residual, max_tokens)
    if not isinstance(text, str):
        raise AttnlabError(f"text is a {type(text).__name__}: give one text as a str")
    model, tokenizer = load(model, tokenizer)
    seam.check_supported(model)
    shape = ModelShape.of(model)
    enc = encode(tokenizer, [text], shape, left_pad=shape.causal)
    n = enc.input_ids.shape[1]
    positions = [_position(p, n) for p in (position if isinstance(position, (list, tuple)) else [position])]
    if not positions:
        raise AttnlabError("no position given: give at least one output position (-1 is the last token)")
    _check_length(method, n, shape.n_layers, max_tokens)
    probe = HeadMeanMaps()
    forward_with_probes(model, enc.input_ids, enc.attention_mask, [probe])
    adjusted = residual_attention(probe.result()[:, 0].cpu().double().numpy(), residual, exclude_sink)
    name = getattr(model, "attnlab_source", type(model).__name__)
    settings = {"model": str(name), "tokens": enc.tokens[0], "residual": float(residual),
                "exclude_sink": bool(exclude_sink)}
    if method == "rollout":
        return FlowResult(method=method, positions=list(range(n)), relevance=rollout(adjusted), **settings)
    values = max_flows(adjusted, positions)
    totals = values.sum(-1, keepdims=True)
    return FlowResult(method=method, positions=positions, relevance=values / np.where(totals > 0, totals, 1.0),
                      max_flow=values, **settings)


make_callable(__name__)
