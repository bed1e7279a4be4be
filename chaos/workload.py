"""The workload that runs during faults, on threads of the test process.

- :class:`Campaigner`: a member of a group (its own Session + Member), campaigning
  again whenever it is not master, recording every span its own library said it
  was master (Tenure) with its token.
- :class:`AckWriter`: puts write-once keys; records the acknowledged ones.
- :class:`RegisterClient`: reads, writes and compare-and-sets a few keys, recording
  a history for the linearizability checker (values are unique, so a CAS on the
  mod revision read is a CAS on the value read).
- :class:`EventWatcher`: an unfiltered watch with the library's automatic resume;
  records every revision received (and, if asked, a note of every event).
- :class:`SessionLoad`: many sessions (the library's Session, one per lease) kept alive
  in a process of their own (chaos.session_load), recording any reported LOST.

Every client talks to the proxied endpoints (chaos.cluster), with short timeouts:
an operation that times out is recorded as "info" (outcome unknown).
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from chaos.linearizability import History
from chaos.records import EventNote, RunRecord, SessionLoss, Tenure, WatchLog
from chaos.session_load import why_lost
from chaos.worker import Worker
from coord import errors
from coord.client import Client, Session, SessionState, StoppableClient
from coord.v1 import groups_pb2

POLL_S = 0.002  # how often a master asks its library whether it still is
ROOT = Path(__file__).resolve().parent.parent


def loss_recorder(record: RunRecord, name: str) -> Callable[[Session, SessionState], None]:
    """A Session state callback that records the session's loss (LOST) in ``record``:
    the cluster said it expired (its validity here had not ended), or no keepalive was
    acknowledged within its TTL."""

    def on_state(session: Session, state: SessionState) -> None:
        if state is SessionState.LOST:
            record.session_losses.append(SessionLoss(name, time.monotonic(), why_lost(session)))

    return on_state


class Campaigner(Worker):
    def __init__(
        self,
        record: RunRecord,
        endpoints: Sequence[str],
        group: str,
        member_id: str,
        priority: int,
        ttl_s: float,
        links: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{group}/{member_id}")
        self.links = links or {}
        self.record, self.endpoints = record, list(endpoints)
        self.group, self.member_id, self.priority, self.ttl_s = group, member_id, priority, ttl_s
        self._lock = threading.Lock()
        self.tenures: list[Tenure] = []

    def run(self) -> None:
        client: Client = Client(self.endpoints, timeout_s=3.0, attempt_timeout_s=0.5)
        if self.links:  # through its own proxies: the nemesis may cut this client alone
            client = LinkedClient(self.links, timeout_s=3.0, attempt_timeout_s=0.5)
        try:
            while not self.stop.is_set():
                try:
                    self._one_session(client)
                except errors.CoordError:
                    self.stop.wait(0.05)  # unavailable (a fault in progress): again soon
        finally:
            client.close()

    def _one_session(self, client: Client) -> None:
        session = client.session(
            ttl_s=self.ttl_s, name=self.name, on_state=loss_recorder(self.record, self.name)
        ).start()
        try:
            member = (
                client.group(self.group)
                .member(self.member_id, session, priority=self.priority)
                .start()
            )
            while not self.stop.is_set() and session.is_valid():
                try:
                    lead = member.campaign(timeout_s=1.0)
                except errors.DeadlineExceeded:
                    continue
                now = time.monotonic()
                tenure = Tenure(self.name, self.group, lead.slot, lead.token, now)
                with self._lock:
                    self.record.tenures.append(tenure)
                self.ops += 1
                while lead.is_master() and not self.stop.is_set():
                    time.sleep(POLL_S)  # sampling the library's belief, not synchronising
                tenure.end = time.monotonic()
                if self.stop.is_set():
                    return
        finally:
            with contextlib.suppress(errors.CoordError):
                session.close()


class AckWriter(Worker):
    def __init__(self, record: RunRecord, endpoints: Sequence[str], name: str) -> None:
        super().__init__(name)
        self.record, self.endpoints = record, list(endpoints)

    def run(self) -> None:
        client = Client(self.endpoints, timeout_s=2.0, attempt_timeout_s=0.5)
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                key = f"ack/{self.name}/{n // 1000:04d}/{n:07d}"  # buckets of 1,000
                try:
                    client.put(key, b"x")
                except errors.CoordError:
                    continue  # not acknowledged: it may or may not be there; not checked
                self.record.acked.append(key)
                self.ops += 1
        finally:
            client.close()


# A register client's Client: ops bounded to 1.5 s, 0.5 s per attempt.
REGISTER_CLIENT_OPTIONS: dict[str, Any] = {"timeout_s": 1.5, "attempt_timeout_s": 0.5}


class SharedClient:
    """One Client used by ``users`` workers at once, so that their concurrent requests go
    over its KV.Pipeline streams; closed by the last worker to let go of it."""

    def __init__(self, endpoints: Sequence[str], users: int, **options: Any) -> None:
        self.client = Client(endpoints, **options)
        self._users = users
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            last = self._users == 0
        if last:
            self.client.close()


class RegisterClient(Worker):
    """Random read / write / cas on ``keys``; every value written is unique. With
    ``shared``, the worker uses that client (and others use it at the same time)."""

    def __init__(
        self,
        history: History,
        endpoints: Sequence[str],
        process: int,
        keys: Sequence[str],
        seed: int,
        shared: SharedClient | None = None,
    ) -> None:
        super().__init__(f"register-{process}")
        self.shared = shared
        self.history, self.endpoints, self.process = history, list(endpoints), process
        # The history's process id: a new one after every unknown outcome (the old
        # request may still be in flight, as a concurrent process).
        self.pid = process * 1_000_000
        self.keys = list(keys)
        self.rng = random.Random(seed)

    def run(self) -> None:
        if self.shared is not None:
            client = self.shared.client
        else:
            client = Client(self.endpoints, **REGISTER_CLIENT_OPTIONS)
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                key = self.rng.choice(self.keys)
                value = f"{self.process}-{n}".encode()
                kind = self.rng.choice(("read", "read", "write", "cas"))
                self._op(client, kind, key, value)
                self.ops += 1
        finally:
            if self.shared is not None:
                self.shared.release()
            else:
                client.close()

    def _op(self, client: Client, kind: str, key: str, value: bytes) -> None:
        h = self.history
        if kind == "read":
            handle = h.invoke(self.pid, "read", key)
            try:
                kv = client.get(key)
            except errors.CoordError:
                h.info(handle)
                self.pid += 1
                return
            h.ok(handle, kv.value if kv is not None else None)
            return
        if kind == "write":
            handle = h.invoke(self.pid, "write", key, value=value)
            self._finish(handle, lambda: client.put(key, value), lambda _r: None)
            return
        try:  # cas: read the current record first (not part of the CAS operation)
            current = client.get(key)
        except errors.CoordError:
            return
        expected = current.value if current is not None else None
        mod = current.mod_revision if current is not None else 0
        handle = h.invoke(self.pid, "cas", key, expected=expected, value=value)
        self._finish(
            handle,
            lambda: client.put(key, value, expected_mod_revision=mod),
            lambda r: bool(r.succeeded),
        )

    def _finish(self, handle: Any, call: Any, result: Any) -> None:
        try:
            resp = call()
        except (errors.InvalidArgument, errors.NotFound) as e:
            self.history.fail(handle)
            self.errors.append(f"{self.name}: refused: {e.message}")
            return
        except errors.CoordError:
            self.history.info(handle)  # timed out / unavailable: outcome unknown
            self.pid += 1
            return
        self.history.ok(handle, result(resp))


class EventWatcher(Worker):
    """``notes``: also keep a note of every event in ``record.events`` (for checkers
    that count what was applied)."""

    def __init__(
        self,
        record: RunRecord,
        endpoints: Sequence[str],
        name: str,
        from_revision: int,
        notes: bool = False,
    ) -> None:
        super().__init__(name)
        self.log = WatchLog(name, from_revision)
        record.watches.append(self.log)
        self.notes = record.events if notes else None
        self.endpoints = list(endpoints)
        self.client = StoppableClient(self.endpoints, timeout_s=5.0, attempt_timeout_s=1.0)

    def run(self) -> None:
        try:
            for e in self.client.watch(self.log.from_revision):
                self.log.revisions.append(e.revision)
                if self.notes is not None:
                    self.notes.append(note_of(e))
                self.ops += 1
        except errors.OutOfRange as e:
            self.log.error = f"compacted: {e.message}"
        except errors.CoordError as e:
            if not self.client.stopped:
                self.log.error = e.message

    def join(self, timeout: float = 30.0) -> None:
        self.client.stopped = True
        self.client.close()
        super().join(timeout)


def note_of(e: groups_pb2.Event) -> EventNote:
    m = e.member_record
    fields: tuple[object, ...] = ()
    if e.type in ("member_joined", "member_updated") and e.HasField("member_record"):
        fields = (
            m.session_id, m.address, m.priority, m.weight, sorted(m.tags.items()),
            sorted(m.metadata.items()), m.nofailover, m.candidate, m.leaving,
        )  # fmt: skip
    keys = [kv.key for kv in e.kvs] + list(e.deleted_keys)
    return EventNote(
        revision=e.revision, type=e.type, group=e.group, member=e.member, cause=e.cause,
        session_id=e.session_id or e.session.id, session_name=e.session.name,
        keys=tuple(k.decode(errors="replace") for k in keys), member_fields=fields,
    )  # fmt: skip


class SessionLoad(Worker):
    """``count`` sessions kept alive by the library in a process of their own
    (chaos.session_load), opened before the faults start (``ready``), closed at the end.
    A session the library reports LOST is recorded (and not replaced). The process
    ending early, or not closing its sessions, is an error."""

    announces_ready = True

    def __init__(
        self, record: RunRecord, endpoints: Sequence[str], name: str, count: int, ttl_s: float
    ) -> None:
        super().__init__(name)
        self.record, self.endpoints = record, list(endpoints)
        self.count, self.ttl_s = count, ttl_s
        self.opened = 0

    def run(self) -> None:
        cmd = [sys.executable, "-m", "chaos.session_load", "--name", self.name,
               "--count", str(self.count), "--ttl", str(self.ttl_s), *self.endpoints]  # fmt: skip
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": path},
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        stdin = proc.stdin
        threading.Thread(target=self._close_when_stopped, args=(stdin,), daemon=True).start()
        closed = False
        try:
            for line in proc.stdout:
                self._line(line.strip())
                closed = closed or line.strip() == "closed"
        finally:
            self.stop.set()
            try:
                rc = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait(10)
            proc.stdout.close()
        if rc != 0 or not closed:
            self.errors.append(f"{self.name}: its session process ended early (rc={rc})")

    def _close_when_stopped(self, stdin: IO[str]) -> None:
        """Closing the process's stdin tells it to close its sessions and exit."""
        self.stop.wait()
        stdin.close()

    def _line(self, line: str) -> None:
        if line == "ready":
            self.opened = self.ops = self.count
            self.ready.set()
        elif line.startswith("lost "):
            _, session, at, why = line.split(" ", 3)
            self.record.session_losses.append(SessionLoss(session, float(at), why))


class LinkedClient(Client):
    """A client whose every connection goes through its own proxies: ``links`` maps
    each node's advertised API address (what leader hints name) to this client's
    proxy for that node."""

    def __init__(self, links: dict[str, str], **kw: Any) -> None:
        super().__init__(list(links), **kw)
        self.links = links

    def channel(self, endpoint: str) -> Any:
        return super().channel(self.links.get(endpoint, endpoint))
