"""Massive activations in the residual stream (Sun, Chen, Kolter, Liu, "Massive Activations in Large
Language Models", COLM 2024): an activation is massive if ``|h| > 100`` and ``|h| >= 1000 x`` the median
magnitude of its hidden state. Measured with forward hooks on the decoder / encoder layers, reduced at
once per layer (top values and the median), so no hidden state is kept.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

MAGNITUDE = 100.0
RATIO = 1000.0


def layer_modules(model) -> list[torch.nn.Module]:
    """The model's stack of transformer layers: the longest ``ModuleList`` in it."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no layer list")
    return max(lists, key=len)


def summarize_state(state: torch.Tensor, valid: torch.Tensor, top: int = 3) -> list[dict]:
    """Per batch row: the ``top`` largest ``|h|`` (value, token, dim), the median ``|h|``, and the massive ones."""
    rows = []
    for b in range(state.shape[0]):
        h = state[b][valid[b]].float().abs()                                                  # [n, d]
        median = float(h.median())
        values, flat = h.flatten().topk(min(top, h.numel()))
        tokens = valid[b].nonzero().flatten()
        entries = [{"value": round(float(v), 3), "token": int(tokens[i // h.shape[1]]), "dim": int(i % h.shape[1])}
                   for v, i in zip(values, flat.tolist())]
        massive = [e for e in entries if e["value"] > MAGNITUDE and e["value"] >= RATIO * median]
        rows.append({"median": round(median, 5), "top": entries, "massive": massive})
    return rows


@contextmanager
def massive_activation_hooks(model, valid: torch.Tensor):
    """Collect :func:`summarize_state` of every layer's output; yields ``{layer: [per-row summary]}``."""
    found: dict[int, list[dict]] = {}
    handles = []
    for idx, layer in enumerate(layer_modules(model)):
        def hook(module, args, output, idx=idx):
            state = output[0] if isinstance(output, tuple) else output
            if state.shape[:2] == valid.shape:
                found[idx] = summarize_state(state.detach(), valid)
        handles.append(layer.register_forward_hook(hook))
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()
