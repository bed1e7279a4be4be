"""The bounded event log: one event per revision, in revision order.

Every state change appends exactly one event carrying what changed, so the
events (R, R2] replayed on the state at R give the state at R2 (differential
backups, watch resume). The log keeps the last ``EVENT_LOG_ENTRIES`` events
and at most ``EVENT_LOG_BYTES`` of them; both are constants so that every
replica keeps the same events.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable

from coord.errors import OutOfRange
from coord.state import limits
from coord.v1 import groups_pb2


class EventLog:
    def __init__(self) -> None:
        self._events: deque[groups_pb2.Event] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._events)

    def append(self, event: groups_pb2.Event) -> None:
        if self._events and event.revision != self._events[-1].revision + 1:
            raise AssertionError(
                f"event revision {event.revision} after {self._events[-1].revision}: not gap-free"
            )
        self._events.append(event)
        self._bytes += event.ByteSize()
        while len(self._events) > limits.EVENT_LOG_ENTRIES or (
            self._bytes > limits.EVENT_LOG_BYTES and len(self._events) > 1
        ):
            self._bytes -= self._events.popleft().ByteSize()

    @property
    def oldest_revision(self) -> int:
        """The revision of the oldest kept event (0 when empty)."""
        return self._events[0].revision if self._events else 0

    def since(self, from_revision: int, current_revision: int) -> list[groups_pb2.Event]:
        """Events with revision >= ``from_revision`` (>= 1); OutOfRange if some were dropped."""
        if from_revision > current_revision:
            return []
        oldest = self.oldest_revision
        if not self._events or from_revision < oldest:
            raise OutOfRange(
                f"revision {from_revision} was compacted (oldest kept: {oldest}, current: "
                f"{current_revision}): re-read the state, then watch from {current_revision + 1}"
            )
        return list(self._events)[from_revision - oldest :]

    def last(self, n: int) -> list[groups_pb2.Event]:
        """The newest ``n`` events, oldest first (without copying the whole log)."""
        out = list(itertools.islice(reversed(self._events), n))
        out.reverse()
        return out

    def items(self) -> Iterable[groups_pb2.Event]:
        return iter(self._events)

    def load(self, events: Iterable[groups_pb2.Event]) -> None:
        self._events = deque(events)
        self._bytes = sum(e.ByteSize() for e in self._events)
