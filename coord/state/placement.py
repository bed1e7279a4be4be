"""Who holds which slot: grants, releases, revocations, handovers, failback, and the
waits that gate a grant (coord.state.waits). The rules are in coord.state.groups'
docstring; the leader times the waits on its monotonic clock and ends them with
``end_waits`` (coord.server.duties.group_waits).
"""

from __future__ import annotations

from coord.errors import FailedPrecondition
from coord.state import breaker, spread, waits
from coord.state.group_table import GroupState, GroupTables
from coord.v1 import groups_pb2

# Why a member cannot take a free slot (the codes of Placement.ineligible), in words.
REASONS = {
    "group_deleting": "the group is being deleted: nothing is granted",
    "no_session": "its session is gone (expired or closed)",
    "session_closing": "its session is closing (an operator closed it): never granted again",
    "nofailover": "it is nofailover: never made master",
    "not_candidate": "it is not campaigning (never did, resigned, or is leaving)",
    "unhealthy": "its health check fails",
    "holding": "it already holds slot {slot}",
    "not_synchronous": "it is not in the synchronous set ({synchronous}): never made master",
    "no_position": (
        "it has reported no position, and the policy's max_lag_on_failover ({max_lag}) needs one"
    ),
    "lagging": (
        "it is behind by {lag} (position {position}, the best reported is {best}; "
        "max_lag_on_failover is {max_lag})"
    ),
}


def best_position(g: GroupState) -> int | None:
    """The highest position reported by a member of ``g`` (every member in the table
    has a live session: one whose session ended has left), or None."""
    reported = [m.position for m in g.members.values() if m.HasField("position")]
    return max(reported) if reported else None


# "Not computed yet" for a best position (positions are >= 0): the callers that ask about
# every member compute it once (a group may have 10,000 members).
UNKNOWN = -1


def lag(g: GroupState, m: groups_pb2.Member, best: int | None = UNKNOWN) -> int | None:
    """How far ``m`` is behind the best position of ``g`` (None: it reported none)."""
    if best == UNKNOWN:
        best = best_position(g)
    return best - m.position if best is not None and m.HasField("position") else None


def reason_text(
    g: GroupState, m: groups_pb2.Member, reason: str, best: int | None = UNKNOWN
) -> str:
    """The sentence of a reason code of :meth:`Placement.ineligible` for ``m``."""
    if best == UNKNOWN:
        best = best_position(g)
    return REASONS.get(reason, reason).format(
        slot=g.holder_slot(m.id), lag=lag(g, m, best), position=m.position,
        best=best, max_lag=g.policy.max_lag_on_failover,
        synchronous=", ".join(g.policy.synchronous),
    )  # fmt: skip


def rank_key(g: GroupState, m: groups_pb2.Member) -> tuple[int, int, int, int]:
    """The order of the eligible, best first: priority (higher first), then
    registration; with the policy's prefer_most_advanced the position (higher first;
    never reported: after every reported one) comes before priority."""
    if g.policy.prefer_most_advanced:
        reported = m.HasField("position")
        return (0 if reported else 1, -m.position if reported else 0, -m.priority,
                m.registered_revision)  # fmt: skip
    return (0, 0, -m.priority, m.registered_revision)


class Placement(GroupTables):
    """Slot assignment over the tables; :class:`coord.state.groups.Groups` adds the commands."""

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

    def ineligible(self, g: GroupState, m: groups_pb2.Member, best: int | None = UNKNOWN) -> str:
        """Why ``m`` cannot take a free slot of ``g`` now (a reason code of
        :data:`REASONS`), or "" if it can. The one rule of eligibility: placement and
        explain (coord.state.explain) both ask here. ``best``: the group's
        :func:`best_position`, when the caller computed it already."""
        session = self.sessions.get(m.session_id)
        if g.deleting:
            return "group_deleting"
        if session is None:
            return "no_session"
        if session.closing:
            return "session_closing"
        if m.nofailover:
            return "nofailover"
        if not m.candidate:
            return "not_candidate"
        if not m.healthy:
            return "unhealthy"
        if g.holder_slot(m.id) is not None:
            return "holding"
        if g.policy.synchronous and m.id not in g.policy.synchronous:
            return "not_synchronous"
        if g.policy.max_lag_on_failover > 0:
            behind = lag(g, m, best)
            if behind is None:
                return "no_position"
            if behind > g.policy.max_lag_on_failover:
                return "lagging"
        return ""

    def _eligible(self, g: GroupState, m: groups_pb2.Member, best: int | None = UNKNOWN) -> bool:
        return not self.ineligible(g, m, best)

    def ranked(self, g: GroupState) -> list[groups_pb2.Member]:
        """The eligible members, best first (:func:`rank_key`)."""
        best = best_position(g)
        return sorted(
            (m for m in g.members.values() if self._eligible(g, m, best)),
            key=lambda m: rank_key(g, m),
        )

    def _best(self, g: GroupState, prefer: str = "") -> groups_pb2.Member | None:
        if prefer and prefer in g.members and self._eligible(g, g.members[prefer]):
            return g.members[prefer]
        ranked = self.ranked(g)
        return ranked[0] if ranked else None

    def choose(self, g: GroupState, slot: int) -> tuple[groups_pb2.Member | None, str]:
        """Who gets ``slot`` if it is vacant now, and why (a sentence): the pending
        handover's successor if it is eligible, else the best eligible member. A
        paused group grants only a hand switchover's successor; a deleting group and
        a slot beyond the policy's grant nothing. Pure: _fill and explain use it."""
        if g.deleting:
            return None, "the group is being deleted: nothing is granted"
        if slot >= g.policy.slots:
            return None, f"slot {slot} is beyond the policy's {g.policy.slots} slots: never granted"
        ho = g.handovers.get(slot)
        if g.pause is not None:
            target = g.members.get(ho.to_member) if ho and ho.cause == "switchover" else None
            if ho is not None and target is not None and self._eligible(g, target):
                return target, f"the switchover asked by hand names {target.id}"
            if g.pause.breaker:
                return None, (
                    f"breaker open ({g.pause.breaker}): nothing is granted until an operator "
                    "resumes the group"
                )
            return None, "the group is paused: nothing is granted until it is resumed"
        if ho is not None and ho.to_member:
            m = g.members.get(ho.to_member)
            if m is not None and self._eligible(g, m):
                return m, f"the pending {ho.cause} names {m.id}"
        ranked = self.ranked(g)
        if not ranked:
            return None, "no member is eligible"
        m, spread_note = self._spread_pick(g, slot, ranked)
        if m is not ranked[0]:
            return m, spread_note
        if g.policy.prefer_most_advanced:
            at = f"position {m.position}" if m.HasField("position") else "no position"
            return m, f"{m.id} is the best eligible member ({at}, priority {m.priority})" + (
                spread_note
            )
        return m, f"{m.id} is the best eligible member (priority {m.priority})" + spread_note

    def _spread_pick(
        self, g: GroupState, slot: int | None, ranked: list[groups_pb2.Member]
    ) -> tuple[groups_pb2.Member, str]:
        """The policy's spread rule (coord.state.spread) over ``ranked`` (not empty) for
        ``slot`` (None: no slot is being vacated): the best member whose tag value has
        room, else the best (the spread is then violated), and a clause that says why."""
        if not spread.enabled(g.policy):
            return ranked[0], ""
        tag, limit = g.policy.spread_tag, g.policy.spread_max
        counts = spread.counts(self.groups, g, skip_slot=slot)
        for m in ranked:
            v = spread.value(m, tag)
            n = counts.get(v, 0)
            if n >= limit:
                continue
            room = f"{spread.shown(tag, v)} has {n} of at most {limit} masters"
            if m is ranked[0]:
                return m, f"; {room}"
            best = ranked[0]
            full = spread.shown(tag, spread.value(best, tag))
            return m, (
                f"{m.id} keeps the spread ({room}): preferred to {best.id} (priority "
                f"{best.priority}), whose {full} has {counts.get(spread.value(best, tag), 0)} "
                f"already ({spread.describe(g.policy)})"
            )
        v = spread.value(ranked[0], tag)
        return ranked[0], (
            f"; no eligible member keeps the spread ({spread.describe(g.policy)}; its "
            f"{spread.shown(tag, v)} has {counts.get(v, 0)}): granted anyway, the spread is "
            "violated"
        )

    def _fill(self, g: GroupState, now: int, resumed: bool = False) -> None:
        """Grant every empty slot to :meth:`choose`'s member (slot order), then keep
        every pending handover's promise valid. A deleting group grants nothing; a
        paused one only a hand switchover's successor. The failover breaker counts
        the automatic failovers among the grants, unless the operator's resume made
        them (``resumed``)."""
        for slot in [s for s in g.handovers if s not in g.holdings and s >= g.policy.slots]:
            del g.handovers[slot]  # a surplus slot: never granted again
        for slot in [s for s in g.vacated_cause if s >= g.policy.slots]:
            del g.vacated_cause[slot]
        if g.deleting:
            for slot in [s for s in g.handovers if s not in g.holdings]:
                del g.handovers[slot]  # nothing will be granted there
            return
        for slot in range(g.policy.slots):
            if slot in g.holdings:
                continue
            m, _ = self.choose(g, slot)
            g.handovers.pop(slot, None)  # consumed: granted now or moot
            if m is None:
                continue
            cause = g.vacated_cause.pop(slot, "initial")
            over = spread.over_after(self.groups, g, slot, m)
            rev = self.emit.reserve()
            g.holdings[slot] = groups_pb2.Holding(
                slot=slot, member_id=m.id, token=rev, granted_time_ms=now, cause=cause
            )
            self.emit.record(
                rev, "master_elected", group=g.name, member=m.id, slot=slot, token=rev,
                cause=cause, session_id=m.session_id, spread_violated=over,
            )  # fmt: skip
            if not resumed and breaker.note_grant(g, cause, now):
                self._open_breaker(g, m.id, slot, now)
        self._retarget(g, now)

    def _open_breaker(self, g: GroupState, member_id: str, slot: int, now: int) -> None:
        """The failover breaker trips (coord.state.breaker): the group pauses itself,
        after the failover that tripped it (the rest of this fill grants nothing)."""
        why = breaker.describe(g.policy)
        rev = self.emit.reserve()
        g.pause = groups_pb2.GroupPause(revision=rev, paused_time_ms=now, breaker=why)
        self.emit.record(rev, "breaker_opened", group=g.name, member=member_id, slot=slot,
                         cause=why)  # fmt: skip
        self._cancel_failbacks(g)

    def _cancel_failbacks(self, g: GroupState) -> None:
        """Cancel every pending failback of a held slot (the master stays)."""
        for slot, ho in sorted(g.handovers.items()):
            h = g.holdings.get(slot)
            if ho.cause != "failback" or h is None or h.revoked:
                continue
            del g.handovers[slot]
            self.emit(
                "stepdown_cancelled", group=g.name, member=h.member_id, slot=slot,
                token=h.token, cause=ho.cause, handover=ho,
            )  # fmt: skip

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
            successor = "" if ho.named or ho.cause == "failback" else self._successor(g, slot)
            if not successor and ho.cause not in ("resign", "member_left"):
                if not g.members[h.member_id].leaving:
                    del g.handovers[slot]
                    self.emit(
                        "stepdown_cancelled", group=g.name, member=h.member_id, slot=slot,
                        token=h.token, cause=was.cause, handover=was,
                    )  # fmt: skip
                    continue
                ho.cause, ho.named = "member_left", False
                successor = self._successor(g, slot)
            ho.to_member = successor
            self.emit(
                "stepdown_requested", group=g.name, member=h.member_id, slot=slot,
                token=h.token, cause=ho.cause, handover=ho,
            )  # fmt: skip

    def _release(self, g: GroupState, slot: int, cause: str, now: int) -> None:
        """Free a slot (the caller runs _fill next). A member that was unregistered by
        someone else while it held the slot leaves now."""
        h = g.holdings.pop(slot)  # a pending handover stays: the fill honours its target
        if slot < g.policy.slots:
            g.vacated_cause[slot] = cause
        else:
            g.vacated_cause.pop(slot, None)  # a surplus slot (slots lowered): never granted
        if g.deleting:
            self._settle_groups.add(g.name)
        holder = g.members.get(h.member_id)
        session = self.sessions.get(holder.session_id) if holder is not None else None
        if session is not None and session.closing:
            self._settle_sessions.add(session.id)
        self.emit(
            "master_lost", group=g.name, member=h.member_id, slot=slot, token=h.token, cause=cause
        )
        if g.pause is not None and slot < g.policy.slots and self.choose(g, slot)[0] is None:
            self.emit("failover_paused", group=g.name, member=h.member_id, slot=slot, cause=cause)
        m = g.members.get(h.member_id)
        if m is not None and m.leaving:
            self._remove_member(g, m.id, "member_left", now)

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
            reason = self.ineligible(g, target)
            if reason:
                why = reason_text(g, target, reason)
                raise FailedPrecondition(
                    f"member {to_member!r} cannot take over ({why}): it must be a healthy "
                    "candidate, not nofailover, with a live session and no slot (and in the "
                    "synchronous set, not lagging, when the policy says so)"
                )
            if to_member in promised:
                raise FailedPrecondition(
                    f"member {to_member!r} is already the successor of a pending handover in "
                    f"group {g.name!r}: wait for it to finish"
                )
        free = [s for s in held if s not in g.handovers]
        if not to_member:
            to_member = self._successor(g, self.stepdown_slot(g, free, None) if free else None)
            if not to_member:
                raise FailedPrecondition(f"group {g.name!r} has no eligible candidate to take over")
        if not free:
            slot = held[0]
            raise FailedPrecondition(
                f"a {g.handovers[slot].cause} of group {g.name!r} is already in progress"
            )
        slot = self.stepdown_slot(g, free, g.members[to_member])
        return self._request_stepdown(g, slot, to_member, "switchover", bool(req.to_member), now)

    def stepdown_slot(
        self, g: GroupState, free: list[int], target: groups_pb2.Member | None
    ) -> int:
        """Which master of ``g`` a switchover asks to step down, among the held slots
        ``free`` (slot order, none with a pending handover): the lowest slot; with a
        spread rule, the newest grant (highest token) among the masters whose tag value
        is over the limit and differs from ``target``'s, if any (coord.state.rebalance
        plans by the same rule)."""
        if spread.enabled(g.policy):
            tag, limit = g.policy.spread_tag, g.policy.spread_max
            counts = spread.counts(self.groups, g)
            aim = spread.value(target, tag) if target is not None else None
            over = [
                s for s in free
                if counts.get(v := spread.value(g.members[g.holdings[s].member_id], tag), 0)
                > limit and v != aim
            ]  # fmt: skip
            if over:
                return max(over, key=lambda s: g.holdings[s].token)
        return free[0]

    def _successor(self, g: GroupState, slot: int | None = None) -> str:
        """The best eligible candidate that no pending handover has promised a slot to;
        with a spread rule, for the master of ``slot`` to hand over to, the best one
        whose tag value has room once that master is gone (coord.state.spread)."""
        promised = {ho.to_member for ho in g.handovers.values()}
        best = best_position(g)
        ranked = sorted(
            (m for m in g.members.values() if self._eligible(g, m, best) and m.id not in promised),
            key=lambda m: rank_key(g, m),
        )
        return self._spread_pick(g, slot, ranked)[0].id if ranked else ""

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

    def _resume(self, g: GroupState, cause: str, now: int) -> None:
        """End a pause: empty slots are filled at once; failback holds count from now;
        the failover breaker (closed now, if it was open) counts again from zero."""
        g.pause = None
        g.breaker_failovers = []
        self.emit("group_resumed", group=g.name, cause=cause)
        self._fill(g, now, resumed=True)

    def changed(self) -> None:
        """A group command ran: the pending waits may have changed."""
        self.waits_version = object()

    def pending_waits(self) -> list[waits.Wait]:
        """Every wait the leader must time now (group-name order): revoked holdings
        (their holder's TTL), handovers of held slots (their timeout), candidates
        that outrank a holder of a failback group (the failback hold), and pauses
        with a time limit (their wait)."""
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
            if g.pause is not None and g.pause.wait_ms > 0:
                key = (waits.PAUSE, name, 0, "", g.pause.revision)
                out.append(waits.Wait(key, g.pause.wait_ms))
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
            elif kind == waits.PAUSE and g.pause is not None and g.pause.revision == since:
                self._resume(g, "pause_expired", now)

    def _failback_plan(self, g: GroupState) -> list[tuple[int, str]]:
        """(slot, candidate) for each failback this group may need.

        The lowest-priority holders are paired with the best candidates, each
        candidate at most once (a multi-master group must not ask two holders to
        make way for one member); a pair counts only if the candidate outranks the
        holder. Slots with a pending handover or revocation are left alone.
        """
        if g.policy.failback != groups_pb2.FAILBACK_AUTO or g.pause is not None:
            return []
        holders = sorted(
            (g.members[h.member_id].priority, slot, h.member_id)
            for slot, h in g.holdings.items()
            if not h.revoked and slot not in g.handovers
        )
        targeted = {ho.to_member for ho in g.handovers.values()}
        best = best_position(g)
        candidates = sorted(
            (m for m in g.members.values() if self._eligible(g, m, best) and m.id not in targeted),
            key=lambda m: (-m.priority, m.registered_revision),
        )
        rule = spread.enabled(g.policy)
        tag, limit = g.policy.spread_tag, g.policy.spread_max
        counts = spread.counts(self.groups, g) if rule else {}
        plan: list[tuple[int, str]] = []
        used: set[str] = set()
        for priority, slot, holder in holders:
            for c in candidates:
                if c.id in used:
                    continue
                if c.priority <= priority:
                    break  # nobody after it outranks this holder either
                v, w = spread.value(g.members[holder], tag), spread.value(c, tag)
                if rule and w != v and counts.get(w, 0) + 1 > limit:
                    continue  # never fail back onto a full value of the spread tag
                plan.append((slot, c.id))
                used.add(c.id)
                if rule:
                    counts[v] = counts.get(v, 0) - 1
                    counts[w] = counts.get(w, 0) + 1
                break
        return plan
