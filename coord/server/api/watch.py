"""Watch servicer: the event history from a revision, filtered by group and type."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from coord import errors
from coord.server.api.context import ServicerContext
from coord.server.api.state_servicer import IDLE_WAKE_S, StateServicer, copy_message
from coord.state.machine import StateMachine
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2


class WatchService(StateServicer, election_pb2_grpc.WatchServicer):
    async def Watch(
        self, request: election_pb2.WatchRequest, context: ServicerContext
    ) -> AsyncIterator[election_pb2.WatchResponse]:
        if request.from_revision < 0:
            raise errors.InvalidArgument("from_revision must be >= 0")
        groups, types = set(request.groups), set(request.types)
        raft = self.ctx.raft
        following = request.from_revision or raft.read(lambda s: s.revision) + 1
        last_sent = time.monotonic()
        generation = self.notifier.generation
        while True:

            def tail(s: StateMachine, start: int = following) -> tuple[list[Any], int]:
                return s.events.since(start, s.revision), s.revision

            events, current = raft.read(tail)
            if events:
                following = events[-1].revision + 1
                picked = [
                    copy_message(e)
                    for e in events
                    if (not groups or e.group in groups) and (not types or e.type in types)
                ]
                batches = _batches(picked)
                for i, batch in enumerate(batches):
                    # The header's revision promises "filtered up to here": only the last
                    # batch may claim the whole read (a client resumes after it).
                    upto = current if i == len(batches) - 1 else batch[-1].revision
                    last_sent = time.monotonic()
                    yield election_pb2.WatchResponse(
                        header=self.ctx.header(revision=upto, serializable=True), events=batch
                    )
            if time.monotonic() - last_sent >= IDLE_WAKE_S:
                # Progress notification (as etcd's): a stream whose filter matched
                # nothing lately still hears from this node, and learns how far it
                # has been filtered; a client notices a hung node by the silence.
                last_sent = time.monotonic()
                yield election_pb2.WatchResponse(
                    header=self.ctx.header(revision=following - 1, serializable=True)
                )
            generation = await self.notifier.wait_beyond(generation, IDLE_WAKE_S)


WATCH_BATCH_BYTES = 2 * 1024 * 1024  # a response stays well under the 4 MiB message limit


def _batches(events: list[groups_pb2.Event]) -> list[list[groups_pb2.Event]]:
    """Split events into responses of at most WATCH_BATCH_BYTES (at least one event each)."""
    out: list[list[groups_pb2.Event]] = []
    size = 0
    for e in events:
        n = e.ByteSize()
        if not out or size + n > WATCH_BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(e)
        size += n
    return out
