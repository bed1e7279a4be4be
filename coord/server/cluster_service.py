"""Cluster servicer: this node's status, the leader, the members, leader changes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from coord import __version__
from coord.raft.node import ROLE_CANDIDATE, ROLE_LEADER, View
from coord.server.context import NodeContext, ServicerContext
from coord.v1 import cluster_pb2, cluster_pb2_grpc

_ROLES = {
    ROLE_LEADER: cluster_pb2.ROLE_LEADER,
    ROLE_CANDIDATE: cluster_pb2.ROLE_CANDIDATE,
}


class ClusterService(cluster_pb2_grpc.ClusterServicer):
    def __init__(self, node: NodeContext) -> None:
        self.node = node

    async def Status(
        self, request: cluster_pb2.StatusRequest, context: ServicerContext
    ) -> cluster_pb2.StatusResponse:
        view = self.node.raft.view
        return cluster_pb2.StatusResponse(
            header=self.node.header(),
            node_id=self.node.cfg.node_id,
            role=_ROLES.get(view.role, cluster_pb2.ROLE_FOLLOWER),
            term=view.term,
            leader_id=view.leader_id,
            commit_index=view.commit_index,
            applied_index=view.applied_index,
            revision=self.node.raft.state.revision,
            version=__version__,
            has_quorum=view.has_quorum,
            raft_log_entries=view.log_entries,
            uptime_s=time.monotonic() - self.node.raft.started,
        )

    async def GetLeader(
        self, request: cluster_pb2.GetLeaderRequest, context: ServicerContext
    ) -> cluster_pb2.GetLeaderResponse:
        leader, address = self.node.leader_hint()
        return cluster_pb2.GetLeaderResponse(
            header=self.node.header(), leader_id=leader, leader_api_address=address
        )

    async def ListNodes(
        self, request: cluster_pb2.ListNodesRequest, context: ServicerContext
    ) -> cluster_pb2.ListNodesResponse:
        view = self.node.raft.view
        me = self.node.cfg.node_id
        resp = cluster_pb2.ListNodesResponse(header=self.node.header())
        for p in sorted(self.node.cfg.peers, key=lambda p: p.id):
            resp.nodes.add(
                id=p.id,
                api_address=p.api_address,
                raft_address=p.raft_address,
                connected=p.id == me or p.id in view.connected,
                is_leader=p.id == view.leader_id,
            )
        return resp

    async def WatchLeader(
        self, request: cluster_pb2.WatchLeaderRequest, context: ServicerContext
    ) -> AsyncIterator[cluster_pb2.LeaderEvent]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[View] = asyncio.Queue(maxsize=64)

        def on_change(view: View) -> None:  # tick thread
            loop.call_soon_threadsafe(_offer, queue, view)

        raft = self.node.raft
        raft.add_listener(on_change)
        try:
            view = raft.view
            while True:
                yield cluster_pb2.LeaderEvent(
                    header=self.node.header(),
                    leader_id=view.leader_id,
                    leader_api_address=self.node.api_address(view.leader_id),
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
