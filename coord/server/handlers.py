"""Register servicers with request decoding that fails as INVALID_ARGUMENT.

The generated ``add_*Servicer_to_server`` decode requests with ``FromString``;
a malformed body then raises inside gRPC, which answers UNKNOWN and logs a
traceback per request (a cheap way to flood the log). Here a body that does
not decode reaches the servicer as :class:`Malformed` and is answered
INVALID_ARGUMENT with a message that says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from coord import errors
from coord.server.status import abort


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


def _handler(method: MethodDescriptor, impl: Any) -> grpc.RpcMethodHandler[Any, Any]:
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


def add_service(server: grpc.aio.Server, servicer: object, service: ServiceDescriptor) -> None:
    """Register every method of ``service`` (unary, server-streaming, bidi) on ``servicer``."""
    handlers = {m.name: _handler(m, getattr(servicer, m.name)) for m in service.methods}
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
