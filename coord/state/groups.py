"""Sessions, groups, members and holdings: who is master of what.

Pure and deterministic like the rest of ``coord.state``; time is the command's
clamped time. The rules (docs/design.md, "Groups, failover, failback"):

- A slot is held by at most one member; a member holds at most one slot of a
  group. Every grant gets a fencing token: the revision of the grant, so
  tokens strictly increase per slot (and cluster-wide).
- Successor choice: eligible = candidate, healthy, not ``nofailover``, not
  holding a slot, session alive (and, when the policy says so, in the synchronous
  set and within max_lag_on_failover of the best reported position); order =
  priority (higher first), then registration revision (with prefer_most_advanced,
  the position first). The same rule fills every slot of a multi-master group. With
  a spread rule (coord.state.spread) the best-ranked member whose tag value has room
  wins, else the best-ranked anyway.
- Releasing a holding and granting the next one happen in the same apply.
- A session that expires or closes releases its members' holdings (its TTL has
  passed: the holder's client library already stopped claiming) and removes them;
  the keys bound to it are deleted in the same apply (``session_ending``).
- Switchover and failback ask the holder to step down (a handover with a
  deadline). It resigns, or at the deadline it is revoked, and its slot is
  granted only once the holder's session TTL has also passed (it may not have
  heard: docs/design.md, the safety argument).
- A pending handover always names an eligible successor (or none, for an
  operator's resign or unregister): if its successor stops being eligible before
  the holder steps down, the handover goes to the next free candidate or is
  cancelled, so a master is never unseated for nobody. Operator actions on a
  holder (resign, unregister by another session) are step-down requests, never
  instant releases; a handover of a holder that is leaving is never cancelled (it
  becomes the holder's member_left request), so a leaving master always leaves.

:class:`Groups` is the command surface; the tables and their checks are in
:mod:`coord.state.group_table`, slot assignment and its waits in
:mod:`coord.state.placement`. Every change goes through ``emit``, which
bumps the revision and appends the one event of that revision (or through
``reserve``/``record`` when the event's fields need its own revision).
"""

from __future__ import annotations

from coord.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
)
from coord.state import healthspec, limits
from coord.state.group_admin import GroupAdmin
from coord.state.group_table import (
    GROUP_NAME,
    MEMBER_ID,
    GroupState,
    check_label,
    check_member_fields,
    check_position,
    checked_policy,
)
from coord.v1 import groups_pb2

_OPERATOR_FIELDS = frozenset({"group", "member_id", "session_id", "priority", "nofailover"})


class Groups(GroupAdmin):
    """Sessions and groups, changed only through the methods below (each validates first)."""

    def open_session(self, req: groups_pb2.OpenSession, now: int) -> groups_pb2.Session:
        if not limits.MIN_SESSION_TTL_MS <= req.ttl_ms <= limits.MAX_SESSION_TTL_MS:
            raise InvalidArgument(
                f"session TTL {limits.ms_and_s(req.ttl_ms)} is out of bounds: use "
                f"{limits.MIN_SESSION_TTL_MS}..{limits.MAX_SESSION_TTL_MS} ms "
                f"({limits.MIN_SESSION_TTL_MS / 1000:g}..{limits.MAX_SESSION_TTL_MS / 1000:g} s)"
            )
        check_label(req.name, "session name")
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
        self.session_ending(session_id, cause)  # its keys go in this apply
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

    def _drop_session_members(self, session_id: str, cause: str, now: int) -> None:
        for g in list(self.groups.values()):
            gone = [m.id for m in g.members.values() if m.session_id == session_id]
            for member_id in gone:
                self._remove_member(g, member_id, cause, now)
            if gone:
                self._fill(g, now)

    def create_group(self, req: groups_pb2.CreateGroup, now: int) -> GroupState:
        if not GROUP_NAME.fullmatch(req.name):
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
        policy = checked_policy(req.policy)
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

    def register(self, req: groups_pb2.Member, now: int) -> groups_pb2.Member:
        g = self._live_group(req.group)
        if not MEMBER_ID.fullmatch(req.id):
            raise InvalidArgument(
                f"member id {req.id!r} is invalid: 1-128 of letters, digits, '.', '_', ':', '@', "
                "'/', '-', starting with a letter or digit"
            )
        self._live_session(req.session_id)
        check_member_fields(req)
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
        if req.HasField("position"):
            check_position(old if old is not None else groups_pb2.Member(id=req.id), req.position)
        member = groups_pb2.Member()
        member.CopyFrom(req)
        member.healthy = True if old is None else old.healthy
        if old is not None:
            member.health_detail, member.health_changed_ms = (
                old.health_detail, old.health_changed_ms,
            )  # fmt: skip
        if req.HasField("check"):
            member.check.CopyFrom(healthspec.checked(req.check, req.address))
        if old is not None and old.HasField("position") and not req.HasField("position"):
            member.position = old.position  # the same process registering again
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
        """Weight, address, tags, metadata, priority, nofailover, position: by the
        member's own session; priority and nofailover also by an operator (no session).
        Priority and nofailover take effect in placement at once: a cleared nofailover
        counts as newly eligible (a failback hold starts), a member made nofailover is no
        longer anyone's successor (it keeps a slot it holds), and empty slots are
        filled (unless paused). A position (only ever higher) takes effect in placement
        at once when the policy uses positions; a report that changes nothing else is a
        ``position_reported`` event."""
        g = self.group(req.group)
        m = self._member(g, req.member_id)
        _check_updater(req, m)
        if req.HasField("position"):
            check_position(m, req.position)
        new = _updated(m, req)
        check_member_fields(new)
        if new.HasField("check"):
            healthspec.checked(new.check, new.address)  # a new address must still do
        if new == m:
            return m
        placement = new.priority != m.priority or new.nofailover != m.nofailover
        moved = new.position != m.position or new.HasField("position") != m.HasField("position")
        only_position = moved and _without_position(new) == _without_position(m)
        policy = g.policy
        placement = placement or (
            moved and (policy.max_lag_on_failover > 0 or policy.prefer_most_advanced)
        )
        rev = self.emit.reserve()
        if m.nofailover and not new.nofailover:  # a failback hold counts from here
            new.eligible_since_ms, new.eligible_since_revision = now, rev
        m.CopyFrom(new)
        kind = "position_reported" if only_position else "member_updated"
        self.emit.record(rev, kind, group=g.name, member=m.id, member_record=m)
        if placement:
            self._fill(g, now)
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
            and g.pause is None  # paused: nothing is revoked automatically
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
                self._request_stepdown(g, slot, self._successor(g, slot), "member_left", False, now)
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
                self._request_stepdown(g, slot, self._successor(g, slot), "resign", False, now)
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


def _check_updater(req: groups_pb2.UpdateMember, m: groups_pb2.Member) -> None:
    """The member's own session may change any field; an operator (no session) only
    priority and nofailover."""
    if not req.session_id:
        other = [f.name for f, _ in req.ListFields() if f.name not in _OPERATOR_FIELDS]
        if other:
            raise InvalidArgument(
                f"an operator changes only priority and nofailover, not {other[0]}: "
                "the member's own session changes the rest"
            )
    elif req.session_id != m.session_id:
        raise FailedPrecondition(
            f"member {req.member_id!r} of group {req.group!r} belongs to another session: "
            "only its own session updates it"
        )


def _without_position(m: groups_pb2.Member) -> groups_pb2.Member:
    out = groups_pb2.Member()
    out.CopyFrom(m)
    out.ClearField("position")
    return out


def _updated(m: groups_pb2.Member, req: groups_pb2.UpdateMember) -> groups_pb2.Member:
    """A copy of ``m`` with the update applied (a tag or metadata entry with an empty
    value is removed, unless the table is replaced)."""
    new = groups_pb2.Member()
    new.CopyFrom(m)
    if req.HasField("weight"):
        new.weight = req.weight
    if req.HasField("address"):
        new.address = req.address
    if req.HasField("priority"):
        new.priority = req.priority
    if req.HasField("nofailover"):
        new.nofailover = req.nofailover
    if req.HasField("position"):
        new.position = req.position
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
    return new
