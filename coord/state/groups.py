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
from coord.state import healthspec, limits, waits
from coord.v1 import groups_pb2


class Emitter(Protocol):
    def __call__(self, kind: str, **fields: Any) -> int:
        """Bump the revision and append its event; returns the revision."""

    def reserve(self) -> int:
        """Bump the revision; the caller must ``record`` its event next."""

    def record(self, revision: int, kind: str, **fields: Any) -> None:
        """Append the event of a reserved revision."""


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
    deleting: bool = False  # see Group.deleting

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
        )


class Groups:
    """Sessions and groups, changed only through the methods below (each validates first)."""

    def __init__(self, emit: Emitter) -> None:
        self.emit = emit
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

    def close_session(self, session_id: str, cause: str, now: int, wait_out: bool = False) -> None:
        """Close a session, releasing what its members hold. With ``wait_out`` (an
        operator's close: the holders may not have heard) every slot they hold is
        revoked instead, and the session closes once each has been released after its
        holder's TTL; meanwhile its members are never granted a slot."""
        session = self._session(session_id)
        if wait_out and self._holds_any(session_id):
            self._close_after_wait_out(session, now)
            return
        self._drop_session_members(session_id, cause, now)
        del self.sessions[session_id]
        self.sessions_version = object()
        kind = "session_expired" if cause == "session_expired" else "session_closed"
        self.emit(kind, session_id=session_id, cause=cause)

    def _holds_any(self, session_id: str) -> bool:
        return any(
            g.members[h.member_id].session_id == session_id
            for g in self.groups.values()
            for h in g.holdings.values()
        )

    def _close_after_wait_out(self, session: groups_pb2.Session, now: int) -> None:
        if session.closing:
            return
        session.closing = True
        self.emit("session_closing", session_id=session.id, session=session)
        for g in list(self.groups.values()):
            for slot, h in sorted(g.holdings.items()):
                if not h.revoked and g.members[h.member_id].session_id == session.id:
                    self.revoke(g.name, slot, "session_closed", now)
            self._retarget(g, now)  # its members no longer succeed anyone

    def settle(self, now: int) -> None:
        """After a command: close each closing session and delete each deleting group
        that no longer holds anything (their last revoked holding was released)."""
        sessions, self._settle_sessions = self._settle_sessions, set()
        groups, self._settle_groups = self._settle_groups, set()
        for sid in sorted(sessions):
            if sid in self.sessions and not self._holds_any(sid):
                self.close_session(sid, "session_closed", now)
        for name in sorted(groups):
            g = self.groups.get(name)
            if g is not None and g.deleting and not g.holdings:
                self.delete_group(name, now)

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
        old = self.groups.get(req.name)
        if old is not None and old.deleting:
            raise AlreadyExists(
                f"group {req.name!r} is being deleted: its masters are revoked and waited out "
                "(their session TTL) first; create it again once it is gone"
            )
        if old is not None:
            raise AlreadyExists(f"group {req.name!r} exists: delete it first, or pick a new name")
        policy = _checked_policy(req.policy)
        rev = self.emit("group_created", group=req.name, policy=policy)
        g = GroupState(name=req.name, policy=policy, created_revision=rev)
        self.groups[req.name] = g
        return g

    def delete_group(self, name: str, now: int, wait_out: bool = False) -> None:
        """Delete a group and its members. With ``wait_out`` (the default for an
        operator) a group with masters first revokes them and grants nothing; it is
        deleted once each slot has been released after its holder's TTL, so the name
        cannot be created and granted again while an old master may still act."""
        g = self.group(name)
        if wait_out and g.holdings:
            if not g.deleting:
                g.deleting = True
                self.emit("group_deleting", group=name)
                for slot, h in sorted(g.holdings.items()):
                    if not h.revoked:
                        self.revoke(name, slot, "group_deleted", now)
            return
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

    def _live_group(self, name: str) -> GroupState:
        """The group, refusing one that is being deleted (nothing new may start there)."""
        g = self.group(name)
        if g.deleting:
            raise FailedPrecondition(
                f"group {name!r} is being deleted (its masters are waited out first): "
                "nothing new can start in it"
            )
        return g

    def _live_session(self, session_id: str) -> groups_pb2.Session:
        session = self._session(session_id)
        if session.closing:
            raise FailedPrecondition(
                f"session {session_id!r} is closing (an operator closed it; its slots are "
                "waited out first): open a new session"
            )
        return session

    # -- members ---------------------------------------------------------------

    def register(self, req: groups_pb2.Member, now: int) -> groups_pb2.Member:
        g = self._live_group(req.group)
        if not _MEMBER_ID.fullmatch(req.id):
            raise InvalidArgument(
                f"member id {req.id!r} is invalid: 1-128 of letters, digits, '.', '_', ':', '@', "
                "'/', '-', starting with a letter or digit"
            )
        self._live_session(req.session_id)
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
        kind = "member_updated" if old is not None else "member_joined"
        rev = self.emit.reserve()
        if old is None or not old.candidate:
            member.eligible_since_ms, member.eligible_since_revision = now, rev
        else:
            member.eligible_since_ms = old.eligible_since_ms
            member.eligible_since_revision = old.eligible_since_revision
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
        rev = self.emit.reserve()
        if m.healthy:  # a failback hold counts from here
            m.eligible_since_ms, m.eligible_since_revision = now, rev
        kind = "member_healthy" if m.healthy else "member_unhealthy"
        self.emit.record(
            rev, kind, group=g.name, member=m.id, cause=m.health_detail, member_record=m
        )
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
        g = self._live_group(group)
        m = self._member(g, member_id)
        self._live_session(m.session_id)
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
            rev = self.emit.reserve()
            m.eligible_since_ms, m.eligible_since_revision = now, rev
            self.emit.record(rev, "member_updated", group=group, member=member_id, member_record=m)
        self._fill(g, now)
        return m

    def resign(self, group: str, member_id: str, session_id: str, now: int, token: int = 0) -> None:
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
        if token and g.holdings[slot].token != token:
            raise FailedPrecondition(
                f"member {member_id!r} of group {group!r} holds slot {slot} under token "
                f"{g.holdings[slot].token}, not {token}: that grant was given up already"
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
        session = self.sessions.get(g.members[member_id].session_id)
        if session is not None and session.closing:
            self._settle_sessions.add(session.id)  # this may have been its last holding
        del g.members[member_id]
        if slot is not None:
            self._release(g, slot, cause, now)
        for s, ho in list(g.handovers.items()):
            if ho.to_member == member_id and (s not in g.holdings or g.holdings[s].revoked):
                ho.to_member = ""  # a revoked slot goes to the best candidate at release
        self.emit("member_left", group=g.name, member=member_id, cause=cause)

    # -- holdings --------------------------------------------------------------

    def _eligible(self, g: GroupState, m: groups_pb2.Member) -> bool:
        session = self.sessions.get(m.session_id)
        return (
            m.candidate
            and m.healthy
            and not m.nofailover
            and session is not None
            and not session.closing
            and not g.deleting
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
        every pending handover's promise valid. A deleting group grants nothing."""
        if g.deleting:
            for slot in [s for s in g.handovers if s not in g.holdings]:
                del g.handovers[slot]  # nothing will be granted there
            return
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
        if g.deleting:
            self._settle_groups.add(g.name)
        holder = g.members.get(h.member_id)
        session = self.sessions.get(holder.session_id) if holder is not None else None
        if session is not None and session.closing:
            self._settle_sessions.add(session.id)
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
        g = self._live_group(req.group)
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
        rev = self.emit.reserve()
        timeout = g.policy.switchover_timeout_ms
        handover = groups_pb2.Handover(
            slot=slot, from_member=h.member_id, to_member=to_member, cause=cause,
            deadline_ms=now + timeout, named=named, requested_revision=rev, timeout_ms=timeout,
        )  # fmt: skip
        g.handovers[slot] = handover
        self.emit.record(
            rev, "stepdown_requested", group=g.name, member=h.member_id, slot=slot,
            token=h.token, cause=cause, handover=handover,
        )  # fmt: skip
        return handover

    def revoke(self, group: str, slot: int, cause: str, now: int) -> None:
        """Take a slot from a holder that may still believe it holds it: the slot is granted
        again only once the leader has waited out the holder's session TTL (a RELEASE
        wait, timed on its monotonic clock)."""
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
        h.release_wait_ms = ttl
        h.release_after_ms = now + ttl  # an estimate, for display
        member.candidate = False
        # The revoke's own cause (a handover's timeout passes the handover's): a group
        # deleted while a switchover was pending lost its master to the delete.
        g.vacated_cause[slot] = cause
        self.emit(
            "master_revoked", group=group, member=h.member_id, slot=slot, token=h.token,
            cause=cause, holding=h,
        )  # fmt: skip

    # -- waits (timed by the leader: coord.state.waits) ------------------------

    def changed(self) -> None:
        """A group command ran: the pending waits may have changed."""
        self.waits_version = object()

    def pending_waits(self) -> list[waits.Wait]:
        """Every wait the leader must time now (group-name order): revoked holdings
        (their holder's TTL), handovers of held slots (their timeout), and candidates
        that outrank a holder of a failback group (the failback hold)."""
        out: list[waits.Wait] = []
        for name in sorted(self.groups):
            g = self.groups[name]
            for slot, h in sorted(g.holdings.items()):
                if h.revoked:
                    out.append(
                        waits.Wait((waits.RELEASE, name, slot, "", h.token), h.release_wait_ms)
                    )
            for slot, ho in sorted(g.handovers.items()):
                held = g.holdings.get(slot)
                if held is not None and not held.revoked:
                    key = (waits.HANDOVER, name, slot, "", ho.requested_revision)
                    out.append(waits.Wait(key, ho.timeout_ms))
            for _, candidate in self._failback_plan(g):
                since = g.members[candidate].eligible_since_revision
                key = (waits.FAILBACK, name, 0, candidate, since)
                out.append(waits.Wait(key, g.policy.failback_hold_ms))
        return out

    def end_waits(self, keys: list[waits.Key], now: int) -> None:
        """The leader timed these waits out: act on each that is still pending as named
        (a wait that ended another way meanwhile is ignored). Group by group, releases
        first, then handover timeouts, then failbacks: a release's refill may re-target
        a handover that ends in the same Advance."""
        for kind, name, slot, member, since in sorted(keys, key=waits.order):
            g = self.groups.get(name)
            if g is None:
                continue
            if kind == waits.RELEASE:
                h = g.holdings.get(slot)
                if h is not None and h.revoked and h.token == since:
                    self._release(g, slot, g.vacated_cause.get(slot, "admin_revoke"), now)
                    self._fill(g, now)
            elif kind == waits.HANDOVER:
                ho, h = g.handovers.get(slot), g.holdings.get(slot)
                if ho is not None and ho.requested_revision == since and h and not h.revoked:
                    self.revoke(name, slot, ho.cause, now)
            elif kind == waits.FAILBACK:
                m = g.members.get(member)
                if m is None or m.eligible_since_revision != since:
                    continue
                for s, candidate in self._failback_plan(g):
                    if candidate == member:
                        self._request_stepdown(g, s, member, "failback", False, now)
                        break

    def _failback_plan(self, g: GroupState) -> list[tuple[int, str]]:
        """(slot, candidate) for each failback this group may need.

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
            plan.append((slot, c.id))
        return plan


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
