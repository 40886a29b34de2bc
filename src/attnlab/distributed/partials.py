"""A shard's partial statistics: per-head sums over its texts and their count, written atomically, merged exactly.

The data-set report is a summary only (no per-text section): for every statistic, the mean over texts of each
text's per-head value -- the definition of ``attnlab profile``'s summary -- computed as the sum over all shards'
float64 sums divided by the number of texts. Shards are merged in shard order, so any number of workers gives the
same numbers, bit for bit.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from attnlab.collect import collect
from attnlab.sinks import sink_ratio

STATISTICS = ("first_token_mass", "first_token_received", "entropy", "sink_ratio_by_layer")


def shard_partial(model, tokenizer, shard: int, texts: list[str], *, epsilon: float, batch_size: int,
                  truncate: bool) -> dict:
    """Profile one shard's ``texts`` and return its partial: per-head float64 sums of each statistic, and counts."""
    from attnlab.profile import model_info

    got = collect(model, tokenizer, texts, probes=("first_token_mass", "received_attention", "entropy"),
                  batch_size=batch_size, truncate=truncate)
    sums: dict[str, torch.Tensor] = {}
    for i in range(len(texts)):
        received = got.stats["received_attention"][i]
        per_text = {"first_token_mass": got.stats["first_token_mass"][i], "first_token_received": received[:, :, 0],
                    "entropy": got.stats["entropy"][i], "sink_ratio_by_layer": sink_ratio(received, epsilon)}
        for name, value in per_text.items():
            value = value.double()
            sums[name] = sums[name] + value if name in sums else value
    return {"shard": shard, "n_texts": len(texts), "n_tokens": sum(len(t) for t in got.tokens),
            "model": model_info(model).model_dump(), "sums": {name: sums[name].tolist() for name in STATISTICS}}


def partial_path(folder: Path, shard: int) -> Path:
    """Where shard ``shard``'s partial lives in a job folder."""
    return Path(folder) / "partials" / f"shard-{shard:06d}.json"


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def read_partial(folder: Path, shard: int) -> dict | None:
    """Shard ``shard``'s finished partial, or None when it has none yet."""
    path = partial_path(folder, shard)
    return json.loads(path.read_text()) if path.exists() else None


def merge(partials: list[dict]) -> dict:
    """Sum the partials in shard order: ``{"n_texts", "n_tokens", "means": {statistic: per-head means}}``."""
    ordered = sorted(partials, key=lambda p: p["shard"])
    n_texts = sum(p["n_texts"] for p in ordered)
    totals = {name: sum((torch.tensor(p["sums"][name], dtype=torch.float64) for p in ordered[1:]),
                        torch.tensor(ordered[0]["sums"][name], dtype=torch.float64)) for name in STATISTICS}
    return {"n_texts": n_texts, "n_tokens": sum(p["n_tokens"] for p in ordered),
            "means": {name: total / n_texts for name, total in totals.items()}}
