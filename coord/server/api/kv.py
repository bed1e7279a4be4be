"""KV servicer: validates input, proposes writes, serves reads after a barrier.

Request ids are checked where every write goes through (``NodeContext.write``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from coord import errors
from coord.server.api.context import NodeContext, ServicerContext
from coord.server.api.pipeline import Observe, Pipeline, Serve
from coord.server.api.state_servicer import check_own_session
from coord.server.security.guard import Guard
from coord.state import txn
from coord.state.kv import validate_key, validate_value
from coord.state.machine import StateMachine
from coord.v1 import kv_pb2, kv_pb2_grpc, raft_pb2


class KVService(kv_pb2_grpc.KVServicer):
    def __init__(
        self, ctx: NodeContext, guard: Guard | None = None, observe: Observe | None = None
    ) -> None:
        """``guard`` and ``observe``: what the handler wrapper does for a unary call,
        done here for each request of a Pipeline stream."""
        self.ctx = ctx
        methods: dict[str, Serve] = {
            "put": self.Put,
            "range": self.Range,
            "delete": self.Delete,
            "txn": self.Txn,
        }
        self._pipeline = Pipeline(methods, ctx.leader_hint, guard, observe)

    def Pipeline(
        self, requests: AsyncIterator[kv_pb2.PipelineRequest], context: ServicerContext
    ) -> AsyncIterator[kv_pb2.PipelineResponse]:
        return self._pipeline.serve(requests, context)

    async def Put(self, request: kv_pb2.PutRequest, context: ServicerContext) -> kv_pb2.PutResponse:
        validate_key(request.key)
        validate_value(request.value)
        check_own_session(self.ctx, request.session_id)
        result = await self.ctx.write(
            raft_pb2.Command(request_id=request.request_id, put=request), context
        )
        resp = result.put
        resp.header.CopyFrom(self.ctx.header(revision=result.revision))
        return resp

    async def Txn(self, request: kv_pb2.TxnRequest, context: ServicerContext) -> kv_pb2.TxnResponse:
        txn.check(request)  # before the log: the state machine checks the same again
        for op in (*request.success, *request.failure):
            if op.HasField("put"):
                check_own_session(self.ctx, op.put.session_id)
        result = await self.ctx.write(
            raft_pb2.Command(request_id=request.request_id, txn=request), context
        )
        resp = result.txn
        resp.header.CopyFrom(self.ctx.header(revision=result.revision))
        return resp

    async def Delete(
        self, request: kv_pb2.DeleteRequest, context: ServicerContext
    ) -> kv_pb2.DeleteResponse:
        validate_key(request.key, allow_empty=request.prefix)
        if request.prefix and request.HasField("expected_mod_revision"):
            raise errors.InvalidArgument(
                "expected_mod_revision needs a single key: drop prefix, or the condition"
            )
        result = await self.ctx.write(
            raft_pb2.Command(request_id=request.request_id, delete=request), context
        )
        resp = result.delete
        resp.header.CopyFrom(self.ctx.header(revision=result.revision))
        return resp

    async def Range(
        self, request: kv_pb2.RangeRequest, context: ServicerContext
    ) -> kv_pb2.RangeResponse:
        validate_key(request.key, allow_empty=request.prefix)
        if request.limit < 0:
            raise errors.InvalidArgument("limit must be >= 0 (0: the server maximum)")
        if not request.serializable:
            await self.ctx.linearize(context)

        def read(state: StateMachine) -> tuple[list[kv_pb2.KeyValue], int, int]:
            kvs, count = state.range(request.key, request.prefix, request.limit, request.keys_only)
            return kvs, count, state.revision

        kvs, count, revision = self.ctx.raft.read(read)
        resp = kv_pb2.RangeResponse(count=count, more=count > len(kvs))
        resp.header.CopyFrom(self.ctx.header(revision=revision, serializable=request.serializable))
        if request.keys_only:
            resp.kvs.extend(
                kv_pb2.KeyValue(
                    key=kv.key,
                    create_revision=kv.create_revision,
                    mod_revision=kv.mod_revision,
                    version=kv.version,
                )
                for kv in kvs
            )
        else:
            resp.kvs.extend(kvs)
        return resp
