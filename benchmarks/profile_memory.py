"""Peak memory and time: ``attnlab.profile`` vs transformers eager ``output_attentions=True``.

Both run on the same model (SmolLM2-135M-Instruct by default; ``--model tiny`` lifts the bundled model's
position limit so long inputs run) and the same random token inputs, each case in a fresh subprocess so
peaks do not mix. Peak memory is the resident set size above the level just before the forward, sampled
every millisecond. Eager is skipped where its maps alone (layers x heads x n^2 float32) exceed
``--eager-limit-gib``; the table then gives that size.

    python benchmarks/profile_memory.py [--model smollm2] [--lengths 1024 2048 4096 8192] [--threads 1]

Prints a table with the ratios; copy it into BENCHMARKS.md with the machine it ran on.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from measure import SAMPLE_EVERY, load_model, model_shape

from attnlab.report.memory import PeakRSS


def one_case(model_name: str, method: str, length: int, threads: int) -> dict:
    import torch

    import attnlab

    torch.set_num_threads(threads)
    model, tok = load_model(model_name, length)
    torch.manual_seed(0)
    ids = torch.randint(10, len(tok), (1, length))
    ids[0, 0] = tok.bos_token_id if tok.bos_token_id is not None else ids[0, 0]
    text = tok.decode(ids[0, 1:])  # attnlab takes text; the same ids feed eager
    ids = tok(text, return_tensors="pt")["input_ids"][:, :length]
    text = tok.decode(ids[0, 1:])
    with torch.no_grad():
        model(ids[:, :16])  # warm up kernels outside the measurement
    start = time.perf_counter()
    with PeakRSS(SAMPLE_EVERY) as sampler, torch.no_grad():
        if method == "eager":
            model.set_attn_implementation("eager")
            out = model(ids, output_attentions=True)
            n = len(out.attentions)
            del out
        else:
            report = attnlab.profile(model, [text], tokenizer=tok, truncate=True)
            n = report.model.n_layers
    return {"method": method, "tokens": int(ids.shape[1]), "seconds": time.perf_counter() - start,
            "peak_mib": sampler.peak / 2 ** 20, "layers": n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2", help="attnlab model name (tiny: positions lifted)")
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eager-limit-gib", type=float, default=16.0, help="skip eager where its maps alone exceed this")
    p.add_argument("--case", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        print(json.dumps(one_case(args.model, args.case[0], int(args.case[1]), args.threads)))
        return
    from rich.console import Console
    from rich.table import Table

    layers, heads = model_shape(args.model)
    table = Table(title=f"attnlab profile vs eager output_attentions ({args.model}: {layers} layers x {heads} heads)")
    for col in ("tokens", "eager peak MiB", "attnlab peak MiB", "memory ratio", "eager s", "attnlab s"):
        table.add_column(col, justify="right")
    rows = []
    for length in args.lengths:
        results = {}
        for method in ("eager", "attnlab"):
            maps_gib = layers * heads * 4 * length ** 2 / 2 ** 30
            if method == "eager" and maps_gib > args.eager_limit_gib:
                results[method] = None
                continue
            out = subprocess.run([sys.executable, __file__, "--model", args.model, "--case", method, str(length),
                                  "--threads",
                                  str(args.threads)], capture_output=True, text=True)
            results[method] = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
        e, a = results["eager"], results["attnlab"]
        maps_mib = layers * heads * 4 * length ** 2 / 2 ** 20
        rows.append({"tokens": length, "eager": e, "attnlab": a, "eager_maps_mib": maps_mib})
        table.add_row(str(length), f"{e['peak_mib']:.0f}" if e else f"maps alone {maps_mib:.0f}",
                      f"{a['peak_mib']:.0f}" if a else "failed",
                      f"{e['peak_mib'] / a['peak_mib']:.1f}x" if e and a else (
                          f">{maps_mib / a['peak_mib']:.0f}x (maps alone)" if a else "-"),
                      f"{e['seconds']:.2f}" if e else "-", f"{a['seconds']:.2f}" if a else "-")
    Console().print(table)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
