"""The leader fires scheduled switchovers when they are due (coord.state.scheduled).

A scheduled switchover's time is an operator's calendar time (``--at
2026-12-24T03:00Z``), so it is due by the leader's **wall clock** (``time.time()``),
unlike the waits that gate a grant (coord.server.duties.group_waits, on the
monotonic clock). Firing only *starts* an ordinary switchover: the old master is asked
to step down, and revoked and waited out on the monotonic clock if it does not answer,
exactly as for a switchover by hand. A wall clock that steps moves when it starts, never
how safely it runs.

The firing is the replicated command ``FireSwitchover`` with a request id naming the
entry (``coord:fire-switchover:<id>``): a proposal repeated after ``RETRY_S`` (or by the
next leader, which reads the same replicated schedule) is deduplicated, and the apply
removes the entry in the same step anyway. So a leader change neither loses a scheduled
switchover nor fires it twice. Driven by the lease duty loop (``LeaseKeeper``) every
``PERIOD_S`` (20 ms) while this node leads: a new leader fires what is due at its first
tick after taking over.
"""

from __future__ import annotations

import logging

from coord.raft.node import RaftNode
from coord.state.machine import StateMachine
from coord.state.scheduled import fire_request_id
from coord.v1 import groups_pb2, raft_pb2

logger = logging.getLogger(__name__)

RETRY_S = 0.5  # propose a firing again if the entry is still pending after this

Due = tuple[int, str, int]  # (at_ms, group, id)


class ScheduledSwitchoverDuty:
    def __init__(self, raft: RaftNode) -> None:
        self.raft = raft
        self._seen: object = None  # the state's waits_version last read
        self._pending: list[Due] = []  # sorted by time
        self._proposed: dict[int, float] = {}  # id -> when its firing was last proposed

    def restart(self) -> None:
        """Leadership changed or stalled: read the schedule again at the next tick."""
        self._seen = None
        self._pending = []
        self._proposed.clear()

    def tick(self, now_ms: int, now_s: float) -> None:
        """Fire every entry due by ``now_ms`` (wall clock); ``now_s`` (monotonic) paces
        the retries."""
        seen = self._seen

        def read(s: StateMachine) -> tuple[object, list[Due] | None]:
            version = s.groups.waits_version  # a new object after every group command
            if version is seen:
                return version, None
            return version, sorted(
                (e.at_ms, g.name, e.id)
                for g in s.groups.groups.values()
                for e in g.scheduled.values()
            )

        version, pending = self.raft.read(read)
        if pending is not None:
            self._seen, self._pending = version, pending
            live = {i for _, _, i in pending}
            self._proposed = {i: t for i, t in self._proposed.items() if i in live}
        for at_ms, group, entry_id in self._pending:
            if at_ms > now_ms:
                break
            if now_s - self._proposed.get(entry_id, -RETRY_S) < RETRY_S:
                continue
            self._proposed[entry_id] = now_s
            logger.info("scheduled switchover %d of group %s is due: firing it", entry_id, group)
            self.raft.propose(
                raft_pb2.Command(
                    request_id=fire_request_id(entry_id),
                    term=self.raft.view.term,
                    fire_switchover=groups_pb2.FireSwitchover(group=group, id=entry_id),
                )
            )
