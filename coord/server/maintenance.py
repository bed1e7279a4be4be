"""Maintenance servicer: hot backups (full snapshots and diffs), streamed in chunks.

A backup is taken at a linearizable point: a read barrier first (every write
acknowledged before the call is then applied here), then the state is captured
under the apply lock and encoded outside it. ``StateMachine.capture()`` copies
only what changes in place (sessions, groups) and shares the immutable records,
so the apply lock is held for milliseconds even at 100k keys, and the node keeps
applying while the file is built in a worker thread.

The same functions serve the Snapshot and Diff RPCs and the leader's scheduled
backups (``coord.server.backups``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from coord import errors
from coord.raft.node import RaftNode
from coord.server.context import NodeContext, ServicerContext
from coord.server.status import abort
from coord.state import backupfile, replay
from coord.state.machine import StateCapture, StateMachine
from coord.v1 import maintenance_pb2, maintenance_pb2_grpc

# Each message stays well under the 4 MiB gRPC limit.
CHUNK_BYTES = 1024 * 1024


def full_backup(raft: RaftNode, node_id: str) -> tuple[bytes, int]:
    """A full backup file of this node's state now, and its revision. Blocking (run it
    in a worker thread): takes the apply lock briefly, then encodes outside it."""

    def capture(s: StateMachine) -> tuple[StateCapture, int]:
        _check_bootstrapped(s)
        return s.capture(), raft.view.term

    cap, term = raft.read(capture)
    head = backupfile.header(
        backupfile.FULL,
        cluster_id=cap.cluster_id,
        revision=cap.revision,
        raft_term=term,
        node_id=node_id,
    )
    return backupfile.encode(head, cap.encode()), cap.revision


def diff_backup(
    raft: RaftNode, node_id: str, since_revision: int, cluster_id: str = ""
) -> tuple[bytes, int]:
    """A diff backup file: this node's changes after ``since_revision``, and its
    revision. Refuses another cluster's base; OutOfRange once those changes were
    compacted (see ``coord.state.replay.capture_diff``). Blocking, like full_backup."""

    def capture(s: StateMachine) -> tuple[maintenance_pb2.BackupDiff, str, int, int]:
        _check_bootstrapped(s)
        if cluster_id and cluster_id != s.cluster_id:
            raise errors.FailedPrecondition(
                f"the base backup is of cluster {cluster_id}, this is cluster {s.cluster_id}: "
                "take the diff from the cluster the snapshot came from, or take a full snapshot"
            )
        return replay.capture_diff(s, since_revision), s.cluster_id, s.revision, raft.view.term

    diff, cid, revision, term = raft.read(capture)
    head = backupfile.header(
        backupfile.DIFF,
        cluster_id=cid,
        revision=revision,
        base_revision=since_revision,
        raft_term=term,
        node_id=node_id,
    )
    return backupfile.encode(head, diff.SerializeToString(deterministic=True)), revision


def _check_bootstrapped(s: StateMachine) -> None:
    if not s.cluster_id:
        raise errors.Unavailable("the cluster has not bootstrapped yet: retry shortly")


class MaintenanceService(maintenance_pb2_grpc.MaintenanceServicer):
    def __init__(self, node: NodeContext) -> None:
        self.node = node

    async def Snapshot(
        self, request: maintenance_pb2.SnapshotRequest, context: ServicerContext
    ) -> AsyncIterator[maintenance_pb2.BackupChunk]:
        node = self.node
        try:
            if not request.serializable:
                await node.linearize(context)
            data, revision = await asyncio.get_running_loop().run_in_executor(
                None, full_backup, node.raft, node.cfg.node_id
            )
        except errors.CoordError as e:
            await abort(context, e, node.leader_hint())
        for chunk in self._chunks(data, revision, request.serializable):
            yield chunk

    async def Diff(
        self, request: maintenance_pb2.DiffRequest, context: ServicerContext
    ) -> AsyncIterator[maintenance_pb2.BackupChunk]:
        node = self.node
        try:
            if request.since_revision < 0:
                raise errors.InvalidArgument("since_revision must be >= 0")
            if not request.serializable:
                await node.linearize(context)
            data, revision = await asyncio.get_running_loop().run_in_executor(
                None,
                diff_backup,
                node.raft,
                node.cfg.node_id,
                request.since_revision,
                request.cluster_id,
            )
        except errors.CoordError as e:
            await abort(context, e, node.leader_hint())
        for chunk in self._chunks(data, revision, request.serializable):
            yield chunk

    def _chunks(
        self, data: bytes, revision: int, serializable: bool
    ) -> list[maintenance_pb2.BackupChunk]:
        header = self.node.header(revision=revision, serializable=serializable)
        return [
            maintenance_pb2.BackupChunk(
                header=header, data=data[i : i + CHUNK_BYTES], total_bytes=len(data)
            )
            for i in range(0, max(len(data), 1), CHUNK_BYTES)
        ]
