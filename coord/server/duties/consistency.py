"""Consistency checks (etcd's corruption check), on demand and as a periodic leader duty.

A Digest command is committed, every replica captures its state when it applies it,
and each hashes its capture in a worker thread. Equal logs must give equal states, so a
hash that differs from the majority's marks a replica that diverged (a bug,
non-deterministic apply, a damaged disk that passed its checksums): replace it from a
healthy member.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from collections.abc import Callable

import grpc

from coord import errors
from coord.raft.node import ROLE_LEADER
from coord.server.api.context import NodeContext
from coord.server.api.maintenance import state_hash
from coord.server.runtime import tasks
from coord.server.security.wiring import peer_credentials
from coord.v1 import maintenance_pb2, maintenance_pb2_grpc, raft_pb2

logger = logging.getLogger(__name__)


async def check_consistency(
    ctx: NodeContext, timeout_s: float
) -> maintenance_pb2.CheckConsistencyResponse:
    """Commit a check point, then gather every member's hash of its state there (see
    the module docstring). A member that gives no hash is reported with its error."""
    check_id = uuid.uuid4().hex
    cmd = raft_pb2.Command(digest=raft_pb2.Digest(id=check_id), term=ctx.raft.view.term)
    result = await ctx.write_within(cmd, timeout_s)
    me = ctx.cfg.node_id
    members = sorted(ctx.raft.members().items())

    async def ask(nid: str, api: str) -> maintenance_pb2.NodeStateHash:
        try:
            if nid == me:  # applied: write() returns once this node applied it
                return await state_hash(ctx, check_id)
            async with peer_credentials(ctx.cfg).aio_channel(api) as ch:
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
        header=ctx.header(revision=result.revision),
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
        self, ctx: NodeContext, on_result: Callable[[CheckResult], None] | None = None
    ) -> None:
        self.ctx = ctx
        self.on_result = on_result
        self._task: asyncio.Task[None] | None = None

    async def check(self, timeout_s: float) -> CheckResult:
        result = await check_consistency(self.ctx, timeout_s)
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
        if self.ctx.cfg.consistency_check_every_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await tasks.cancel(self._task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.cfg.consistency_check_every_s)  # a periodic duty
            if self.ctx.raft.view.role != ROLE_LEADER:
                continue
            try:
                await self.check(self.ctx.cfg.request_timeout_s)
            except errors.CoordError as e:
                logger.warning("consistency check skipped: %s", e.message)
