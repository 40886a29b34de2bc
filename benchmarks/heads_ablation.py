"""Head roles proven by ablation, and head importance with its pruning curve, on one model, in one command.

1. Retrieval: heads ranked by the retrieval score of Wu et al. 2024 (:func:`attnlab.heads.retrieval_scores`,
   teacher-forced needle copies in ``--rank-context`` tokens of prose); then the top-K / K random heads masked on
   the ``needle`` task (a ``key=number`` record in ``--needle-length`` tokens of prose, the number teacher-forced,
   exact match) -- different needles and prose from the ranking's, so the ranking is not fitted to the test.
2. Induction: heads ranked by the induction score (Olsson et al. 2022, :func:`attnlab.heads.head_role_scores`)
   on one set of repeated random tokens; masked on another (seed + 1): accuracy of the second copy.
3. Importance (Michel et al. 2019): ``E_x |dL/d xi|`` on ``--importance-n`` prose windows (LM loss),
   l2-normalised per layer; the pruning curve (least important 10%, 20%, ... of the heads masked vs random) on
   ``--prune-n`` other windows (seed + 1); last, the loss rise of masking each head alone on the importance's
   windows (L x H evaluations).

    python benchmarks/heads_ablation.py [--model smollm2] [--out docs/benchmarks] [--threads 1]

Writes ``heads-{retrieval,induction}-ablation-MODEL.png``, ``heads-importance-MODEL.png``,
``heads-pruning-MODEL.png`` and all numbers in ``heads-ablation-MODEL.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import attnlab
from attnlab.heads import head_role_scores, retrieval_scores
from attnlab.heads.ablation import KS, ablation_curves, make_examples
from attnlab.heads.importance import ablation_importance, head_importance, pruning_curve
from attnlab.spans import head_name


def top(scores: torch.Tensor, k: int = 8) -> list[str]:
    flat = scores.flatten().argsort(descending=True)[:k]
    return [f"{head_name(*divmod(int(i), scores.shape[1]))}={float(scores.flatten()[i]):.3f}" for i in flat]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ks", type=int, nargs="+", default=list(KS))
    p.add_argument("--draws", type=int, default=2)
    p.add_argument("--rank-context", type=int, default=120, help="tokens of prose around the ranking's needles")
    p.add_argument("--needle-n", type=int, default=16)
    p.add_argument("--needle-length", type=int, default=60, help="tokens of prose around the task's record")
    p.add_argument("--induction-n", type=int, default=12)
    p.add_argument("--induction-length", type=int, default=24)
    p.add_argument("--importance-n", type=int, default=4)
    p.add_argument("--prune-n", type=int, default=12)
    p.add_argument("--text-tokens", type=int, default=32)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    model, tok = attnlab.load(args.model)
    results = {"model": args.model, "command": vars(args) | {"out": str(args.out)}}
    path = args.out / f"heads-ablation-{args.model}.json"

    def save(name, value, started):
        results[name] = value
        results.setdefault("seconds", {})[name] = round(time.time() - started, 1)
        path.write_text(json.dumps(results, indent=1))
        print(f"{name}: {results['seconds'][name]} s", flush=True)

    t = time.time()
    found = retrieval_scores(model, tok, context_tokens=args.rank_context)
    if found["scores"] is None:
        raise SystemExit("no needle copy was good enough to score retrieval heads: lower --rank-context")
    print("retrieval heads:", top(found["scores"]), flush=True)
    save("retrieval_ranking", {"scores": found["scores"].tolist(), "kept": int(found["kept"].sum()),
                               "examples": len(found["kept"])}, t)
    t = time.time()
    curves = ablation_curves(model, tok, found["scores"], task="needle", ks=args.ks, draws=args.draws,
                             n=args.needle_n, length=args.needle_length, label="top-K retrieval heads")
    curves.plot(args.out / f"heads-retrieval-ablation-{args.model}.png",
                f"{args.model} needle ({args.needle_length} tokens of prose, n={args.needle_n}): top-K retrieval "
                f"heads vs K random heads ({args.draws} draws) masked")
    save("retrieval_ablation", curves.to_json(), t)

    t = time.time()
    induction = head_role_scores(model, tok, length=args.induction_length, batch=8)["induction"]
    print("induction heads:", top(induction), flush=True)
    curves = ablation_curves(model, tok, induction, task="induction", ks=args.ks, draws=args.draws,
                             n=args.induction_n, seed=1, length=args.induction_length, label="top-K induction heads")
    curves.plot(args.out / f"heads-induction-ablation-{args.model}.png",
                f"{args.model} repeated random tokens (2 x {args.induction_length}, n={args.induction_n}): top-K "
                f"induction heads vs K random heads ({args.draws} draws) masked")
    save("induction_ablation", {"ranking": induction.tolist(), **curves.to_json()}, t)

    t = time.time()
    importance = head_importance(model, tok, "text", n=args.importance_n, tokens=args.text_tokens)
    importance.plot(args.out / f"heads-importance-{args.model}.png")
    print("most important:", [r["head"] for r in importance.table(8)], flush=True)
    save("importance", importance.to_json(), t)
    t = time.time()
    curves = pruning_curve(model, tok, importance, "text", draws=args.draws, n=args.prune_n, seed=1,
                           tokens=args.text_tokens)
    curves.plot(args.out / f"heads-pruning-{args.model}.png",
                f"{args.model} prose ({args.text_tokens} tokens, n={args.prune_n}): least important heads (Michel "
                f"et al. 2019) vs random heads ({args.draws} draws) masked")
    save("pruning", curves.to_json(), t)

    t = time.time()                                       # last: L x H evaluations, on the importance's own texts
    texts = make_examples("text", tok, args.importance_n, tokens=args.text_tokens)
    importance.ablation = ablation_importance(model, texts, pad_id=tok.pad_token_id)
    importance.plot(args.out / f"heads-importance-{args.model}.png")
    save("importance", importance.to_json(), t)


if __name__ == "__main__":
    main()
