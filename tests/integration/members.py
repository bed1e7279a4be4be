"""Real member processes and event streams for the group and session integration tests.

- :class:`MemberProc` runs ``python -m coord.member_process`` (the program a service runs
  to hold mastership) and reads its JSON lines on a thread; ``wait_for(event, ...)`` waits
  for a line with a deadline. ``kill()`` is kill -9, ``pause()``/``resume()`` SIGSTOP/SIGCONT.
- :class:`Members` starts them for one test and cleans up: every process stopped, and
  every session they opened closed, so the next test on a shared cluster starts quiet.
- :class:`Watcher` and :class:`Observer` drive ``coord.client.watch`` / ``observe`` on a
  thread and keep what they yield, with arrival times.

Times: a member prints ``t`` from its monotonic clock; on Linux that is the same
CLOCK_MONOTONIC as this process's ``time.monotonic()``, so the two compare directly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import grpc
import pytest

from coord import errors
from coord.client import Client, StoppableClient
from coord.testing import LocalCluster, phase_failed, wait_until
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2

from .jsonlines import JsonLinesProcess, Line


class MemberProc(JsonLinesProcess):
    """One ``coord.member_process`` subprocess and the JSON lines it printed so far."""

    def __init__(
        self,
        endpoints: Sequence[str],
        group: str,
        member_id: str,
        log_dir: str,
        priority: int = 0,
        ttl_s: float = 2.0,
        nofailover: bool = False,
        address: str = "",
    ) -> None:
        self.group = group
        self.id = member_id
        self.ttl_s = ttl_s
        cmd = [
            sys.executable, "-m", "coord.member_process", "--endpoints", ",".join(endpoints),
            "--group", group, "--id", member_id, "--priority", str(priority),
            "--ttl-s", str(ttl_s),
        ]  # fmt: skip
        if nofailover:
            cmd.append("--nofailover")
        if address:
            cmd += ["--address", address]
        n = sum(1 for f in os.listdir(log_dir) if f.startswith(f"{group}.{member_id}."))
        self.stderr_path = os.path.join(log_dir, f"{group}.{member_id}.{n}.stderr")
        super().__init__(f"member {group}/{member_id}", cmd, self.stderr_path)
        self.started = time.monotonic()
        self.paused = False

    # -- what it printed -----------------------------------------------------------

    def elected(self, timeout: float = 15.0, since: int = 0) -> Line:
        return self.wait_for("elected", timeout, since=since)

    # -- signals -------------------------------------------------------------------

    def kill(self) -> float:
        """kill -9; returns the monotonic time of the signal."""
        self.paused = False
        return super().kill()

    def terminate(self, timeout: float = 10.0) -> float:
        """SIGTERM (the member resigns and closes its session); returns the signal's time."""
        t = time.monotonic()
        if self.paused:
            self.resume()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        return t

    def pause(self) -> float:
        t = time.monotonic()
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True
        return t

    def resume(self) -> float:
        """SIGCONT; returns the time just before the signal: every line printed after
        resuming has a later ``t`` (taken after, this process may be descheduled first)."""
        t = time.monotonic()
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False
        return t

    def close(self) -> None:
        """Kill it if it still runs (call ``terminate`` first for a graceful stop)."""
        if self.running:
            self.kill()
        self.close_streams()


class Members:
    """The member processes of one test (see the ``members`` fixtures)."""

    def __init__(self, cluster: LocalCluster, log_dir: str) -> None:
        self.cluster = cluster
        self.log_dir = log_dir
        self.procs: list[MemberProc] = []

    def start(self, group: str, member_id: str, **kwargs: Any) -> MemberProc:
        p = MemberProc(self.cluster.endpoints, group, member_id, self.log_dir, **kwargs)
        self.procs.append(p)
        return p

    def describe(self) -> str:
        return "\n".join(p.describe() for p in self.procs)

    def close(self) -> None:
        """Stop every process; close whatever sessions they left (kill -9 leaves some).

        SIGTERM goes to all at once: a standby blocked in its campaign only gets to its
        stop check once elected, which happens as the masters resign. Whatever is still
        running after a few seconds is killed.
        """
        for p in self.procs:
            if p.running:
                if p.paused:
                    p.resume()
                with contextlib.suppress(ProcessLookupError):
                    p.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            p.close()
        names = {p.id for p in self.procs}
        if not names or not any(n.running for n in self.cluster.nodes):
            return
        with self.cluster.client(timeout_s=20.0) as c:
            for s in list_sessions(c):
                if s.name in names:
                    close_session(c, s.id)
            wait_until(
                lambda: not any(s.name in names for s in list_sessions(c)),
                10, f"the sessions of members {sorted(names)} to be gone",
            )  # fmt: skip


def members_fixture(
    request: pytest.FixtureRequest, cluster: LocalCluster, log_dir: str
) -> Iterator[Members]:
    """Body of a ``members`` fixture: member output printed when the test failed."""
    os.makedirs(log_dir, exist_ok=True)
    m = Members(cluster, log_dir)
    try:
        yield m
    finally:
        if phase_failed(request.node):
            print(f"\n===== member processes ({request.node.name} failed) =====")
            print(m.describe())
        m.close()


# -- RPC shorthands ------------------------------------------------------------------


def groups_stub(c: Client, endpoint: str | None = None) -> Any:
    """Call ``Groups.<method>(request)`` through the client's retries: ``stub.Get(req)``."""
    return _Stub(c, election_pb2_grpc.GroupsStub, endpoint)


def sessions_stub(c: Client, endpoint: str | None = None) -> Any:
    return _Stub(c, election_pb2_grpc.SessionsStub, endpoint)


class _Stub:
    def __init__(self, c: Client, stub: Callable[[grpc.Channel], Any], ep: str | None) -> None:
        self._c, self._stub, self._ep = c, stub, ep

    def __getattr__(self, method: str) -> Callable[[Any], Any]:
        def call(req: Any) -> Any:
            return self._c.call(
                lambda ch, t: getattr(self._stub(ch), method)(req, timeout=t), endpoint=self._ep
            )

        return call


def list_sessions(c: Client) -> list[groups_pb2.Session]:
    return list(sessions_stub(c).List(election_pb2.ListSessionsRequest()).sessions)


def close_session(c: Client, session_id: str) -> None:
    with contextlib.suppress(errors.NotFound):
        sessions_stub(c).Close(election_pb2.CloseSessionRequest(session_id=session_id))


def get_group(c: Client, name: str) -> groups_pb2.Group:
    return groups_stub(c).Get(election_pb2.GetGroupRequest(name=name)).group  # type: ignore[no-any-return]


def holders(c: Client, group: str) -> dict[int, tuple[str, int]]:
    """slot -> (member id, token), from Masters (linearizable)."""
    resp = groups_stub(c).Masters(election_pb2.MastersRequest(group=group))
    return {h.slot: (h.member_id, h.token) for h in resp.masters}


def check_slots(group: groups_pb2.Group) -> None:
    """Every slot held at most once, by a registered member that holds no other slot."""
    slots = [h.slot for h in group.holdings]
    owners = [h.member_id for h in group.holdings]
    assert len(set(slots)) == len(slots), f"a slot held twice: {group.holdings}"
    assert all(0 <= s < group.policy.slots for s in slots), f"slot out of range: {slots}"
    assert len(set(owners)) == len(owners), f"a member holds two slots: {group.holdings}"
    registered = {m.id for m in group.members}
    assert set(owners) <= registered, f"a holder is not registered: {owners} vs {registered}"


# -- streams on threads --------------------------------------------------------------


class _Stream:
    """Items yielded by a library generator on a thread, with arrival times."""

    def __init__(self, endpoints: Sequence[str], name: str) -> None:
        self.client = StoppableClient(endpoints, timeout_s=30.0)
        self.items: list[tuple[float, Any]] = []
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)

    def _produce(self) -> Iterable[Any]:
        raise NotImplementedError

    def _run(self) -> None:
        try:
            for item in self._produce():
                with self._cond:
                    self.items.append((time.monotonic(), item))
                    self._cond.notify_all()
        except BaseException as e:  # reported by wait_for and checked by stop()
            with self._cond:
                self.error = e
                self._cond.notify_all()

    def snapshot(self) -> list[Any]:
        with self._cond:
            return [item for _, item in self.items]

    def wait_for(self, pred: Callable[[Any], bool], timeout: float, what: str) -> tuple[float, Any]:
        """The first item (arrival time, item) for which ``pred`` holds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for seen, item in self.items:
                    if pred(item):
                        return seen, item
                if self.error is not None and not self.client.stopped:
                    raise AssertionError(f"stream failed before {what}: {self.error!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"stream did not yield {what} within {timeout:.1f} s")
                self._cond.wait(left)

    def stop(self) -> None:
        self.client.stopped = True
        self.client.close()  # cancels the stream in flight
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the stream thread did not stop"
        if self.error is not None and not isinstance(self.error, errors.Internal):
            raise AssertionError(f"the stream failed: {self.error!r}")


class Watcher(_Stream):
    """``coord.client.watch`` from ``from_revision`` (0: pinned to now at construction)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        from_revision: int = 0,
        groups: Iterable[str] = (),
        types: Iterable[str] = (),
    ) -> None:
        super().__init__(endpoints, "watcher")
        self.from_revision = from_revision or self.client.status().revision + 1
        self.groups, self.types = list(groups), list(types)
        self._thread.start()

    def _produce(self) -> Iterable[groups_pb2.Event]:
        return self.client.watch(self.from_revision, self.groups, self.types)

    def events(self) -> list[groups_pb2.Event]:
        return self.snapshot()

    def wait_revision(self, revision: int, timeout: float = 15.0) -> None:
        """Until the watcher yielded the event of ``revision`` (an unfiltered watcher)."""
        self.wait_for(lambda e: e.revision >= revision, timeout, f"revision {revision}")


class Observer(_Stream):
    """``coord.client.observe(group)``: every view of the group's masters."""

    def __init__(self, endpoints: Sequence[str], group: str) -> None:
        super().__init__(endpoints, f"observer-{group}")
        self.group = group
        self._thread.start()

    def _produce(self) -> Iterable[list[groups_pb2.Holding]]:
        return self.client.group(self.group).observe()

    def views(self) -> list[list[groups_pb2.Holding]]:
        return self.snapshot()


def event_key(e: groups_pb2.Event) -> tuple[Any, ...]:
    return (e.revision, e.type, e.group, e.member, e.slot, e.token, e.cause)


def marker_revision(cluster: LocalCluster, key: str = "marker") -> int:
    """Write a key and return its revision: a point every unfiltered watcher must reach."""
    with cluster.client(timeout_s=20.0) as c:
        return int(c.put(key, str(time.monotonic())).kv.mod_revision)
