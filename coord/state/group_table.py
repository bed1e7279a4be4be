"""The tables behind :class:`coord.state.groups.Groups`: sessions and groups, their
lookups, and the validation of what goes into them.

Split by job: this module holds the data and its checks; :mod:`coord.state.placement`
decides who holds which slot (grants, releases, handovers, the waits that gate them);
:mod:`coord.state.groups` is the command surface that the state machine calls.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from coord.errors import FailedPrecondition, InvalidArgument, NotFound
from coord.state import breaker, limits, spread
from coord.v1 import groups_pb2


class Emitter(Protocol):
    def __call__(self, kind: str, **fields: Any) -> int:
        """Bump the revision and append its event; returns the revision."""

    def reserve(self) -> int:
        """Bump the revision; the caller must ``record`` its event next."""

    def record(self, revision: int, kind: str, **fields: Any) -> None:
        """Append the event of a reserved revision."""


GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
MEMBER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}")


@dataclass
class GroupState:
    name: str
    policy: groups_pb2.GroupPolicy
    created_revision: int
    members: dict[str, groups_pb2.Member] = field(default_factory=dict)  # registration order
    holdings: dict[int, groups_pb2.Holding] = field(default_factory=dict)
    handovers: dict[int, groups_pb2.Handover] = field(default_factory=dict)
    vacated_cause: dict[int, str] = field(default_factory=dict)
    deleting: bool = False  # see Group.deleting
    pause: groups_pb2.GroupPause | None = None  # see Group.pause; None: not paused
    # Command times of the automatic failovers the breaker counts (coord.state.breaker).
    breaker_failovers: list[int] = field(default_factory=list)
    # Switchovers scheduled for later, by id (coord.state.scheduled); ids increase.
    scheduled: dict[int, groups_pb2.ScheduledSwitchover] = field(default_factory=dict)

    def holder_slot(self, member_id: str) -> int | None:
        return next((s for s, h in self.holdings.items() if h.member_id == member_id), None)

    def to_proto(self) -> groups_pb2.Group:
        g = groups_pb2.Group(
            name=self.name,
            policy=self.policy,
            created_revision=self.created_revision,
            deleting=self.deleting,
        )
        g.members.extend(self.members.values())
        g.holdings.extend(self.holdings[s] for s in sorted(self.holdings))
        g.handovers.extend(self.handovers[s] for s in sorted(self.handovers))
        for slot in sorted(self.vacated_cause):
            g.vacated_cause[slot] = self.vacated_cause[slot]
        if self.pause is not None:
            g.pause.CopyFrom(self.pause)
        g.breaker_failover_ms.extend(self.breaker_failovers)
        g.scheduled.extend(self.scheduled[i] for i in sorted(self.scheduled))
        return g

    @classmethod
    def from_proto(cls, g: groups_pb2.Group) -> GroupState:
        return cls(
            name=g.name,
            policy=g.policy,
            created_revision=g.created_revision,
            members={m.id: m for m in g.members},
            holdings={h.slot: _upgraded_holding(h) for h in g.holdings},
            handovers={h.slot: _upgraded_handover(h, g.policy) for h in g.handovers},
            vacated_cause=dict(g.vacated_cause),
            deleting=g.deleting,
            pause=g.pause if g.HasField("pause") else None,
            breaker_failovers=list(g.breaker_failover_ms),
            scheduled={s.id: s for s in sorted(g.scheduled, key=lambda s: s.id)},
        )


class GroupTables:
    """Sessions and groups by id/name, and the lookups every command starts with."""

    def __init__(
        self, emit: Emitter, session_ending: Callable[[str, str], None] | None = None
    ) -> None:
        self.emit = emit
        # Called with (session id, cause) in the apply that ends a session, right before
        # its own event: the state machine deletes the keys bound to it there.
        self.session_ending: Callable[[str, str], None] = session_ending or _nothing
        self.sessions: dict[str, groups_pb2.Session] = {}
        self.groups: dict[str, GroupState] = {}
        # A new object whenever a group command ran: lets the leader's wait timer skip
        # re-reading unchanged waits. Never persisted.
        self.waits_version = object()
        # Closing sessions and deleting groups that lost a holding in this command:
        # settle() finishes them once nothing is held. Empty between commands.
        self._settle_sessions: set[str] = set()
        self._settle_groups: set[str] = set()
        # A new object whenever a session is opened or closed: lets the leader's
        # deadline table skip re-reading an unchanged session table. Never persisted.
        self.sessions_version = object()

    def group(self, name: str) -> GroupState:
        g = self.groups.get(name)
        if g is None:
            raise NotFound(
                f"group {name!r} does not exist: create it first (coordctl group create)"
            )
        return g

    def _live_group(self, name: str) -> GroupState:
        """The group, refusing one that is being deleted (nothing new may start there)."""
        g = self.group(name)
        if g.deleting:
            raise FailedPrecondition(
                f"group {name!r} is being deleted (its masters are waited out first): "
                "nothing new can start in it"
            )
        return g

    def _session(self, session_id: str) -> groups_pb2.Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise NotFound(
                f"session {session_id!r} does not exist (expired or closed): open a new one"
            )
        return session

    def _live_session(self, session_id: str) -> groups_pb2.Session:
        session = self._session(session_id)
        if session.closing:
            raise FailedPrecondition(
                f"session {session_id!r} is closing (an operator closed it; its slots are "
                "waited out first): open a new session"
            )
        return session

    def _member(self, g: GroupState, member_id: str) -> groups_pb2.Member:
        m = g.members.get(member_id)
        if m is None:
            raise NotFound(f"member {member_id!r} is not registered in group {g.name!r}")
        return m


def _nothing(session_id: str, cause: str) -> None:
    return None


def checked_policy(p: groups_pb2.GroupPolicy) -> groups_pb2.GroupPolicy:
    if not 1 <= p.slots <= limits.MAX_SLOTS:
        raise InvalidArgument(f"slots must be 1..{limits.MAX_SLOTS}, got {p.slots}")
    if p.failback_hold_ms < 0 or p.switchover_timeout_ms < 0 or p.downtime_budget_ms < 0:
        raise InvalidArgument("failback_hold_ms, switchover_timeout_ms and budgets must be >= 0")
    breaker.check(p)
    _check_freshness(p)
    spread.check(p)
    out = groups_pb2.GroupPolicy()
    out.CopyFrom(p)
    if out.failback == groups_pb2.FAILBACK_UNSPECIFIED:
        out.failback = groups_pb2.FAILBACK_OFF
    if out.switchover_timeout_ms == 0:
        out.switchover_timeout_ms = limits.DEFAULT_SWITCHOVER_TIMEOUT_MS
    return out


def _check_freshness(p: groups_pb2.GroupPolicy) -> None:
    """max_lag_on_failover and the synchronous set (docs/design.md, "Freshness-aware
    succession"). Names of members not registered yet are allowed: a group is usually
    created before its members register."""
    if p.max_lag_on_failover < 0:
        raise InvalidArgument(
            f"max_lag_on_failover must be >= 0 (0: off), got {p.max_lag_on_failover}: give "
            "how far behind the best reported position a member may be and still be granted"
        )
    if len(p.synchronous) > limits.MAX_MEMBERS_PER_GROUP:
        raise InvalidArgument(
            f"the synchronous set names {len(p.synchronous)} members, a group has at most "
            f"{limits.MAX_MEMBERS_PER_GROUP}"
        )
    for name in p.synchronous:
        if not MEMBER_ID.fullmatch(name):
            raise InvalidArgument(
                f"the synchronous set names {name!r}, which is not a member id: give member "
                "ids (1-128 of letters, digits, '.', '_', ':', '@', '/', '-'), or an empty "
                "set to let any member succeed"
            )
    if len(set(p.synchronous)) != len(p.synchronous):
        twice = next(n for n in p.synchronous if list(p.synchronous).count(n) > 1)
        raise InvalidArgument(f"the synchronous set names {twice!r} twice: name each member once")


def check_position(m: groups_pb2.Member, position: int) -> None:
    """A reported position: >= 0 and never below the member's last one."""
    if position < 0:
        raise InvalidArgument(
            f"position must be >= 0, got {position}: report the member's WAL position (or "
            "any number that only increases)"
        )
    if m.HasField("position") and position < m.position:
        raise FailedPrecondition(
            f"member {m.id!r} reported position {m.position} already, {position} is lower: "
            "positions only increase; a member whose data went back registers again from "
            "a new session"
        )


def check_label(text: str, what: str) -> None:
    if len(text) > limits.MAX_NAME_CHARS:
        raise InvalidArgument(
            f"{what} is {len(text)} characters, the limit is {limits.MAX_NAME_CHARS}"
        )


def check_member_fields(m: groups_pb2.Member) -> None:
    check_label(m.address, "member address")
    if m.weight < 0:
        raise InvalidArgument(f"weight must be >= 0, got {m.weight}")
    for what, table in (("tags", m.tags), ("metadata", m.metadata)):
        if len(table) > limits.MAX_TAGS:
            raise InvalidArgument(f"{len(table)} {what}, the limit is {limits.MAX_TAGS}")
        for k, v in table.items():
            if not k or len(k) > limits.MAX_TAG_CHARS or len(v) > limits.MAX_TAG_CHARS:
                raise InvalidArgument(
                    f"{what} entries need a key of 1-{limits.MAX_TAG_CHARS} characters and a "
                    f"value of at most {limits.MAX_TAG_CHARS}"
                )


def _upgraded_holding(h: groups_pb2.Holding) -> groups_pb2.Holding:
    """Snapshots written before ``revoked`` existed mark a revoke by its time alone;
    before ``release_wait_ms``, the wait is the span of its wall-clock estimate."""
    if h.revoked_time_ms and not h.revoked:
        h.revoked = True
    if h.revoked and not h.release_wait_ms:
        h.release_wait_ms = max(0, h.release_after_ms - h.revoked_time_ms)
    return h


def _upgraded_handover(
    ho: groups_pb2.Handover, policy: groups_pb2.GroupPolicy
) -> groups_pb2.Handover:
    """Snapshots written before ``timeout_ms`` existed: the group's timeout."""
    if not ho.timeout_ms:
        ho.timeout_ms = policy.switchover_timeout_ms
    return ho
