"""Watch servicer: the event history from a revision, filtered by group, type and key
prefix."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from coord import errors
from coord.server.api.context import ServicerContext
from coord.server.api.state_servicer import IDLE_WAKE_S, StateServicer, copy_message
from coord.state import limits
from coord.state.machine import StateMachine
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2


class WatchService(StateServicer, election_pb2_grpc.WatchServicer):
    async def Watch(
        self, request: election_pb2.WatchRequest, context: ServicerContext
    ) -> AsyncIterator[election_pb2.WatchResponse]:
        if request.from_revision < 0:
            raise errors.InvalidArgument("from_revision must be >= 0")
        if len(request.key_prefix) > limits.MAX_KEY_BYTES:
            raise errors.InvalidArgument(
                f"key_prefix is {len(request.key_prefix)} bytes, the limit is "
                f"{limits.MAX_KEY_BYTES} (a key's): use a shorter prefix"
            )
        groups, types, prefix = set(request.groups), set(request.types), request.key_prefix
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
                    kept
                    for e in events
                    if (not groups or e.group in groups) and (not types or e.type in types)
                    if (kept := _under(e, prefix)) is not None
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


def _under(e: groups_pb2.Event, prefix: bytes) -> groups_pb2.Event | None:
    """A copy of ``e`` to send: without a prefix, the whole event; with one, a key-value
    event that touches a key under it, trimmed to those keys (None: it touches none)."""
    if not prefix:
        return copy_message(e)  # type: ignore[no-any-return]
    kvs = [kv for kv in e.kvs if kv.key.startswith(prefix)]
    deleted = [k for k in e.deleted_keys if k.startswith(prefix)]
    if not kvs and not deleted:
        return None
    out: groups_pb2.Event = copy_message(e)
    if len(kvs) != len(e.kvs) or len(deleted) != len(e.deleted_keys):
        del out.kvs[:]
        out.kvs.extend(kvs)
        out.deleted_keys[:] = deleted
    return out


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
