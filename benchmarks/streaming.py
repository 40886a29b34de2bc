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
prints a table, then JSON (also written to ``--json``). The evaluation itself is
:func:`attnlab.cache.evaluate.stream_perplexity` (also behind ``attnlab stream``); this script adds the
command line, the table and ``--plot``.

    python benchmarks/streaming.py                      # 100000 tokens for window/sink
    python benchmarks/streaming.py --tokens 3000        # a quick run (about a minute on tiny)

A long run on a small machine can be split by mode over processes (one core each) and joined afterwards:
the perplexities are deterministic, so joining is exact for them; each process's tokens/s is its own (run
the modes whose speeds are compared, e.g. ``sink,recompute``, in the same process)::

    python benchmarks/streaming.py --model smollm2 --tokens 10000 --modes sink,recompute --json a.json &
    python benchmarks/streaming.py --model smollm2 --tokens 10000 --modes window,dense --json b.json &
    wait; python benchmarks/streaming.py --merge a.json b.json --json both.json --plot both.png
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--tokens", type=int, default=100_000, help="stream length for window/sink modes")
    parser.add_argument("--file", default=None, help="text file to stream (default: bundled haystack + sample)")
    parser.add_argument("--num-sink", type=int, default=4)
    parser.add_argument("--window", type=int, default=252, help="recent window W; cache size is num_sink + W")
    parser.add_argument("--dense-tokens", type=int, default=None, help="dense stops here (default 2x positions)")
    parser.add_argument("--recompute-every", type=int, default=25, help="recompute subsample stride")
    parser.add_argument("--segment", type=int, default=None, help="segment size (default tokens / 10)")
    parser.add_argument("--modes", default="dense,window,recompute,sink", help="comma list; also h2o, tova, snapkv")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default=None, help="float32 (default), float16 or bfloat16")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (a GPU needs a CUDA build of torch)")
    parser.add_argument("--json", default=None, help="also write the JSON here")
    parser.add_argument("--plot", default=None, help="also draw the running-perplexity PNG here")
    parser.add_argument("--merge", nargs="+", default=None, help="join the JSON reports of runs of other modes with "
                        "the same settings instead of running")
    args = parser.parse_args(argv)
    if args.merge:
        return finish_report(merge_reports([json.loads(Path(f).read_text()) for f in args.merge]), args)
    torch.set_num_threads(args.threads)

    import attnlab
    from attnlab.cache.evaluate import stream_ids, stream_perplexity
    from attnlab.cache.policies import POLICIES

    model, tok = attnlab.load(args.model, dtype=args.dtype, device=args.device)
    text = Path(args.file).read_text(encoding="utf-8") if args.file else None
    ids = stream_ids(tok, args.tokens, text)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    policy = next((m for m in modes if m in POLICIES), "sink")

    def progress(mode, done, total):
        if done == 0:
            print(f"[{mode}] ...", file=sys.stderr, flush=True)

    report = stream_perplexity(model, ids, modes=modes, num_sink=args.num_sink, window=args.window, policy=policy,
                               dense_tokens=args.dense_tokens, recompute_every=args.recompute_every,
                               segment=args.segment, on_progress=progress)
    report["model"] = args.model
    report["command"] = "python benchmarks/streaming.py " + " ".join(argv if argv is not None else sys.argv[1:])
    return finish_report(report, args)


def merge_reports(reports: list[dict]) -> dict:
    """One report from runs of different modes over the same stream; refuses runs whose settings differ.

    Runs of different eviction policies (``--modes sink`` in one, ``--modes h2o`` in another) join; the ratios are
    then taken against the first run's policy."""
    from attnlab.cache.evaluate import ratios
    from attnlab.errors import AttnlabError

    keys = ("model", "tokens", "num_sink", "window", "segment", "dtype")
    first = reports[0]
    for other in reports[1:]:
        differ = [k for k in keys if other.get(k) != first.get(k)]
        if differ:
            raise AttnlabError(f"cannot merge runs whose {differ[0]} differ ({first.get(differ[0])} vs "
                               f"{other.get(differ[0])}): merge runs of the same stream and cache")
    merged = dict(first, modes={}, segments={}, curves={}, commands=[c for r in reports for c in r.get("commands") or [r["command"]]])
    for r in reports:
        for part in ("modes", "segments", "curves"):
            merged[part].update(r[part])
        merged["dense_tokens"] = merged.get("dense_tokens") or r.get("dense_tokens")
        if "recompute" in r["modes"]:
            merged["recompute_every"] = r["recompute_every"]
    merged["ratios"] = ratios(merged["modes"], merged["policy"])
    merged["command"] = "python benchmarks/streaming.py --merge ... (each run's command in 'commands')"
    return merged


def finish_report(report: dict, args) -> dict:
    """Print the table, draw the picture and write the JSON of a (run or merged) report."""
    from attnlab.cache.plots import stream_plot

    print_table(report)
    if args.plot:
        stream_plot(report, Path(args.plot))
    text = json.dumps(report, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    return report


def print_table(report) -> None:
    """The benchmark's tables: perplexity per segment, speed and memory per mode, then the ratios."""
    from attnlab.report.units import fmt_bytes

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
    from attnlab.errors import AttnlabError

    try:
        main()
    except AttnlabError as exc:
        sys.exit(f"error: {exc}")
