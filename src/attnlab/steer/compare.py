"""Unsteered vs steered, side by side: the generations and the attention on the emphasised text per layer."""
from __future__ import annotations

import torch

from attnlab.collect import forward_with_probes
from attnlab.errors import AttnlabError
from attnlab.probes.attention import FirstTokenMass, SpanMass
from attnlab.spans import Spans, strip_markers
from attnlab.steer.selection import generate_texts
from attnlab.steer.session import steer


def compare(model, tokenizer, prompt: str, method, emphasize=None, max_new_tokens: int = 30,
            chat: bool = False) -> dict:
    """Generate with and without ``method``; measure per-layer attention on the span (or first token).

    ``prompt`` may mark the text to watch with ``<<…>>``; else ``emphasize`` names it. With ``chat`` the prompt
    is one user turn of the model's chat template (spans are still found in the prompt's text).
    """
    inputs = Spans.encode(tokenizer, [prompt], {"watched": emphasize} if emphasize else None, chat=chat)
    clean = strip_markers(prompt)[0]
    span = inputs.masks["watched"] if emphasize else inputs.masks["marked"]
    watching_span = bool(span.any())
    probe_of = (lambda: SpanMass("watched", span)) if watching_span else FirstTokenMass
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    before = probe_of()
    forward_with_probes(model, ids, mask, [before])
    after = probe_of()
    with steer(model, method, tokenizer=tokenizer, probes=[after]), torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    b, a = before.result()[:, 0].mean(-1), after.result()[:, 0].mean(-1)     # mean over heads, per layer
    if max_new_tokens < 1:
        raise AttnlabError("--max-new-tokens must be >= 1")
    return {
        "prompt": clean, "chat": chat,
        "method": type(method).__name__, "hyperparameters": method.hyperparameters(),
        "unsteered": generate_texts(model, tokenizer, [clean], None, max_new_tokens, chat)[0],
        "steered": generate_texts(model, tokenizer, [clean], method, max_new_tokens, chat)[0],
        "watched": "span" if watching_span else "first token",
        "attention_by_layer": [{"layer": l, "unsteered": round(float(x), 4), "steered": round(float(y), 4)}
                               for l, (x, y) in enumerate(zip(b, a))],
    }
