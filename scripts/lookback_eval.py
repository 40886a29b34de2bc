"""Lookback Lens on a model end to end: labelled replies, detectors, AUROC with baselines, guided decoding.

    OMP_NUM_THREADS=1 nohup .venv/bin/python scripts/lookback_eval.py --model smollm2 --n 72 \
        --out attnlab-out/lookback-smollm2 > attnlab-out/lookback-smollm2.log 2>&1 &

Writes to ``--out``: ``data/<task>.json`` (generated, labelled replies; reused when the settings match),
``traces-<task>.npz`` (teacher-forced lookback ratios and baseline inputs), ``detector-span.json`` and
``detector-window.json`` (fitted on the training examples of both tasks), ``results.json`` (every figure), and
prints the tables. See :mod:`attnlab.lookback` for the definitions.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import attnlab
from attnlab.lookback import data, evaluate, features
from attnlab.lookback.decoding import guided_generate
from attnlab.lookback.detector import LookbackDetector
from attnlab.lookback.probe import Prompt, Trace, teacher_forced
from attnlab.models.config import ModelShape


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def traces_for(model, tok, items, path: Path) -> list[Trace]:
    """Teacher-forced traces of ``items``, cached in ``path`` (npz, no pickle) by the replies' ids."""
    key = json.dumps([[it["prompt_ids"], it["reply_ids"]] for it in items])
    if path.is_file():
        stored = np.load(path, allow_pickle=False)
        if str(stored["key"]) == key:
            return [Trace(*(stored[f"{name}_{i}"] for name in ("ratios", "logprob", "entropy", "hidden")))
                    for i in range(len(items))]
    traces = teacher_forced(model, tok, [Prompt(tuple(it["prompt_ids"]), it["context_end"]) for it in items],
                            [it["reply_ids"] for it in items], batch_size=8)
    arrays = {f"{name}_{i}": getattr(t, name) for i, t in enumerate(traces)
              for name in ("ratios", "logprob", "entropy", "hidden")}
    np.savez_compressed(path, key=np.asarray(key), **arrays)
    return traces


def fmt(r: dict) -> str:
    if r["auroc"] is None:
        return "n/a (one class)"
    return f"{r['auroc']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--n", type=int, default=72, help="examples per task")
    parser.add_argument("--samples", type=int, default=1, help="sampled replies per example (plus one greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--candidates", type=int, default=4, help="guided decoding: candidates per chunk")
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--out", default="attnlab-out/lookback")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tok = attnlab.load(args.model)
    shape = ModelShape.of(model)
    log(f"{args.model}: {shape.n_layers} layers x {shape.n_heads} heads")

    built, traces, test_groups = {}, {}, {}
    for task in data.TASKS:
        start = time.perf_counter()
        built[task] = data.build(model, tok, task, n=args.n, samples=args.samples, max_new_tokens=args.max_new_tokens,
                                 temperature=0.9, top_p=0.95, seed=args.seed, batch_size=args.batch_size,
                                 cache=out / "data", model_name=args.model)
        items = built[task]["items"]
        log(f"{task}: {len(items)} replies, {sum(i['faithful'] for i in items)} faithful "
            f"({time.perf_counter() - start:.0f} s)")
        start = time.perf_counter()
        traces[task] = traces_for(model, tok, items, out / f"traces-{task}.npz")
        log(f"{task}: teacher-forced traces ({time.perf_counter() - start:.0f} s)")
        test_groups[task] = data.split_groups([it["group"] for it in items], 0.2, args.seed)

    results = {"model": args.model, "shape": [shape.n_layers, shape.n_heads], "settings": vars(args),
               "data": {t: {"replies": len(b["items"]), "faithful": sum(i["faithful"] for i in b["items"]),
                            "by_mode": {m: [sum(i["faithful"] for i in b["items"] if i["mode"] == m),
                                            sum(i["mode"] == m for i in b["items"])]
                                        for m in sorted({i["mode"] for i in b["items"]})},
                            "test_examples": len(test_groups[t])} for t, b in built.items()},
               "detection": {}}
    detectors = {}
    for setting in ("span", "window"):
        tables = {t: features.table(traces[t], built[t]["items"], setting) for t in data.TASKS}
        results["detection"][setting] = evaluate.detection(tables, test_groups, (shape.n_layers, shape.n_heads),
                                                           setting, model_name=args.model)
        train = [(tab, ~np.isin(tab["group"], list(test_groups[t]))) for t, tab in tables.items()]
        det = LookbackDetector(shape.n_layers, shape.n_heads, setting=setting, model_name=args.model)
        det.fit(np.concatenate([tab["lookback"][k] for tab, k in train]),
                np.concatenate([tab["y"][k] for tab, k in train]))
        det.save(out / f"detector-{setting}.json")
        detectors[setting] = det
        log(f"{setting}: fitted; wrote {out / f'detector-{setting}.json'}")
    (out / "results.json").write_text(json.dumps(results, indent=1))

    # guided decoding on the held-out examples of both tasks; greedy and plain sampling are the cached replies
    det = detectors["window"]
    hallucinated = {"greedy": [], "sampling": [], "guided": []}
    rows = []
    for task in data.TASKS:
        examples = [data.Example(**e) for e in built[task]["examples"]]
        by_mode = {(it["example"], it["mode"]): it for it in built[task]["items"]}
        for ex in examples:
            if ex.group not in test_groups[task]:
                continue
            greedy, sampled = by_mode[(ex.id, "greedy")], by_mode[(ex.id, "sample1")]
            torch.manual_seed(args.seed + ex.id)
            ids, scores = guided_generate(model, tok, Prompt(tuple(greedy["prompt_ids"]), greedy["context_end"]),
                                          lambda X: det.predict_proba(X)[:, 1], candidates=args.candidates,
                                          chunk=args.chunk, max_new_tokens=args.max_new_tokens)
            text = tok.decode(ids, skip_special_tokens=True)
            guided_ok = data.label(ex, text).faithful
            hallucinated["greedy"].append(int(not greedy["faithful"]))
            hallucinated["sampling"].append(int(not sampled["faithful"]))
            hallucinated["guided"].append(int(not guided_ok))
            rows.append({"task": task, "example": ex.id, "greedy": greedy["reply"], "sampling": sampled["reply"],
                         "guided": text, "guided_faithful": guided_ok, "chunk_scores": scores})
            log(f"guided {task} #{ex.id}: {'faithful' if guided_ok else 'hallucinated'}: {text!r}")
    results["decoding"] = evaluate.decoding_comparison(hallucinated)
    results["decoding"]["replies"] = rows
    (out / "results.json").write_text(json.dumps(results, indent=1))

    print("\n== data (faithful / replies)")
    for t, d in results["data"].items():
        print(f"  {t}: {d['faithful']}/{d['replies']}  by mode {d['by_mode']}  held-out examples {d['test_examples']}")
    for setting, per_task in results["detection"].items():
        print(f"\n== AUROC, {setting} setting (95% bootstrap CI over examples)")
        for task, entry in per_task.items():
            print(f"  train on {task}: train {fmt(entry['train'])}")
            for target, scores in entry.items():
                if target == "train":
                    continue
                lens = scores["lookback_lens"]
                print(f"    {target} (n={lens['n']}, faithful {lens['n_faithful']}):")
                for name, r in scores.items():
                    print(f"      {name:20s} {fmt(r)}")
    d = results["decoding"]
    print(f"\n== guided decoding (n={d['n']} held-out prompts, {args.candidates} candidates x {args.chunk} tokens)")
    print("  hallucination rate: " + ", ".join(f"{k} {v:.3f}" for k, v in d["hallucination_rate"].items()))
    for k, p in d["paired"].items():
        print(f"  {k}: {p['difference']:+.3f} [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]")
    log(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
