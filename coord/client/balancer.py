"""Client-side load balancing over a group's healthy members, fed by the watch stream.

::

    lb = client.group("api").balancer(policy="weighted", role="any")
    with lb.request() as member:      # counts as in flight until the block ends
        call(member.address)

The member table is the group as read once, then kept current by the watch
stream (member joined/updated/left, healthy/unhealthy, master elected/lost/
revoked, reported loads), so a pick reflects an event as soon as it arrives.
Never picked: an unhealthy member, a member that left, a member whose session
ended, and (by role) a master or a standby.

Policies:

- ``round_robin``: in turn, over the eligible members in registration order.
- ``random``: uniformly.
- ``weighted``: smooth weighted round robin (nginx's): over any window the
  shares follow the weights, interleaved rather than in bursts. Weight 0: never.
- ``least_load``: the lowest reported load plus this client's own requests in
  flight (``request()``), ties in turn.
"""

from __future__ import annotations

import contextlib
import random as _random
import threading
from collections.abc import Iterator
from typing import Any, Literal

from coord import errors
from coord.client.client import Client, StoppableClient
from coord.client.election import _groups, watch_batches
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2

Policy = Literal["round_robin", "random", "weighted", "least_load"]
Role = Literal["any", "master", "standby"]
POLICIES = ("round_robin", "random", "weighted", "least_load")
ROLES = ("any", "master", "standby")

_EVENT_TYPES = (
    "member_joined", "member_updated", "member_left", "member_healthy", "member_unhealthy",
    "master_elected", "master_lost", "master_revoked", "loads_reported", "group_deleted",
    "group_created",
)  # fmt: skip


class Picker:
    """The member table and the picking policies, without any I/O (thread-unsafe: the
    Balancer holds its lock around every call)."""

    def __init__(
        self,
        group: str,
        policy: Policy = "round_robin",
        role: Role = "any",
        tags: dict[str, str] | None = None,
        seed: int | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise errors.InvalidArgument(f"unknown policy {policy!r}: use one of {POLICIES}")
        if role not in ROLES:
            raise errors.InvalidArgument(f"unknown role {role!r}: use one of {ROLES}")
        self.group, self.policy, self.role = group, policy, role
        self.tags = dict(tags or {})
        self._rng = _random.Random(seed)
        self.members: dict[str, groups_pb2.Member] = {}  # registration order
        self.masters: set[str] = set()
        self.loads: dict[str, float] = {}  # session id -> reported load
        self.inflight: dict[str, int] = {}
        self._current: dict[str, int] = {}  # smooth weighted round robin state
        self._turn = 0

    def load(self, group: groups_pb2.Group, sessions: list[groups_pb2.Session]) -> None:
        self.members = {m.id: m for m in group.members}
        self.masters = {h.member_id for h in group.holdings if not h.revoked}
        self.loads = {x.id: x.load for x in sessions}
        self._current = {k: v for k, v in self._current.items() if k in self.members}

    def apply(self, e: groups_pb2.Event) -> None:
        if e.type == "loads_reported":
            for item in e.loads:
                self.loads[item.session_id] = item.load
            return
        if e.group != self.group:
            return
        if e.type in ("member_joined", "member_updated", "member_healthy", "member_unhealthy"):
            if e.type == "member_joined":
                self.members.pop(e.member, None)  # a rejoin goes to the end
            self.members[e.member] = e.member_record
        elif e.type == "member_left":
            self.members.pop(e.member, None)
            self.masters.discard(e.member)
            self._current.pop(e.member, None)
        elif e.type == "master_elected":
            self.masters.add(e.member)
        elif e.type in ("master_lost", "master_revoked"):
            self.masters.discard(e.member)
        elif e.type in ("group_deleted", "group_created"):
            self.members.clear()
            self.masters.clear()

    def eligible(self) -> list[groups_pb2.Member]:
        out = []
        for m in self.members.values():
            if not m.healthy or m.leaving:
                continue
            if self.role == "master" and m.id not in self.masters:
                continue
            if self.role == "standby" and m.id in self.masters:
                continue
            if any(m.tags.get(k) != v for k, v in self.tags.items()):
                continue
            out.append(m)
        return out

    def pick(self) -> groups_pb2.Member:
        pool = self.eligible()
        if self.policy == "weighted":
            pool = [m for m in pool if m.weight > 0]
        if not pool:
            raise errors.Unavailable(
                f"no {'' if self.role == 'any' else self.role + ' '}member of group "
                f"{self.group!r} is eligible (healthy, registered"
                f"{', tagged ' + str(self.tags) if self.tags else ''}): retry later"
            )
        if self.policy == "random":
            return self._rng.choice(pool)
        if self.policy == "weighted":
            return self._smooth_weighted(pool)
        if self.policy == "least_load":
            score = {
                m.id: self.loads.get(m.session_id, 0.0) + self.inflight.get(m.id, 0) for m in pool
            }
            low = min(score.values())
            pool = [m for m in pool if score[m.id] == low]
        self._turn += 1
        return pool[(self._turn - 1) % len(pool)]

    def _smooth_weighted(self, pool: list[groups_pb2.Member]) -> groups_pb2.Member:
        """nginx's smooth weighted round robin: each pick, every peer's current weight
        grows by its weight; the largest is picked and lowered by the total."""
        total = 0
        best: groups_pb2.Member | None = None
        for m in pool:
            cur = self._current.get(m.id, 0) + m.weight
            self._current[m.id] = cur
            total += m.weight
            if best is None or cur > self._current[best.id]:
                best = m
        assert best is not None
        self._current[best.id] -= total
        return best


class Balancer:
    """A :class:`Picker` kept current by a watch stream on its own thread."""

    def __init__(self, client: Client, group: str, **options: Any) -> None:
        """``options`` are :class:`Picker`'s keywords: ``policy``, ``role``, ``tags``,
        ``seed``."""
        self.picker = Picker(group, **options)
        self.group = group
        self._lock = threading.Condition()
        self.revision = 0  # the last event applied
        self.error: BaseException | None = None
        self._closed = False
        self._ready = threading.Event()
        # Its own connections, so that close() can end the watch stream.
        self._watcher = StoppableClient(
            client.endpoints, timeout_s=client.timeout_s, attempt_timeout_s=client.attempt_timeout_s
        )
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"balancer-{group}")
        self._thread.start()

    # -- picking ---------------------------------------------------------------

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Until the member table has been loaded; raises why the balancer stopped
        following the group, if it did."""
        if not self._ready.wait(timeout):
            raise errors.DeadlineExceeded(f"balancer for {self.group!r} not ready in {timeout} s")
        if self.error is not None:
            raise self.error

    def candidates(self) -> list[groups_pb2.Member]:
        """The members a pick may return now, in registration order."""
        with self._lock:
            return self.picker.eligible()

    def pick(self) -> groups_pb2.Member:
        """One member by the policy; Unavailable if none is eligible."""
        self.wait_ready()
        with self._lock:
            return self.picker.pick()

    @contextlib.contextmanager
    def request(self) -> Iterator[groups_pb2.Member]:
        """Pick, and count the member as having one more request in flight meanwhile."""
        self.wait_ready()
        inflight = self.picker.inflight
        with self._lock:
            m = self.picker.pick()
            inflight[m.id] = inflight.get(m.id, 0) + 1
        try:
            yield m
        finally:
            with self._lock:
                inflight[m.id] -= 1

    def wait_revision(self, revision: int, timeout: float = 10.0) -> None:
        """Until the table includes every event up to ``revision`` (a write's response
        revision, say), whether or not the events matched."""
        with self._lock:
            if not self._lock.wait_for(lambda: self.revision >= revision, timeout):
                raise errors.DeadlineExceeded(f"balancer did not reach revision {revision}")

    def close(self) -> None:
        """Stop following the group."""
        self._closed = True
        self._watcher.stopped = True
        self._watcher.close()  # cancels the stream in flight
        self._thread.join(timeout=5)

    def __enter__(self) -> Balancer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the member table ------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closed:
                try:
                    self._follow()
                except errors.OutOfRange:
                    continue  # the events needed were compacted: read the table again
        except Exception as e:
            if not self._closed:
                self.error = e
        finally:
            self._ready.set()

    def _follow(self) -> None:
        start = self._watcher.status().revision
        batches = watch_batches(self._watcher, start + 1, types=_EVENT_TYPES)
        resp = self._watcher.call(
            lambda ch, t: _groups(ch).Get(election_pb2.GetGroupRequest(name=self.group), timeout=t)
        )
        group, loaded = resp.group, resp.header.revision
        sessions = self._watcher.call(
            lambda ch, t: election_pb2_grpc.SessionsStub(ch).List(
                election_pb2.ListSessionsRequest(), timeout=t
            )
        ).sessions
        with self._lock:
            self.picker.load(group, list(sessions))
            self.revision = start
            self._lock.notify_all()
        # Events from start + 1 replay what the table already holds (older records are
        # overwritten in order); ready once the replay has passed the table's revision.
        for events, upto in batches:
            if self._closed:
                return
            with self._lock:
                for e in events:
                    self.picker.apply(e)
                self.revision = upto
                self._lock.notify_all()
            if upto >= loaded:
                self._ready.set()
