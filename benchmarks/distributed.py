"""Throughput of ``attnlab profile --dataset`` in one process and on 1 and 2 Ray workers, in the same run.

The data set is the bundled text cut into ``--texts`` pieces of ``--tokens`` tokens. Each configuration profiles
all of it into its own job folder (so nothing is resumed); the report is checked equal across configurations.
Per-worker memory is each worker process's peak resident memory (``VmHWM``: the model, the probes and the
Python/Ray runtime). Throughput is the steady rate, counted once every worker has finished its first shard (so
the start-up -- Ray, and a model load per worker -- is reported apart). Prints texts/s, the speed-up of 2 workers
over 1, and a projection of 1M texts.

    python benchmarks/distributed.py --model smollm2 --texts 96 --tokens 256 --json docs/benchmarks/distributed.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def write_dataset(model: str, n_texts: int, n_tokens: int, path: Path) -> int:
    """``n_texts`` pieces of ``n_tokens`` tokens of the bundled text (cycled) as JSONL; the tokens written."""
    from attnlab.cache.evaluate import default_text
    from attnlab.models.loading import load

    _, tok = load(model)
    ids = tok(default_text(), add_special_tokens=False)["input_ids"]
    rows = []
    for i in range(n_texts):
        start = (i * n_tokens) % max(1, len(ids) - n_tokens)
        rows.append(json.dumps({"text": tok.decode(ids[start:start + n_tokens])}))
    path.write_text("\n".join(rows) + "\n")
    return n_texts * n_tokens


def run_workers(report: dict) -> int:
    """How many workers ran at once (1 for the single process)."""
    return report["run"]["workers"] if report["run"]["ray"] else 1


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--texts", type=int, default=96)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (each Ray worker takes a GPU of its own)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import torch

    from attnlab.distributed.job import profile_dataset
    from attnlab.distributed.ray_pool import start_ray

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="attnlab-dist-"))
    data = tmp / "texts.jsonl"
    write_dataset(args.model, args.texts, args.tokens, data)
    settings = dict(shard_size=args.shard_size, batch_size=args.batch_size)
    configs = [("1 process (no Ray)", None), ("Ray, 1 worker", 1), ("Ray, 2 workers", 2)]
    rows, first = [], None
    for name, workers in configs:
        if workers == 1:
            start_ray(2, device=args.device)
        started, finished = time.perf_counter(), []
        report = profile_dataset(args.model, data, tmp / name.replace(" ", "_"), workers=workers,
                                 device=args.device, on_shard=lambda n: finished.append(time.perf_counter()),
                                 **settings)
        seconds = time.perf_counter() - started
        first = first or report
        assert report["summary"] == first["summary"], f"{name}: the report differs from the single-process one"
        run, k = report["run"], run_workers(report)
        steady = (args.texts - k * args.shard_size) / (finished[-1] - finished[k - 1])   # after every worker's first
        rows.append({"config": name, "workers": run["workers"], "seconds": round(seconds, 1),
                     "first_shard_s": round(finished[0] - started, 1), "texts_per_s": steady,
                     "tokens_per_s": steady * args.tokens, "peak_rss_mib": run["peak_rss_mib"]})
    import ray

    ray.shutdown()
    one, two = rows[1]["texts_per_s"], rows[2]["texts_per_s"]
    efficiency = two / one / 2
    hours = {n: round(1_000_000 / (one * n * efficiency) / 3600, 1) for n in (1, 8, 64, 512)}
    print(f"{args.model}: {args.texts} texts x {args.tokens} tokens, shards of {args.shard_size}, "
          f"batches of {args.batch_size}, 1 thread per worker")
    for row in rows:
        print(f"  {row['config']:<20} {row['seconds']:7.1f} s in all, first shard after {row['first_shard_s']:.1f} s;"
              f" then {row['texts_per_s']:.2f} texts/s; peak memory per worker {row['peak_rss_mib']} MiB")
    print(f"  2 workers / 1 worker: {two / one:.2f}x (efficiency {efficiency:.2f})")
    print("  1M texts at this cost per worker and this efficiency: " +
          ", ".join(f"{n} workers {h:,} h" for n, h in hours.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "texts": args.texts, "tokens": args.tokens,
                                               "shard_size": args.shard_size, "batch_size": args.batch_size,
                                               "rows": rows, "speedup_2_over_1": two / one,
                                               "projection_hours_1m_texts": hours,
                                               "command": "python benchmarks/distributed.py " + " ".join(
                                                   sys.argv[1:] if argv is None else argv)}, indent=1))


if __name__ == "__main__":
    main()
