"""Streaming perplexity: dense vs window vs sliding-window-with-recompute vs attention sinks (StreamingLLM).

Protocol of StreamingLLM (Xiao et al., ICLR 2024, ``examples/eval_long_ppl.py``): feed one token at a
time with the KV cache carried over, ``nll_t = -log p(x_{t+1} | cache, x_t)``, apply the cache policy after
every step. Modes, on the bundled ``tiny`` model (4-layer Llama, 512 positions, GQA 8/4) by default:

* ``dense``     -- transformers' ``DynamicCache``; run until ``--dense-tokens`` (default twice the model's
  positions, to show what happens past them: RoPE does not crash, the model just was never trained there);
* ``window``    -- ``SinkCache(num_sink=0, window=S+W)``: the most recent tokens only (paper's "0+W");
* ``sink``      -- ``SinkCache(num_sink=4, window=W)``: StreamingLLM ("4+W"), same cache size;
* ``recompute`` -- sliding window with re-computation: for every ``--recompute-every``-th position, re-encode
  the last ``S+W`` tokens from scratch (the paper's oracle baseline, O(T W^2), so only a subsample);
* optional ``h2o`` / ``tova`` -- attention-guided eviction with the same budget (attention from attnlab's seam).

Reports NLL / perplexity per segment, the cache's memory at 10k tokens and at the end (dense: measured up to
where it ran, extrapolated linearly beyond, marked ``~``), process peak RSS per mode, tokens/s, and ratios;
prints a table, then JSON (also written to ``--json``).

    python benchmarks/streaming.py                      # 100000 tokens for window/sink
    python benchmarks/streaming.py --tokens 3000        # a quick run (about a minute)
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from measure import PeakSampler  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "src" / "attnlab" / "data"


def stream_ids(tok, n_tokens: int, path: str | None) -> torch.Tensor:
    """``[1, n_tokens + 1]``: the text (or haystack.txt + sample.txt) tokenized once and repeated, BOS first."""
    text = Path(path).read_text() if path else (DATA / "haystack.txt").read_text() + "\n" + \
        (DATA / "sample.txt").read_text() + "\n"
    unit = tok(text, add_special_tokens=False)["input_ids"]
    reps = (n_tokens + 1) // len(unit) + 1
    ids = unit * reps
    if tok.bos_token_id is not None:
        ids = [tok.bos_token_id] + ids
    return torch.tensor(ids[: n_tokens + 1])[None]


def cache_bytes(cache) -> int:
    total = 0
    for layer in cache.layers:
        for name in ("keys", "values", "written", "scores"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def run_cached(model, ids, cache, n_tokens: int, observe=None, mark: int = 10_000):
    """Token-by-token NLL over ``n_tokens`` predictions; also the cache size at ``mark`` tokens and at the end."""
    from contextlib import nullcontext

    nll = torch.empty(n_tokens)
    at_mark = None
    ctx = observe if observe is not None else nullcontext()
    start = time.perf_counter()
    with torch.no_grad(), ctx, PeakSampler() as peak:
        for t in range(n_tokens):
            logits = model(ids[:, t:t + 1], past_key_values=cache, use_cache=True).logits[0, -1]
            nll[t] = torch.nn.functional.cross_entropy(logits.float()[None], ids[0, t + 1:t + 2])
            if t + 1 == mark:
                at_mark = cache_bytes(cache)
    seconds = time.perf_counter() - start
    return dict(nll=nll, seconds=seconds, tokens_per_s=n_tokens / seconds, cache_bytes_at_mark=at_mark,
                cache_bytes_end=cache_bytes(cache), peak_rss=peak.peak, positions=list(range(n_tokens)))


def run_recompute(model, ids, size: int, n_tokens: int, every: int):
    """Sliding window with re-computation on positions ``0, every, 2*every, ...``: a fresh forward of the last
    ``size`` tokens (positions 0..size-1) predicts the next token."""
    positions = list(range(0, n_tokens, every))
    nll = torch.empty(len(positions))
    start = time.perf_counter()
    with torch.no_grad(), PeakSampler() as peak:
        for i, t in enumerate(positions):
            ctx = ids[:, max(0, t + 1 - size):t + 1]
            logits = model(ctx, use_cache=False).logits[0, -1]
            nll[i] = torch.nn.functional.cross_entropy(logits.float()[None], ids[0, t + 1:t + 2])
    seconds = time.perf_counter() - start
    return dict(nll=nll, seconds=seconds, tokens_per_s=len(positions) / seconds, cache_bytes_at_mark=None,
                cache_bytes_end=None, peak_rss=peak.peak, positions=positions)


def segments(result, seg: int, n_tokens: int) -> list[dict]:
    pos = torch.tensor(result["positions"])
    out = []
    for lo in range(0, n_tokens, seg):
        sel = (pos >= lo) & (pos < lo + seg)
        if sel.any():
            mean = float(result["nll"][sel].mean())
            out.append(dict(start=lo, stop=min(lo + seg, n_tokens), n=int(sel.sum()), nll=mean, ppl=math.exp(mean)))
        else:
            out.append(dict(start=lo, stop=min(lo + seg, n_tokens), n=0, nll=None, ppl=None))
    return out


def on_positions(result, positions) -> float | None:
    """Mean NLL of ``result`` restricted to ``positions`` (for a like-for-like comparison with recompute)."""
    index = {p: i for i, p in enumerate(result["positions"])}
    picked = [float(result["nll"][index[p]]) for p in positions if p in index]
    return sum(picked) / len(picked) if picked else None


def fmt_bytes(n, approx=False) -> str:
    if n is None:
        return "-"
    return ("~" if approx else "") + (f"{n / 2 ** 20:.1f}MiB" if n >= 2 ** 20 else f"{n / 2 ** 10:.0f}KiB")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--tokens", type=int, default=100_000, help="stream length for window/sink modes")
    parser.add_argument("--file", default=None, help="text file to stream (default: bundled haystack + sample)")
    parser.add_argument("--num-sink", type=int, default=4)
    parser.add_argument("--window", type=int, default=252, help="recent window W; cache size is num_sink + W")
    parser.add_argument("--dense-tokens", type=int, default=None, help="dense stops here (default 2x positions)")
    parser.add_argument("--recompute-every", type=int, default=None, help="recompute subsample stride "
                        "(default: about 100 positions per 1000 ... 1 per 25 tokens)")
    parser.add_argument("--segment", type=int, default=None, help="segment size (default tokens / 10)")
    parser.add_argument("--modes", default="dense,window,recompute,sink", help="comma list; also h2o, tova")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import attnlab
    from attnlab.cache import SinkCache
    from transformers import DynamicCache

    model, tok = attnlab.load(args.model)
    positions = model.config.max_position_embeddings
    size = args.num_sink + args.window
    n = args.tokens
    ids = stream_ids(tok, n, args.file)
    dense_n = min(n, args.dense_tokens or 2 * positions)
    every = args.recompute_every or 25
    seg = args.segment or max(n // 10, 1)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    results = {}
    for mode in modes:
        print(f"[{mode}] ...", file=sys.stderr, flush=True)
        if mode == "dense":
            results[mode] = run_cached(model, ids, DynamicCache(config=model.config), dense_n)
        elif mode == "window":
            results[mode] = run_cached(model, ids, SinkCache(model, num_sink=0, window=size), n)
        elif mode == "sink":
            results[mode] = run_cached(model, ids, SinkCache(model, num_sink=args.num_sink, window=args.window), n)
        elif mode in ("h2o", "tova"):
            cache = SinkCache(model, num_sink=args.num_sink, window=args.window, policy=mode)
            results[mode] = run_cached(model, ids, cache, n, observe=cache.observing(model))
        elif mode == "recompute":
            results[mode] = run_recompute(model, ids, size, n, every)
        else:
            raise SystemExit(f"unknown mode {mode}")

    dense = results.get("dense")
    per_token = dense["cache_bytes_end"] / dense_n if dense else None
    report = dict(model=args.model, tokens=n, num_sink=args.num_sink, window=args.window, cache_size=size,
                  model_positions=positions, dense_tokens=dense_n if dense else None, recompute_every=every,
                  threads=args.threads, modes={}, segments={}, ratios={},
                  command="python benchmarks/streaming.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    sub = results["recompute"]["positions"] if "recompute" in results else None
    for mode, r in results.items():
        mark = r["cache_bytes_at_mark"]
        entry = dict(evaluated=len(r["positions"]), nll=float(r["nll"].mean()), ppl=math.exp(float(r["nll"].mean())),
                     tokens_per_s=r["tokens_per_s"], seconds=r["seconds"], peak_rss_bytes=r["peak_rss"],
                     cache_bytes_at_10k=mark, cache_bytes_end=r["cache_bytes_end"])
        if mode == "dense":
            entry["cache_bytes_at_10k_extrapolated"] = per_token * 10_000
            entry["cache_bytes_at_100k_extrapolated"] = per_token * 100_000
        if sub is not None:
            entry["nll_on_recompute_positions"] = on_positions(r, sub)
        report["modes"][mode] = entry
        report["segments"][mode] = segments(r, seg, n)
    m = report["modes"]
    if "sink" in m and "window" in m:
        report["ratios"]["window_ppl / sink_ppl"] = m["window"]["ppl"] / m["sink"]["ppl"]
    if "sink" in m and "recompute" in m:
        s, rc = m["sink"]["nll_on_recompute_positions"], m["recompute"]["nll"]
        report["ratios"]["sink_ppl / recompute_ppl (same positions)"] = math.exp(s - rc)
        report["ratios"]["sink tokens/s / recompute tokens/s"] = m["sink"]["tokens_per_s"] / m["recompute"]["tokens_per_s"]
    if "sink" in m and "dense" in m:
        report["ratios"]["dense tokens/s / sink tokens/s"] = m["dense"]["tokens_per_s"] / m["sink"]["tokens_per_s"]
        report["ratios"]["dense cache @100k (extrapolated) / sink cache"] = \
            m["dense"]["cache_bytes_at_100k_extrapolated"] / m["sink"]["cache_bytes_end"]

    print_table(report)
    text = json.dumps(report, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    return report


def print_table(report) -> None:
    modes = list(report["modes"])
    print(f"\nstreaming perplexity -- {report['model']}, {report['tokens']} tokens, cache {report['num_sink']}+"
          f"{report['window']} (window mode: 0+{report['cache_size']}), model positions {report['model_positions']}, "
          f"recompute every {report['recompute_every']} tokens, {report['threads']} thread(s)")
    head = f"{'segment':>15} " + "".join(f"{m:>12}" for m in modes)
    print("\nperplexity per segment\n" + head)
    rows = len(next(iter(report["segments"].values())))
    for i in range(rows):
        seg = next(iter(report["segments"].values()))[i]
        cells = []
        for m in modes:
            ppl = report["segments"][m][i]["ppl"]
            cells.append(f"{ppl:12.2f}" if ppl is not None else f"{'-':>12}")
        print(f"{seg['start']:>7}-{seg['stop']:<7} " + "".join(cells))
    print("\n" + f"{'mode':>10} {'evaluated':>9} {'ppl':>9} {'ppl@rc-pos':>10} {'tok/s':>8} {'cache@10k':>11} "
          f"{'cache@end':>10} {'cache@100k':>11} {'peak RSS':>9}")
    for m, e in report["modes"].items():
        dense = m == "dense"
        at10k = e["cache_bytes_at_10k"] if e["cache_bytes_at_10k"] is not None else \
            (e.get("cache_bytes_at_10k_extrapolated") if dense else None)
        at10k_approx = dense and e["cache_bytes_at_10k"] is None
        at100k = e.get("cache_bytes_at_100k_extrapolated") if dense else \
            (e["cache_bytes_end"] if report["tokens"] >= 100_000 else None)
        rc = e.get("nll_on_recompute_positions")
        print(f"{m:>10} {e['evaluated']:>9} {e['ppl']:>9.2f} {math.exp(rc) if rc is not None else float('nan'):>10.2f} "
              f"{e['tokens_per_s']:>8.1f} {fmt_bytes(at10k, at10k_approx):>11} {fmt_bytes(e['cache_bytes_end']):>10} "
              f"{fmt_bytes(at100k, dense):>11} {fmt_bytes(e['peak_rss_bytes']):>9}")
    print("\nratios")
    for k, v in report["ratios"].items():
        print(f"  {k}: {v:.2f}")
    print()


if __name__ == "__main__":
    main()
