"""Unsteered vs steered, side by side: the generations and the attention on the emphasised text per layer."""
from __future__ import annotations

import torch

from attnlab.collect import forward_with_probes
from attnlab.errors import AttnlabError
from attnlab.models.config import max_positions
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
    if not model.can_generate():
        raise AttnlabError(f"{type(model).__name__} is an encoder, which cannot generate: compare generations on a "
                           "causal LM such as smollm2, gemma3 or tiny")
    if max_new_tokens < 1:
        raise AttnlabError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    inputs = Spans.encode(tokenizer, [prompt], {"watched": emphasize} if emphasize else None, chat=chat)
    limit = max_positions(model)
    if limit is not None and inputs["input_ids"].shape[1] + max_new_tokens > limit:
        raise AttnlabError(f"the prompt ({inputs['input_ids'].shape[1]} tokens) + --max-new-tokens {max_new_tokens} "
                           f"exceed the model's {limit} positions: shorten the prompt")
    clean = strip_markers(prompt)[0]
    span = inputs.masks["watched" if emphasize else "marked"]
    watching_span = bool(span.any())
    probe_of = (lambda: SpanMass("watched", span)) if watching_span else FirstTokenMass
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    before = probe_of()
    forward_with_probes(model, ids, mask, [before])
    after = probe_of()
    with steer(model, method, tokenizer=tokenizer, probes=[after]), torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    b, a = before.result()[:, 0].mean(-1), after.result()[:, 0].mean(-1)     # mean over heads, per layer
    return {
        "prompt": clean, "chat": chat,
        "method": type(method).__name__, "hyperparameters": method.hyperparameters(),
        "unsteered": generate_texts(model, tokenizer, [clean], None, max_new_tokens, chat)[0],
        "steered": generate_texts(model, tokenizer, [clean], method, max_new_tokens, chat)[0],
        "watched": "span" if watching_span else "first token",
        "attention_by_layer": [{"layer": l, "unsteered": round(float(x), 4), "steered": round(float(y), 4)}
                               for l, (x, y) in enumerate(zip(b, a))],
    }
