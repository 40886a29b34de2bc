"""Per-token time of StreamingLLM's sink + window cache vs sliding window with re-computation, at steady state.

StreamingLLM (Xiao et al., ICLR 2024, §4.5 and Fig. 10) compares the per-token latency of its cache with
re-encoding the last ``L`` tokens from scratch for every new token. ``benchmarks/streaming.py`` measures both
over a whole stream, where the first ``L`` positions re-encode shorter windows; this script times the steady
state only, in one process, the two interleaved round by round:

* **sink**: one new token through a full ``SinkCache(num_sink, window)`` (each step evicts one token and
  re-rotates the kept keys), its logits projected onto the vocabulary;
* **recompute**: one fresh forward of the last ``num_sink + window`` tokens, only the last position projected
  onto the vocabulary (``logits_to_keep=1``: the baseline does no work that is thrown away);
* **floor**: one new token through transformers' ``DynamicCache`` holding as many tokens, cropped back after
  each step (no eviction bookkeeping, no re-rotation): what any cache of that size costs at least, so
  ``recompute / floor`` bounds the ratio any cache can reach on this machine.

    python benchmarks/sink_step.py --model smollm2 --sizes 256 1024 --threads 1

Prints per size the median milliseconds per token of each, recompute / sink and recompute / floor; ``--json``
writes them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def steady_state(model, ids: torch.Tensor, num_sink: int, window: int, rounds: int, sink_steps: int) -> dict:
    """Median ms per token of a sink-cache step and of a fresh forward of the same window, interleaved by round."""
    from transformers import DynamicCache

    from attnlab.cache.sink import SinkCache

    size = num_sink + window
    cache = SinkCache(model, num_sink=num_sink, window=window)
    model(ids[:, :size], past_key_values=cache, use_cache=True)                  # fill the cache in one forward
    t = size
    for _ in range(8):                                                           # past the first evictions
        model(ids[:, t:t + 1], past_key_values=cache, use_cache=True)
        t += 1
    assert cache.layers[0].evictions > 0 and cache.get_seq_length() == size
    floor = DynamicCache(config=model.config)
    model(ids[:, :size - 1], past_key_values=floor, use_cache=True)             # the new token makes it `size`
    sink_ms, recompute_ms, floor_ms = [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(sink_steps):
            model(ids[:, t:t + 1], past_key_values=cache, use_cache=True)
            t += 1
        sink_ms.append((time.perf_counter() - start) * 1000 / sink_steps)
        start = time.perf_counter()
        model(ids[:, t + 1 - size:t + 1], use_cache=False, logits_to_keep=1)
        recompute_ms.append((time.perf_counter() - start) * 1000)
        elapsed = 0.0
        for k in range(sink_steps):
            start = time.perf_counter()
            model(ids[:, t - k:t - k + 1], past_key_values=floor, use_cache=True)
            elapsed += time.perf_counter() - start
            floor.crop(-1)                                                       # back to size - 1, not timed
        floor_ms.append(elapsed * 1000 / sink_steps)
        assert floor.get_seq_length() == size - 1
    sink, recompute, least = (statistics.median(x) for x in (sink_ms, recompute_ms, floor_ms))
    return dict(num_sink=num_sink, window=window, cache_size=size, rounds=rounds, sink_steps_per_round=sink_steps,
                sink_ms_per_token=sink, recompute_ms_per_token=recompute, floor_ms_per_token=least,
                ratio=recompute / sink, ratio_bound=recompute / least, sink_ms_rounds=sink_ms,
                recompute_ms_rounds=recompute_ms, floor_ms_rounds=floor_ms)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024], help="cache sizes num_sink + window")
    parser.add_argument("--num-sink", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (one recompute forward each)")
    parser.add_argument("--sink-steps", type=int, default=20, help="sink steps per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    for flag, value, least in (("--num-sink", args.num_sink, 0), ("--rounds", args.rounds, 1),
                               ("--sink-steps", args.sink_steps, 1), ("--threads", args.threads, 1)):
        if value < least:
            parser.error(f"{flag} must be >= {least}, got {value}")
    if min(args.sizes) <= args.num_sink:
        parser.error(f"every cache size must exceed --num-sink ({args.num_sink}): got {min(args.sizes)}")
    torch.set_num_threads(args.threads)
    from attnlab.cache.evaluate import stream_ids
    from measure import load_model

    model, tok = load_model(args.model, max(args.sizes) * 2)
    need = max(args.sizes) + 8 + args.rounds * (args.sink_steps + 1) + 1
    ids = stream_ids(tok, need)
    results = []
    with torch.no_grad():
        for size in args.sizes:
            r = steady_state(model, ids, args.num_sink, size - args.num_sink, args.rounds, args.sink_steps)
            results.append(r)
            print(f"cache {args.num_sink} + {size - args.num_sink}: sink {r['sink_ms_per_token']:.1f} ms/token, "
                  f"recompute {r['recompute_ms_per_token']:.1f} ms/token: {r['ratio']:.1f}x; floor (DynamicCache) "
                  f"{r['floor_ms_per_token']:.1f} ms/token: at most {r['ratio_bound']:.1f}x", flush=True)
    report = dict(model=args.model, threads=args.threads, command="python benchmarks/sink_step.py " +
                  " ".join(sys.argv[1:] if argv is None else argv), results=results)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return results


if __name__ == "__main__":
    main()
