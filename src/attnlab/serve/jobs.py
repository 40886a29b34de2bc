"""One heavy job at a time on the model, a bounded queue behind it, and cancellation when a client leaves.

The model runs in one worker thread, so a server holds one forward's memory at a time however many clients
call it. :meth:`Jobs.submit` refuses a job at once (:class:`Busy`) when ``1 + max_waiting`` are already there,
so work and memory cannot pile up. A job is cancelled through :meth:`Job.cancel`: a job still waiting never
starts, and a running one stops at the next layer of the model (a forward pre-hook on every decoder layer raises
:class:`Cancelled` while the job's flag is set).
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from attnlab.errors import AttnlabError


class Busy(AttnlabError):
    """The server already holds as many jobs as it queues (answered with HTTP 503 and Retry-After)."""


class Cancelled(Exception):
    """The job was cancelled (its client went away): raised inside the model's forward to stop it."""


class Job:
    """One submitted piece of work: its future and its cancel flag."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.future: Future | None = None

    def cancel(self) -> None:
        """Stop the job: at once if it is still waiting, at the next layer if it is running."""
        self.cancelled.set()


def decoder_layers(model) -> list:
    """The modules to check the cancel flag before: each decoder (or encoder) layer, else the base model."""
    from torch.nn import ModuleList

    base = getattr(model, "base_model", model)
    for path in ("layers", "encoder.layer", "decoder.layers"):
        owner = base
        for part in path.split("."):
            owner = getattr(owner, part, None)
        if isinstance(owner, ModuleList):
            return list(owner)
    return [base]


class Jobs:
    """The queue of heavy jobs on one model: one runs, at most ``max_waiting`` wait, the rest are refused."""

    def __init__(self, model, max_waiting: int = 4) -> None:
        if max_waiting < 0:
            raise AttnlabError(f"max_waiting must be >= 0, got {max_waiting}")
        self.model, self.max_waiting = model, max_waiting
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attnlab-job")
        self._lock = threading.Lock()
        self.pending = 0
        self.counts = {"completed": 0, "failed": 0, "cancelled": 0, "refused": 0}

    def status(self) -> dict:
        """Jobs running and waiting now, and how many ended each way so far."""
        with self._lock:
            running = min(self.pending, 1)
            return {"running": running, "waiting": self.pending - running, "max_waiting": self.max_waiting,
                    **self.counts}

    def submit(self, fn) -> Job:
        """Queue ``fn()`` (no arguments) as a job, or raise :class:`Busy` when the queue is full."""
        with self._lock:
            if self.pending >= 1 + self.max_waiting:
                self.counts["refused"] += 1
                raise Busy(f"the server is busy ({self.pending} jobs running or waiting, at most "
                           f"{1 + self.max_waiting}): try again in a moment")
            self.pending += 1
        job = Job()
        job.future = self._executor.submit(self._run, job, fn)
        return job

    def _run(self, job: Job, fn):
        outcome = "failed"
        try:
            if job.cancelled.is_set():
                raise Cancelled
            result = self._guarded(job, fn)
            outcome = "completed"
            return result
        except Cancelled:
            outcome = "cancelled"
            raise
        finally:
            with self._lock:
                self.pending -= 1
                self.counts[outcome] += 1

    def _guarded(self, job: Job, fn):
        """Run ``fn`` with a pre-hook on every layer that stops it once ``job`` is cancelled."""
        def check(module, args):
            if job.cancelled.is_set():
                raise Cancelled

        hooks = [layer.register_forward_pre_hook(check) for layer in decoder_layers(self.model)]
        try:
            return fn()
        finally:
            for hook in hooks:
                hook.remove()

    def shutdown(self) -> None:
        """Stop taking jobs and let the worker thread end after the current one."""
        self._executor.shutdown(wait=False, cancel_futures=True)
