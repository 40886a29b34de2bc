"""The synthetic task mixes the bundled ``tiny`` model was trained on (``training/train_tiny.py --mix``).

The tasks shared with the evaluations come from :mod:`attnlab.models.synthetic`; the two here serve training
only. With absent keys and copies that stop, they give positions where a head must find *nothing*, the
situations in which attention sinks form (Gu et al. 2025, "When Attention Sink Emerges"; Guo et al. 2024,
"Active-Dormant Attention Heads").
"""
from __future__ import annotations

import random

from attnlab.models.synthetic import WORDS, copy_words, format_instruction, kv_retrieval, override


def bigram_backcopy(rng: random.Random, n_words: int) -> dict:
    """Guo et al.'s Bigram-Backcopy task in words: after the trigger ``twice`` the previous word repeats.

    Most positions need no attention at all, which is what drives dormant heads and sinks.
    """
    out, prev = [], rng.choice(WORDS)
    for _ in range(n_words):
        if rng.random() < 0.12 and out and out[-1] != "twice":
            out += ["twice", prev]
        else:
            prev = WORDS[(WORDS.index(prev) * 7 + rng.randrange(3)) % len(WORDS)]
            out.append(prev)
    return {"prompt": "Stream:", "answer": " " + " ".join(out) + "."}


def repeated_passage(rng: random.Random, passage: str) -> dict:
    """Induction on prose: a passage, then the same passage again.

    Natural text repeats itself rarely; this gives the induction heads prose to copy from (Olsson et al.
    2022), and prose positions where nothing earlier matches, the no-op case where heads park on the
    first token.
    """
    return {"prompt": f"{passage}\nOnce more:", "answer": f" {passage}"}


def _kv(rng: random.Random) -> dict:
    return kv_retrieval(rng, rng.choice([2, 4, 8, 16, 32, 48, 64]), absent=rng.random() < 0.15)


# Task mixes: (share, generator of one example) pairs. "v1" trained the first two phases of the bundled
# model; its copy lists (3-39 words, 20%) were too short for induction to pay off and the model stayed on
# the induction plateau. "v2" adds copy lists of up to 60 words and repeated prose passages.
MIXES = {
    "v1": lambda filler: [
        (0.35, _kv),
        (0.20, lambda rng: copy_words(rng, rng.randrange(3, 40))),
        (0.17, lambda rng: override(rng, rng.randrange(0, 6))),
        (0.13, lambda rng: format_instruction(rng, filler(rng.randrange(40, 400)))),
        (0.15, lambda rng: bigram_backcopy(rng, rng.randrange(20, 120))),
    ],
    "v2": lambda filler: [
        (0.28, _kv),
        (0.17, lambda rng: copy_words(rng, rng.randrange(3, 61))),
        (0.15, lambda rng: repeated_passage(rng, filler(rng.randrange(60, 500)).strip())),
        (0.14, lambda rng: override(rng, rng.randrange(0, 6))),
        (0.14, lambda rng: format_instruction(rng, filler(rng.randrange(40, 400)))),
        (0.12, lambda rng: bigram_backcopy(rng, rng.randrange(20, 120))),
    ],
}


def sample_example(rng: random.Random, filler_source, mix: str = "v2") -> str:
    """One synthetic training example (prompt + answer) drawn from the task mix ``mix`` (see ``MIXES``)."""
    kind, total = rng.random(), 0.0
    for share, make in MIXES[mix](filler_source):
        total += share
        if kind < total:
            break
    ex = make(rng)
    return ex["prompt"] + ex["answer"]
