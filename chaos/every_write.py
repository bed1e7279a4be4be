"""A workload that makes every kind of write through the client library, one logical
call at a time, so that lost answers (chaos.lost_answers) make the library retry each
kind. Every logical write is logged (chaos.records.LoggedWrite) with how it ended;
chaos.applied_once counts its effects in the event log afterwards.

One iteration, on names no other iteration uses (``<writer>x<n>``, sessions
``<writer>x<n>-a`` and ``-b``, key ``every/<writer>x<n>``)::

    create group -> open sessions a, b -> register a, b -> a campaigns (elected)
    -> b campaigns (stays standby) -> a updates its weight and tags -> switchover to b
    -> a resigns -> put key -> delete key -> close a, b -> delete group

A call that fails ends the iteration: what it opened is closed and its group deleted
(best effort, logged like the rest), and the next iteration starts afresh.

The library has no call for a switchover or a group deletion: they are sent as
coordctl sends them (``Client.call``: the library's retries), with one request id per
logical call that every retry reuses, as a request id is meant to be used.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from chaos.records import LoggedWrite, RunRecord
from chaos.worker import Worker
from coord import errors
from coord.client import Client, Session
from coord.v1 import election_pb2, election_pb2_grpc

T = TypeVar("T")

# Long enough that no handover of an iteration's group times out while it runs: a
# revoke by the timer would release the slot itself, and a's resign would then be
# refused for a reason that has nothing to do with retries.
SWITCHOVER_TIMEOUT_MS = 60_000
STANDBY_CAMPAIGN_S = 0.5  # b's campaign is applied, then its wait for a slot times out


class EveryWriter(Worker):
    def __init__(
        self, record: RunRecord, endpoints: Sequence[str], name: str, ttl_s: float
    ) -> None:
        super().__init__(name)
        self.record, self.endpoints, self.ttl_s = record, list(endpoints), ttl_s

    def run(self) -> None:
        client = Client(self.endpoints, timeout_s=10.0, attempt_timeout_s=0.5)
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                self._iteration(client, f"{self.name}x{n}")
        finally:
            client.close()

    def _log(self, kind: str, subject: str, call: Callable[[], T]) -> T:
        """Run one logical write and log how it ended (the error is re-raised)."""
        w = LoggedWrite(kind, subject, time.monotonic())
        self.record.writes.append(w)
        try:
            result = call()
        except errors.CoordError as e:
            w.end = time.monotonic()
            w.outcome = "unknown" if e.retryable else type(e).__name__
            raise
        w.end = time.monotonic()
        w.outcome = "ok"
        self.ops += 1
        return result

    def _open(self, client: Client, name: str) -> Session:
        return self._log(
            "open_session", name, lambda: client.session(self.ttl_s, name=name).start()
        )

    def _iteration(self, client: Client, tag: str) -> None:
        sessions: list[Session] = []
        created = False
        try:
            self._log(
                "create_group", tag,
                lambda: client.group(tag).create(slots=1,
                                                 switchover_timeout_ms=SWITCHOVER_TIMEOUT_MS),
            )  # fmt: skip
            created = True
            for side in ("a", "b"):
                name = f"{tag}-{side}"
                sessions.append(self._open(client, name))
            a = self._log(
                "register",
                f"{tag}/a",
                lambda: client.group(tag).member("a", sessions[0], priority=2).start(),
            )
            b = self._log(
                "register",
                f"{tag}/b",
                lambda: client.group(tag).member("b", sessions[1], priority=1).start(),
            )
            self._log("campaign", f"{tag}/a", lambda: a.campaign(timeout_s=10.0))
            with contextlib.suppress(errors.DeadlineExceeded):  # b stays standby
                self._log("campaign", f"{tag}/b", lambda: b.campaign(STANDBY_CAMPAIGN_S))
            self._log("update", f"{tag}/a", lambda: a.update(weight=3, tags={"it": tag}))
            self._log("switchover", tag, lambda: _groups_write(client, "Switchover", tag))
            self._log("resign", f"{tag}/a", a.resign)
            key = f"every/{tag}"
            self._log("put", key, lambda: client.put(key, tag))
            self._log("delete", key, lambda: client.delete(key))
        except errors.CoordError:
            pass  # logged; the iteration ends here
        finally:
            for session in sessions:
                with contextlib.suppress(errors.CoordError):
                    self._log("close_session", session.id, session.close)
            if created:
                with contextlib.suppress(errors.CoordError):
                    self._log("delete_group", tag, lambda: _groups_write(client, "Delete", tag))


def _groups_write(client: Client, method: str, group: str) -> Any:
    """A Groups write the library has no call for, as coordctl sends it, with a request
    id for all its retries."""
    rid = uuid.uuid4().hex
    if method == "Switchover":
        req: Any = election_pb2.SwitchoverRequest(group=group, to_member="b", request_id=rid)
    else:
        req = election_pb2.DeleteGroupRequest(name=group, request_id=rid)
    return client.call(
        lambda ch, t: getattr(election_pb2_grpc.GroupsStub(ch), method)(req, timeout=t)
    )
