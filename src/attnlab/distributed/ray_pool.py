"""A pool of Ray actors, one model per worker, each profiling whole shards (the ``distributed`` extra).

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


def start_ray(workers: int, address: str | None = None):
    """Start a local Ray instance with ``workers`` CPUs, or connect to the cluster at ``address``; the ray module."""
    ray = import_ray()
    if address is not None:
        check_address(address)
    if not ray.is_initialized():
        if address is None:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus < workers:                  # actors that cannot be placed would wait for ever
        raise AttnlabError(f"{workers} workers need {workers} CPUs but the Ray instance has {cpus}: ask for fewer "
                           "workers" + ("" if address else " (or start Ray again with more CPUs)"))
    return ray


class ShardWorker:
    """One model in one Ray actor process: profiles shards and returns their partials."""

    def __init__(self, model: str, dtype, settings: dict) -> None:
        import torch

        from attnlab.models.loading import load

        torch.set_num_threads(1)
        self.model, self.tokenizer = load(model, dtype=dtype)
        self.settings = settings

    def run(self, shard: int, texts: list[str]) -> dict:
        """The partial of shard ``shard`` (see :func:`attnlab.distributed.partials.shard_partial`)."""
        from attnlab.distributed.partials import shard_partial

        return shard_partial(self.model, self.tokenizer, shard, texts, **self.settings)

    def pid(self) -> int:
        """The worker's process id."""
        import os

        return os.getpid()


class RayPool:
    """``workers`` :class:`ShardWorker` actors; :meth:`run` hands out shards and yields partials as they finish."""

    def __init__(self, ray, workers: int, model: str, dtype, settings: dict) -> None:
        self.ray = ray
        remote = ray.remote(num_cpus=1, max_restarts=RETRIES, max_task_retries=RETRIES)(ShardWorker)
        self.actors = [remote.remote(model, dtype, settings) for _ in range(workers)]

    def run(self, shards: list[tuple[int, list[str]]]):
        """Yield each shard's partial as it finishes (each actor takes the next shard when it is free)."""
        pending = list(reversed(shards))
        running = {}
        for actor in self.actors:
            if pending:
                shard, texts = pending.pop()
                running[actor.run.remote(shard, texts)] = actor
        while running:
            done, _ = self.ray.wait(list(running), num_returns=1)
            actor = running.pop(done[0])
            try:
                partial = self.ray.get(done[0])
            except self.ray.exceptions.RayError as exc:
                raise AttnlabError(f"a Ray worker failed {RETRIES + 1} times on a shard: {str(exc).splitlines()[0]}") \
                    from exc
            if pending:
                shard, texts = pending.pop()
                running[actor.run.remote(shard, texts)] = actor
            yield partial

    def close(self) -> None:
        """End the actors."""
        for actor in self.actors:
            self.ray.kill(actor)
