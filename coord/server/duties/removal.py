"""Noticing that this node was removed from the cluster.

The leader stops replicating to a node the moment it appends that node's
removal (Raft uses the latest configuration in the log), so a removed node
never sees the entry that removed it. It only sees its peers go quiet: no
leader, and its connections refused (peers drop unknown node ids). Like an
etcd member that learns it was removed from a peer's answer, the node then
asks its peers' APIs: if the leader answers with a configuration without this
node and no change pending, the removal is committed, and the node stops.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from coord.client.credentials import Credentials
from coord.raft.node import RaftNode
from coord.v1 import cluster_pb2, cluster_pb2_grpc

logger = logging.getLogger(__name__)

# How long without a link to a leader before asking, and how often to ask.
LEADERLESS_S = 3.0
POLL_S = 1.0


async def watch_for_removal(raft: RaftNode, cluster_id: str, creds: Credentials) -> None:
    """Run until cancelled; calls ``raft.mark_removed`` when a leader says so."""
    last_leader = time.monotonic()
    while True:
        await asyncio.sleep(POLL_S)
        view = raft.view
        if view.removed:
            return
        # Heard from a leader lately? (A link that is merely up is not enough: a removed
        # node's redials are accepted, then dropped at the handshake.)
        if view.leader_alive:
            last_leader = time.monotonic()
            continue
        if time.monotonic() - last_leader < LEADERLESS_S:
            continue
        me = raft.cfg.node_id
        for nid, addr in raft.members().items():
            if nid == me:
                continue
            why = await _ask(addr.api, nid, me, cluster_id, creds)
            if why:
                raft.mark_removed(why)
                return


async def _ask(api: str, nid: str, me: str, cluster_id: str, creds: Credentials) -> str | None:
    try:
        async with creds.aio_channel(api) as ch:
            resp = await cluster_pb2_grpc.ClusterStub(ch).ListNodes(
                cluster_pb2.ListNodesRequest(), timeout=0.5
            )
    except grpc.RpcError:
        return None
    answered_by_leader = any(n.is_leader and n.id == resp.header.node_id for n in resp.nodes)
    if (
        resp.header.cluster_id != cluster_id
        or not answered_by_leader
        or resp.change_pending
        or any(n.id == me for n in resp.nodes)
    ):
        return None
    members = sorted(n.id for n in resp.nodes)
    return f"leader {nid} (term {resp.header.term}) has members {members} without {me}"
