"""``profile_dataset``: profile a JSONL data set shard by shard, resumably, in this process or on Ray workers.

A job folder holds ``job.json`` (what the job is: data set sha256, model, settings, shard size), one partial per
finished shard under ``partials/`` (written by atomic rename as each shard finishes) and, at the end,
``dataset_profile.json``. Rerunning with the same folder skips the shards already there; a folder that holds
another job's partials is refused rather than mixed.
"""
from __future__ import annotations

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


def _check_job(folder: Path, job: dict) -> None:
    """Refuse a folder whose ``job.json`` describes another job (its partials must not be mixed in)."""
    path = folder / "job.json"
    if path.exists():
        found = json.loads(path.read_text())
        if found != job:
            differ = sorted(k for k in job if found.get(k) != job[k])
            raise AttnlabError(f"{folder} holds the partial results of another job ({', '.join(differ)} differ): "
                               "use another output folder, or delete it to start again")
    elif (folder / "partials").exists():
        raise AttnlabError(f"{folder} holds partial results without a job.json: use another output folder")


def profile_dataset(model: str, dataset, out, *, workers: int | None = None, ray_address: str | None = None,
                    shard_size: int = 64, epsilon: float = EPSILON, batch_size: int = 8, truncate: bool = False,
                    dtype=None, on_shard=None, on_start=None) -> dict:
    """Profile every text of the JSONL ``dataset`` with ``model`` (an alias, folder or hub id) into ``out``.

    Without ``workers`` and ``ray_address`` the shards run in this process; with them, on a pool of Ray actors
    (``workers`` local ones, or as many as asked on the cluster at ``ray_address``). ``on_start(total_texts,
    done_texts)`` and ``on_shard(n_texts)`` report progress. Returns the report (also written to
    ``out/dataset_profile.json``): a summary over all texts, with the data set's skipped lines and the run's
    workers and shards.
    """
    from attnlab import __version__

    if not 0 < epsilon < 1:
        raise AttnlabError(f"epsilon must be in (0, 1), got {epsilon}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise AttnlabError(f"workers must be a whole number >= 1, got {workers!r}")
    data = read_dataset(dataset)
    ranges = shard_ranges(len(data.texts), shard_size)
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise AttnlabError(f"--out {folder} is a file: give a folder")
    settings = {"epsilon": epsilon, "batch_size": batch_size, "truncate": truncate}
    job = {"dataset_sha256": data.sha256, "model": str(model), "dtype": None if dtype is None else str(dtype),
           "shard_size": shard_size, "settings": settings}
    _check_job(folder, job)
    use_ray = workers is not None or ray_address is not None
    if use_ray:
        from attnlab.distributed.ray_pool import import_ray

        import_ray()
    write_json_atomic(folder / "job.json", job)
    partials = {i: p for i in range(len(ranges)) if (p := read_partial(folder, i)) is not None}
    todo = [(i, [data.texts[t] for t in r]) for i, r in enumerate(ranges) if i not in partials]
    if on_start:
        on_start(len(data.texts), sum(p["n_texts"] for p in partials.values()))
    started = time.perf_counter()
    for partial in _run(model, dtype, settings, todo, workers, ray_address):
        write_json_atomic(partial_path(folder, partial["shard"]), partial)
        partials[partial["shard"]] = partial
        if on_shard:
            on_shard(partial["n_texts"])
    seconds = time.perf_counter() - started
    models = {json.dumps(p["model"], sort_keys=True) for p in partials.values()}
    if len(models) > 1:
        raise AttnlabError(f"the shards in {folder} were profiled with different model weights: delete it and rerun")
    merged = merge(list(partials.values()))
    report = _report(__version__, json.loads(models.pop()), data, merged, settings, {
        "workers": workers or 1, "ray": use_ray, "ray_address": ray_address, "shards": len(ranges),
        "shard_size": shard_size, "shards_resumed": len(ranges) - len(todo), "shards_run": len(todo),
        "seconds": round(seconds, 3)})
    write_json_atomic(folder / REPORT, report)
    return report


def _run(model, dtype, settings, todo, workers, ray_address):
    """Yield the partial of every shard in ``todo``: in this process, or on a Ray pool."""
    if not todo:
        return
    if workers is None and ray_address is None:
        from attnlab.models.loading import load

        m, tok = load(model, dtype=dtype)
        for shard, texts in todo:
            yield shard_partial(m, tok, shard, texts, **settings)
        return
    from attnlab.distributed.ray_pool import RayPool, start_ray

    ray = start_ray(workers or 1, ray_address)
    pool = RayPool(ray, min(workers or 1, len(todo)), model, dtype, settings)
    try:
        yield from pool.run(todo)
    finally:
        pool.close()


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
