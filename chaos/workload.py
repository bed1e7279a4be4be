"""The workload that runs during faults, on threads of the test process.

- :class:`Campaigner`: a member of a group (its own Session + Member), campaigning
  again whenever it is not master, recording every span its own library said it
  was master (Tenure) with its token.
- :class:`AckWriter`: puts write-once keys; records the acknowledged ones.
- :class:`RegisterClient`: reads, writes and compare-and-sets a few keys, recording
  a history for the linearizability checker (values are unique, so a CAS on the
  mod revision read is a CAS on the value read).
- :class:`EventWatcher`: an unfiltered watch with the library's automatic resume;
  records every revision received.

Every client talks to the proxied endpoints (chaos.cluster), with short timeouts:
an operation that times out is recorded as "info" (outcome unknown).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

from chaos.linearizability import History
from chaos.records import RunRecord, Tenure, WatchLog
from coord import errors
from coord.client import Client, Member, Session, StoppableClient, watch

POLL_S = 0.002  # how often a master asks its library whether it still is


class Worker:
    def __init__(self, name: str) -> None:
        self.name = name
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.ops = 0
        self._thread = threading.Thread(target=self._guarded, daemon=True, name=name)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float = 30.0) -> None:
        self.stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.errors.append(f"{self.name} did not stop within {timeout} s")

    def _guarded(self) -> None:
        try:
            self.run()
        except Exception as e:  # recorded; the runner reports it
            self.errors.append(f"{self.name}: {type(e).__name__}: {e}")

    def run(self) -> None:
        raise NotImplementedError


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
        session = Session(client, ttl_s=self.ttl_s, name=self.name)
        try:
            member = Member(client, session, self.group, self.member_id, priority=self.priority)
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


class RegisterClient(Worker):
    """Random read / write / cas on ``keys``; every value written is unique."""

    def __init__(
        self,
        history: History,
        endpoints: Sequence[str],
        process: int,
        keys: Sequence[str],
        seed: int,
    ) -> None:
        super().__init__(f"register-{process}")
        self.history, self.endpoints, self.process = history, list(endpoints), process
        # The history's process id: a new one after every unknown outcome (the old
        # request may still be in flight, as a concurrent process).
        self.pid = process * 1_000_000
        self.keys = list(keys)
        self.rng = random.Random(seed)

    def run(self) -> None:
        client = Client(self.endpoints, timeout_s=1.5, attempt_timeout_s=0.5)
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
    def __init__(
        self, record: RunRecord, endpoints: Sequence[str], name: str, from_revision: int
    ) -> None:
        super().__init__(name)
        self.log = WatchLog(name, from_revision)
        record.watches.append(self.log)
        self.endpoints = list(endpoints)
        self.client = StoppableClient(self.endpoints, timeout_s=5.0, attempt_timeout_s=1.0)

    def run(self) -> None:
        try:
            for e in watch(self.client, self.log.from_revision):
                self.log.revisions.append(e.revision)
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


class LinkedClient(Client):
    """A client whose every connection goes through its own proxies: ``links`` maps
    each node's advertised API address (what leader hints name) to this client's
    proxy for that node."""

    def __init__(self, links: dict[str, str], **kw: Any) -> None:
        super().__init__(list(links), **kw)
        self.links = links

    def channel(self, endpoint: str) -> Any:
        return super().channel(self.links.get(endpoint, endpoint))
