"""KV.Pipeline: many KV requests in flight on one stream, answered in batches.

A unary call costs the server several times what a message on an open stream does
(grpc.aio builds a call, its coroutines and its status per call: bench/README.md,
"Where the leader's CPU goes"). A client with concurrent requests sends them here
instead; each is served by the same KVService method a unary call would reach, after
the same guard check against that method's own rule, and its outcome (a response or
the error a unary call's status would have carried) is sent back under the client's
tag. Results ready together go out in one message.

A failed request fails alone; the stream ends only when the client ends it (once
every request it sent is answered), on a malformed message, or on cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from coord import errors
from coord.server.security.guard import Guard, caller
from coord.v1 import kv_pb2

logger = logging.getLogger(__name__)

# Requests of one stream being served or waiting to be sent at once; the stream is not
# read further until a result has been sent (backpressure instead of unbounded memory).
MAX_IN_FLIGHT = 1024
# A response message carries results up to about this size (a single result may be
# larger: a Range answers up to 3 MiB), under the 4 MiB message limit of both sides.
MAX_RESPONSE_BYTES = 1024 * 1024

Observe = Callable[[str, str, float], None]  # (method, status code, seconds)
LeaderHint = Callable[[], tuple[str, str]]
Serve = Callable[[Any, Any], Any]  # a KVService method: (request, context) -> awaitable


def _take_batch(
    ready: list[kv_pb2.PipelineResult],
) -> tuple[list[kv_pb2.PipelineResult], list[kv_pb2.PipelineResult]]:
    """The results for one message (at least one; more while under MAX_RESPONSE_BYTES),
    and the rest."""
    size = 0
    for n, result in enumerate(ready):
        size += result.ByteSize()
        if size > MAX_RESPONSE_BYTES and n > 0:
            return ready[:n], ready[n:]
    return ready, []


class OpContext:
    """What a KVService method asks of its context, for one request of a stream: the
    time left (the request's own timeout, not the stream's deadline)."""

    def __init__(self, timeout_ms: int) -> None:
        self._deadline = time.monotonic() + timeout_ms / 1e3 if timeout_ms else None

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())


class Pipeline:
    """Serves KV.Pipeline streams with ``methods``: KVService's Put, Range, ... by the
    name of the PipelineOp field that carries their request (put, range, ...)."""

    def __init__(
        self,
        methods: dict[str, Serve],
        leader_hint: LeaderHint,
        guard: Guard | None = None,
        observe: Observe | None = None,
    ) -> None:
        self._methods = methods
        self._leader_hint = leader_hint
        self._guard = guard
        self._observe = observe

    async def serve(
        self, requests: AsyncIterator[kv_pb2.PipelineRequest], context: Any
    ) -> AsyncIterator[kv_pb2.PipelineResponse]:
        """Answer every request of the stream; end once the client has ended its side
        and every request has its result sent."""
        ready: list[kv_pb2.PipelineResult] = []
        wake = asyncio.Event()
        serving: set[asyncio.Task[kv_pb2.PipelineResult]] = set()
        # A slot is given back once its result is sent: a client that sends without
        # reading stops being read (results are not piled up on the server).
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)

        def finished(task: asyncio.Task[kv_pb2.PipelineResult]) -> None:
            serving.discard(task)
            if task.cancelled():
                slots.release()
                return
            ready.append(task.result())
            wake.set()

        async def read() -> None:
            try:
                async for request in requests:
                    for op in request.ops:
                        await slots.acquire()
                        task = asyncio.create_task(self._one(op))
                        serving.add(task)
                        task.add_done_callback(finished)
            finally:
                wake.set()

        reader = asyncio.create_task(read())
        try:
            while True:
                await wake.wait()
                wake.clear()
                while ready:
                    batch, ready = _take_batch(ready)
                    yield kv_pb2.PipelineResponse(results=batch)
                    for _ in batch:
                        slots.release()
                if reader.done():
                    reader.result()  # a malformed message: its abort, raised here
                    if not serving and not ready:
                        return
        finally:
            reader.cancel()
            for task in list(serving):
                task.cancel()

    async def _one(self, op: kv_pb2.PipelineOp) -> kv_pb2.PipelineResult:
        """One request's result; never raises (its error becomes the result)."""
        kind = op.WhichOneof("op")
        if kind is None:
            fields = ", ".join(self._methods)
            return self._error(
                op.tag,
                errors.InvalidArgument(
                    f"pipeline request {op.tag} carries no operation: set one of {fields}"
                ),
            )
        serve = self._methods[kind]
        name = serve.__name__  # the unary method's: its rule, its metrics
        request = getattr(op, kind)
        t0 = time.perf_counter()
        code = "OK"
        try:
            if self._guard is not None:  # the stream's opening identified the caller
                self._guard.admit(f"/coord.v1.KV/{name}", caller(), request)
            response = await serve(request, OpContext(op.timeout_ms))
            result = kv_pb2.PipelineResult(tag=op.tag)
            getattr(result, kind).CopyFrom(response)
            return result
        except errors.CoordError as e:
            code = e.code
            return self._error(op.tag, e)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception:
            code = "INTERNAL"
            logger.exception("pipeline %s failed", name)
            return self._error(op.tag, errors.Internal(f"{name} failed on the server: retry"))
        finally:
            if self._observe is not None:
                self._observe(name, code, time.perf_counter() - t0)

    def _error(self, tag: int, err: errors.CoordError) -> kv_pb2.PipelineResult:
        leader_id, leader_address = self._leader_hint()
        return kv_pb2.PipelineResult(
            tag=tag,
            error=kv_pb2.PipelineError(
                code=err.code,
                reason=err.reason,
                message=err.message,
                leader_id=leader_id,
                leader_address=leader_address,
            ),
        )
