"""Sessions, groups, members and holdings: who is master of what.

Pure and deterministic like the rest of ``coord.state``; time is the command's
clamped time. The rules (DESIGN.md, "Groups, failover, failback"):

- A slot is held by at most one member; a member holds at most one slot of a
  group. Every grant gets a fencing token: the revision of the grant, so
  tokens strictly increase per slot (and cluster-wide).
- Successor choice: eligible = candidate, healthy, not ``nofailover``, not
  holding a slot, session alive; order = priority (higher first), then
  registration revision. The same rule fills every slot of a multi-master group.
- Releasing a holding and granting the next one happen in the same apply.
- A session that expires or closes releases its members' holdings (its TTL has
  passed: the holder's client library already stopped claiming) and removes them.
- Switchover and failback ask the holder to step down (a handover with a
  deadline). It resigns, or at the deadline it is revoked, and its slot is
  granted only once the holder's session TTL has also passed (it may not have
  heard: DESIGN.md's safety argument).
- A pending handover always names an eligible successor (or none, for an
  operator's resign or unregister): if its successor stops being eligible before
  the holder steps down, the handover goes to the next free candidate or is
  cancelled, so a master is never unseated for nobody. Operator actions on a
  holder (resign, unregister by another session) are step-down requests, never
  instant releases; a handover of a holder that is leaving is never cancelled (it
  becomes the holder's member_left request), so a leaving master always leaves.

:class:`Groups` owns the tables; every change goes through ``emit``, which
bumps the revision and appends the one event of that revision (or through
``reserve``/``record`` when the event's fields need its own revision).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from coord.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from coord.state import healthspec, limits
from coord.v1 import groups_pb2


class Emitter(Protocol):
    def __call__(self, kind: str, **fields: Any) -> int:
        """Bump the revision and append its event; returns the revision."""

    def reserve(self) -> int:
        """Bump the revision; the caller must ``record`` its event next."""

    def record(self, revision: int, kind: str, **fields: Any) -> None:
        """Append the event of a reserved revision."""


_NEVER = 2**63 - 1
_GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
_MEMBER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}")


@dataclass
class GroupState:
    name: str
    policy: groups_pb2.GroupPolicy
    created_revision: int
    members: dict[str, groups_pb2.Member] = field(default_factory=dict)  # registration order
    holdings: dict[int, groups_pb2.Holding] = field(default_factory=dict)
    handovers: dict[int, groups_pb2.Handover] = field(default_factory=dict)
    vacated_cause: dict[int, str] = field(default_factory=dict)

    def holder_slot(self, member_id: str) -> int | None:
        return next((s for s, h in self.holdings.items() if h.member_id == member_id), None)

    def to_proto(self) -> groups_pb2.Group:
        g = groups_pb2.Group(
            name=self.name, policy=self.policy, created_revision=self.created_revision
        )
        g.members.extend(self.members.values())
        g.holdings.extend(self.holdings[s] for s in sorted(self.holdings))
        g.handovers.extend(self.handovers[s] for s in sorted(self.handovers))
        for slot in sorted(self.vacated_cause):
            g.vacated_cause[slot] = self.vacated_cause[slot]
        return g

    @classmethod
    def from_proto(cls, g: groups_pb2.Group) -> GroupState:
        return cls(
            name=g.name,
            policy=g.policy,
            created_revision=g.created_revision,
            members={m.id: m for m in g.members},
            holdings={h.slot: _revoked_flag(h) for h in g.holdings},
            handovers={h.slot: h for h in g.handovers},
            vacated_cause=dict(g.vacated_cause),
        )


class Groups:
    """Sessions and groups, changed only through the methods below (each validates first)."""

    def __init__(self, emit: Emitter) -> None:
        self.emit = emit
        self.sessions: dict[str, groups_pb2.Session] = {}
        self.groups: dict[str, GroupState] = {}
        # Earliest time a timer may be due (None: recompute). Derived from the state
        # above, never persisted.
        self._due_ms: int | None = None
        # A new object whenever a session is opened or closed: lets the leader's
        # deadline table skip re-reading an unchanged session table. Never persisted.
        self.sessions_version = object()

    # -- sessions --------------------------------------------------------------

    def open_session(self, req: groups_pb2.OpenSession, now: int) -> groups_pb2.Session:
        if not limits.MIN_SESSION_TTL_MS <= req.ttl_ms <= limits.MAX_SESSION_TTL_MS:
            raise InvalidArgument(
                f"session TTL {req.ttl_ms} ms is out of bounds: use "
                f"{limits.MIN_SESSION_TTL_MS}..{limits.MAX_SESSION_TTL_MS} ms"
            )
        _check_label(req.name, "session name")
        rev = self.emit.reserve()
        session = groups_pb2.Session(
            id=f"s{rev:x}", ttl_ms=req.ttl_ms, epoch=rev, name=req.name,
            created_revision=rev, created_time_ms=now, owner=req.owner[: limits.MAX_NAME_CHARS],
        )  # fmt: skip
        self.sessions[session.id] = session
        self.sessions_version = object()
        self.emit.record(rev, "session_opened", session_id=session.id, session=session)
        return session

    def close_session(self, session_id: str, cause: str, now: int) -> None:
        self._session(session_id)
        self._drop_session_members(session_id, cause, now)
        del self.sessions[session_id]
        self.sessions_version = object()
        kind = "session_expired" if cause == "session_expired" else "session_closed"
        self.emit(kind, session_id=session_id, cause=cause)

    def expire_session(self, req: groups_pb2.ExpireSession, now: int) -> bool:
        """Expire if the epoch matches (else the expiry is stale). Returns True if expired."""
        session = self.sessions.get(req.session_id)
        if session is None or session.epoch != req.epoch:
            return False
        self.close_session(req.session_id, "session_expired", now)
        return True

    def _session(self, session_id: str) -> groups_pb2.Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise NotFound(
                f"session {session_id!r} does not exist (expired or closed): open a new one"
            )
        return session

    def _drop_session_members(self, session_id: str, cause: str, now: int) -> None:
        for g in list(self.groups.values()):
            gone = [m.id for m in g.members.values() if m.session_id == session_id]
            for member_id in gone:
                self._remove_member(g, member_id, cause, now)
            if gone:
                self._fill(g, now)

    # -- groups ----------------------------------------------------------------

    def create_group(self, req: groups_pb2.CreateGroup, now: int) -> GroupState:
        if not _GROUP_NAME.fullmatch(req.name):
            raise InvalidArgument(
                f"group name {req.name!r} is invalid: 1-128 of letters, digits, '.', '_', '/', "
                "'-', starting with a letter or digit"
            )
        if req.name in self.groups:
            raise AlreadyExists(f"group {req.name!r} exists: delete it first, or pick a new name")
        policy = _checked_policy(req.policy)
        rev = self.emit("group_created", group=req.name, policy=policy)
        g = GroupState(name=req.name, policy=policy, created_revision=rev)
        self.groups[req.name] = g
        return g

    def delete_group(self, name: str, now: int) -> None:
        g = self.group(name)
        for member_id in list(g.members):
            self._remove_member(g, member_id, "group_deleted", now)
        del self.groups[name]
        self.emit("group_deleted", group=name)

    def group(self, name: str) -> GroupState:
        g = self.groups.get(name)
        if g is None:
            raise NotFound(
                f"group {name!r} does not exist: create it first (coordctl group create)"
            )
        return g

    # -- members ---------------------------------------------------------------

    def register(self, req: groups_pb2.Member, now: int) -> groups_pb2.Member:
        g = self.group(req.group)
        if not _MEMBER_ID.fullmatch(req.id):
            raise InvalidArgument(
                f"member id {req.id!r} is invalid: 1-128 of letters, digits, '.', '_', ':', '@', "
                "'/', '-', starting with a letter or digit"
            )
        self._session(req.session_id)
        _check_member_fields(req)
        old = g.members.get(req.id)
        if old is None and len(g.members) >= limits.MAX_MEMBERS_PER_GROUP:
            raise ResourceExhausted(
                f"group {req.group!r} has {len(g.members)} members, the most a group may have: "
                "unregister members that are gone, or split the group"
            )
        if old is not None and old.session_id != req.session_id:
            raise AlreadyExists(
                f"member {req.id!r} of group {req.group!r} is registered by another session: "
                "use another member id, or wait for that session to end"
            )
        member = groups_pb2.Member()
        member.CopyFrom(req)
        member.healthy = True if old is None else old.healthy
        if old is not None:
            member.health_detail, member.health_changed_ms = (
                old.health_detail, old.health_changed_ms,
            )  # fmt: skip
        if req.HasField("check"):
            member.check.CopyFrom(healthspec.checked(req.check, req.address))
        member.leaving = old is not None and old.leaving  # on its way out: no campaign
        member.candidate = member.candidate and not member.leaving
        member.eligible_since_ms = (
            now if old is None or not old.candidate else old.eligible_since_ms
        )
        kind = "member_updated" if old is not None else "member_joined"
        rev = self.emit.reserve()
        member.registered_revision = old.registered_revision if old is not None else rev
        g.members[req.id] = member
        self.emit.record(
            rev, kind, group=g.name, member=req.id, session_id=req.session_id,
            member_record=member,
        )  # fmt: skip
        self._fill(g, now)
        return member

    def update_member(self, req: groups_pb2.UpdateMember, now: int) -> groups_pb2.Member:
        """Weight, address, tags, metadata: by the member's own session only."""
        g = self.group(req.group)
        m = self._member(g, req.member_id)
        if req.session_id != m.session_id:
            raise FailedPrecondition(
                f"member {req.member_id!r} of group {req.group!r} belongs to another session: "
                "only its own session updates it"
            )
        new = groups_pb2.Member()
        new.CopyFrom(m)
        if req.HasField("weight"):
            new.weight = req.weight
        if req.HasField("address"):
            new.address = req.address
        for table, update, replace in (
            (new.tags, req.tags, req.replace_tags),
            (new.metadata, req.metadata, req.replace_metadata),
        ):
            if replace:
                table.clear()
            for k, v in update.items():
                if v or replace:
                    table[k] = v
                else:
                    table.pop(k, None)
        _check_member_fields(new)
        if new.HasField("check"):
            healthspec.checked(new.check, new.address)  # a new address must still do
        if new == m:
            return m
        m.CopyFrom(new)
        self.emit("member_updated", group=g.name, member=m.id, member_record=m)
        return m

    def set_health(self, req: groups_pb2.SetHealth, now: int) -> None:
        """The leader's checker saw a transition. A verdict about an earlier registration
        of the member (or a member gone) is ignored. An unhealthy master of a group with
        failover_on_unhealthy is revoked: replaced once its TTL has passed."""
        g = self.groups.get(req.group)
        m = g.members.get(req.member_id) if g is not None else None
        if g is None or m is None or m.registered_revision != req.registered_revision:
            return
        if m.healthy == req.healthy:
            return
        m.healthy = req.healthy
        m.health_detail = req.detail[: limits.MAX_TAG_CHARS]
        m.health_changed_ms = now
        if m.healthy:
            m.eligible_since_ms = now  # a failback hold counts from here
        kind = "member_healthy" if m.healthy else "member_unhealthy"
        self.emit(kind, group=g.name, member=m.id, cause=m.health_detail, member_record=m)
        slot = g.holder_slot(m.id)
        if (
            not m.healthy
            and slot is not None
            and g.policy.failover_on_unhealthy
            and not g.holdings[slot].revoked
        ):
            self.revoke(g.name, slot, "unhealthy", now)
        self._fill(g, now)

    def set_loads(self, req: groups_pb2.SetLoads, now: int) -> None:
        changed = []
        for item in req.loads:
            session = self.sessions.get(item.session_id)
            if session is None or not 0 <= item.load < float("inf") or session.load == item.load:
                continue
            session.load = item.load
            changed.append(item)
        if changed:
            self.emit("loads_reported", loads=changed)

    def unregister(self, group: str, member_id: str, session_id: str, now: int) -> None:
        """The member's own session leaves at once. Anyone else unregistering a master
        only asks it to step down (like an operator's resign): the member leaves once
        its slot is released, when it resigns or after the timeout plus its TTL."""
        g = self.group(group)
        m = self._member(g, member_id)
        slot = g.holder_slot(member_id)
        if slot is not None and session_id != m.session_id:
            if not m.leaving:
                m.leaving, m.candidate = True, False
                self.emit("member_updated", group=group, member=member_id, member_record=m)
            if not g.holdings[slot].revoked and slot not in g.handovers:
                self._request_stepdown(g, slot, self._successor(g), "member_left", False, now)
            return
        self._remove_member(g, member_id, "member_left", now)
        self._fill(g, now)

    def campaign(self, group: str, member_id: str, now: int) -> groups_pb2.Member:
        g = self.group(group)
        m = self._member(g, member_id)
        if m.leaving:
            raise FailedPrecondition(
                f"member {member_id!r} was unregistered and leaves once its slot is released: "
                "register it again after that to campaign"
            )
        if m.nofailover:
            raise FailedPrecondition(
                f"member {member_id!r} is nofailover: it never becomes master; register it "
                "without nofailover to campaign"
            )
        if not m.candidate:
            m.candidate = True
            m.eligible_since_ms = now
            self.emit("member_updated", group=group, member=member_id, member_record=m)
        self._fill(g, now)
        return m

    def resign(self, group: str, member_id: str, session_id: str, now: int) -> None:
        """The holder's own session resigns at once. Anyone else (an operator) only asks
        it to step down: it may still believe it is master until it hears, so the slot
        moves when it resigns, or after the switchover timeout plus its TTL."""
        g = self.group(group)
        m = self._member(g, member_id)
        slot = g.holder_slot(member_id)
        if slot is None:
            raise FailedPrecondition(
                f"member {member_id!r} does not hold a slot in group {group!r}: only the master "
                "can resign"
            )
        handover = g.handovers.get(slot)
        if session_id != m.session_id:
            if g.holdings[slot].revoked:
                return
            if handover is None:
                self._request_stepdown(g, slot, self._successor(g), "resign", False, now)
            elif handover.cause not in ("resign", "member_left"):
                # A pending failback or switchover may still be cancelled (its successor
                # may go away); the operator's request may not: it becomes the resign,
                # same successor and deadline, never cancelled, re-targeted if need be.
                handover.cause, handover.named = "resign", False
                h = g.holdings[slot]
                self.emit(
                    "stepdown_requested", group=g.name, member=h.member_id, slot=slot,
                    token=h.token, cause="resign", handover=handover,
                )  # fmt: skip
            return
        m.candidate = False
        self._release(g, slot, handover.cause if handover else "resign", now)
        self._fill(g, now)

    def _member(self, g: GroupState, member_id: str) -> groups_pb2.Member:
        m = g.members.get(member_id)
        if m is None:
            raise NotFound(f"member {member_id!r} is not registered in group {g.name!r}")
        return m

    def _remove_member(self, g: GroupState, member_id: str, cause: str, now: int) -> None:
        """Remove a member, releasing its slot; the caller runs _fill next (which also
        re-targets a pending handover that promised this member a slot)."""
        slot = g.holder_slot(member_id)
        del g.members[member_id]
        if slot is not None:
            self._release(g, slot, cause, now)
        for s, ho in list(g.handovers.items()):
            if ho.to_member == member_id and (s not in g.holdings or g.holdings[s].revoked):
                ho.to_member = ""  # a revoked slot goes to the best candidate at release
        self.emit("member_left", group=g.name, member=member_id, cause=cause)

    # -- holdings --------------------------------------------------------------

    def _eligible(self, g: GroupState, m: groups_pb2.Member) -> bool:
        return (
            m.candidate
            and m.healthy
            and not m.nofailover
            and m.session_id in self.sessions
            and g.holder_slot(m.id) is None
        )

    def _best(self, g: GroupState, prefer: str = "") -> groups_pb2.Member | None:
        if prefer and prefer in g.members and self._eligible(g, g.members[prefer]):
            return g.members[prefer]
        ranked = sorted(
            (m for m in g.members.values() if self._eligible(g, m)),
            key=lambda m: (-m.priority, m.registered_revision),
        )
        return ranked[0] if ranked else None

    def _fill(self, g: GroupState, now: int) -> None:
        """Grant every empty slot to the best eligible candidate (slot order), then keep
        every pending handover's promise valid."""
        for slot in range(g.policy.slots):
            if slot in g.holdings:
                continue
            handover = g.handovers.pop(slot, None)  # consumed: granted now or moot
            m = self._best(g, handover.to_member if handover else "")
            if m is None:
                continue
            cause = g.vacated_cause.pop(slot, "initial")
            rev = self.emit.reserve()
            g.holdings[slot] = groups_pb2.Holding(
                slot=slot, member_id=m.id, token=rev, granted_time_ms=now, cause=cause
            )
            self.emit.record(
                rev, "master_elected", group=g.name, member=m.id, slot=slot, token=rev,
                cause=cause, session_id=m.session_id,
            )  # fmt: skip
        self._retarget(g, now)

    def _retarget(self, g: GroupState, now: int) -> None:
        """A handover whose successor is no longer eligible (it left, withdrew, or took
        another slot) goes to the next free candidate, or is cancelled: the master stays.
        A named successor (switchover to X) and a failback are never re-targeted (a
        failback is planned again by advance()). An operator's resign or unregister
        keeps asking the holder to step down, for the best candidate or for nobody.

        A handover that would be cancelled while its holder is ``leaving`` (unregistered
        by someone else while this handover was pending) becomes the holder's own
        member_left request instead (not named, same deadline, for the best free
        candidate or for nobody): cancelling it would leave the holder in a slot it is
        leaving. A stepdown_cancelled event carries the handover as it was (its target).
        """
        for slot, ho in sorted(g.handovers.items()):
            h = g.holdings.get(slot)
            if h is None or h.revoked or not ho.to_member:
                continue
            m = g.members.get(ho.to_member)
            if m is not None and self._eligible(g, m):
                continue
            was = groups_pb2.Handover()
            was.CopyFrom(ho)
            ho.to_member = ""  # not promised while we look for another
            successor = "" if ho.named or ho.cause == "failback" else self._successor(g)
            if not successor and ho.cause not in ("resign", "member_left"):
                if not g.members[h.member_id].leaving:
                    del g.handovers[slot]
                    self.emit(
                        "stepdown_cancelled", group=g.name, member=h.member_id, slot=slot,
                        token=h.token, cause=was.cause, handover=was,
                    )  # fmt: skip
                    continue
                ho.cause, ho.named = "member_left", False
                successor = self._successor(g)
            ho.to_member = successor
            self.emit(
                "stepdown_requested", group=g.name, member=h.member_id, slot=slot,
                token=h.token, cause=ho.cause, handover=ho,
            )  # fmt: skip

    def _release(self, g: GroupState, slot: int, cause: str, now: int) -> None:
        """Free a slot (the caller runs _fill next). A member that was unregistered by
        someone else while it held the slot leaves now."""
        h = g.holdings.pop(slot)  # a pending handover stays: the fill honours its target
        g.vacated_cause[slot] = cause
        self.emit(
            "master_lost", group=g.name, member=h.member_id, slot=slot, token=h.token, cause=cause
        )
        m = g.members.get(h.member_id)
        if m is not None and m.leaving:
            self._remove_member(g, m.id, "member_left", now)

    # -- step-down requests ----------------------------------------------------

    def switchover(self, req: groups_pb2.Switchover, now: int) -> groups_pb2.Handover:
        """Ask a master to step down for ``to_member`` (or the best candidate, chosen now:
        every pending handover names its successor, so none promises one member twice)."""
        g = self.group(req.group)
        held = sorted(s for s, h in g.holdings.items() if not h.revoked)
        if not held:
            raise FailedPrecondition(f"group {g.name!r} has no master to switch over from")
        promised = {ho.to_member for ho in g.handovers.values()}
        to_member = req.to_member
        if to_member:
            target = self._member(g, to_member)
            if not self._eligible(g, target):
                raise FailedPrecondition(
                    f"member {to_member!r} cannot take over: it must be a healthy "
                    "candidate, not nofailover, with a live session and no slot"
                )
            if to_member in promised:
                raise FailedPrecondition(
                    f"member {to_member!r} is already the successor of a pending handover in "
                    f"group {g.name!r}: wait for it to finish"
                )
        else:
            to_member = self._successor(g)
            if not to_member:
                raise FailedPrecondition(f"group {g.name!r} has no eligible candidate to take over")
        free = [s for s in held if s not in g.handovers]
        if not free:
            slot = held[0]
            raise FailedPrecondition(
                f"a {g.handovers[slot].cause} of group {g.name!r} is already in progress"
            )
        return self._request_stepdown(g, free[0], to_member, "switchover", bool(req.to_member), now)

    def _successor(self, g: GroupState) -> str:
        """The best eligible candidate that no pending handover has promised a slot to."""
        promised = {ho.to_member for ho in g.handovers.values()}
        ranked = sorted(
            (m for m in g.members.values() if self._eligible(g, m) and m.id not in promised),
            key=lambda m: (-m.priority, m.registered_revision),
        )
        return ranked[0].id if ranked else ""

    def _request_stepdown(
        self, g: GroupState, slot: int, to_member: str, cause: str, named: bool, now: int
    ) -> groups_pb2.Handover:
        h = g.holdings[slot]
        handover = groups_pb2.Handover(
            slot=slot, from_member=h.member_id, to_member=to_member, cause=cause,
            deadline_ms=now + g.policy.switchover_timeout_ms, named=named,
        )  # fmt: skip
        g.handovers[slot] = handover
        self.emit(
            "stepdown_requested", group=g.name, member=h.member_id, slot=slot, token=h.token,
            cause=cause, handover=handover,
        )  # fmt: skip
        return handover

    def revoke(self, group: str, slot: int, cause: str, now: int) -> None:
        """Take a slot from a holder that may still believe it holds it: the slot is granted
        again only once the holder's session TTL has passed."""
        g = self.group(group)
        h = g.holdings.get(slot)
        if h is None:
            raise FailedPrecondition(f"slot {slot} of group {group!r} has no holder to revoke")
        if h.revoked:
            return
        member = g.members[h.member_id]
        session = self.sessions.get(member.session_id)
        ttl = session.ttl_ms if session is not None else 0
        h.revoked = True
        h.revoked_time_ms = now
        h.release_after_ms = now + ttl
        member.candidate = False
        handover = g.handovers.get(slot)
        g.vacated_cause[slot] = handover.cause if handover is not None else cause
        self.emit(
            "master_revoked", group=group, member=h.member_id, slot=slot, token=h.token,
            cause=cause, holding=h,
        )  # fmt: skip

    # -- time ------------------------------------------------------------------

    def run_due_timers(self, now: int) -> None:
        """Called on every apply: cheap unless a timer may be due (or groups changed)."""
        if self._due_ms is not None and now < self._due_ms:
            return
        self.advance(now)
        self._due_ms = self.next_timer_ms()
        if self._due_ms is None:
            self._due_ms = _NEVER

    def due_ms(self) -> int | None:
        """next_timer_ms(), cached until the groups change (the leader asks often)."""
        if self._due_ms is None:
            due = self.next_timer_ms()
            self._due_ms = _NEVER if due is None else due
        return None if self._due_ms == _NEVER else self._due_ms

    def changed(self) -> None:
        """A group command ran: the next timer must be recomputed."""
        self._due_ms = None

    def advance(self, now: int) -> None:
        """Run every timer due at ``now`` (in group-name order)."""
        for name in sorted(self.groups):
            g = self.groups[name]
            for slot, h in sorted(g.holdings.items()):
                if h.revoked and h.release_after_ms <= now and g.holdings.get(slot) is h:
                    cause = g.vacated_cause.get(slot, "admin_revoke")
                    self._release(g, slot, cause, now)
                    self._fill(g, now)
            for slot, ho in sorted(g.handovers.items()):
                h2 = g.holdings.get(slot)
                if (
                    g.handovers.get(slot) is ho
                    and h2 is not None
                    and not h2.revoked
                    and ho.deadline_ms <= now
                ):
                    self.revoke(name, slot, ho.cause, now)
            self._maybe_failback(g, now)

    def _failback_plan(self, g: GroupState) -> list[tuple[int, str, int]]:
        """(slot, candidate, due time) for each failback this group may need.

        The lowest-priority holders are paired with the best candidates, each
        candidate at most once (a multi-master group must not ask two holders to
        make way for one member); a pair counts only if the candidate outranks the
        holder. Slots with a pending handover or revocation are left alone.
        """
        if g.policy.failback != groups_pb2.FAILBACK_AUTO:
            return []
        holders = sorted(
            (g.members[h.member_id].priority, slot, h.member_id)
            for slot, h in g.holdings.items()
            if not h.revoked and slot not in g.handovers
        )
        targeted = {ho.to_member for ho in g.handovers.values()}
        candidates = sorted(
            (m for m in g.members.values() if self._eligible(g, m) and m.id not in targeted),
            key=lambda m: (-m.priority, m.registered_revision),
        )
        plan = []
        for (priority, slot, _), c in zip(holders, candidates, strict=False):
            if c.priority <= priority:
                break
            plan.append((slot, c.id, c.eligible_since_ms + g.policy.failback_hold_ms))
        return plan

    def _maybe_failback(self, g: GroupState, now: int) -> None:
        for slot, candidate, due in self._failback_plan(g):
            if due <= now:
                self._request_stepdown(g, slot, candidate, "failback", False, now)

    def next_timer_ms(self) -> int | None:
        """When the leader should propose Advance next (None: no timer pending).

        A lower bound on the time of any timer action (advance() before it is a
        no-op), and exact: an Advance at this time acts.
        """
        due: list[int] = []
        for g in self.groups.values():
            due += [h.release_after_ms for h in g.holdings.values() if h.revoked]
            due += [
                ho.deadline_ms
                for slot, ho in g.handovers.items()
                if slot in g.holdings and not g.holdings[slot].revoked
            ]
            due += [t for _, _, t in self._failback_plan(g)]
        return min(due) if due else None


def _checked_policy(p: groups_pb2.GroupPolicy) -> groups_pb2.GroupPolicy:
    if not 1 <= p.slots <= limits.MAX_SLOTS:
        raise InvalidArgument(f"slots must be 1..{limits.MAX_SLOTS}, got {p.slots}")
    if p.failback_hold_ms < 0 or p.switchover_timeout_ms < 0 or p.downtime_budget_ms < 0:
        raise InvalidArgument("failback_hold_ms, switchover_timeout_ms and budgets must be >= 0")
    out = groups_pb2.GroupPolicy()
    out.CopyFrom(p)
    if out.failback == groups_pb2.FAILBACK_UNSPECIFIED:
        out.failback = groups_pb2.FAILBACK_OFF
    if out.switchover_timeout_ms == 0:
        out.switchover_timeout_ms = limits.DEFAULT_SWITCHOVER_TIMEOUT_MS
    return out


def _check_label(text: str, what: str) -> None:
    if len(text) > limits.MAX_NAME_CHARS:
        raise InvalidArgument(
            f"{what} is {len(text)} characters, the limit is {limits.MAX_NAME_CHARS}"
        )


def _check_member_fields(m: groups_pb2.Member) -> None:
    _check_label(m.address, "member address")
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


def _revoked_flag(h: groups_pb2.Holding) -> groups_pb2.Holding:
    """Snapshots written before ``revoked`` existed mark a revoke by its time alone."""
    if h.revoked_time_ms and not h.revoked:
        h.revoked = True
    return h
