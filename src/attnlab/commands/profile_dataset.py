"""``attnlab profile --dataset``: the profile of a JSONL data set, sharded and resumable, optionally on Ray workers."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from attnlab.errors import AttnlabError


def profile_dataset_command(model: str, dataset: Path, *, out: Optional[str], use_ray: bool,
                            ray_address: Optional[str], workers: Optional[int], shard_size: int, epsilon: float,
                            truncate: bool, batch_size: int, dtype: Optional[str], device: str,
                            other_inputs: list[str]) -> None:
    """Run :func:`attnlab.distributed.job.profile_dataset` with one progress bar and print where the report went."""
    from attnlab.cli import console, progress_bar
    from attnlab.distributed.job import REPORT, profile_dataset

    if other_inputs:
        raise AttnlabError(f"--dataset profiles a data set as a whole: leave out {', '.join(other_inputs)}")
    if workers is not None and not (use_ray or ray_address):
        raise AttnlabError("--workers is the number of Ray workers: add --ray (or --ray-address)")
    if use_ray or ray_address:
        from attnlab.distributed.ray_pool import import_ray

        import_ray()
        workers = workers or 2
    folder = Path(out) if out is not None else Path("attnlab-out") / f"profile-dataset-{time.strftime('%Y%m%d-%H%M%S')}"
    with progress_bar() as bar:
        task = bar.add_task("profiling", total=None)
        report = profile_dataset(model, dataset, folder, workers=workers, ray_address=ray_address,
                                 shard_size=shard_size, epsilon=epsilon, batch_size=batch_size, truncate=truncate,
                                 dtype=dtype, device=device,
                                 on_start=lambda total, done: bar.update(task, total=total, completed=done),
                                 on_shard=lambda n: bar.advance(task, n))
    data, run, summary = report["dataset"], report["run"], report["summary"]
    for skipped in data["skipped"]:
        console.print(f"[yellow]skipped[/yellow] line {skipped['line']} of {data['path']}: {skipped['reason']}")
    memory = ", ".join(f"{m:.0f}" for m in run["peak_rss_mib"] if m is not None) or "?"
    console.print(f"{data['texts']} texts ({data['skipped_lines']} lines skipped), {run['shards']} shards "
                  f"({run['shards_resumed']} resumed) on {run['workers']} worker(s), peak memory {memory} MiB: "
                  f"sink ratio {summary['sink_ratio']}%, {summary['heads_with_sink']} heads with a sink")
    console.print(f"wrote {folder / REPORT}")
