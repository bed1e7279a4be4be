"""Register servicers behind one wrapper: decoding, the guard, error mapping, metrics.

Servicers raise :class:`coord.errors.CoordError` and never touch gRPC statuses:
the wrapper answers it with the error's status, its reason and the leader hint
(coord.server.runtime.grpc_errors), for unary calls and streams alike.

The generated ``add_*Servicer_to_server`` decode requests with ``FromString``;
a malformed body then raises inside gRPC, which answers UNKNOWN and logs a
traceback per request (a cheap way to flood the log). Here a body that does
not decode reaches the servicer as :class:`Malformed` and is answered
INVALID_ARGUMENT with a message that says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from coord import errors
from coord.server.runtime.grpc_errors import abort
from coord.server.security.guard import Guard


class Malformed:
    """A request body that did not decode."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _decoder(cls: Any) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except Exception as e:
            return Malformed(e)

    return decode


def _refusal(method: MethodDescriptor, bad: Malformed) -> errors.InvalidArgument:
    return errors.InvalidArgument(
        f"malformed {method.input_type.full_name} for {method.full_name} ({bad.error}): "
        "send a valid protobuf message (the client library does)"
    )


Observe = Callable[[str, str, float], None]  # (method, status code, seconds)
LeaderHint = Callable[[], tuple[str, str]]  # (leader id, leader address), "" when unknown


def _mapped(method: MethodDescriptor, impl: Any, leader_hint: LeaderHint) -> Any:
    """``impl`` with a raised CoordError answered as its gRPC status (and the leader hint)."""
    if method.server_streaming:

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for item in impl(request, context):
                    yield item
            except errors.CoordError as e:
                await abort(context, e, leader_hint())

        return stream

    async def unary(request: Any, context: Any) -> Any:
        try:
            return await impl(request, context)
        except errors.CoordError as e:
            await abort(context, e, leader_hint())

    return unary


def _code(context: Any, exc: BaseException | None) -> str:
    if exc is None:
        return "OK"
    code = context.code() if hasattr(context, "code") else None
    if code is not None:
        return str(code.name)
    return "CANCELLED" if isinstance(exc, asyncio.CancelledError) else "UNKNOWN"


def _observed(method: MethodDescriptor, impl: Any, observe: Observe | None) -> Any:
    """``impl`` with its outcome and duration reported to ``observe`` (metrics)."""
    if observe is None:
        return impl
    name = method.name
    if method.server_streaming:

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            t0 = time.perf_counter()
            exc: BaseException | None = None
            try:
                async for item in impl(request, context):
                    yield item
            except BaseException as e:
                exc = e
                raise
            finally:
                observe(name, _code(context, exc), time.perf_counter() - t0)

        return stream

    async def unary(request: Any, context: Any) -> Any:
        t0 = time.perf_counter()
        exc: BaseException | None = None
        try:
            return await impl(request, context)
        except BaseException as e:
            exc = e
            raise
        finally:
            observe(name, _code(context, exc), time.perf_counter() - t0)

    return unary


def _guarded(method: MethodDescriptor, impl: Any, guard: Guard | None) -> Any:
    """``impl`` behind the guard: identity, role, rate, and stream count checked first."""
    if guard is None:
        return impl
    name = f"/{method.containing_service.full_name}/{method.name}"
    if method.client_streaming:

        async def bidi(requests: Any, context: Any) -> AsyncIterator[Any]:
            guard.check(name, None, context)
            async for item in impl(requests, context):
                yield item

        return bidi
    if method.server_streaming:

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            guard.check(name, None if isinstance(request, Malformed) else request, context)
            close = guard.open_stream(name, context)
            try:
                async for item in impl(request, context):
                    yield item
            finally:
                close()

        return stream

    async def unary(request: Any, context: Any) -> Any:
        guard.check(name, None if isinstance(request, Malformed) else request, context)
        return await impl(request, context)

    return unary


def _handler(
    method: MethodDescriptor,
    impl: Any,
    leader_hint: LeaderHint,
    observe: Observe | None = None,
    guard: Guard | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    impl = _observed(method, _mapped(method, _guarded(method, impl, guard), leader_hint), observe)
    decode = _decoder(message_factory.GetMessageClass(method.input_type))
    encode = message_factory.GetMessageClass(method.output_type).SerializeToString
    if method.client_streaming and method.server_streaming:

        async def bidi(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            async def checked() -> AsyncIterator[Any]:
                async for request in requests:
                    if isinstance(request, Malformed):
                        await abort(context, _refusal(method, request))
                    yield request

            async for item in impl(checked(), context):
                yield item

        return grpc.stream_stream_rpc_method_handler(
            bidi, request_deserializer=decode, response_serializer=encode
        )
    if method.server_streaming:

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            if isinstance(request, Malformed):
                await abort(context, _refusal(method, request))
            async for item in impl(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=decode, response_serializer=encode
        )

    async def unary(request: Any, context: Any) -> Any:
        if isinstance(request, Malformed):
            await abort(context, _refusal(method, request))
        return await impl(request, context)

    return grpc.unary_unary_rpc_method_handler(
        unary, request_deserializer=decode, response_serializer=encode
    )


def add_service(
    server: grpc.aio.Server,
    servicer: object,
    service: ServiceDescriptor,
    leader_hint: LeaderHint,
    observe: Observe | None = None,
    guard: Guard | None = None,
) -> None:
    """Register every method of ``service`` (unary, server-streaming, bidi) on ``servicer``;
    ``guard`` checks each call first (coord.server.security.guard); a CoordError the
    servicer raises is answered with ``leader_hint()``; ``observe(method, code, seconds)``
    is told how each call ended."""
    handlers = {
        m.name: _handler(m, getattr(servicer, m.name), leader_hint, observe, guard)
        for m in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
