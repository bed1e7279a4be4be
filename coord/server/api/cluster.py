"""Cluster servicer: this node's status, the leader, the members, leader changes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future

from coord import __version__, config, errors
from coord.raft.membership import ADD, PROMOTE, REMOVE, Change, NodeAddress, check_quorum_after
from coord.raft.node import ROLE_CANDIDATE, ROLE_LEADER, View
from coord.server.api.context import NodeContext, ServicerContext
from coord.v1 import cluster_pb2, cluster_pb2_grpc

_ROLES = {
    ROLE_LEADER: cluster_pb2.ROLE_LEADER,
    ROLE_CANDIDATE: cluster_pb2.ROLE_CANDIDATE,
}


class ClusterService(cluster_pb2_grpc.ClusterServicer):
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    async def Status(
        self, request: cluster_pb2.StatusRequest, context: ServicerContext
    ) -> cluster_pb2.StatusResponse:
        view = self.ctx.raft.view
        return cluster_pb2.StatusResponse(
            header=self.ctx.header(),
            node_id=self.ctx.cfg.node_id,
            role=_ROLES.get(view.role, cluster_pb2.ROLE_FOLLOWER),
            term=view.term,
            leader_id=view.leader_id,
            commit_index=view.commit_index,
            applied_index=view.applied_index,
            revision=self.ctx.raft.read(lambda s: s.revision),
            version=__version__,
            has_quorum=view.has_quorum,
            raft_log_entries=view.log_entries,
            uptime_s=time.monotonic() - self.ctx.raft.started,
            catching_up=view.catching_up,
        )

    async def GetLeader(
        self, request: cluster_pb2.GetLeaderRequest, context: ServicerContext
    ) -> cluster_pb2.GetLeaderResponse:
        leader, address = self.ctx.leader_hint()
        return cluster_pb2.GetLeaderResponse(
            header=self.ctx.header(), leader_id=leader, leader_api_address=address
        )

    async def ListNodes(
        self, request: cluster_pb2.ListNodesRequest, context: ServicerContext
    ) -> cluster_pb2.ListNodesResponse:
        return cluster_pb2.ListNodesResponse(
            header=self.ctx.header(),
            nodes=self._nodes(),
            change_pending=self.ctx.raft.change_pending(),
        )

    def _nodes(self) -> list[cluster_pb2.Node]:
        raft = self.ctx.raft
        view = raft.view
        me = self.ctx.cfg.node_id
        return [
            cluster_pb2.Node(
                id=nid,
                api_address=addr.api,
                raft_address=addr.raft,
                connected=nid == me or nid in view.connected,
                is_leader=nid == view.leader_id,
                match_index=raft.match_index(nid) or 0,
                learner=addr.learner,
                lag=raft.lag(nid) or 0,
                promote_when_caught_up=addr.auto_promote,
            )
            for nid, addr in sorted(raft.members().items())
        ]

    def _need_leader(self, what: str) -> None:
        if self.ctx.raft.view.role != ROLE_LEADER:
            leader, address = self.ctx.leader_hint()
            raise errors.NotLeader(
                f"{what} runs on the leader ({leader or 'none elected yet'})",
                leader_id=leader,
                leader_address=address,
            )

    async def AddNode(
        self, request: cluster_pb2.AddNodeRequest, context: ServicerContext
    ) -> cluster_pb2.AddNodeResponse:
        return await self._add_node(request, context)

    async def RemoveNode(
        self, request: cluster_pb2.RemoveNodeRequest, context: ServicerContext
    ) -> cluster_pb2.RemoveNodeResponse:
        return await self._remove_node(request, context)

    async def TransferLeader(
        self, request: cluster_pb2.TransferLeaderRequest, context: ServicerContext
    ) -> cluster_pb2.TransferLeaderResponse:
        return await self._transfer(request, context)

    async def _add_node(
        self, request: cluster_pb2.AddNodeRequest, context: ServicerContext
    ) -> cluster_pb2.AddNodeResponse:
        config.check_node_id(request.id)
        if request.promote:
            await self._promote(request.id, context)
        else:
            await self._add(request, context)
        return cluster_pb2.AddNodeResponse(
            header=self.ctx.header(), nodes=self._nodes(), cluster_id=self.ctx.cfg.cluster_id
        )

    async def _add(self, request: cluster_pb2.AddNodeRequest, context: ServicerContext) -> None:
        config.check_address(request.raft_address, "raft address")
        config.check_address(request.api_address, "api address")
        self._need_leader("adding a node")
        address = NodeAddress(
            request.raft_address,
            request.api_address,
            learner=request.learner,
            auto_promote=request.learner and request.promote_when_caught_up,
        )
        current = self.ctx.raft.members().get(request.id)
        same = current is not None and (current.raft, current.api) == (address.raft, address.api)
        # A retry: answer once it committed (a learner since promoted answers too).
        if same and current is not None and (current.learner == address.learner or address.learner):
            await self.ctx.linearize(context)
        else:
            await self._change(Change(ADD, request.id, address), context)

    async def _promote(self, node_id: str, context: ServicerContext) -> None:
        self._need_leader("promoting a learner")
        current = self.ctx.raft.members().get(node_id)
        if current is None:
            raise errors.NotFound(
                f"node {node_id!r} is not a member (members: {sorted(self.ctx.raft.members())})"
            )
        if not current.learner:
            await self.ctx.linearize(context)  # a voter already (a retry, or promoted)
            return
        await self._change(Change(PROMOTE, node_id), context)

    async def _remove_node(
        self, request: cluster_pb2.RemoveNodeRequest, context: ServicerContext
    ) -> cluster_pb2.RemoveNodeResponse:
        config.check_node_id(request.id)
        self._need_leader("removing a node")
        if request.id not in self.ctx.raft.members():
            raise errors.NotFound(
                f"node {request.id!r} is not a member (members: {sorted(self.ctx.raft.members())})"
            )
        await self._change(Change(REMOVE, request.id), context)
        return cluster_pb2.RemoveNodeResponse(header=self.ctx.header(), nodes=self._nodes())

    async def _transfer(
        self, request: cluster_pb2.TransferLeaderRequest, context: ServicerContext
    ) -> cluster_pb2.TransferLeaderResponse:
        if request.to:
            config.check_node_id(request.to)
        self._need_leader("a leadership transfer")
        timeout = self.ctx.timeout(context)
        fut = self.ctx.raft.transfer_leadership(request.to or None, timeout)
        leader = await asyncio.wrap_future(fut)
        return cluster_pb2.TransferLeaderResponse(
            header=self.ctx.header(),
            leader_id=leader,
            leader_api_address=self.ctx.api_address(leader),
        )

    async def _change(self, change: Change, context: ServicerContext) -> None:
        # pysyncobj refuses a change until the leader committed an entry of its term
        # (Raft's fix for single-server changes across leader changes): commit one.
        self.ctx.raft.check_no_pending_change()  # before the barrier, which would wait
        await self.ctx.linearize(context)
        self._need_leader("a membership change")
        raft = self.ctx.raft
        active = {self.ctx.cfg.node_id} | set(raft.view.connected)
        why = check_quorum_after(raft.members(), change, active)
        if why:
            raise errors.FailedPrecondition(why)
        await self._commit(raft.change_membership(change), context)

    async def _commit(self, fut: Future[None], context: ServicerContext) -> None:
        try:
            await asyncio.wait_for(asyncio.wrap_future(fut), self.ctx.timeout(context))
        except TimeoutError:
            raise errors.OutcomeUnknown(
                "the membership change did not commit in time (is a majority of the new "
                "configuration up?): check `coordctl node ls` before retrying"
            ) from None

    async def WatchLeader(
        self, request: cluster_pb2.WatchLeaderRequest, context: ServicerContext
    ) -> AsyncIterator[cluster_pb2.LeaderEvent]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[View] = asyncio.Queue(maxsize=64)

        def on_change(view: View) -> None:  # tick thread
            loop.call_soon_threadsafe(_offer, queue, view)

        raft = self.ctx.raft
        raft.add_listener(on_change)
        try:
            view = raft.view
            while True:
                yield cluster_pb2.LeaderEvent(
                    header=self.ctx.header(),
                    leader_id=view.leader_id,
                    leader_api_address=self.ctx.api_address(view.leader_id),
                    term=view.term,
                )
                view = await queue.get()
        finally:
            raft.remove_listener(on_change)


def _offer(queue: asyncio.Queue[View], view: View) -> None:
    """Keep the newest view when a slow watcher's queue is full."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(view)
