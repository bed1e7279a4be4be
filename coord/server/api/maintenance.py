"""Maintenance servicer: hot backups (full snapshots and diffs) streamed in chunks, and
consistency checks.

A backup is taken at a linearizable point unless ``serializable``: a read barrier first
(every write acknowledged before the call is then applied here), then the state is
captured (coord.raft.backup_capture). Consistency checks are run by the leader's checker
(coord.server.duties.consistency), which this servicer reaches through the
:data:`RunCheck` port; ``StateHash`` is each replica's part of a check.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from coord import errors
from coord.raft.backup_capture import diff_backup, full_backup
from coord.server.api.context import NodeContext, ServicerContext
from coord.state import backupfile
from coord.v1 import maintenance_pb2, maintenance_pb2_grpc

# Each message stays well under the 4 MiB gRPC limit.
CHUNK_BYTES = 1024 * 1024

# Runs a consistency check within a timeout (s): ConsistencyChecker.check.
RunCheck = Callable[[float], Awaitable[maintenance_pb2.CheckConsistencyResponse]]


async def state_hash(ctx: NodeContext, check_id: str) -> maintenance_pb2.NodeStateHash:
    """This node's hash of its state at check point ``check_id``, which it has applied.
    NotFound if it holds no capture there (it restarted, or skipped the check point
    by installing a later snapshot)."""
    cap = ctx.raft.read(lambda s: s.check_points.get(check_id))
    if cap is None:
        raise errors.NotFound(
            f"no check point {check_id!r} on this node (restarted, or it caught up by "
            "snapshot past it): run the check again"
        )
    digest = await asyncio.get_running_loop().run_in_executor(None, cap.digest)
    return maintenance_pb2.NodeStateHash(
        node_id=ctx.cfg.node_id, revision=cap.revision, hash=digest
    )


class MaintenanceService(maintenance_pb2_grpc.MaintenanceServicer):
    def __init__(self, ctx: NodeContext, run_check: RunCheck) -> None:
        self.ctx = ctx
        self.run_check = run_check

    async def CheckConsistency(
        self, request: maintenance_pb2.CheckConsistencyRequest, context: ServicerContext
    ) -> maintenance_pb2.CheckConsistencyResponse:
        return await self.run_check(self.ctx.timeout(context))

    async def StateHash(
        self, request: maintenance_pb2.StateHashRequest, context: ServicerContext
    ) -> maintenance_pb2.StateHashResponse:

        if not request.id:
            raise errors.InvalidArgument("give the check point's id")
        # A barrier committed after the check point: once it resolves, this node
        # has applied the check point (unless it skipped it by snapshot).
        await self.ctx.linearize(context)
        state = await state_hash(self.ctx, request.id)
        return maintenance_pb2.StateHashResponse(header=self.ctx.header(), state=state)

    async def Snapshot(
        self, request: maintenance_pb2.SnapshotRequest, context: ServicerContext
    ) -> AsyncIterator[maintenance_pb2.BackupChunk]:

        if not request.serializable:
            await self.ctx.linearize(context)
        parts, revision = await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(full_backup, self.ctx.raft, self.ctx.cfg.node_id, signed=False)
        )
        async for chunk in self._stream(parts, revision, request.serializable):
            yield chunk

    async def Diff(
        self, request: maintenance_pb2.DiffRequest, context: ServicerContext
    ) -> AsyncIterator[maintenance_pb2.BackupChunk]:

        if request.since_revision < 0:
            raise errors.InvalidArgument("since_revision must be >= 0")
        if not request.serializable:
            await self.ctx.linearize(context)
        parts, revision = await asyncio.get_running_loop().run_in_executor(
            None,
            functools.partial(
                diff_backup,
                self.ctx.raft,
                self.ctx.cfg.node_id,
                request.since_revision,
                request.cluster_id,
                signed=False,
            ),
        )
        async for chunk in self._stream(parts, revision, request.serializable):
            yield chunk

    async def _stream(
        self, parts: list[bytes], revision: int, serializable: bool
    ) -> AsyncIterator[maintenance_pb2.BackupChunk]:
        """The file of ``parts`` (unsigned) in messages of CHUNK_BYTES, the last one
        ending with the file's checksum. The checksum (sha256, ~15 ms at 20 MB) is
        computed on a worker thread while the rest is sent: hashing lets other threads
        run, so the first message does not wait for it."""
        header = self.ctx.header(revision=revision, serializable=serializable)
        total = sum(map(len, parts)) + backupfile.DIGEST_BYTES
        checksum = asyncio.get_running_loop().run_in_executor(None, backupfile.checksum, parts)
        try:
            pieces = chunked(parts, CHUNK_BYTES)
            held = next(pieces)  # the last piece goes out with the checksum
            for piece in pieces:
                yield maintenance_pb2.BackupChunk(header=header, data=held, total_bytes=total)
                held = piece
            data = held + await checksum
            yield maintenance_pb2.BackupChunk(header=header, data=data, total_bytes=total)
        finally:
            # The caller went away: nobody reads the checksum. cancel() also marks a
            # failure it already holds as seen (asyncio would log it when collected).
            checksum.cancel()


def chunked(parts: list[bytes], size: int) -> Iterator[bytes]:
    """The concatenation of ``parts`` cut into pieces of ``size`` bytes (the last one
    shorter; one empty piece when there is nothing), each copied once."""
    pending: list[memoryview] = []
    room, sent = size, False
    for part in parts:
        view = memoryview(part)
        while len(view) >= room:
            pending.append(view[:room])
            yield b"".join(pending)
            view, pending, room, sent = view[room:], [], size, True
        if view:
            pending.append(view)
            room -= len(view)
    if pending or not sent:
        yield b"".join(pending)
