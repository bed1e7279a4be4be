"""Leader duties for sessions and group timers (DESIGN.md, the safety argument).

Runs on every node's asyncio loop and acts only while the node leads:

- Deadlines live here, in memory, on the leader's monotonic clock: a session's
  deadline is ``arrival of its last keepalive + TTL``. They are never in the log.
- A node that becomes leader (or notices it stalled for longer than
  ``STALL_S``: a GC pause, SIGSTOP) restarts every deadline at ``now + TTL``:
  a slow leader must never mass-expire sessions (etcd#15247). The cost: a
  session may outlive its TTL across leader changes, never the reverse.
- A session past its deadline is expired by proposing ``ExpireSession`` with
  the epoch the deadline was computed for.
- When the state's earliest group timer (revocation wait-out, handover
  deadline, failback hold) is due, the leader proposes ``Advance``.

Keepalive acknowledgements are the servicer's job (election_service.py): it
records the arrival here, waits for a commit proposed after it, and answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from coord.raft.node import ROLE_LEADER, RaftNode
from coord.v1 import groups_pb2, raft_pb2

logger = logging.getLogger(__name__)

PERIOD_S = 0.02  # how often the duty loop looks at deadlines and timers
STALL_S = 1.0  # a loop iteration this late means the leader stalled: rearm, don't expire
RETRY_S = 0.5  # re-propose an expiry or Advance that has not taken effect after this


class LeaseKeeper:
    def __init__(self, raft: RaftNode) -> None:
        self.raft = raft
        # session id -> (monotonic deadline, epoch the deadline belongs to)
        self.deadlines: dict[str, tuple[float, int]] = {}
        self._term: int | None = None
        self._proposed: dict[str, float] = {}  # what was proposed, when (monotonic)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def leading(self) -> bool:
        view = self.raft.view
        return view.role == ROLE_LEADER and view.term == self._term

    def touch(self, session_id: str, arrival: float) -> bool:
        """A keepalive arrived: deadline = arrival + TTL. False if the session is gone."""
        session = self.raft.read(lambda s: s.groups.sessions.get(session_id))
        if session is None:
            self.deadlines.pop(session_id, None)
            return False
        self.deadlines[session_id] = (arrival + session.ttl_ms / 1000, session.epoch)
        return True

    # -- the duty loop ---------------------------------------------------------

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(PERIOD_S)  # a periodic duty, not synchronisation
            now = time.monotonic()
            stalled, last = now - last > STALL_S, now
            try:
                self._duty(now, stalled)
            except Exception:
                logger.exception("lease duty failed; retrying")

    def _duty(self, now: float, stalled: bool) -> None:
        view = self.raft.view
        if view.role != ROLE_LEADER:
            self._term = None
            self.deadlines.clear()
            self._proposed.clear()
            return
        if self._term != view.term or stalled:
            if stalled and self._term == view.term:
                logger.warning("lease duties stalled: restarting every session deadline")
            self._term = view.term
            self._rearm(now, everything=True)
            return
        self._rearm(now, everything=False)
        self._expire_due(now)
        self._advance_if_due(now)

    def _rearm(self, now: float, everything: bool) -> None:
        """Deadlines for sessions the state holds (all of them, or only new ones)."""
        sessions = self.raft.read(
            lambda s: [(x.id, x.ttl_ms, x.epoch) for x in s.groups.sessions.values()]
        )
        live = set()
        for sid, ttl_ms, epoch in sessions:
            live.add(sid)
            known = self.deadlines.get(sid)
            if everything or known is None or known[1] != epoch:
                self.deadlines[sid] = (now + ttl_ms / 1000, epoch)
        for sid in list(self.deadlines):
            if sid not in live:
                del self.deadlines[sid]
                self._proposed.pop(sid, None)

    def _expire_due(self, now: float) -> None:
        for sid, (deadline, epoch) in list(self.deadlines.items()):
            if deadline > now or now - self._proposed.get(sid, -RETRY_S) < RETRY_S:
                continue
            self._proposed[sid] = now
            logger.info("session %s expired (no keepalive for its TTL)", sid)
            self.raft.propose(
                raft_pb2.Command(
                    term=self.raft.view.term,
                    expire_session=groups_pb2.ExpireSession(session_id=sid, epoch=epoch),
                )
            )

    def _advance_if_due(self, now: float) -> None:
        due = self.raft.read(lambda s: s.groups.next_timer_ms())
        if due is None or time.time() * 1000 < due:
            return
        if now - self._proposed.get("\0advance", -RETRY_S) < RETRY_S:
            return
        self._proposed["\0advance"] = now
        self.raft.propose(raft_pb2.Command(term=self.raft.view.term, advance=groups_pb2.Advance()))
