"""A pool of Ray actors, one model per worker, each running a job's work on whole shards (the ``distributed`` extra).

``ray.init`` starts a local Ray instance (``num_cpus`` = workers, no dashboard) or joins a cluster at an
address, which is first checked to answer within a few seconds so that a wrong address fails at once instead of
hanging. Actors are restarted by Ray when their process dies, and the shard they were running is retried.
"""
from __future__ import annotations

import socket

from attnlab.errors import AttnlabError

INSTALL_HINT = "--ray needs Ray: pip install 'attnlab[distributed]'"
CONNECT_TIMEOUT_S = 5.0
RETRIES = 2


def import_ray():
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise AttnlabError(INSTALL_HINT) from None
    return ray


def check_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse a Ray address (``host:port``, ``ray://host:port``) that does not answer within ``timeout`` seconds."""
    host_port = address.split("://", 1)[-1].rstrip("/")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise AttnlabError(f"--ray-address '{address}' is not host:port (e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise AttnlabError(f"the Ray cluster at {address} did not answer within {timeout:g} s ({exc.strerror or exc}):"
                           " check the address, or use --ray for a local Ray instance") from None


def peak_rss_mib() -> float | None:
    """This process's peak resident memory (``VmHWM`` on Linux), in MiB; None elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def start_ray(workers: int, address: str | None = None, device: str = "cpu"):
    """Start a local Ray instance with ``workers`` CPUs, or connect to the cluster at ``address``; the ray module.
    With a ``cuda`` device each worker needs a GPU of its own."""
    ray = import_ray()
    if address is not None:
        check_address(address)
    if not ray.is_initialized():
        if address is None:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    for kind in ("CPU",) + (("GPU",) if str(device).startswith("cuda") else ()):
        have = int(ray.cluster_resources().get(kind, 0))
        if have < workers:              # actors that cannot be placed would wait for ever
            raise AttnlabError(f"{workers} workers need {workers} {kind}s but the Ray instance has {have}: ask for "
                               "fewer workers" + ("" if address else f" (or start Ray again with more {kind}s)"))
    return ray


class ShardWorker:
    """One model in one Ray actor process: runs ``work(model, tokenizer, shard, items)`` on shards, returns partials.

    ``work`` is a module-level function (or a ``functools.partial`` of one) so that Ray can send it to the worker:
    :func:`attnlab.distributed.partials.shard_partial` for a profile, :func:`attnlab.distributed.eval_job.
    eval_shard_partial` for an evaluation.
    """

    def __init__(self, model: str, dtype, work, device: str = "cpu") -> None:
        import torch

        from attnlab.models.loading import load

        torch.set_num_threads(1)
        self.model, self.tokenizer = load(model, dtype=dtype, device=device)
        self.work = work

    def run(self, shard: int, items: list) -> dict:
        """The partial of shard ``shard``."""
        return self.work(self.model, self.tokenizer, shard, items)

    def pid(self) -> int:
        """The worker's process id."""
        import os

        return os.getpid()

    def peak_rss_mib(self) -> float | None:
        """The worker process's peak resident memory so far, in MiB (None where the OS does not say)."""
        return peak_rss_mib()


class RayPool:
    """``workers`` :class:`ShardWorker` actors running ``work``; :meth:`run` hands out shards and yields partials as they finish."""

    def __init__(self, ray, workers: int, model: str, dtype, work, device: str = "cpu") -> None:
        self.ray = ray
        gpus = 1 if str(device).startswith("cuda") else 0    # Ray gives each actor its own GPU as "cuda"
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=RETRIES, max_task_retries=RETRIES)(ShardWorker)
        self.actors = [remote.remote(model, dtype, work, device) for _ in range(workers)]

    def run(self, shards: list[tuple[int, list]]):
        """Yield each shard's partial as it finishes (each actor takes the next shard when it is free)."""
        pending = list(reversed(shards))
        running = {}
        for actor in self.actors:
            if pending:
                shard, items = pending.pop()
                running[actor.run.remote(shard, items)] = actor
        while running:
            done, _ = self.ray.wait(list(running), num_returns=1)
            actor = running.pop(done[0])
            try:
                partial = self.ray.get(done[0])
            except self.ray.exceptions.RayError as exc:
                raise AttnlabError(f"a Ray worker failed {RETRIES + 1} times on a shard: {str(exc).splitlines()[0]}") \
                    from exc
            if pending:
                shard, items = pending.pop()
                running[actor.run.remote(shard, items)] = actor
            yield partial

    def close(self) -> list[float | None]:
        """End the actors; each one's peak resident memory in MiB (None for one that does not answer at once)."""
        peaks = []
        for actor in self.actors:
            try:
                peaks.append(self.ray.get(actor.peak_rss_mib.remote(), timeout=CONNECT_TIMEOUT_S))
            except Exception:           # a dead or stuck actor: its memory is unknown, it is ended all the same
                peaks.append(None)
            self.ray.kill(actor)
        return peaks
