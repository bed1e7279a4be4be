"""Disks the harness can slow: one control file per node, read by the disk shim.

``chaos/diskshim/diskshim.c`` (built by scripts/bootstrap into ``.venv/diskshim.so``)
is an LD_PRELOAD library that sleeps before every ``fsync`` and ``fdatasync`` (then
calls the real one: nothing becomes less durable, flushes only return later) and
touches nothing else. The delay is a signed 64-bit nanosecond count in the first 8
bytes of the file ``$COORD_DISKSHIM_FILE`` names; the shim maps the file shared and
reads it on every call, so :meth:`DiskDelay.set` slows or speeds a running process's
flushes at once, without restarting it. The next two 8-byte words are counters the
shim raises (calls intercepted, calls delayed): :attr:`DiskDelay.calls` and
:attr:`DiskDelay.delayed` show that a fault took effect.

Writes are one aligned 8-byte store through a shared mapping (single-copy atomic on
x86-64 and aarch64): a process never reads half of an old delay and half of a new one.
"""

from __future__ import annotations

import mmap
import os

from chaos import shims

SHIM_ENV = "COORD_DISKSHIM_FILE"
_NS = 1_000_000_000
_WORDS = 3  # delay (the harness writes it), calls, delayed (the shim counts them)


DiskShimMissing = shims.ShimMissing
preload = shims.preload


def shim_library() -> str:
    """The built disk shim (``$COORD_DISKSHIM`` overrides where it is looked for)."""
    return shims.library("diskshim")


class DiskDelay:
    """One process's flush delay: a file the shim maps, written through a map."""

    def __init__(self, path: str) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, bytes(8 * _WORDS))  # delay 0, counters 0
            size = 8 * _WORDS
            self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        # A typed view: an item assignment is one 8-byte store (mmap is page-aligned).
        self._view = memoryview(self._map).cast("q")

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """What a process needs in its environment to run on this disk: the shim in
        LD_PRELOAD, before anything ``base`` (the environment it would otherwise get)
        already preloads, e.g. the clock shim: both work side by side."""
        return {"LD_PRELOAD": preload(shim_library(), base), SHIM_ENV: self.path}

    def set(self, delay_s: float) -> None:
        """Delay every later fsync/fdatasync by ``delay_s`` (0: none), at once."""
        if delay_s < 0:
            raise ValueError(f"a flush delay cannot be negative ({delay_s} s)")
        self._view[0] = round(delay_s * _NS)

    @property
    def delay_s(self) -> float:
        return int(self._view[0]) / _NS

    @property
    def calls(self) -> int:
        """fsync/fdatasync calls the shim intercepted in the processes using this file."""
        return int(self._view[1])

    @property
    def delayed(self) -> int:
        """Of those, the calls it delayed (made while the delay was above 0)."""
        return int(self._view[2])

    def close(self) -> None:
        self._view.release()
        self._map.close()
