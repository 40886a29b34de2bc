"""``attnlab eval --shard-size / --ray``: an evaluation run in resumable shards, optionally on Ray workers."""
from __future__ import annotations

from typing import Optional

from attnlab.errors import AttnlabError


def check_sharding(use_ray: bool, ray_address: Optional[str], workers: Optional[int], shard_size: Optional[int],
                   sweep: Optional[str], batch_size: int) -> tuple[bool, Optional[int], int]:
    """``(sharded, workers, shard_size)`` for ``eval``'s options; a combination that cannot run is one line."""
    sharded = use_ray or ray_address is not None or workers is not None or shard_size is not None
    if not sharded:
        return False, None, 0
    if workers is not None and not (use_ray or ray_address):
        raise AttnlabError("--workers is the number of Ray workers: add --ray (or --ray-address)")
    if sweep:
        raise AttnlabError("--sweep runs one evaluation per value: with --shard-size / --ray run each value as its "
                           "own job (--set NAME=VALUE, one --out each)")
    if use_ray or ray_address:
        from attnlab.distributed.ray_pool import import_ray

        import_ray()
        workers = workers or 2
    from attnlab.distributed.eval_job import check_shard_size

    shards = shard_size if shard_size is not None else 4 * batch_size
    check_shard_size(shards, batch_size)   # before the model loads
    return True, workers, shards


def eval_dataset_command(model: str, m, tok, test, spec, target, *, train, budget, seed, batch_size, chat,
                         shard_size, workers, ray_address, device, label: str) -> dict:
    """Run :func:`attnlab.distributed.eval_job.eval_dataset` with one progress bar; the report."""
    from attnlab.cli import console, progress_bar
    from attnlab.distributed.eval_job import eval_dataset

    with progress_bar() as bar:
        choosing = bar.add_task("choosing on the train split", total=None, visible=False)
        job = bar.add_task(label, total=None)
        report = eval_dataset(model, test, spec, target, tokenizer=tok, train=train, budget=budget, seed=seed,
                              batch_size=batch_size, chat=chat, shard_size=shard_size, workers=workers,
                              ray_address=ray_address, loaded=(m, tok), device=device,
                              on_choose=lambda k: bar.update(choosing, visible=True, advance=k),
                              on_start=lambda total, done: bar.update(job, total=total, completed=done),
                              on_shard=lambda n: bar.advance(job, n))
    skipped = report["task"].get("skipped", [])
    for line in skipped:
        console.print(f"[yellow]skipped[/yellow] line {line['line']}: {line['reason']}")
    run = report["run"]
    memory = ", ".join(f"{m:.0f}" for m in run["peak_rss_mib"] if m is not None) or "?"
    console.print(f"{report['n']} examples in {run['shards']} shards ({run['shards_resumed']} resumed) on "
                  f"{run['workers']} worker(s), peak memory {memory} MiB" +
                  (f"; {report['task']['skipped_lines']} malformed records skipped"
                   if "skipped_lines" in report["task"] else ""))
    return report
