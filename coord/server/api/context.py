"""NodeContext: what every servicer needs from the node (raft, config, headers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

from coord import errors
from coord.config import NodeConfig
from coord.raft.node import RaftNode
from coord.server.runtime.bridge import LoopBridge
from coord.state.request_ids import check_request_id
from coord.v1 import common_pb2, raft_pb2

# Servicers take any request/response types.
ServicerContext = grpc.aio.ServicerContext[Any, Any]
# Request ids the cluster's leader gives its own commands (coord.state.scheduled).
RESERVED_REQUEST_ID_PREFIX = "coord:"


class NodeContext:
    """Shared by the servicers of one node; used on the asyncio loop thread."""

    def __init__(
        self, cfg: NodeConfig, raft: RaftNode, on_reject: Callable[[str], None] | None = None
    ) -> None:
        self.cfg = cfg
        self.raft = raft
        # Counts a refusal by kind (coord_requests_rejected_total), as the guard does.
        self.rejected: Callable[[str], None] = on_reject or (lambda why: None)
        self._cluster_id = cfg.cluster_id
        self._loop_bridge: LoopBridge | None = None

    def api_address(self, node_id: str) -> str:
        return self.raft.api_address(node_id)

    def leader_hint(self) -> tuple[str, str]:
        leader = self.raft.view.leader_id
        return leader, self.api_address(leader)

    def header(
        self, revision: int | None = None, serializable: bool = False
    ) -> common_pb2.ResponseHeader:
        view = self.raft.view
        return common_pb2.ResponseHeader(
            cluster_id=self._cluster_id,
            node_id=self.cfg.node_id,
            term=view.term,
            revision=self.raft.state.revision if revision is None else revision,
            serializable=serializable,
            applied_index=view.applied_index,
        )

    def timeout(self, context: ServicerContext) -> float:
        remaining = context.time_remaining()
        limit = self.cfg.request_timeout_s
        return limit if remaining is None else max(0.0, min(limit, remaining))

    async def write(
        self, cmd: raft_pb2.Command, context: ServicerContext
    ) -> raft_pb2.CommandResult:
        """Propose ``cmd`` and wait for its result; raise its error if it carries one.

        Every write RPC comes through here: its request id is checked once, before
        anything reaches the log (the state machine refuses the same ids)."""
        check_request_id(cmd.request_id)
        if cmd.request_id.startswith(RESERVED_REQUEST_ID_PREFIX):
            raise errors.InvalidArgument(
                f"request id {cmd.request_id!r}: ids starting with "
                f"{RESERVED_REQUEST_ID_PREFIX!r} are the cluster's own (a leader's firing of "
                "a scheduled switchover): use another id (a uuid4 hex)"
            )
        return await self.write_within(cmd, self.timeout(context))

    async def write_within(self, cmd: raft_pb2.Command, timeout_s: float) -> raft_pb2.CommandResult:
        """``write`` for callers without an RPC (the node's own background tasks)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[raft_pb2.CommandResult] = loop.create_future()
        bridge = self._bridge(loop)
        self.raft.propose_cb(cmd, lambda res, err: bridge.complete(fut, res, err))
        # A timer handle, not asyncio.wait_for: wait_for builds tasks per call.
        timer = loop.call_later(timeout_s, _expire, fut)
        try:
            result = await fut
        finally:
            timer.cancel()
        if result.error_reason:
            raise errors.from_reason(result.error_reason, result.error_message)
        return result

    def _bridge(self, loop: asyncio.AbstractEventLoop) -> LoopBridge:
        if self._loop_bridge is None:
            self._loop_bridge = LoopBridge(loop)
        return self._loop_bridge

    async def linearize(self, context: ServicerContext) -> None:
        """Wait until this node's state includes every write committed before the call."""
        try:
            await asyncio.wait_for(asyncio.wrap_future(self.raft.barrier()), self.timeout(context))
        except TimeoutError:
            raise errors.Unavailable(
                "linearizable read timed out (no quorum?): retry, or read with serializable=true"
            ) from None


def _expire(fut: asyncio.Future[raft_pb2.CommandResult]) -> None:
    if not fut.done():
        fut.set_exception(
            errors.OutcomeUnknown(
                "the write did not commit in time (no quorum?): retry with the same request id"
            )
        )
