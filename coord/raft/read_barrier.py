"""Read barriers: "everything committed before this call is applied here".

A barrier is a no-op command: once it has committed and been applied on this
node, so has every command committed before the barrier was asked for.

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
from coord.v1 import raft_pb2

Propose = Callable[[raft_pb2.Command], Future[raft_pb2.CommandResult]]


class ReadBarrier:
    def __init__(self, propose: Propose, timeout_s: float) -> None:
        """``propose`` replicates a command; a barrier not applied within
        ``timeout_s`` fails (:meth:`check_timeout`)."""
        self._propose = propose
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._inflight: tuple[Future[None], float] | None = None  # (shared, started)
        self._next: Future[None] | None = None

    def wait(self) -> Future[None]:
        """Resolves once a no-op proposed after this call has committed and applied here."""
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
        def done(res: Future[raft_pb2.CommandResult]) -> None:
            exc = res.exception()
            self._finish(fut, exc if isinstance(exc, errors.CoordError) else None)

        self._propose(raft_pb2.Command(noop=raft_pb2.Noop())).add_done_callback(done)

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
