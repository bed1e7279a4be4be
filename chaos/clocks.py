"""Wall clocks the harness can move: one offset file per node, read by the clock shim.

``chaos/clockshim/clockshim.c`` (built by scripts/bootstrap into ``.venv/clockshim.so``)
is an LD_PRELOAD library that adds an offset to CLOCK_REALTIME (and
CLOCK_REALTIME_COARSE, ``gettimeofday``, ``time``) and leaves every monotonic clock
and every sleep alone. The offset is a signed 64-bit nanosecond count in the first
8 bytes of the file ``$COORD_CLOCKSHIM_FILE`` names; the shim maps the file shared
and reads it on every call, so :meth:`WallClock.set` moves a running process's wall
clock at once, without restarting it.

Writes are one aligned 8-byte store through a shared mapping (single-copy atomic on
x86-64 and aarch64): a process never reads half of an old offset and half of a new one.
"""

from __future__ import annotations

import mmap
import os

from chaos import shims

SHIM_ENV = "COORD_CLOCKSHIM_FILE"
_NS = 1_000_000_000


ClockShimMissing = shims.ShimMissing


def shim_library() -> str:
    """The built clock shim (``$COORD_CLOCKSHIM`` overrides where it is looked for)."""
    return shims.library("clockshim")


class WallClock:
    """One process's wall-clock offset: a file the shim maps, written through a map."""

    def __init__(self, path: str) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, bytes(8))  # offset 0: the real clock
            self._map = mmap.mmap(fd, 8, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        # A typed view: an item assignment is one 8-byte store (mmap is page-aligned).
        self._view = memoryview(self._map).cast("q")

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """What a process needs in its environment to run on this clock (the shim
        first in LD_PRELOAD, before anything ``base`` already preloads)."""
        return {
            "LD_PRELOAD": shims.preload(shim_library(), base),
            SHIM_ENV: self.path,
        }

    def set(self, offset_s: float) -> None:
        """Move the wall clock to real time + ``offset_s`` (a step, at once)."""
        self._view[0] = round(offset_s * _NS)

    @property
    def offset_s(self) -> float:
        return int(self._view[0]) / _NS

    def close(self) -> None:
        self._view.release()
        self._map.close()
