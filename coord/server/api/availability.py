"""Availability servicer: the ledger's figures per group (coordctl report)."""

from __future__ import annotations

import time

from coord import errors
from coord.server.api.context import NodeContext, ServicerContext
from coord.state import ledger
from coord.state.machine import StateMachine
from coord.v1 import availability_pb2, availability_pb2_grpc

MAX_WINDOW_S = 366 * 24 * 3600


class AvailabilityService(availability_pb2_grpc.AvailabilityServicer):
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    async def Report(
        self, request: availability_pb2.AvailabilityRequest, context: ServicerContext
    ) -> availability_pb2.AvailabilityResponse:
        return await self._report(request, context)

    async def _report(
        self, request: availability_pb2.AvailabilityRequest, context: ServicerContext
    ) -> availability_pb2.AvailabilityResponse:
        windows = list(request.windows_s) or list(ledger.DEFAULT_WINDOWS_S)
        bad = [w for w in windows if not 0 < w <= MAX_WINDOW_S]
        if bad:
            raise errors.InvalidArgument(f"window {bad[0]} s is out of range: give 1 s .. 366 days")
        if not request.serializable:
            await self.ctx.linearize(context)
        now_ms = int(time.time() * 1000)

        def read(state: StateMachine) -> availability_pb2.AvailabilityResponse:
            book = state.ledger.groups
            if request.group and request.group not in book:
                raise errors.NotFound(f"group {request.group!r} does not exist")
            names = [request.group] if request.group else sorted(book)
            resp = availability_pb2.AvailabilityResponse(
                header=self.ctx.header(revision=state.revision, serializable=request.serializable)
            )
            resp.groups.extend(ledger.report(book[n], now_ms, windows) for n in names)
            return resp

        result: availability_pb2.AvailabilityResponse = self.ctx.raft.read(read)
        return result
