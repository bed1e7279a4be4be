"""Read barriers: "everything committed before this call is applied here".

How a barrier is made is the node's (``start``): on a leader, a round of heartbeats
that a majority confirms (coord.raft.read_index); elsewhere, or until that is
possible, a no-op command: once it has committed and been applied on this node, so
has every command committed before the barrier was asked for.

Concurrent callers share barriers: at most one is in flight, and callers
arriving meanwhile share the next one (proposed after they arrived). Each caller
gets its own future, so cancelling it affects no one else.

Threads: :meth:`ReadBarrier.wait` from any thread; completions and
:meth:`ReadBarrier.check_timeout` on the tick thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from coord import errors

# Begins one barrier; calls its argument once it holds (None) or failed (the error).
Start = Callable[[Callable[[errors.CoordError | None], None]], None]


class ReadBarrier:
    def __init__(self, start: Start, timeout_s: float) -> None:
        """``start`` begins a barrier (from any thread); one not done within
        ``timeout_s`` fails (:meth:`check_timeout`)."""
        self._start_one = start
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._inflight: tuple[Future[None], float] | None = None  # (shared, started)
        self._next: Future[None] | None = None

    def wait(self) -> Future[None]:
        """Resolves once everything committed before this call is applied here."""
        with self._lock:
            if self._inflight is None:
                shared: Future[None] = Future()
                self._inflight = (shared, time.monotonic())
                start = True
            else:
                if self._next is None:
                    self._next = Future()
                shared, start = self._next, False
        mine: Future[None] = Future()

        def relay(src: Future[None]) -> None:
            if mine.set_running_or_notify_cancel():
                exc = src.exception()
                if exc is None:
                    mine.set_result(None)
                else:
                    mine.set_exception(exc)

        shared.add_done_callback(relay)
        if start:
            self._start(shared)
        return mine

    def check_timeout(self) -> None:
        """Fail the barrier in flight if it has taken too long (tick thread)."""
        inflight = self._inflight
        if inflight is not None and time.monotonic() - inflight[1] > self._timeout_s:
            self._finish(
                inflight[0], errors.Unavailable("read barrier timed out: no quorum? retry")
            )

    def _start(self, fut: Future[None]) -> None:
        self._start_one(lambda exc: self._finish(fut, exc))

    def _finish(self, fut: Future[None], exc: errors.CoordError | None) -> None:
        with self._lock:
            if self._inflight is None or self._inflight[0] is not fut:
                return
            nxt = self._next
            self._next = None
            self._inflight = (nxt, time.monotonic()) if nxt is not None else None
        if not fut.done():
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)
        if nxt is not None:
            self._start(nxt)
