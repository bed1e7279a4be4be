"""The clock a client's lease validity runs on.

Monotonic (no wall-clock step moves it) and, where the platform has one, counting
the time the machine was suspended (Linux ``CLOCK_BOOTTIME``): ``CLOCK_MONOTONIC``
stops during a suspend, so a laptop or VM resumed after a minute would believe a
lease the cluster expired meanwhile was still valid. docs/timing.md says which clock
decides what.
"""

from __future__ import annotations

import time

_BOOTTIME: int | None = getattr(time, "CLOCK_BOOTTIME", None)


def now() -> float:
    """Seconds on the validity clock (comparable only with itself)."""
    if _BOOTTIME is not None:
        return time.clock_gettime(_BOOTTIME)
    return time.monotonic()
