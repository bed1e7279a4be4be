"""Tell asyncio code that the state changed, one loop wake-up per burst of applies.

The Raft tick thread calls :meth:`StateNotifier.applied` after every apply; the
first call of a burst schedules one wake-up on the loop, which releases every
waiter of :meth:`wait_beyond`. Waiters then read the state themselves (under the
Raft node's lock), so nothing is lost between wake-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class StateNotifier:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self._pending = False
        self._lock = threading.Lock()
        self.generation = 0  # bumped on the loop at every wake-up

    def applied(self) -> None:
        """Any thread: something was applied."""
        with self._lock:
            if self._pending:
                return
            self._pending = True
        self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._pending = False
        event, self._event = self._event, asyncio.Event()
        self.generation += 1
        event.set()

    async def wait_beyond(self, generation: int, timeout: float | None = None) -> int:
        """Wait for a wake-up after ``generation`` (or ``timeout``); returns the generation."""
        if self.generation == generation:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        return self.generation
