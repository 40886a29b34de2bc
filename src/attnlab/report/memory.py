"""The process's resident memory, and its peak over a block (what the streaming report and the benchmarks show)."""
from __future__ import annotations

import threading


def rss_bytes() -> int:
    """This process's resident memory in bytes (``VmRSS`` of ``/proc/self/status``); 0 where there is none (not Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakRSS:
    """``with PeakRSS() as p: ...``; ``p.peak`` is the largest resident-memory growth seen, in bytes (Linux).

    A thread samples the memory every ``interval`` seconds while the block runs, and once more at its end.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval

    def __enter__(self):
        self.base, self.peak, self._stop = rss_bytes(), 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes() - self.base)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, rss_bytes() - self.base)
