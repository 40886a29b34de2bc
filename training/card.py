"""Measure the figures the bundled model's card reports, with attnlab itself.

    python -m training.card [MODEL] [--n 200]        # from the repository root

* attention sink: heads beyond layer 0 whose mean first-token mass is >= 0.3, and the Sink ratio, on the
  built-in sample text alone (what ``attnlab profile`` shows) and on it plus the synthetic task prompts;
* best induction and previous-token scores (repeated random tokens, :mod:`attnlab.heads.roles`);
* key-value recall: greedy exact-match accuracy of the answer at 4, 16 and 64 pairs
  (:func:`attnlab.models.synthetic.kv_retrieval`), chance being about 1 / pairs.
"""
from __future__ import annotations

import argparse
import json
import random

import torch

from attnlab.scoring import score_answers
from attnlab.models.synthetic import copy_words, kv_retrieval, override


def kv_recall(model, tokenizer, pairs: int, n: int, seed: int = 0) -> float:
    rng = random.Random(seed)
    examples = [kv_retrieval(rng, pairs) for _ in range(n)]
    scores = score_answers(model, tokenizer, [e["prompt"] for e in examples], [e["answer"] for e in examples])
    return float(scores.correct.float().mean())


def measure(model, tokenizer, n: int = 200, seed: int = 0) -> dict:
    """All card figures as a dict."""
    from attnlab.heads.roles import head_role_scores
    from attnlab.profile import profile, sample_text

    rng = random.Random(seed)
    texts = [sample_text()] + [kv_retrieval(rng, 16)["prompt"] for _ in range(4)] + \
        [override(rng, 3)["prompt"] for _ in range(4)] + [copy_words(rng, 20)["prompt"] for _ in range(4)]
    report = profile(model, texts, tokenizer=tokenizer)
    prose = profile(model, texts[:1], tokenizer=tokenizer).summary
    roles = head_role_scores(model, tokenizer, length=50, batch=8, seed=seed)
    ind, prev = roles["induction"], roles["previous_token"]
    mass = torch.tensor(report.summary.first_token_mass)
    return {
        "heads_beyond_layer0": int(mass[1:].numel()),
        "heads_beyond_layer0_with_sink": report.summary.heads_with_sink_beyond_layer0,
        "prose_heads_beyond_layer0_with_sink": prose.heads_with_sink_beyond_layer0,
        "prose_first_token_mass_by_layer": [round(float(x), 3) for x in torch.tensor(prose.first_token_mass).mean(1)],
        "prose_sink_ratio_percent": prose.sink_ratio,
        "first_token_mass_by_layer": [round(float(x), 3) for x in mass.mean(1)],
        "sink_ratio_percent": report.summary.sink_ratio,
        "best_induction": {"score": round(float(ind.max()), 3), "head": _argmax_head(ind)},
        "best_previous_token": {"score": round(float(prev.max()), 3), "head": _argmax_head(prev)},
        "kv_recall": {str(p): round(kv_recall(model, tokenizer, p, n, seed), 3) for p in (4, 16, 64)},
        "n_per_kv_setting": n,
    }


def _argmax_head(scores: torch.Tensor) -> str:
    flat = int(scores.argmax())
    return f"L{flat // scores.shape[1]}H{flat % scores.shape[1]}"


def main() -> None:
    import attnlab

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default="tiny")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json-out", help="also write the figures to this JSON file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = attnlab.load(args.model)
    figures = measure(model, tok, args.n)
    print(json.dumps(figures, indent=1))
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(figures, fh, indent=1)


if __name__ == "__main__":
    main()
