"""One KV.Pipeline stream per endpoint, shared by the threads of a Client.

A KV request issued while another of the same Client is in flight goes here instead
of being a unary call of its own: requests queued together go out in one message,
results come back in batches and find their caller by tag. The server spends far less
per request on an open stream than per call (bench/README.md, "Many requests on one
stream"). Retries stay with the Client: a failure here is raised as the gRPC error a
unary call would have raised (:class:`Failure`), so the Client translates it, suspects
the endpoint and retries it with the same request id as it would a unary call's.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import grpc

from coord.client.errors import FailedCall
from coord.v1 import kv_pb2, kv_pb2_grpc

# A message carries requests up to about this size (a single one may be larger, up to
# the 4 MiB message limit, as a unary call's), and at most MAX_BATCH of them.
MAX_BATCH_BYTES = 1024 * 1024
MAX_BATCH = 256
# A pipe with nothing to send or wait for this long ends its stream (and its threads); the
# next concurrent request opens a new one.
IDLE_S = 2.0
# Stream statuses that refuse the stream itself, before any request on it was served:
# each waiting request fails with it. Any other end of a stream leaves the outcome of
# the requests it carried unknown: they fail UNAVAILABLE and are retried.
_REFUSALS = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


class Unsupported(Exception):
    """The endpoint has no KV.Pipeline (a server older than the method): use unary calls."""


class Closed(Exception):
    """The pipe ended (idle, or its stream broke) before the request was queued: nothing
    was sent; send it another way."""


class Failure(FailedCall):
    """A request's failure, shaped as a failed unary call (status, details, coord's
    trailing metadata) so that ``coord.client.errors.translate`` reads it the same way."""

    @classmethod
    def from_result(cls, error: kv_pb2.PipelineError) -> Failure:
        code = getattr(grpc.StatusCode, error.code, grpc.StatusCode.UNKNOWN)
        md: list[tuple[str, str | bytes]] = [("coord-error", error.reason)] if error.reason else []
        if error.leader_id:
            md.append(("coord-leader-id", error.leader_id))
        if error.leader_address:
            md.append(("coord-leader", error.leader_address))
        return cls(code, error.message, tuple(md))

    @classmethod
    def from_stream(cls, err: BaseException) -> Failure:
        """The stream ended with requests unanswered: a refusal of the stream is theirs;
        anything else leaves their outcome unknown (UNAVAILABLE: retried, writes with
        their request ids)."""
        if isinstance(err, grpc.Call):
            code, details = err.code(), err.details() or str(err)
            if code in _REFUSALS:
                return cls(code, details, tuple(err.trailing_metadata() or ()))
            cause = f"{code.name}: {details}"
        else:
            cause = str(err)
        return cls(
            grpc.StatusCode.UNAVAILABLE,
            f"the pipeline stream ended before the answer ({cause}): retry",
        )


class Pipe:
    """A KV.Pipeline stream on ``channel``; ``dead`` once it has ended (make a new one)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._queue: queue.SimpleQueue[tuple[kv_pb2.PipelineOp, float] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._waiting: dict[int, Future[kv_pb2.PipelineResult]] = {}
        self._tags = itertools.count(1)
        self.dead = False
        self.unsupported = False
        self._responses = kv_pb2_grpc.KVStub(channel).Pipeline(self._requests())
        self._reader = threading.Thread(target=self._read, name="coord-pipeline", daemon=True)
        self._reader.start()

    def call(self, kind: str, request: Any, timeout_s: float) -> Any:
        """Send ``request`` (the field ``kind`` of PipelineOp: put, range, delete, txn) and
        wait up to ``timeout_s`` for its response; raises :class:`Failure`,
        :class:`Unsupported` or :class:`Closed`."""
        fut: Future[kv_pb2.PipelineResult] = Future()
        op = kv_pb2.PipelineOp()
        getattr(op, kind).CopyFrom(request)
        with self._lock:
            if self.unsupported:
                raise Unsupported()
            if self.dead:
                raise Closed()
            op.tag = tag = next(self._tags)
            self._waiting[tag] = fut
            self._queue.put((op, time.monotonic() + timeout_s))
        try:
            result = fut.result(timeout_s)
        except FutureTimeout:
            raise Failure(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        finally:
            with self._lock:
                self._waiting.pop(tag, None)
        if result.HasField("error"):
            raise Failure.from_result(result.error)
        return getattr(result, kind)

    def close(self, wait_s: float = 1.0) -> None:
        """End the stream: the server answers what it has (up to ``wait_s``), then the
        stream is cancelled; requests still waiting fail."""
        with self._lock:
            self.dead = True
        self._queue.put(None)
        self._reader.join(wait_s)
        self._responses.cancel()

    def _requests(self) -> Iterator[kv_pb2.PipelineRequest]:
        """The request stream (gRPC pulls it on its own thread): what is queued, in
        batches, without the requests whose callers stopped waiting; ends on close, or
        once idle."""
        pending: tuple[kv_pb2.PipelineOp, float] | None = None  # taken, not yet sent
        while True:
            if pending is None:
                try:
                    pending = self._queue.get(timeout=IDLE_S)
                except queue.Empty:
                    with self._lock:
                        if self._waiting:
                            continue
                        self.dead = True  # idle: end the stream; callers open a new pipe
                    return
                if pending is None:
                    return
            batch: list[kv_pb2.PipelineOp] = []
            size = 0
            closing = False
            while pending is not None:
                op, deadline = pending
                pending = None
                left = deadline - time.monotonic()
                if left > 0 and op.tag in self._waiting:
                    op_size = op.ByteSize()
                    if batch and (size + op_size > MAX_BATCH_BYTES or len(batch) >= MAX_BATCH):
                        pending = (op, deadline)  # the first of the next message
                        break
                    size += op_size
                    op.timeout_ms = max(1, int(left * 1e3))  # what is left of the caller's
                    batch.append(op)
                try:
                    following = self._queue.get_nowait()
                except queue.Empty:
                    break
                if following is None:
                    closing = True
                    break
                pending = following
            if batch:
                yield kv_pb2.PipelineRequest(ops=batch)
            if closing:
                return

    def _read(self) -> None:
        failure: BaseException
        try:
            for response in self._responses:
                for result in response.results:
                    with self._lock:
                        fut = self._waiting.pop(result.tag, None)
                    if fut is not None:
                        fut.set_result(result)
            failure = RuntimeError("the server ended the stream")
        except grpc.RpcError as e:
            failure = e
        with self._lock:
            self.dead = True
            self.unsupported = (
                isinstance(failure, grpc.Call) and failure.code() == grpc.StatusCode.UNIMPLEMENTED
            )
            waiting, self._waiting = self._waiting, {}
        self._queue.put(None)  # ends the request stream, if gRPC still pulls it
        for fut in waiting.values():  # an exception each: they are raised in other threads
            fut.set_exception(Unsupported() if self.unsupported else Failure.from_stream(failure))
