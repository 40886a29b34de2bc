"""Units for the tables that attnlab and its benchmarks print."""
from __future__ import annotations


def fmt_bytes(n: int | float | None, approx: bool = False) -> str:
    """``1.5MiB`` / ``546KiB``; ``-`` for None; ``~`` in front when ``approx`` (an extrapolated figure)."""
    if n is None:
        return "-"
    return ("~" if approx else "") + (f"{n / 2 ** 20:.1f}MiB" if n >= 2 ** 20 else f"{n / 2 ** 10:.0f}KiB")
