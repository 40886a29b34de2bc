"""``attnlab.profile``: where does each head's attention go? Sink mass, Sink ratio, entropy, hidden sinks.

The module is callable: ``attnlab.profile(model, texts)`` is :func:`profile` (see :mod:`attnlab.callable_module`).

Metrics: first-token mass (StreamingLLM's attention sink), Gu et al.'s Sink_1^eps ratio (ICLR 2025),
mean attention entropy, ACT's hidden sinks (Yu et al., ICML 2024) and massive activations (Sun et al.,
COLM 2024). All computed with attnlab's chunked probes, never with eager ``n x n`` maps.
"""
from __future__ import annotations

import hashlib
from importlib import resources

import torch

from attnlab.callable_module import make_callable
from attnlab.collect import as_texts, collect
from attnlab.errors import AttnlabError
from attnlab.models.config import ModelShape
from attnlab.report.schema import (HiddenSink, LayerActivations, MassiveActivation, ModelInfo, Report, Summary,
                                   TextReport)
from attnlab.sinks import EPSILON, HIDDEN_SINK_THRESHOLD, hidden_sinks, sink_ratio


def sample_text() -> str:
    """The built-in sample text that ``attnlab profile`` uses when given none."""
    return resources.files("attnlab").joinpath("data/sample.txt").read_text(encoding="utf-8").strip()


def _rounded(t: torch.Tensor, digits: int = 5) -> list:
    return [[round(float(x), digits) for x in row] for row in t]


def model_info(model) -> ModelInfo:
    """What a report says about the model: its name, architecture, revision, dtype, layers and heads."""
    shape = ModelShape.of(model)
    return ModelInfo(name=getattr(model, "attnlab_source", type(model).__name__), architecture=type(model).__name__,
                     revision=getattr(model, "attnlab_revision", None) or getattr(model.config, "_commit_hash", None),
                     dtype=str(next(model.parameters()).dtype).replace("torch.", ""),
                     attention_backend="attnlab (chunked probes) over sdpa", n_layers=shape.n_layers,
                     n_heads=shape.n_heads)


def profile(model, texts=None, *, tokenizer=None, spans: dict | None = None, epsilon: float = EPSILON,
            hidden_threshold: float = HIDDEN_SINK_THRESHOLD, truncate: bool = False, batch_size: int = 8,
            on_batch=None) -> Report:
    """Profile where attention goes in ``model`` over ``texts`` and return a :class:`Report`.

    ``model`` is a loaded ``PreTrainedModel`` (give ``tokenizer``) or anything :func:`attnlab.load` takes
    (an alias such as ``"tiny"``, a folder, a hub id). ``texts`` defaults to a built-in sample.
    """
    from attnlab import __version__
    from attnlab.models.loading import load

    if not 0 < epsilon < 1:
        raise AttnlabError(f"epsilon must be in (0, 1), got {epsilon}")
    texts = [sample_text()] if texts is None else as_texts(texts)
    model, tokenizer = load(model, tokenizer)
    got = collect(model, tokenizer, texts, probes=("first_token_mass", "received_attention", "entropy"),
                  spans=spans, batch_size=batch_size, truncate=truncate, massive=True, on_batch=on_batch)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    reports = []
    for i, text in enumerate(texts):
        received = got.stats["received_attention"][i]
        ratio = sink_ratio(received, epsilon)
        tokens = got.tokens[i]
        sinks = [HiddenSink(token_text=tokens[s["token"]], **s) for s in hidden_sinks(received, hidden_threshold)]
        acts = [LayerActivations(layer=layer, median=row["median"], top=[MassiveActivation(**e) for e in row["top"]],
                                 massive=[MassiveActivation(**e) for e in row["massive"]])
                for layer, row in got.massive[i].items()]
        reports.append(TextReport(
            sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), n_tokens=len(tokens), first_token=tokens[0],
            bos_used=got.input_ids[i][0] in special, preview=text[:80],
            first_token_mass=_rounded(got.stats["first_token_mass"][i]),
            first_token_received=_rounded(received[:, :, 0]), entropy=_rounded(got.stats["entropy"][i]),
            span_mass={name: _rounded(got.stats[f"span_mass:{name}"][i]) for name in (spans or {})},
            sink_ratio_by_layer=[round(float(x), 3) for x in ratio], sink_ratio=round(float(ratio.mean()), 3),
            hidden_sinks=sinks, activations=acts))
    mass = torch.stack(got.stats["first_token_mass"]).mean(0)
    ratios = torch.tensor([r.sink_ratio_by_layer for r in reports]).mean(0)
    summary = Summary(
        first_token_mass=_rounded(mass), entropy=_rounded(torch.stack(got.stats["entropy"]).mean(0)),
        span_mass={name: _rounded(torch.stack(got.stats[f"span_mass:{name}"]).mean(0)) for name in (spans or {})},
        sink_ratio_by_layer=[round(float(x), 3) for x in ratios], sink_ratio=round(float(ratios.mean()), 3),
        heads_with_sink=int((mass >= epsilon).sum()), heads_with_sink_beyond_layer0=int((mass[1:] >= epsilon).sum()))
    settings = {"epsilon": epsilon, "hidden_sink_threshold": hidden_threshold, "truncate": truncate,
                "first_token_mass": "mean over real queries that can see the first token, excluding it",
                "n_texts": len(texts)}
    return Report(attnlab_version=__version__, model=model_info(model), settings=settings, summary=summary,
                  texts=reports)


make_callable(__name__)
