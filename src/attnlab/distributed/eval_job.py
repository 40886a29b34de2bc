"""``eval_dataset``: ``attnlab eval`` over many prompts, shard by shard, resumably, in this process or on Ray workers.

The test prompts are cut into shards of ``shard_size`` examples. Each worker scores its shard unsteered and steered
(:func:`eval_shard_partial`) and returns every example's scores; the partials are joined in shard order and summed
up by the same :func:`attnlab.evals.harness.summarize` as a single-process ``eval``. A shard size that is a
multiple of the batch size keeps every batch -- and so every padded forward pass -- the one a single-process run
makes, so the report equals that run's number for number; any number of workers gives the same report.

A setting chosen from data (``--select``) is chosen once, on the train split, in this process, before the shards
run, and kept in the job folder (``selection.json``) so that a resumed job does not choose again.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from pathlib import Path

import torch

from attnlab.distributed.job import check_job, one_model, run_job, write_json_atomic
from attnlab.distributed.shards import shard_ranges
from attnlab.errors import AttnlabError
from attnlab.evals.harness import MethodSpec, choose, score_task, summarize, use_chat
from attnlab.evals.tasks import Task

REPORT = "eval.json"
SELECTION = "selection.json"


def as_json(value):
    """``value`` as it reads back from JSON (tuples become lists; what JSON cannot hold becomes its text)."""
    return json.loads(json.dumps(value, default=str))


def examples_sha256(task: Task) -> str:
    """The sha256 of a task's examples (prompts, answers, spans, buckets, scorer parameters), in order."""
    rows = [dataclasses.asdict(e) for e in task.examples]
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


def _spec_record(spec: MethodSpec | None) -> dict | None:
    return None if spec is None else {"name": spec.name, "params": as_json(spec.params),
                                      "select": spec.select, "span": spec.span}


def check_shard_size(shard_size: int, batch_size: int) -> None:
    """Refuse a shard size that is not a multiple of the batch size (a batch would then differ from a plain run's)."""
    if shard_size % batch_size:
        raise AttnlabError(f"--shard-size {shard_size} is not a multiple of --batch-size {batch_size}: make it one, "
                           "so that every batch is the one a single-process run makes")


def eval_shard_partial(model, tokenizer, shard: int, examples: list, *, task: dict, spec: MethodSpec | None,
                       form: bool, batch_size: int) -> dict:
    """Score one shard's ``examples`` unsteered and steered: ``{"shard", "n", "model", "unsteered", "steered"}``,
    each of the last two every metric's per-example scores (the primary metric first)."""
    from attnlab.profile import model_info

    part = Task(task["name"], examples, task["scorer"], task["params"], task["encoder"], task["chat"])
    unsteered = score_task(model, tokenizer, part, None, batch_size, None, form)
    steered = score_task(model, tokenizer, part, spec, batch_size, None, form) if spec else unsteered
    return {"shard": shard, "n": len(examples), "model": model_info(model).model_dump(),
            "unsteered": {k: v.tolist() for k, v in unsteered.items()},
            "steered": {k: v.tolist() for k, v in steered.items()}}


def _joined(partials: dict[int, dict], side: str) -> dict[str, torch.Tensor]:
    ordered = [partials[i] for i in sorted(partials)]
    return {k: torch.tensor([x for p in ordered for x in p[side][k]], dtype=torch.float) for k in ordered[0][side]}


def _chosen(folder: Path, model: str, dtype, test: Task, spec: MethodSpec | None, train: Task | None,
            budget: int | None, form: bool, on_choose, loaded, device,
            batch_size: int) -> tuple[MethodSpec | None, dict | None]:
    """``spec`` with its data-chosen setting: read from ``folder/selection.json``, or chosen now and kept there."""
    if spec is None or not spec.select:
        return choose(None, None, test, spec)
    path = folder / SELECTION
    if path.exists():
        selected = json.loads(path.read_text())
        return spec.with_params(**{spec.select: selected[spec.select]}), selected
    from attnlab.models.loading import load

    model_, tokenizer = loaded or load(model, dtype=dtype, device=device)
    chosen, selected = choose(model_, tokenizer, test, spec, train=train, budget=budget, on_step=on_choose, form=form,
                              batch_size=batch_size)
    write_json_atomic(path, as_json(selected))
    return chosen, selected


def eval_dataset(model: str, test: Task, spec: MethodSpec | None, out, *, tokenizer, train: Task | None = None,
                 budget: int | None = None, seed: int = 0, batch_size: int = 16, chat: bool | None = None,
                 shard_size: int = 64, workers: int | None = None, ray_address: str | None = None, dtype=None,
                 device: str = "cpu", on_start=None, on_shard=None, on_choose=None,
                 loaded: tuple | None = None) -> dict:
    """Evaluate ``spec`` on the ``test`` task with ``model`` (an alias, folder or hub id), in shards, into ``out``.

    The report is :func:`attnlab.evals.harness.run`'s, plus ``run`` (workers, shards, resumed) and the job's
    shard size; it is also written to ``out/eval.json``. ``tokenizer`` (the model's) decides the chat form.
    ``on_start(total, done)`` and ``on_shard(n)`` count test examples; ``on_choose(n)`` counts selection steps.
    ``loaded`` (a ``(model, tokenizer)`` already loaded) serves the selection and in-process shards.
    """
    check_shard_size(shard_size, batch_size)
    started = time.time()
    form = use_chat(tokenizer, test, chat)
    folder = Path(out)
    task = {"name": test.name, "scorer": test.scorer, "params": test.params, "encoder": test.encoder,
            "chat": test.chat}
    job = {"kind": "eval", "model": str(model), "dtype": None if dtype is None else str(dtype), "device": str(device),
           "task": as_json(task), "examples_sha256": examples_sha256(test),
           "train_sha256": None if train is None else examples_sha256(train), "method": _spec_record(spec),
           "budget": budget, "chat": form, "batch_size": batch_size, "shard_size": shard_size}
    shards = [test.examples[r.start:r.stop] for r in shard_ranges(len(test.examples), shard_size)]
    if (folder / REPORT).exists() and not (folder / "job.json").exists():
        raise AttnlabError(f"{folder / REPORT} is the report of another evaluation: choose another --out")
    check_job(folder, job)              # before choosing, so that a selection.json is always this job's
    write_json_atomic(folder / "job.json", job)
    spec, selected = _chosen(folder, model, dtype, test, spec, train, budget, form, on_choose, loaded, device,
                             batch_size)
    work = functools.partial(eval_shard_partial, task=task, spec=spec, form=form, batch_size=batch_size)
    partials, run = run_job(folder, job, shards, model, dtype, work, workers=workers, ray_address=ray_address,
                            on_start=on_start, on_shard=on_shard, loaded=loaded, device=device)
    report = summarize(one_model(folder, partials), test, spec, selected, train, _joined(partials, "unsteered"),
                       _joined(partials, "steered"), seed=seed, form=form, seconds=time.time() - started)
    report = as_json({**report, "run": {**run, "shard_size": shard_size}})   # as written
    write_json_atomic(folder / REPORT, report)
    return report
