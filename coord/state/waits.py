"""Waits that gate a grant, and how the leader times them.

The state holds what is pending (a revoked holder's wait-out, a handover's
timeout, a failback hold, a pause's time limit) but never decides *when* it is
over: that needs a clock, and the state machine has none. The leader times each
pending wait on its own monotonic clock, from when it first saw the wait (it
applied the command that started it, or it took over), and proposes ``Advance``
naming the waits that are over; the state machine then acts on each one still pending as named
(``Groups.end_waits``). So no wall clock, and no step of any clock, can shorten a
wait (docs/design.md, the safety argument, point 7), and a new leader restarts every
wait from its takeover.

:class:`WaitTimer` is that timing, pure: it is given the time. The server's duty
(``coord.server.duties.group_waits``) feeds it ``time.monotonic()``; unit tests feed it a
fake clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from coord.v1 import groups_pb2

RELEASE = "release"  # a revoked holding: released once its holder's TTL has passed
HANDOVER = "handover"  # a step-down request: the holder is revoked at its timeout
FAILBACK = "failback"  # a candidate that outranks a holder: failback after the hold
PAUSE = "pause"  # a paused group (pause --until): resumed after the wait

# Float seconds carry rounding errors far below this (1 ns): a wait is never over early
# by more.
_ROUNDING_MS = 1e-6

# (kind, group, slot, member, since): hashable, and one-to-one with WaitKey.
Key = tuple[str, str, int, str, int]


@dataclass(frozen=True)
class Wait:
    key: Key
    duration_ms: int


_KIND_ORDER = {RELEASE: 0, HANDOVER: 1, FAILBACK: 2, PAUSE: 3}


def order(key: Key) -> tuple[str, int, int, str, int]:
    """How the state machine ends waits named together: by group, then kind."""
    kind, group, slot, member, since = key
    return (group, _KIND_ORDER.get(kind, 3), slot, member, since)


def to_proto(key: Key) -> groups_pb2.WaitKey:
    kind, group, slot, member, since = key
    return groups_pb2.WaitKey(kind=kind, group=group, slot=slot, member=member, since=since)


def from_proto(k: groups_pb2.WaitKey) -> Key:
    return (k.kind, k.group, k.slot, k.member, k.since)


class WaitTimer:
    """Times pending waits on one clock (seconds, monotonic): each from the moment
    it was first observed. Not thread-safe; one owner."""

    def __init__(self) -> None:
        self._started: dict[Key, float] = {}
        self._durations: dict[Key, int] = {}

    def restart(self) -> None:
        """Forget every start: the next ``observe`` times everything from then (a new
        leader's takeover, or a leader that stalled)."""
        self._started.clear()
        self._durations.clear()

    def observe(self, waits: Iterable[Wait], now_s: float) -> None:
        """The waits pending now: new ones start at ``now_s``; ones no longer pending
        are forgotten."""
        current = {w.key: w.duration_ms for w in waits}
        for key in list(self._started):
            if key not in current:
                del self._started[key]
        for key in current:
            self._started.setdefault(key, now_s)
        self._durations = current

    def due(self, now_s: float) -> list[Key]:
        """The observed waits that have lasted their duration by ``now_s`` (sorted)."""
        return sorted(
            key
            for key, start in self._started.items()
            if (now_s - start) * 1000 + _ROUNDING_MS >= self._durations[key]
        )

    def next_due_s(self) -> float | None:
        """When the earliest observed wait is over (None: nothing pending)."""
        ends = [start + self._durations[k] / 1000 for k, start in self._started.items()]
        return min(ends) if ends else None
