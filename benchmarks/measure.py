"""Shared helpers for the benchmarks: peak resident memory of a block, sampled every millisecond."""
from __future__ import annotations

import threading
import time


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class PeakSampler:
    """``with PeakSampler() as s: ...``; ``s.peak`` is the maximum RSS above the level at entry, in bytes."""

    def __enter__(self):
        self.base, self.peak, self._stop = rss_bytes(), 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, rss_bytes() - self.base)
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop = True
        self.thread.join()
        self.peak = max(self.peak, rss_bytes() - self.base)
