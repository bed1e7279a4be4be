"""Tell asyncio code that the state changed, one loop wake-up per burst of applies,
and none while no stream waits.

The Raft tick thread calls :meth:`StateNotifier.applied` after each tick's applies;
it bumps :attr:`~StateNotifier.generation` and, if a coroutine waits in
:meth:`~StateNotifier.wait_beyond`, schedules one wake-up on the loop, which releases
every waiter. Waiters then read the state themselves (under the Raft node's lock), so
nothing is lost between wake-ups. A node that no stream watches (most followers) pays
no wake-up at all: each was a write to the loop's self-pipe, then the loop taking the
GIL from the tick thread (~7 us a put on a follower under 64 clients, bench/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class StateNotifier:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self._pending = False  # a wake-up is scheduled
        self._waiters = 0  # coroutines in wait_beyond
        # One lock orders applied()'s "bump, then look for waiters" against
        # wait_beyond's "look at the generation, then wait": either the apply sees
        # the waiter and wakes it, or the waiter sees the new generation and returns.
        self._lock = threading.Lock()
        self.generation = 0  # bumped at every applied(): read it before the state

    def applied(self) -> None:
        """Any thread: something was applied."""
        with self._lock:
            self.generation += 1
            if not self._waiters or self._pending:
                return
            self._pending = True
        with contextlib.suppress(RuntimeError):  # the loop closed (the node stopping)
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._pending = False
            event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_beyond(self, generation: int, timeout: float | None = None) -> int:
        """Wait until something was applied after ``generation`` (at once if it was
        already), or ``timeout``; returns the generation then."""
        with self._lock:
            stale = self.generation != generation
            if not stale:
                self._waiters += 1
                event = self._event
        if stale:
            # Something was applied since: return, but through the loop once. The
            # generation moves on the tick thread, so a stream whose filter matches
            # nothing could otherwise go round without ever letting other tasks run.
            await asyncio.sleep(0)
            return self.generation
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            with self._lock:
                self._waiters -= 1
        return self.generation
