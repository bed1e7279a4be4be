"""The leader's clock for the waits that gate a grant (coord.state.waits).

A revoked holder's wait-out, a handover's timeout and a failback hold are timed
here, on this node's monotonic clock, only while it leads: each from the moment
the leader first sees it in its applied state (it applied the command that
started it, or it took over). When one is over the leader proposes ``Advance``
naming it, and the state machine acts if it is still pending. The owner (the lease
duty loop) calls :meth:`restart` whenever leadership changes or the loop stalled,
so a new leader never counts time it did not see.
"""

from __future__ import annotations

from coord.raft.node import RaftNode
from coord.state import waits
from coord.state.machine import StateMachine
from coord.v1 import groups_pb2, raft_pb2

RETRY_S = 0.5  # propose an Advance again if the wait is still pending after this


class GroupWaits:
    def __init__(self, raft: RaftNode) -> None:
        self.raft = raft
        self._timer = waits.WaitTimer()
        self._seen: object = None  # the state's waits_version last observed
        self._proposed: dict[waits.Key, float] = {}  # when each end was last proposed

    def restart(self) -> None:
        """Leadership changed or stalled: time every pending wait from the next tick."""
        self._timer.restart()
        self._seen = None
        self._proposed.clear()

    def tick(self, now: float) -> None:
        """Observe the pending waits (if they changed) and end those that are over."""
        seen = self._seen

        def read(s: StateMachine) -> tuple[object, list[waits.Wait] | None]:
            version = s.groups.waits_version
            return version, (None if version is seen else s.groups.pending_waits())

        version, pending = self.raft.read(read)
        if pending is not None:
            self._seen = version
            self._timer.observe(pending, now)
            live = {w.key for w in pending}
            self._proposed = {k: t for k, t in self._proposed.items() if k in live}
        over = [k for k in self._timer.due(now) if now - self._proposed.get(k, -RETRY_S) >= RETRY_S]
        if not over:
            return
        for key in over:
            self._proposed[key] = now
        advance = groups_pb2.Advance(over=[waits.to_proto(k) for k in over])
        self.raft.propose(raft_pb2.Command(term=self.raft.view.term, advance=advance))
