"""Leader duties for sessions and group timers (docs/design.md, the safety argument).

Runs on every node's asyncio loop and acts only while the node leads:

- Deadlines live here, in memory, on the leader's monotonic clock: a session's
  deadline is ``arrival of its last keepalive + TTL``. They are never in the log.
- A node that becomes leader (or notices it stalled for longer than
  ``STALL_S``: a GC pause, SIGSTOP) restarts every deadline at ``now + TTL``:
  a slow leader must never mass-expire sessions (etcd#15247). The cost: a
  session may outlive its TTL across leader changes, never the reverse.
- A session past its deadline is expired by proposing ``ExpireSession`` with
  the epoch the deadline was computed for.
- The group waits (revocation wait-out, handover timeout, failback hold) are
  timed by :class:`GroupWaits` on the same clock, restarted with the deadlines.
- Scheduled switchovers are fired by :class:`ScheduledSwitchoverDuty` when the wall
  clock reaches their (calendar) time.

Keepalive acknowledgements are the servicer's job (coord.server.api.sessions): it
records the arrival here, waits for a read barrier begun after it (``ack_barrier``:
one shared barrier per ``ACK_WINDOW_S`` at most, so the Raft cost of keepalives does
not grow with their number; coord.raft.read_index), and answers.

Costs are per event, not per session per tick: deadlines sit in a heap (a
keepalive pushes, the duty loop pops what is due), and the session table is
re-read only when sessions were opened or closed.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time

from coord.raft.node import ROLE_LEADER, RaftNode
from coord.server.duties.group_waits import GroupWaits
from coord.server.duties.schedules import ScheduledSwitchoverDuty
from coord.server.runtime import tasks
from coord.v1 import groups_pb2, raft_pb2

logger = logging.getLogger(__name__)

PERIOD_S = 0.02  # how often the duty loop looks at deadlines and timers
STALL_S = 1.0  # a loop iteration this late means the leader stalled: rearm, don't expire
RETRY_S = 0.5  # re-propose an expiry or Advance that has not taken effect after this
# Keepalive barriers start at most this often: 20 a second at most, however many
# sessions. A no-op barrier costs the leader ~1.4 ms of CPU (an fsync on every node,
# AppendEntries and replies, an apply); at 10 ms, 1,000 sessions cost 0.24-0.30 core, at
# 50 ms 0.15-0.17 (bench/README.md, keepalive capacity; a leader's barriers are now
# heartbeat rounds, coord.raft.read_index, cheaper still). The wait costs a client
# nothing: its validity counts from the keepalive's send, and it sends every TTL/3.
ACK_WINDOW_S = 0.05
LOAD_PERIOD_S = 0.25  # reported loads are replicated (one SetLoads) at most this often


def _fail(fut: asyncio.Future[None], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class LeaseKeeper:
    def __init__(self, raft: RaftNode) -> None:
        self.raft = raft
        # session id -> (monotonic deadline, epoch the deadline belongs to)
        self.deadlines: dict[str, tuple[float, int]] = {}
        # (deadline, session id), possibly stale: an entry counts only if its session's
        # deadline has passed when it is popped (a keepalive pushes a later one).
        self._heap: list[tuple[float, str]] = []
        self._term: int | None = None
        self._proposed: dict[str, float] = {}  # what was proposed, when (monotonic)
        self._sessions_seen: object = None  # the state's session-table version last rearmed
        self._task: asyncio.Task[None] | None = None
        self._ack_next: asyncio.Future[None] | None = None  # the batch still gathering
        self._ack_last = 0.0  # when the last keepalive barrier was started (monotonic)
        self._loads: dict[str, float] = {}  # reported loads not yet replicated
        self._loads_sent = 0.0
        self.waits = GroupWaits(raft)
        self.schedules = ScheduledSwitchoverDuty(raft)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await tasks.cancel(self._task)

    @property
    def leading(self) -> bool:
        return self.leading_term is not None

    @property
    def leading_term(self) -> int | None:
        """The term this node leads in, once its duties there started; else None."""
        view = self.raft.view
        return view.term if view.role == ROLE_LEADER and view.term == self._term else None

    def touch(self, session_id: str, arrival: float, load: float | None = None) -> bool:
        """A keepalive arrived: deadline = arrival + TTL. False if the session is gone.

        ``load`` (if given) is what the session reports for least-load balancing; a
        change is replicated within ``LOAD_PERIOD_S`` (batched with other sessions').
        """
        session = self.raft.read(lambda s: s.groups.sessions.get(session_id))
        if session is None:
            self.deadlines.pop(session_id, None)
            return False
        if load is not None and load != session.load:
            self._loads[session_id] = load
        elif load is not None:
            self._loads.pop(session_id, None)
        deadline = arrival + session.ttl_ms / 1000
        known = self.deadlines.get(session_id)
        if known is not None and known[1] == session.epoch and known[0] > deadline:
            return True  # a later keepalive already set a later deadline: never lower it
        self.deadlines[session_id] = (deadline, session.epoch)
        heapq.heappush(self._heap, (deadline, session_id))
        return True

    async def ack_barrier(self, timeout: float) -> None:
        """Wait for a read barrier begun after this call (``RaftNode.barrier``: a round
        of heartbeats confirmed by a majority, or a no-op commit) to hold here.

        Callers within ``ACK_WINDOW_S`` of the last barrier start share the next one,
        started at the end of the window: keepalives cost at most 1/ACK_WINDOW_S
        barriers a second, however many sessions there are. An idle keepalive waits no
        window. Raises TimeoutError after ``timeout``.
        """
        loop = asyncio.get_running_loop()
        if self._ack_next is None:
            self._ack_next = batch = loop.create_future()
            # One timer per batch, not one wait_for (a task) per keepalive.
            loop.call_later(timeout, _fail, batch, TimeoutError())
            delay = self._ack_last + ACK_WINDOW_S - time.monotonic()
            if delay > 0:
                loop.call_later(delay, self._start_ack, batch)
            else:
                self._start_ack(batch)
        else:
            batch = self._ack_next
        await asyncio.shield(batch)  # a cancelled stream must not cancel the batch

    def _start_ack(self, batch: asyncio.Future[None]) -> None:
        if self._ack_next is batch:
            self._ack_next = None
        self._ack_last = time.monotonic()
        barrier = asyncio.wrap_future(self.raft.barrier())

        def done(f: asyncio.Future[None]) -> None:
            if batch.done():
                return
            exc = None if f.cancelled() else f.exception()
            if exc is not None:
                batch.set_exception(exc)
            else:
                batch.set_result(None)

        barrier.add_done_callback(done)
        # A batch nobody awaits any more must not log "exception never retrieved".
        batch.add_done_callback(lambda b: b.cancelled() or b.exception())

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
            self._heap.clear()
            self._proposed.clear()
            self._loads.clear()
            self._sessions_seen = None
            self.waits.restart()
            self.schedules.restart()
            return
        if self._term != view.term or stalled:
            if stalled and self._term == view.term:
                logger.warning("lease duties stalled: restarting every session deadline")
            self._term = view.term
            self._rearm(now, everything=True)
            self.waits.restart()
            self.schedules.restart()
            return
        self._rearm(now, everything=False)
        self._expire_due(now)
        self.waits.tick(now)
        self.schedules.tick(int(time.time() * 1000), now)  # calendar times: the wall clock
        self._replicate_loads(now)

    def _replicate_loads(self, now: float) -> None:
        if not self._loads or now - self._loads_sent < LOAD_PERIOD_S:
            return
        self._loads_sent = now
        loads = [groups_pb2.SessionLoad(session_id=k, load=v) for k, v in self._loads.items()]
        self._loads.clear()  # a lost proposal is made good by the next keepalive
        self.raft.propose(
            raft_pb2.Command(term=self.raft.view.term, set_loads=groups_pb2.SetLoads(loads=loads))
        )

    def _rearm(self, now: float, everything: bool) -> None:
        """Deadlines for sessions the state holds (all of them, or only new ones, and
        only if sessions were opened or closed since the last look)."""
        version = self.raft.read(lambda s: s.groups.sessions_version)
        if not everything and version == self._sessions_seen:
            return
        sessions = self.raft.read(
            lambda s: [(x.id, x.ttl_ms, x.epoch) for x in s.groups.sessions.values()]
        )
        self._sessions_seen = version
        if everything:
            self.deadlines.clear()
            self._heap.clear()
        live = set()
        for sid, ttl_ms, epoch in sessions:
            live.add(sid)
            known = self.deadlines.get(sid)
            if known is None or known[1] != epoch:
                deadline = now + ttl_ms / 1000
                self.deadlines[sid] = (deadline, epoch)
                heapq.heappush(self._heap, (deadline, sid))
        for sid in list(self.deadlines):
            if sid not in live:
                del self.deadlines[sid]
                self._proposed.pop(sid, None)
        if len(self._heap) > 4 * len(self.deadlines) + 1024:  # mostly stale: rebuild
            self._heap = [(d, sid) for sid, (d, _) in self.deadlines.items()]
            heapq.heapify(self._heap)

    def _expire_due(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, sid = heapq.heappop(heap)
            known = self.deadlines.get(sid)
            if known is None or known[0] > now:
                continue  # closed, or kept alive since: a later entry is in the heap
            epoch = known[1]
            last = self._proposed.get(sid)
            if last is not None and now - last < RETRY_S:
                heapq.heappush(heap, (last + RETRY_S, sid))  # look again when a retry is due
                continue
            self._proposed[sid] = now
            heapq.heappush(heap, (now + RETRY_S, sid))
            logger.info("session %s expired (no keepalive for its TTL)", sid)
            self.raft.propose(
                raft_pb2.Command(
                    term=self.raft.view.term,
                    expire_session=groups_pb2.ExpireSession(session_id=sid, epoch=epoch),
                )
            )
