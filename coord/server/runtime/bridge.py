"""Hand results from the Raft tick thread to the asyncio loop in batches.

``asyncio.wrap_future`` costs a ``call_soon_threadsafe`` (a self-pipe write and
a wake-up) per completion. Under load the tick thread completes dozens of
writes per tick; :class:`LoopBridge` queues them and wakes the loop once.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class LoopBridge:
    """Complete asyncio futures from any thread, one loop wake-up per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []

    def complete(self, fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
        """Thread-safe: resolve ``fut`` with ``result`` or ``exc`` on the loop."""
        with self._lock:
            self._pending.append((fut, result, exc))
            wake = len(self._pending) == 1
        if wake:
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        for fut, result, exc in batch:
            if fut.done():  # timed out or cancelled meanwhile
                continue
            if exc is None:
                fut.set_result(result)
            else:
                fut.set_exception(exc)
