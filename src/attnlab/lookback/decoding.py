"""Lookback Lens guided decoding (Chuang et al. 2024, ``step04_run_decoding.py``).

Repeat until the end of text or ``max_new_tokens``: sample ``candidates`` continuations of ``chunk`` tokens, score
each by its mean lookback ratio over the chunk with a (sliding-window) detector, keep the one most likely
faithful. The paper keeps each candidate's KV cache and appends the winner's; here every round re-reads the
prompt plus the chosen tokens (the same numbers, more compute). The paper samples with temperature 0.9, top-p
0.95, no top-k, 8 candidates of 8 tokens (its README; 5 in its argparse default).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from attnlab.errors import AttnlabError
from attnlab.lookback.features import lookback_features
from attnlab.lookback.probe import Prompt, eos_ids, generate_with_ratios


def guided_generate(model, tokenizer, prompt: Prompt, scorer, *, candidates: int = 8, chunk: int = 8,
                    max_new_tokens: int = 24, temperature: float = 0.9, top_p: float = 0.95) -> tuple[list[int], list]:
    """Lookback-guided decoding of one prompt: ``(reply ids, per chunk the winning candidate's score)``.

    ``scorer`` maps features ``[N, L*H]`` to scores ``[N]`` (higher = more faithful), e.g.
    ``lambda X: detector.predict_proba(X)[:, 1]``. A chunk that ends the text, or comes back shorter than
    ``chunk``, ends the reply. Seed torch first for repeatable draws.
    """
    for name, value in (("candidates", candidates), ("chunk", chunk), ("max_new_tokens", max_new_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise AttnlabError(f"{name} must be a whole number >= 1, got {value!r}")
    reply: list[int] = []
    scores = []
    end = eos_ids(model, tokenizer)
    while len(reply) < max_new_tokens:
        step = min(chunk, max_new_tokens - len(reply))
        prefix = replace(prompt, ids=tuple(prompt.ids) + tuple(reply))
        drawn = generate_with_ratios(model, tokenizer, [prefix] * candidates, step, sample=True,
                                     temperature=temperature, top_p=top_p)
        X = np.stack([lookback_features(ratios, np.arange(len(ids))) for ids, ratios in drawn])
        score = np.asarray(scorer(X), dtype=float)
        best = int(np.argmax(score))          # the first of equal scores, as the paper takes the first candidate
        ids = drawn[best][0]
        reply += ids
        scores.append(float(score[best]))
        if len(ids) < step or ids[-1] in end:
            break
    return reply, scores
