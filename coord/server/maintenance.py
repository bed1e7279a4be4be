"""Maintenance servicer: hot backups (full snapshots and diffs), streamed in chunks.

A backup is taken at a linearizable point: a read barrier first (every write
acknowledged before the call is then applied here), then the state is captured
under the apply lock and encoded outside it. ``StateMachine.capture()`` copies
only what changes in place (sessions, groups) and shares the immutable records,
so the apply lock is held for milliseconds even at 100k keys, and the node keeps
applying while the file is built in a worker thread.

The same functions serve the Snapshot and Diff RPCs and the leader's scheduled
backups (``coord.server.backups``).

Consistency checks (``check_consistency``; etcd's corruption check): a Digest command
is committed, every replica captures its state when it applies it, and each hashes its
capture in a worker thread. Equal logs must give equal states, so a hash that differs
from the majority's marks a replica that diverged (a bug, non-deterministic apply, a
damaged disk that passed its checksums): replace it from a healthy member.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from collections.abc import AsyncIterator, Callable

import grpc

from coord import errors
from coord.raft.node import ROLE_LEADER, RaftNode
from coord.server import tasks
from coord.server.context import NodeContext, ServicerContext
from coord.server.security import peer_credentials
from coord.server.status import abort
from coord.state import backupfile, replay
from coord.state.machine import StateCapture, StateMachine
from coord.v1 import maintenance_pb2, maintenance_pb2_grpc, raft_pb2

logger = logging.getLogger(__name__)

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


async def state_hash(node: NodeContext, check_id: str) -> maintenance_pb2.NodeStateHash:
    """This node's hash of its state at check point ``check_id``, which it has applied.
    NotFound if it holds no capture there (it restarted, or skipped the check point
    by installing a later snapshot)."""
    cap = node.raft.read(lambda s: s.check_points.get(check_id))
    if cap is None:
        raise errors.NotFound(
            f"no check point {check_id!r} on this node (restarted, or it caught up by "
            "snapshot past it): run the check again"
        )
    digest = await asyncio.get_running_loop().run_in_executor(None, cap.digest)
    return maintenance_pb2.NodeStateHash(
        node_id=node.cfg.node_id, revision=cap.revision, hash=digest
    )


async def check_consistency(
    node: NodeContext, timeout_s: float
) -> maintenance_pb2.CheckConsistencyResponse:
    """Commit a check point, then gather every member's hash of its state there (see
    the module docstring). A member that gives no hash is reported with its error."""
    check_id = uuid.uuid4().hex
    cmd = raft_pb2.Command(digest=raft_pb2.Digest(id=check_id), term=node.raft.view.term)
    result = await node.write_within(cmd, timeout_s)
    me = node.cfg.node_id
    members = sorted(node.raft.members().items())

    async def ask(nid: str, api: str) -> maintenance_pb2.NodeStateHash:
        try:
            if nid == me:  # applied: write() returns once this node applied it
                return await state_hash(node, check_id)
            async with peer_credentials(node.cfg).aio_channel(api) as ch:
                resp = await maintenance_pb2_grpc.MaintenanceStub(ch).StateHash(
                    maintenance_pb2.StateHashRequest(id=check_id), timeout=timeout_s
                )
            return resp.state
        except errors.CoordError as e:
            return maintenance_pb2.NodeStateHash(node_id=nid, error=e.message)
        except grpc.RpcError as e:
            return maintenance_pb2.NodeStateHash(
                node_id=nid,
                error=f"{e.code().name}: {e.details()}",
            )

    answers = await asyncio.gather(*(ask(nid, addr.api) for nid, addr in members))
    votes = collections.Counter(a.hash for a in answers if a.hash)
    majority = ""
    if votes:
        top, count = votes.most_common(1)[0]
        if count * 2 > len(answers):
            majority = top
    for a in answers:
        a.matches = bool(majority) and a.hash == majority
    return maintenance_pb2.CheckConsistencyResponse(
        header=node.header(revision=result.revision),
        id=check_id,
        revision=result.revision,
        nodes=answers,
        consistent=all(a.matches for a in answers),
    )


CheckResult = maintenance_pb2.CheckConsistencyResponse


class ConsistencyChecker:
    """Runs consistency checks, on demand and every ``consistency_check_every_s`` while
    this node leads, and reports each result (log, and ``on_result``: the metrics)."""

    def __init__(
        self, node: NodeContext, on_result: Callable[[CheckResult], None] | None = None
    ) -> None:
        self.node = node
        self.on_result = on_result
        self._task: asyncio.Task[None] | None = None

    async def check(self, timeout_s: float) -> CheckResult:
        result = await check_consistency(self.node, timeout_s)
        for n in result.nodes:
            if n.hash and not n.matches:
                logger.error(
                    "consistency check %s: node %s's state at revision %d hashes to %s, "
                    "not the majority's: it diverged; replace it (coordctl node remove, then "
                    "add a node under a new id with an empty data dir)",
                    result.id, n.node_id, n.revision, n.hash[:16],
                )  # fmt: skip
            elif not n.hash:
                logger.warning(
                    "consistency check %s: no hash from node %s: %s",
                    result.id, n.node_id, n.error,
                )  # fmt: skip
        if self.on_result is not None:
            self.on_result(result)
        return result

    def start(self) -> None:
        if self.node.cfg.consistency_check_every_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await tasks.cancel(self._task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.node.cfg.consistency_check_every_s)  # a periodic duty
            if self.node.raft.view.role != ROLE_LEADER:
                continue
            try:
                await self.check(self.node.cfg.request_timeout_s)
            except errors.CoordError as e:
                logger.warning("consistency check skipped: %s", e.message)


class MaintenanceService(maintenance_pb2_grpc.MaintenanceServicer):
    def __init__(self, node: NodeContext, checker: ConsistencyChecker | None = None) -> None:
        self.node = node
        self.checker = checker or ConsistencyChecker(node)

    async def CheckConsistency(
        self, request: maintenance_pb2.CheckConsistencyRequest, context: ServicerContext
    ) -> maintenance_pb2.CheckConsistencyResponse:
        try:
            return await self.checker.check(self.node.timeout(context))
        except errors.CoordError as e:
            await abort(context, e, self.node.leader_hint())

    async def StateHash(
        self, request: maintenance_pb2.StateHashRequest, context: ServicerContext
    ) -> maintenance_pb2.StateHashResponse:
        node = self.node
        try:
            if not request.id:
                raise errors.InvalidArgument("give the check point's id")
            # A barrier committed after the check point: once it resolves, this node
            # has applied the check point (unless it skipped it by snapshot).
            await node.linearize(context)
            state = await state_hash(node, request.id)
        except errors.CoordError as e:
            await abort(context, e, node.leader_hint())
        return maintenance_pb2.StateHashResponse(header=node.header(), state=state)

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
