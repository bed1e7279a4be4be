"""The leader's health checker: runs members' checks, proposes only transitions.

Runs on every node's asyncio loop and acts only while the node leads (like
leases.py). One task per checked member probes every ``interval``; at most
``concurrency`` probes run at once. HAProxy semantics: a member whose replicated
state is healthy becomes unhealthy after ``fall`` consecutive failures, an
unhealthy one healthy after ``rise`` consecutive successes. Only those
transitions are proposed (``SetHealth``, guarded by the member's registration
revision so a verdict about an earlier registration is ignored); a new leader
starts counting from the replicated state.

The live view (last result, latency, streak) is this node's memory, served by
``Groups.HealthStatus`` on the leader.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from coord.raft.node import ROLE_LEADER, RaftNode
from coord.server.duties.probes import GrpcChannels, ProbeResult, probe
from coord.server.runtime import tasks
from coord.state.machine import StateMachine
from coord.v1 import groups_pb2, raft_pb2

logger = logging.getLogger(__name__)

SYNC_S = 0.1  # how often the member table is compared with the running probes
RETRY_S = 1.0  # re-propose a transition that has not taken effect after this

Key = tuple[str, str, int]  # group, member id, registered revision


@dataclass
class Target:
    key: Key
    check: groups_pb2.HealthCheck
    address: str
    healthy: bool  # replicated
    task: asyncio.Task[None] | None = None
    last: ProbeResult | None = None
    last_time_ms: int = 0
    streak: int = 0  # consecutive results equal to last.ok
    proposed: tuple[bool, float] | None = None  # (healthy, when) last proposed


class MemberChecker:
    def __init__(self, raft: RaftNode, concurrency: int = 64) -> None:
        self.raft = raft
        self.targets: dict[Key, Target] = {}
        self._sem = asyncio.Semaphore(concurrency)
        self._channels = GrpcChannels()
        self._task: asyncio.Task[None] | None = None
        self._seen_revision = -1
        self._term: int | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await tasks.cancel(self._task)
        self._stop_all()
        await self._channels.close()

    # -- which members to check ------------------------------------------------

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SYNC_S)  # a periodic duty, not synchronisation
            try:
                self._sync()
            except Exception:
                logger.exception("health checker sync failed; retrying")

    def _sync(self) -> None:
        view = self.raft.view
        if view.role != ROLE_LEADER:
            if self.targets:
                self._stop_all()
            self._term, self._seen_revision = None, -1
            return
        if self._term != view.term:  # a new term: count from the replicated state again
            self._stop_all()
            self._term, self._seen_revision = view.term, -1
        revision = self.raft.read(lambda s: s.revision)
        if revision == self._seen_revision:
            return
        self._seen_revision = revision
        wanted = self.raft.read(_checked_members)
        for key in list(self.targets):
            if key not in wanted:
                self._stop(key)
        for key, (check, address, healthy) in wanted.items():
            t = self.targets.get(key)
            if t is not None and (t.check != check or t.address != address):
                self._stop(key)
                t = None
            if t is None:
                t = Target(key, check, address, healthy)
                t.task = asyncio.get_running_loop().create_task(self._probe_loop(t))
                self.targets[key] = t
            else:
                t.healthy = healthy
        self._channels.retain(
            {
                (t.check.grpc.address or t.address, t.check.grpc.tls)
                for t in self.targets.values()
                if t.check.WhichOneof("kind") == "grpc"
            }
        )

    def _stop(self, key: Key) -> None:
        t = self.targets.pop(key)
        if t.task is not None:
            t.task.cancel()

    def _stop_all(self) -> None:
        for key in list(self.targets):
            self._stop(key)

    # -- probing ---------------------------------------------------------------

    async def _probe_loop(self, t: Target) -> None:
        interval = t.check.interval_ms / 1000
        # Spread the first probes over one interval: 1,000 members registered at once
        # must not all be probed in the same millisecond.
        await asyncio.sleep(interval * (hash(t.key) % 1000) / 1000)
        next_at = time.monotonic()
        while True:
            async with self._sem:
                result = await probe(t.check, t.address, self._channels)
            self._record(t, result)
            next_at += interval
            now = time.monotonic()
            if next_at < now:  # fell behind (overload): skip, don't burst
                next_at = now + interval
            await asyncio.sleep(next_at - now)

    def _record(self, t: Target, result: ProbeResult) -> None:
        t.streak = t.streak + 1 if t.last is not None and t.last.ok == result.ok else 1
        t.last, t.last_time_ms = result, int(time.time() * 1000)
        want: bool | None = None
        if t.healthy and not result.ok and t.streak >= t.check.fall:
            want = False
        elif not t.healthy and result.ok and t.streak >= t.check.rise:
            want = True
        if want is None:
            return
        now = time.monotonic()
        if t.proposed is not None and t.proposed[0] == want and now - t.proposed[1] < RETRY_S:
            return
        t.proposed = (want, now)
        group, member_id, registered = t.key
        verdict = "healthy" if want else "unhealthy"
        logger.info(
            "member %s/%s is %s after %d checks: %s", group, member_id, verdict, t.streak,
            result.detail,
        )  # fmt: skip
        self.raft.propose(
            raft_pb2.Command(
                term=self.raft.view.term,
                set_health=groups_pb2.SetHealth(
                    group=group, member_id=member_id, registered_revision=registered,
                    healthy=want, detail=f"{result.detail} ({t.streak} in a row)",
                ),
            )
        )  # fmt: skip


def _checked_members(
    s: StateMachine,
) -> dict[Key, tuple[groups_pb2.HealthCheck, str, bool]]:
    return {
        (g.name, m.id, m.registered_revision): (m.check, m.address, m.healthy)
        for g in s.groups.groups.values()
        for m in g.members.values()
        if m.HasField("check")
    }
