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
    """The events, and beside each its serialization: computed once when it is appended
    (it is also its size, for the byte bound), so a snapshot or a state hash frames the
    stored bytes instead of serializing ~10,000 messages again (the bytes cost less
    memory than the message objects beside them). An event is never changed once
    appended: what ``since``, ``last`` and ``items`` give is read-only."""

    def __init__(self) -> None:
        self._events: deque[groups_pb2.Event] = deque()
        self._encoded: deque[bytes] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._events)

    def append(self, event: groups_pb2.Event) -> None:
        if self._events and event.revision != self._events[-1].revision + 1:
            raise AssertionError(
                f"event revision {event.revision} after {self._events[-1].revision}: not gap-free"
            )
        raw = event.SerializeToString(deterministic=True)  # len(raw) == ByteSize()
        self._events.append(event)
        self._encoded.append(raw)
        self._bytes += len(raw)
        while len(self._events) > limits.EVENT_LOG_ENTRIES or (
            self._bytes > limits.EVENT_LOG_BYTES and len(self._events) > 1
        ):
            self._events.popleft()
            self._bytes -= len(self._encoded.popleft())

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

    def encoded(self) -> list[bytes]:
        """Every event's serialization (deterministic), oldest first: a copy of the list,
        the bytes shared."""
        return list(self._encoded)

    def load(self, events: Iterable[groups_pb2.Event]) -> None:
        self._events = deque(events)
        self._encoded = deque(e.SerializeToString(deterministic=True) for e in self._events)
        self._bytes = sum(map(len, self._encoded))
