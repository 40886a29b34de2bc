"""Jobs run shard by shard, resumably, in this process or on Ray workers; ``profile_dataset`` profiles a JSONL data set.

A job folder holds ``job.json`` (what the job is: data set sha256, model, settings, shard size), one partial per
finished shard under ``partials/`` (written by atomic rename as each shard finishes) and, at the end, the job's
report (``dataset_profile.json``; ``eval.json`` for :mod:`attnlab.distributed.eval_job`). Rerunning with the same folder skips the shards already there; a folder that holds
another job's partials is refused rather than mixed.
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path

from attnlab.distributed.partials import merge, partial_path, read_partial, shard_partial, write_json_atomic
from attnlab.distributed.shards import read_dataset, shard_ranges
from attnlab.errors import AttnlabError
from attnlab.sinks import EPSILON

REPORT = "dataset_profile.json"
SKIPPED_LISTED = 20


def _rounded(rows) -> list:
    return [[round(float(x), 5) for x in row] for row in rows]


def check_job(folder: Path, job: dict) -> None:
    """Refuse a file, or a folder whose ``job.json`` describes another job (its partials must not be mixed in)."""
    if folder.exists() and not folder.is_dir():
        raise AttnlabError(f"--out {folder} is a file: give a folder")
    path = folder / "job.json"
    if path.exists():
        found = json.loads(path.read_text())
        if found != job:
            differ = sorted(k for k in set(job) | set(found) if found.get(k) != job.get(k))
            raise AttnlabError(f"{folder} holds the partial results of another job ({', '.join(differ)} differ): "
                               "use another output folder, or delete it to start again")
    elif (folder / "partials").exists():
        raise AttnlabError(f"{folder} holds partial results without a job.json: use another output folder")


def run_job(folder: Path, job: dict, shards: list[list], model: str, dtype, work, *, workers: int | None = None,
            ray_address: str | None = None, on_start=None, on_shard=None, loaded: tuple | None = None,
            device: str = "cpu") -> tuple[dict[int, dict], dict]:
    """Run ``work`` on every shard of ``shards`` (lists of items) not yet finished in ``folder``; the partials.

    ``job`` describes the job (``folder/job.json``; a folder of another job is refused). Each finished shard's
    partial is written by atomic rename as it finishes, so an interrupted job resumes where it stopped. Without
    ``workers`` and ``ray_address`` the shards run in this process (on ``loaded``, a ``(model, tokenizer)`` already
    loaded, if given); with them, on a pool of Ray actors.
    ``on_start(total_items, done_items)`` and ``on_shard(n_items)`` report progress. Returns ``(partials by shard,
    run)``, where ``run`` records the workers, shards (resumed and run), seconds and each worker's peak resident
    memory in MiB (``peak_rss_mib``: the Ray workers', or this process's).
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise AttnlabError(f"workers must be a whole number >= 1, got {workers!r}")
    if ray_address is None:             # a cluster's workers may have devices this machine lacks
        from attnlab.models.loading import check_device

        check_device(device)
    check_job(folder, job)
    use_ray = workers is not None or ray_address is not None
    if use_ray:
        from attnlab.distributed.ray_pool import import_ray

        import_ray()
    write_json_atomic(folder / "job.json", job)
    partials = {i: p for i in range(len(shards)) if (p := read_partial(folder, i)) is not None}
    todo = [(i, items) for i, items in enumerate(shards) if i not in partials]
    if on_start:
        on_start(sum(len(items) for items in shards), sum(len(shards[i]) for i in partials))
    started = time.perf_counter()
    memory: list = []
    for partial in _run(model, dtype, work, todo, workers, ray_address, loaded, device, memory):
        write_json_atomic(partial_path(folder, partial["shard"]), partial)
        partials[partial["shard"]] = partial
        if on_shard:
            on_shard(len(shards[partial["shard"]]))
    run = {"workers": workers or 1, "ray": use_ray, "ray_address": ray_address, "shards": len(shards),
           "shards_resumed": len(shards) - len(todo), "shards_run": len(todo),
           "seconds": round(time.perf_counter() - started, 3), "peak_rss_mib": memory}
    return partials, run


def one_model(folder: Path, partials: dict[int, dict]) -> dict:
    """The model every partial was computed with; refuse partials of different weights."""
    models = {json.dumps(p["model"], sort_keys=True) for p in partials.values()}
    if len(models) > 1:
        raise AttnlabError(f"the shards in {folder} were computed with different model weights: delete it and rerun")
    return json.loads(models.pop())


def profile_dataset(model: str, dataset, out, *, workers: int | None = None, ray_address: str | None = None,
                    shard_size: int = 64, epsilon: float = EPSILON, batch_size: int = 8, truncate: bool = False,
                    dtype=None, device: str = "cpu", on_shard=None, on_start=None) -> dict:
    """Profile every text of the JSONL ``dataset`` with ``model`` (an alias, folder or hub id) into ``out``.

    Without ``workers`` and ``ray_address`` the shards run in this process; with them, on a pool of Ray actors
    (``workers`` local ones, or as many as asked on the cluster at ``ray_address``; with a ``cuda`` device, one GPU
    each). ``on_start(total_texts,
    done_texts)`` and ``on_shard(n_texts)`` report progress. Returns the report (also written to
    ``out/dataset_profile.json``): a summary over all texts, with the data set's skipped lines and the run's
    workers and shards.
    """
    from attnlab import __version__

    if not 0 < epsilon < 1:
        raise AttnlabError(f"epsilon must be in (0, 1), got {epsilon}")
    data = read_dataset(dataset)
    shards = [[data.texts[t] for t in r] for r in shard_ranges(len(data.texts), shard_size)]
    folder = Path(out)
    settings = {"epsilon": epsilon, "batch_size": batch_size, "truncate": truncate}
    job = {"dataset_sha256": data.sha256, "model": str(model), "dtype": None if dtype is None else str(dtype),
           "device": str(device), "shard_size": shard_size, "settings": settings}
    partials, run = run_job(folder, job, shards, model, dtype, functools.partial(shard_partial, **settings),
                            workers=workers, ray_address=ray_address, on_start=on_start, on_shard=on_shard,
                            device=device)
    report = _report(__version__, one_model(folder, partials), data, merge(list(partials.values())), settings,
                     {**run, "shard_size": shard_size})
    write_json_atomic(folder / REPORT, report)
    return report


def _run(model, dtype, work, todo, workers, ray_address, loaded, device, memory: list):
    """Yield the partial of every shard in ``todo``: in this process, or on a Ray pool; ``memory`` gets each
    worker's peak resident memory in MiB."""
    from attnlab.distributed.ray_pool import peak_rss_mib

    if not todo:
        return
    if workers is None and ray_address is None:
        from attnlab.models.loading import load

        m, tok = loaded or load(model, dtype=dtype, device=device)
        for shard, items in todo:
            yield work(m, tok, shard, items)
        memory.append(peak_rss_mib())
        return
    from attnlab.distributed.ray_pool import RayPool, start_ray

    ray = start_ray(workers or 1, ray_address, device)
    pool = RayPool(ray, min(workers or 1, len(todo)), model, dtype, work, device)
    try:
        yield from pool.run(todo)
    finally:
        memory.extend(pool.close())


def _report(version: str, model: dict, data, merged: dict, settings: dict, run: dict) -> dict:
    """The data-set report: provenance, the data set (with skipped lines), the run, and the summary over texts."""
    from attnlab.report.schema import Summary

    means = merged["means"]
    mass = means["first_token_mass"]
    ratios = means["sink_ratio_by_layer"]
    summary = Summary(first_token_mass=_rounded(mass), entropy=_rounded(means["entropy"]),
                      sink_ratio_by_layer=[round(float(x), 3) for x in ratios], sink_ratio=round(float(ratios.mean()), 3),
                      heads_with_sink=int((mass >= settings["epsilon"]).sum()),
                      heads_with_sink_beyond_layer0=int((mass[1:] >= settings["epsilon"]).sum()))
    return {"attnlab_version": version, "model": model,
            "settings": {**settings, "summary": "per (layer, head): mean over texts of each text's value, as in "
                         "attnlab profile's summary; merged from per-shard float64 sums and counts"},
            "dataset": {"path": str(data.path), "sha256": data.sha256, "lines": data.n_lines,
                        "texts": merged["n_texts"], "tokens": merged["n_tokens"], "skipped_lines": len(data.skipped),
                        "skipped": data.skipped[:SKIPPED_LISTED]},
            "run": run, "summary": {**summary.model_dump(), "first_token_received": _rounded(means["first_token_received"])}}
