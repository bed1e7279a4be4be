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
        self._pending = False  # a wake-up is scheduled
        # A future per coroutine in wait_beyond, resolved by the wake-up: the waiter
        # resumes on the loop's next pass (asyncio.wait_for on an Event took ~3 passes
        # and a task per wait, with other callbacks run in between).
        self._waiting: dict[asyncio.Future[None], None] = {}  # (an ordered set)
        # One lock orders applied()'s "bump, then look for waiters" against
        # wait_beyond's "look at the generation, then wait": either the apply sees
        # the waiter and wakes it, or the waiter sees the new generation and returns.
        self._lock = threading.Lock()
        self.generation = 0  # bumped at every applied(): read it before the state

    @property
    def waiters(self) -> int:
        """How many coroutines wait in wait_beyond."""
        return len(self._waiting)

    def applied(self) -> None:
        """Any thread: something was applied."""
        with self._lock:
            self.generation += 1
            if not self._waiting or self._pending:
                return
            self._pending = True
        with contextlib.suppress(RuntimeError):  # the loop closed (the node stopping)
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._pending = False
            waiting, self._waiting = self._waiting, {}
        for waiter in waiting:
            _resolve(waiter)

    async def wait_beyond(self, generation: int, timeout: float | None = None) -> int:
        """Wait until something was applied after ``generation`` (at once if it was
        already), or ``timeout``; returns the generation then."""
        with self._lock:
            stale = self.generation != generation
            if not stale:
                waiter = self._loop.create_future()
                self._waiting[waiter] = None
        if stale:
            # Something was applied since: return, but through the loop once. The
            # generation moves on the tick thread, so a stream whose filter matches
            # nothing could otherwise go round without ever letting other tasks run.
            await asyncio.sleep(0)
            return self.generation
        timer = None
        try:
            if timeout is not None:
                timer = self._loop.call_later(timeout, _resolve, waiter)
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            with self._lock:  # still listed when it timed out or was cancelled
                self._waiting.pop(waiter, None)
        return self.generation


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # (cancelled, or its timeout and the wake-up both came)
        waiter.set_result(None)
