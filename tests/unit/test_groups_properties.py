"""Hypothesis properties of sessions, groups and holdings, driven by serialized Commands.

:class:`GroupsMachine` (a ``hypothesis.stateful`` machine) feeds
``StateMachine.apply`` the bytes a Raft log would hold: sessions opened, closed
and expired (with the right or a stale epoch), groups created and deleted with
1-3 slots and random policies, members registered (random priorities,
``nofailover``, ``candidate``, ids shared between sessions, sessions that are
gone), unregistered (by their own session, another one or none), campaigning,
resigning, switched over and revoked, and Advances, at a clock that starts at
some epoch or at 0 and moves by random steps (sometimes by more than any TTL or
timeout, sometimes exactly onto the next timer) and a term that grows.
:class:`HandoverMachine` runs the same rules from a start with more candidates
than slots, where step-down requests name successors that then withdraw, leave
or take another slot.

The model (the rules of ``coord/state/groups.py``'s docstring): a handover of a
holding that is not revoked always names an eligible successor no other handover
promised (or nobody, for an operator's resign or unregister); when its successor
stops being eligible it is re-targeted to the best free candidate or cancelled
(``retargeted``); a handover of a revoked holding is left alone (its successor is
settled at the release). A member unregistered by anyone but its own session while
it holds a slot is ``leaving``: asked to step down (cause member_left; a handover
already pending stands for that request, and instead of being cancelled it becomes
the member_left request), never a candidate again, removed as soon as its slot is
released: a leaving holder always has a handover or a revoked holding. The
stepdown_cancelled event carries the handover as it was (with its successor).
``Holding.revoked`` is the revoked flag (``revoked_time_ms`` is 0 for a revoke at
time 0).

A command first runs every timer due by its time, then does its own work. Each
step therefore builds a *shadow*: the state before the command restored from a
snapshot, plus an Advance at the command's time. The shadow is what the command
sees: rejections are predicted from it, a rejected command must leave the state
equal to it, grants made by timers are judged against it.

A replica with a warm timer cache (``Groups.run_due_timers`` skips timers
until the cached next timer) must behave exactly like one that has just been
restored from a snapshot (cold cache): every step also applies the command to
such a cold copy and compares.

After every command the machine checks the invariants listed in
:meth:`GroupsMachine.step`, and after every rule those of the ``@invariant``
methods (replicas, snapshots, ``next_timer_ms``).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from coord.errors import OutOfRange
from coord.state import limits
from coord.state.groups import Groups, GroupState
from coord.state.machine import StateMachine, decode_snapshot
from coord.v1 import groups_pb2 as gp
from coord.v1 import raft_pb2

T0 = 1_700_000_000_000
GROUP_NAMES = ["g0", "g1", "g2"]
MEMBER_IDS = ["m0", "m1", "m2", "m3", "m4", "m5"]
TTLS = [500, 1000, 3000]
BAD_TTLS = [0, limits.MIN_SESSION_TTL_MS - 1, limits.MAX_SESSION_TTL_MS + 1]
HOLDS = [0, 300, 2000]
TIMEOUTS = [0, 200, 1500]  # 0: the default (10 s)
EVENTS_KEPT = 24  # small, so that the log evicts during a run

DT = st.one_of(
    st.integers(0, 60),
    st.integers(0, 1600),
    st.sampled_from([3500, 12_000]),  # past every TTL / every switchover timeout
)
PICK = st.integers(0, 63)  # an index into a list that changes during the run
SLOTS = st.one_of(st.integers(1, 3), st.integers(1, 3), st.sampled_from([0, 65, -1]))
FAILBACK = st.sampled_from(
    [gp.FAILBACK_UNSPECIFIED, gp.FAILBACK_OFF, gp.FAILBACK_AUTO, gp.FAILBACK_AUTO]
)
RID = st.booleans()
KNOWN = st.sampled_from([True, True, True, True, False])
PRIORITY = st.integers(0, 3)
WHO = st.sampled_from(["own", "own", "own", "other", "operator"])
WITHDRAW = st.sampled_from(
    ["not a candidate", "nofailover", "unregister", "close", "expire", "resign", "revoke"]
)


# -- helpers ------------------------------------------------------------------------------


def command(t: int, term: int, rid: str = "", **op: Any) -> bytes:
    return raft_pb2.Command(request_id=rid, time_ms=t, term=term, **op).SerializeToString()


def advance_cmd(t: int, term: int) -> bytes:
    return command(t, term, advance=gp.Advance())


def restored(snapshot: bytes) -> StateMachine:
    sm = StateMachine()
    sm.restore(snapshot)
    return sm


def clone(result: raft_pb2.CommandResult) -> raft_pb2.CommandResult:
    out = raft_pb2.CommandResult()
    out.CopyFrom(result)
    return out


def state_of(sm: StateMachine) -> bytes:
    """The snapshot without the dedupe table (which remembers rejected requests too)."""
    snap = decode_snapshot(sm.snapshot())
    del snap.dedupe[:]
    return snap.SerializeToString(deterministic=True)


def holds(g: GroupState, member_id: str) -> bool:
    return any(h.member_id == member_id for h in g.holdings.values())


def eligible(gs: Groups, g: GroupState, m: gp.Member) -> bool:
    return (
        m.candidate
        and m.healthy
        and not m.nofailover
        and m.session_id in gs.sessions
        and not holds(g, m.id)
    )


def eligible_id(gs: Groups, g: GroupState, member_id: str) -> bool:
    """``eligible`` by id: a member that is gone is not eligible."""
    m = g.members.get(member_id)
    return m is not None and eligible(gs, g, m)


def rank(m: gp.Member) -> tuple[int, int]:
    return (-m.priority, m.registered_revision)


def best(gs: Groups, g: GroupState) -> gp.Member | None:
    ranked = sorted((m for m in g.members.values() if eligible(gs, g, m)), key=rank)
    return ranked[0] if ranked else None


def copy_of(ho: gp.Handover, **changes: Any) -> gp.Handover:
    out = gp.Handover()
    out.CopyFrom(ho)
    for k, v in changes.items():
        setattr(out, k, v)
    return out


def same_request(a: gp.Handover | None, b: gp.Handover | None) -> bool:
    """The same step-down request (its successor may have been re-targeted)."""
    return (
        a is not None
        and b is not None
        and (a.slot, a.from_member, a.cause, a.deadline_ms, a.named)
        == (b.slot, b.from_member, b.cause, b.deadline_ms, b.named)
    )


def continues(a: gp.Handover | None, b: gp.Handover | None) -> bool:
    """``b`` carries on the step-down request ``a``: the same request (``same_request``),
    or ``a`` (of a holder that is leaving) turned into the holder's member_left request
    instead of being cancelled (not named, same deadline; see ``retargeted``)."""
    return same_request(a, b) or (
        a is not None
        and b is not None
        and (a.slot, a.from_member, a.deadline_ms) == (b.slot, b.from_member, b.deadline_ms)
        and a.cause != "member_left"
        and (b.cause, b.named) == ("member_left", False)
    )


def failback_plan(gs: Groups, g: GroupState) -> list[tuple[int, str, int]]:
    """(slot, candidate, due) per the documented rule: the lowest-priority holders (no
    handover, not revoked) are paired with the best candidates not already a handover's
    target, each candidate once, while the candidate outranks the holder."""
    if g.policy.failback != gp.FAILBACK_AUTO:
        return []
    holders = sorted(
        (g.members[h.member_id].priority, slot)
        for slot, h in g.holdings.items()
        if not h.revoked and slot not in g.handovers
    )
    targeted = {ho.to_member for ho in g.handovers.values()}
    ranked = sorted(
        (m for m in g.members.values() if eligible(gs, g, m) and m.id not in targeted), key=rank
    )
    plan = []
    for (priority, slot), m in zip(holders, ranked, strict=False):
        if m.priority <= priority:
            break
        plan.append((slot, m.id, m.eligible_since_ms + g.policy.failback_hold_ms))
    return plan


def expected_next_timer(gs: Groups) -> int | None:
    """The earliest time at which an Advance does something (None: never, as things stand)."""
    due: list[int] = []
    for g in gs.groups.values():
        for slot, h in g.holdings.items():
            if h.revoked:
                due.append(h.release_after_ms)
            elif slot in g.handovers:
                due.append(g.handovers[slot].deadline_ms)
        due += [t for _, _, t in failback_plan(gs, g)]
    return min(due, default=None)


def free_successor(gs: Groups, g: GroupState, but: int | None = None) -> str:
    """The best eligible candidate that no pending handover (but the one of slot ``but``)
    promised a slot to ("": none)."""
    promised = {ho.to_member for s, ho in g.handovers.items() if s != but}
    ranked = sorted(
        (m for m in g.members.values() if eligible(gs, g, m) and m.id not in promised), key=rank
    )
    return ranked[0].id if ranked else ""


def retargeted(gs: Groups, g: GroupState, slot: int, ho: gp.Handover) -> gp.Handover | None:
    """What a handover becomes when its successor stopped being eligible (``gs``/``g``: the
    state once the successor stopped): a named switchover and a failback are cancelled
    (None); any other goes to the best eligible candidate no other handover promised; with
    none, a resign or member_left keeps asking the holder for nobody (""), a switchover is
    cancelled. A handover of a holder that is leaving is never cancelled: it becomes the
    holder's member_left request (not named, same deadline), for the best eligible
    candidate no other handover promised, or for nobody."""
    successor = free_successor(gs, g, but=slot)
    retargetable = not ho.named and ho.cause != "failback"
    if retargetable and (successor or ho.cause in {"resign", "member_left"}):
        return copy_of(ho, to_member=successor)
    if g.members[ho.from_member].leaving:
        return copy_of(ho, to_member=successor, cause="member_left", named=False)
    return None


def switchover_plan(gs: Groups, g: GroupState, to_member: str) -> tuple[int, str] | None:
    """(slot, successor) of a switchover: the first master with no pending handover steps
    down for ``to_member``, or for the best candidate no pending handover promised; None
    if there is no such master or successor (every handover names its successor)."""
    promised = {ho.to_member for ho in g.handovers.values()}
    if to_member:
        m = g.members.get(to_member)
        ok = m is not None and eligible(gs, g, m) and to_member not in promised
        successor = to_member if ok else ""
    else:
        successor = free_successor(gs, g)
    free = sorted(s for s, h in g.holdings.items() if not h.revoked and s not in g.handovers)
    return (free[0], successor) if free and successor else None


def predict_error(gs: Groups, op: str, msg: Any) -> str:
    """The error_reason the command must get in state ``gs`` (timers already run)."""
    if op == "open_session":
        ok = limits.MIN_SESSION_TTL_MS <= msg.ttl_ms <= limits.MAX_SESSION_TTL_MS
        return "" if ok else "invalid_argument"
    if op == "close_session":
        return "" if msg.session_id in gs.sessions else "not_found"
    if op in {"expire_session", "advance"}:
        return ""
    if op == "create_group":
        if msg.name in gs.groups:
            return "already_exists"
        return "" if 1 <= msg.policy.slots <= limits.MAX_SLOTS else "invalid_argument"
    if op == "delete_group":
        return "" if msg.name in gs.groups else "not_found"
    name = msg.member.group if op == "register" else msg.group
    g = gs.groups.get(name)
    if g is None:
        return "not_found"
    if op == "register":
        if msg.member.session_id not in gs.sessions:
            return "not_found"
        old = g.members.get(msg.member.id)
        return "already_exists" if old and old.session_id != msg.member.session_id else ""
    if op == "revoke_holding":
        return "" if msg.slot in g.holdings else "failed_precondition"
    if op == "switchover":
        if not any(not h.revoked for h in g.holdings.values()):
            return "failed_precondition"  # no master
        if msg.to_member and msg.to_member not in g.members:
            return "not_found"
        if switchover_plan(gs, g, msg.to_member) is None:
            return "failed_precondition"  # no (free) successor, or no master without one
        return ""
    m = g.members.get(msg.member_id)
    if m is None:
        return "not_found"
    if op == "campaign":  # a leaving member, or a nofailover one, never campaigns
        return "failed_precondition" if m.leaving or m.nofailover else ""
    if op == "resign":
        return "" if holds(g, m.id) else "failed_precondition"
    return ""  # unregister


def check_structure(gs: Groups, now: int) -> None:
    """Holdings, handovers and members agree with each other and with the sessions; every
    handover of a holding that is not revoked names an eligible successor, or nobody (a
    resign or member_left only); no successor is promised twice."""
    for name, g in gs.groups.items():
        assert g.name == name
        holders = [h.member_id for h in g.holdings.values()]
        assert len(holders) == len(set(holders)), f"{name}: a member holds two slots"
        for slot, h in g.holdings.items():
            assert 0 <= slot < g.policy.slots
            assert h.slot == slot
            m = g.members.get(h.member_id)
            assert m is not None, f"{name}/{slot}: holder {h.member_id} is not a member"
            session = gs.sessions.get(m.session_id)
            assert session is not None, f"{name}/{slot}: holder's session is gone"
            assert h.granted_time_ms <= now
            if h.revoked:  # revoked_time_ms may be 0 (a revoke at time 0)
                assert h.revoked_time_ms <= now
                assert h.release_after_ms == h.revoked_time_ms + session.ttl_ms
                assert h.release_after_ms > now, "a due revoked holding was not released"
            else:
                assert (h.revoked_time_ms, h.release_after_ms) == (0, 0)
        for slot, ho in g.handovers.items():
            held = g.holdings.get(slot)
            assert held is not None, f"{name}/{slot}: handover of an empty slot"
            assert ho.slot == slot
            assert ho.from_member == held.member_id
            assert ho.cause in {"switchover", "failback", "resign", "member_left"}
            assert not ho.named or ho.cause == "switchover", "only a switchover names"
            if ho.to_member:
                assert ho.to_member in g.members, f"{name}/{slot}: successor is gone"
            if held.revoked:
                continue  # its successor is settled at the release, whatever it became
            assert ho.deadline_ms > now, "a due handover was not revoked"
            if ho.to_member:
                assert eligible_id(gs, g, ho.to_member), (
                    f"{name}/{slot}: handover to {ho.to_member}, who is not eligible"
                )
            else:
                assert ho.cause in {"resign", "member_left"}, (
                    f"{name}/{slot}: a {ho.cause} for nobody"
                )
        promised = [ho.to_member for ho in g.handovers.values() if ho.to_member]
        assert len(promised) == len(set(promised)), f"{name}: one successor promised twice"
        for slot in g.vacated_cause:
            assert 0 <= slot < g.policy.slots
            assert slot not in g.holdings or g.holdings[slot].revoked
        regs = [m.registered_revision for m in g.members.values()]
        assert regs == sorted(set(regs)), "registration order is not revision order"
        for mid, m in g.members.items():
            assert (m.id, m.group) == (mid, name)
            assert m.session_id in gs.sessions, f"{name}/{mid}: bound to a dead session"
            assert m.healthy
            if m.leaving:  # it leaves as soon as its slot is released
                slot = g.holder_slot(mid)
                assert slot is not None, f"{name}/{mid}: leaving, but holds no slot"
                assert not m.candidate, f"{name}/{mid}: leaving, but a candidate"
                assert g.holdings[slot].revoked or slot in g.handovers, (
                    f"{name}/{mid}: leaving, but nothing asks it to step down"
                )


def check_filled(gs: Groups) -> None:
    """No empty slot while an eligible candidate waits."""
    for g in gs.groups.values():
        if len(g.holdings) < g.policy.slots:
            waiting = [m.id for m in g.members.values() if eligible(gs, g, m)]
            assert not waiting, f"{g.name}: empty slot while {waiting} are eligible"


def check_timers_ran(gs: Groups, now: int) -> None:
    """After the timers of ``now`` ran: no failback is due (handovers and releases: see
    check_structure)."""
    for g in gs.groups.values():
        for slot, candidate, due in failback_plan(gs, g):
            assert due > now, (
                f"{g.name}/{slot}: failback to {candidate} due at {due} did not happen at {now}"
            )


# -- the stateful test --------------------------------------------------------------------


class GroupsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sm = StateMachine()
        self.replica = StateMachine()
        self.now = T0
        self.term = 1
        self.opened: list[gp.Session] = []  # every session ever opened, dead ones too
        self.last_token: dict[tuple[str, int], int] = {}
        self.retryable: list[tuple[bytes, raft_pb2.CommandResult]] = []
        self.rids = 0

    # -- one step, every check ------------------------------------------------------------

    def step(self, dt: int, rid: bool = False, **op: Any) -> raft_pb2.CommandResult:
        """Apply one command to both replicas and check, after it:

        - the answer: the predicted error_reason (or none); a rejected command changes
          nothing but what its timers did (state == shadow's);
        - events: one per revision, consecutive, term and time of the command; the log is
          gap-free, ``since`` returns its tails and OutOfRange below the oldest kept;
        - structure (check_structure) and "filled" (check_filled), in the shadow and after;
        - timers (check_timer_phase): a revoked holding is released exactly when its
          release_after_ms has come (a leaving holder leaves with it), a handover
          re-targeted or cancelled only because a refill gave its successor a slot, one
          still pending revoked exactly at its deadline, a due failback requested (only
          for a higher-priority member held for failback_hold_ms);
        - handovers after the command (check_handovers): kept, consumed, re-targeted or
          cancelled as the rules say; new ones only by the command (its effect_);
        - events: master_revoked carries the holding, stepdown_* the handover
          (check_event_records);
        - releases by a command: only by the holder itself (check_released_by_holder);
        - grants: token == revision of its master_elected event, strictly increasing per
          (group, slot), the holder's token is the slot's last grant; the grantee ranks
          first among the eligible (priority, then registration);
        - replicas agree, a cold copy (restored just before) too; snapshot/restore is the
          identity; next_timer_ms (check_timer).
        """
        self.now += dt
        t, term = self.now, self.term
        ((name, msg),) = op.items()
        before = self.sm.snapshot()
        rev0 = self.sm.revision
        pre = restored(before)
        shadow = restored(before)
        shadow.apply(advance_cmd(t, term))
        rev_mid = shadow.revision
        expected = predict_error(shadow.groups, name, msg)

        request_id = ""
        if rid:
            self.rids += 1
            request_id = f"r{self.rids}"
        data = command(t, term, request_id, **op)
        res = clone(self.sm.apply(data))
        assert res == self.replica.apply(data), "replicas answered differently"
        cold = restored(before)
        assert res == cold.apply(data), "a just-restored replica answered differently"
        assert cold.snapshot() == self.sm.snapshot(), "a just-restored replica diverged"
        assert res.error_reason == expected, (name, msg, res.error_message)
        assert res.revision == self.sm.revision
        if res.error_reason:
            assert res.error_message.startswith("coord: ")
            assert self.sm.revision == rev_mid
            assert state_of(self.sm) == state_of(shadow), "a rejected command changed state"
        if request_id:
            self.retryable.append((data, res))

        self.check_events(rev0, t, term)
        for gs, at in ((shadow.groups, t), (self.sm.groups, t)):
            check_structure(gs, at)
            check_filled(gs)
        check_timers_ran(shadow.groups, t)
        self.check_timer_phase(pre.groups, shadow.groups, rev0, rev_mid, t)
        self.check_handovers(shadow.groups, self.sm.groups, name, msg, rev_mid)
        self.check_event_records(self.new_events(rev_mid, self.sm.revision), self.sm.groups, t)
        self.check_released_by_holder(shadow.groups, name, msg)
        self.check_grants(pre.groups, shadow.groups, rev0, rev_mid)
        self.check_grants(shadow.groups, self.sm.groups, rev_mid, self.sm.revision)
        self.check_tokens()
        self.check_effect(name, msg, res, shadow, t)
        return res

    def new_events(self, after: int, upto: int) -> list[gp.Event]:
        """Events (after, upto]; [] if the log already evicted some of them (a step can
        produce more events than the small log of this test keeps: then its per-event
        checks are skipped and the token bookkeeping resynchronised, see check_tokens)."""
        if upto <= after or after + 1 < self.sm.events.oldest_revision:
            return []
        return self.sm.events.since(after + 1, upto)[: upto - after]

    def check_events(self, rev0: int, t: int, term: int) -> None:
        rev = self.sm.revision
        log = list(self.sm.events.items())
        oldest = self.sm.events.oldest_revision
        assert len(log) == min(rev, EVENTS_KEPT)
        assert [e.revision for e in log] == list(range(oldest, rev + 1))
        new = self.new_events(rev0, rev)
        if rev0 + 1 >= oldest:
            assert [e.revision for e in new] == list(range(rev0 + 1, rev + 1))
        for e in new:
            assert (e.term, e.time_ms) == (term, t)
        for r in {oldest, (oldest + rev) // 2, rev, rev + 1}:
            if r >= 1:
                assert self.sm.events.since(r, rev) == log[r - oldest :]
        if oldest > 1:
            try:
                self.sm.events.since(oldest - 1, rev)
            except OutOfRange as e:
                assert str(rev) in e.message
            else:
                raise AssertionError("since() below the oldest kept event did not raise")

    def check_timer_phase(self, pre: Groups, mid: Groups, rev0: int, rev_mid: int, t: int) -> None:
        """What the Advance at the start of the command did, against what was due, in order:
        the revoked holdings due are released (a leaving holder leaves with its slot) and
        their slots refilled, which re-targets or cancels a handover whose successor took a
        slot; then a handover still pending at its deadline revokes its holding; then a due
        failback is requested. Nothing else changes."""
        for name, g in pre.groups.items():
            g2 = mid.groups[name]  # timers never delete groups
            due = [s for s, h in g.holdings.items() if h.revoked and h.release_after_ms <= t]
            self.check_timer_holdings(g, g2, mid, due, t)
            for slot, ho in g.handovers.items():  # re-targeted or cancelled: announced
                ho2 = g2.handovers.get(slot)
                if not g.holdings[slot].revoked and ho2 != ho:
                    kept = continues(ho, ho2)
                    self.check_announced(rev0, rev_mid, name, slot, ho2 if kept else None, ho)
            self.check_timer_requests(g, g2, mid, t)
        self.check_timer_events(pre, mid, rev0, rev_mid, t)

    def check_timer_holdings(
        self, g: GroupState, g2: GroupState, mid: Groups, due: list[int], t: int
    ) -> None:
        """Each holding and handover of a group before the timers (``g``) against after
        (``g2``); ``due``: the revoked slots due for release."""
        name = g.name
        for slot, h in g.holdings.items():
            h2 = g2.holdings.get(slot)
            same = h2 is not None and h2.token == h.token
            ho, ho2 = g.handovers.get(slot), g2.handovers.get(slot)
            if h.revoked:
                assert same == (slot not in due), "release not at release_after_ms"
                if not same:
                    if g.members[h.member_id].leaving:
                        assert h.member_id not in g2.members, "a leaving holder stayed"
                    continue
                assert h2 == h
                if ho is None:
                    assert ho2 is None
                else:  # settled at the release: only its successor's removal clears it
                    gone = ho.to_member and ho.to_member not in g2.members
                    assert ho2 == (copy_of(ho, to_member="") if gone else ho)
                continue
            assert h2 is not None and same, f"{name}/{slot}: a timer took a held slot"
            if ho is None:
                assert h2 == h
                continue  # a failback may have been requested (below)
            kept = continues(ho, ho2)  # (maybe re-targeted, or made a member_left request)
            if kept and ho.deadline_ms <= t:  # revoked at its deadline
                assert h2.revoked, f"{name}/{slot}: handover due at {ho.deadline_ms} not done"
                assert h2.revoked_time_ms == t
                assert (h2.member_id, h2.token, h2.granted_time_ms, h2.cause) == (
                    h.member_id,
                    h.token,
                    h.granted_time_ms,
                    h.cause,
                )
                assert ho2 is not None
                assert g2.vacated_cause.get(slot, "admin_revoke") == ho2.cause
            else:
                assert h2 == h, f"{name}/{slot}: revoked before its deadline or without it"
            if ho2 == ho:
                assert not ho.to_member or eligible_id(mid, g2, ho.to_member)
                continue
            # Re-targeted, made a member_left request or cancelled: only because a refill
            # gave its successor a slot.
            assert due, f"{name}/{slot}: a handover changed with no release"
            assert ho.to_member and holds(g2, ho.to_member), f"{name}/{slot}: {ho} changed"
            leaving = g2.members[h.member_id].leaving
            if len(due) == 1:  # one refill, in the state the timers end with
                want = retargeted(mid, g2, slot, ho)
                if want is None:  # cancelled (a failback may have been requested since)
                    assert not kept, f"{name}/{slot}: {ho} -> {ho2}, not cancelled"
                else:
                    assert ho2 == want, f"{name}/{slot}: {ho} -> {ho2}, not {want}"
            elif kept and same_request(ho, ho2):
                assert not ho.named and ho.cause != "failback"
            elif kept:
                assert leaving, f"{name}/{slot}: {ho} -> {ho2}, but its holder stays"
            else:
                assert ho.named or ho.cause in {"failback", "switchover"}
                assert not leaving, f"{name}/{slot}: {ho} of a leaving holder cancelled"

    def check_timer_requests(self, g: GroupState, g2: GroupState, mid: Groups, t: int) -> None:
        """A handover that was not there before the timers: a failback due now."""
        for slot, ho2 in g2.handovers.items():
            h, h2 = g.holdings.get(slot), g2.holdings[slot]
            if h is not None and h.token == h2.token and continues(g.handovers.get(slot), ho2):
                continue
            # A new request: a failback due now.
            assert (ho2.cause, ho2.named) == ("failback", False)
            assert g2.policy.failback == gp.FAILBACK_AUTO
            assert ho2.deadline_ms == t + g2.policy.switchover_timeout_ms
            assert not h2.revoked
            target, holder = g2.members[ho2.to_member], g2.members[ho2.from_member]
            assert target.priority > holder.priority
            assert target.eligible_since_ms + g2.policy.failback_hold_ms <= t, "too soon"
            assert eligible(mid, g2, target)

    def check_timer_events(self, pre: Groups, mid: Groups, rev0: int, rev_mid: int, t: int) -> None:
        """The events of the timers, each against the state before and after them."""
        events = self.new_events(rev0, rev_mid)
        for e in events:
            assert e.type in {
                "master_lost",
                "member_left",
                "master_elected",
                "stepdown_requested",
                "stepdown_cancelled",
                "master_revoked",
            }, e.type  # (a revoke's candidate=False on the holder has no member_updated)
            g, g2 = pre.groups[e.group], mid.groups[e.group]
            h = g.holdings.get(e.slot)
            due = [s for s, x in g.holdings.items() if x.revoked and x.release_after_ms <= t]
            if e.type == "master_lost":
                assert h is not None and h.revoked and h.release_after_ms <= t
                assert (e.member, e.token) == (h.member_id, h.token)
                assert e.cause == g.vacated_cause.get(e.slot, "admin_revoke")
            elif e.type == "member_left":
                m = g.members[e.member]
                assert m.leaving and e.cause == "member_left"
                slot = g.holder_slot(e.member)
                assert slot is not None and slot in due
                assert e.member not in g2.members
            elif e.type == "master_revoked":
                ho, ho2 = g.handovers[e.slot], g2.handovers.get(e.slot)
                assert h is not None and not h.revoked and e.token == h.token
                assert continues(ho, ho2) and ho.deadline_ms <= t
                assert ho2 is not None and e.cause == ho2.cause  # member_left if made so
            elif e.type == "stepdown_cancelled":
                was = g.handovers.get(e.slot)
                assert was is not None and same_request(was, e.handover)
                assert h is not None and e.token == h.token
                assert was.named or was.cause in {"failback", "switchover"}
                assert not g.members[h.member_id].leaving, "a leaving holder's request cancelled"
            elif e.type == "stepdown_requested":
                was = g.handovers.get(e.slot)
                if e.cause == "failback":  # new (a failback is never re-targeted)
                    assert not same_request(was, e.handover)
                    assert e.handover == g2.handovers[e.slot]
                else:  # re-targeted (the same request, for another successor), or made the
                    # member_left request of a leaving holder
                    assert was is not None and continues(was, e.handover)
                    assert h is not None and e.token == h.token
                    if same_request(was, e.handover):
                        assert not was.named
                    else:
                        assert g.members[h.member_id].leaving
        self.check_event_records(events, mid, t)

    def check_event_records(self, events: list[gp.Event], gs: Groups, t: int) -> None:
        """master_revoked carries the holding, stepdown_requested/_cancelled the handover:
        as they were then, and as the state has them if nothing changed them since."""
        last: dict[tuple[str, int], gp.Event] = {}
        for e in events:
            g = gs.groups.get(e.group)
            h = g.holdings.get(e.slot) if g is not None else None
            if e.type == "master_revoked":
                hh = e.holding
                assert (hh.slot, hh.member_id, hh.token) == (e.slot, e.member, e.token)
                assert hh.revoked and hh.revoked_time_ms == t
                if h is not None and h.token == e.token:
                    assert h == hh
            if e.type in {"stepdown_requested", "stepdown_cancelled"}:
                ho = e.handover
                assert (ho.slot, ho.from_member, ho.cause) == (e.slot, e.member, e.cause)
                if e.type == "stepdown_requested":
                    assert ho.to_member or ho.cause in {"resign", "member_left"}
                else:  # as it was: only a handover with a successor is ever cancelled
                    assert ho.to_member, "stepdown_cancelled without the cancelled successor"
                    prev = last.get((e.group, e.slot))
                    if prev is not None and prev.token == e.token:
                        assert prev.type == "stepdown_requested"
                        assert ho == prev.handover, "cancelled another handover than requested"
                last[(e.group, e.slot)] = e
        for (name, slot), e in last.items():
            g = gs.groups.get(name)
            h = g.holdings.get(slot) if g is not None else None
            if g is None or h is None or h.token != e.token:
                continue  # released since
            if e.type == "stepdown_requested":
                assert g.handovers.get(slot) == e.handover
            else:
                assert slot not in g.handovers

    def check_handovers(self, mid: Groups, post: Groups, op: str, msg: Any, rev_mid: int) -> None:
        """The handovers a command found, after it: consumed with their slot; left alone if
        their holding is revoked (but for a successor that left); else kept while their
        successor is eligible (or none: resign, member_left), re-targeted or cancelled
        (``retargeted``) otherwise. A new handover only by the command's own step-down
        request (see its effect_)."""
        for name, g in mid.groups.items():
            g2 = post.groups.get(name)
            if g2 is None:
                continue
            for slot, found in sorted(g.handovers.items()):
                h, h2, ho2 = g.holdings[slot], g2.holdings.get(slot), g2.handovers.get(slot)
                ho = found
                if (
                    op == "resign"
                    and msg.group == name
                    and msg.member_id == h.member_id
                    and not h.revoked
                    and ho.cause not in ("resign", "member_left")
                ):
                    # An operator's resign takes over a pending failback or switchover.
                    ho = copy_of(found, cause="resign", named=False)
                if h2 is None or h2.token != h.token:
                    assert ho2 is None, f"{name}/{slot}: a handover outlived its holding"
                elif h2.revoked:
                    assert h.revoked or op == "revoke_holding"
                    gone = ho.to_member and ho.to_member not in g2.members
                    assert ho2 == (copy_of(ho, to_member="") if gone else ho)
                elif not ho.to_member or eligible_id(post, g2, ho.to_member):
                    assert ho2 == ho, f"{name}/{slot}: {ho} changed to {ho2}"
                else:
                    expect = retargeted(post, g2, slot, ho)
                    assert ho2 == expect, f"{name}/{slot}: {ho} became {ho2}, not {expect}"
                    self.check_announced(rev_mid, self.sm.revision, name, slot, expect, ho)
            for slot in g2.handovers:
                h0, h2 = g.holdings.get(slot), g2.holdings[slot]
                if slot in g.handovers and h0 is not None and h0.token == h2.token:
                    continue
                assert op in {"switchover", "resign", "unregister"} and msg.group == name, (
                    f"{name}/{slot}: {op} made a handover"
                )

    def check_announced(
        self,
        after: int,
        upto: int,
        group: str,
        slot: int,
        ho: gp.Handover | None,
        was: gp.Handover,
    ) -> None:
        """A handover (``was`` at revision ``after``) re-targeted (to ``ho``) or cancelled
        (None) between revisions ``after`` and ``upto`` was announced: stepdown_requested
        with the handover as it is now (the last step-down event of its slot), or
        stepdown_cancelled with the handover as it was then (``was``, or as the last
        stepdown_requested before it made it)."""
        events = self.new_events(after, upto)
        if not events:
            return  # evicted from the small log
        mine = [
            e
            for e in events
            if (e.group, e.slot) == (group, slot) and e.type.startswith("stepdown_")
        ]
        if ho is None:
            assert any(e.type == "stepdown_cancelled" for e in mine), f"{group}/{slot}: {mine}"
            current: gp.Handover | None = was
            for e in mine:
                if e.type == "stepdown_requested":
                    current = e.handover
                elif current is not None:
                    assert e.handover == current, f"{group}/{slot}: cancelled {e.handover}"
                    current = None
        else:
            assert mine, f"{group}/{slot}: re-targeted to {ho.to_member!r} without an event"
            assert (mine[-1].type, mine[-1].handover) == ("stepdown_requested", ho)

    def check_released_by_holder(self, mid: Groups, op: str, msg: Any) -> None:
        """A command takes a slot from its holder (revoked or not) only if the holder itself
        let go (its own resign or unregister, its session closed or expired) or the group
        went: anyone else can only ask it to step down, so a slot is never granted while its
        previous holder may still believe it holds it, and a revoked one not before
        release_after_ms."""
        for name, g in mid.groups.items():
            after = self.sm.groups.groups.get(name)
            for slot, h in g.holdings.items():
                h2 = after.holdings.get(slot) if after is not None else None
                if h2 is not None and h2.token == h.token:
                    continue
                session = g.members[h.member_id].session_id
                assert (
                    (op == "delete_group" and msg.name == name)
                    or (op in {"resign", "unregister"} and msg.session_id == session)
                    or (op in {"close_session", "expire_session"} and msg.session_id == session)
                ), f"{name}/{slot}: {op} took the slot from {h.member_id}"

    def check_grants(self, pre: Groups, post: Groups, after: int, upto: int) -> None:
        """Every grant between revisions ``after`` and ``upto`` went to the best eligible."""
        for e in self.new_events(after, upto):
            if e.type != "master_elected":
                continue
            assert e.token == e.revision
            key = (e.group, e.slot)
            assert e.token > self.last_token.get(key, 0)
            self.last_token[key] = e.token
            g = post.groups[e.group]
            grantee = g.members[e.member]
            assert g.holdings[e.slot].member_id == e.member
            old = pre.groups.get(e.group)
            ho = old.handovers.get(e.slot) if old is not None else None
            named = ho.to_member if ho is not None else ""
            better = [
                m.id for m in g.members.values() if eligible(post, g, m) and rank(m) < rank(grantee)
            ]
            if named and named in g.members:
                assert not eligible(post, g, g.members[named]), (
                    f"{e.group}/{e.slot}: named target {named} lost to {e.member}"
                )
            if named == e.member:
                continue
            assert not better, f"{e.group}/{e.slot} granted to {e.member}, not to {better}"

    def check_tokens(self) -> None:
        log = {e.revision: e for e in self.sm.events.items()}
        for name, g in self.sm.groups.groups.items():
            for slot, h in g.holdings.items():
                key = (name, slot)
                if h.token >= self.sm.events.oldest_revision:
                    assert h.token == self.last_token[key]
                else:  # granted in a step whose events were evicted at once
                    assert h.token >= self.last_token.get(key, 0)
                    self.last_token[key] = h.token
                e = log.get(h.token)
                if e is not None:
                    assert (e.type, e.group, e.slot, e.member) == (
                        "master_elected",
                        name,
                        slot,
                        h.member_id,
                    )

    def check_effect(
        self, name: str, msg: Any, res: raft_pb2.CommandResult, shadow: StateMachine, t: int
    ) -> None:
        """What a successful command did (beyond the invariants): ``effect_<op>``."""
        check = getattr(self, f"effect_{name}", None)
        if not res.error_reason and check is not None:
            check(msg, res, shadow, t)

    def effect_open_session(
        self, msg: Any, res: raft_pb2.CommandResult, shadow: StateMachine, t: int
    ) -> None:
        s = self.sm.groups.sessions[res.session.id]
        assert s == res.session
        assert s.epoch == s.created_revision == res.revision
        assert (s.ttl_ms, s.created_time_ms) == (msg.ttl_ms, t)

    def effect_close_session(
        self, msg: Any, res: raft_pb2.CommandResult, shadow: StateMachine, t: int
    ) -> None:
        live = shadow.groups.sessions.get(msg.session_id)
        if isinstance(msg, gp.ExpireSession) and (live is None or live.epoch != msg.epoch):
            assert state_of(self.sm) == state_of(shadow)  # stale or unknown: ignored
            return
        assert msg.session_id not in self.sm.groups.sessions
        for g in self.sm.groups.groups.values():
            assert all(m.session_id != msg.session_id for m in g.members.values())

    effect_expire_session = effect_close_session

    def effect_create_group(
        self, msg: Any, res: raft_pb2.CommandResult, shadow: StateMachine, t: int
    ) -> None:
        g = self.sm.groups.groups[msg.name]
        assert g.created_revision == res.revision
        assert g.policy.failback in {gp.FAILBACK_OFF, gp.FAILBACK_AUTO}
        assert g.policy.switchover_timeout_ms == (
            msg.policy.switchover_timeout_ms or limits.DEFAULT_SWITCHOVER_TIMEOUT_MS
        )

    def effect_delete_group(
        self, msg: Any, res: raft_pb2.CommandResult, shadow: StateMachine, t: int
    ) -> None:
        assert msg.name not in self.sm.groups.groups

    def effect_register(
        self, msg: Any, res: raft_pb2.CommandResult, shadow: StateMachine, t: int
    ) -> None:
        want = msg.member
        m = self.sm.groups.groups[want.group].members[want.id]
        assert (m.session_id, m.priority, m.nofailover) == (
            want.session_id,
            want.priority,
            want.nofailover,
        )
        old = shadow.groups.groups[want.group].members.get(want.id)
        if old is not None:
            assert m.registered_revision == old.registered_revision
        # A leaving member stays leaving, and no candidate, whatever it asks for.
        leaving = old is not None and old.leaving
        assert (m.leaving, m.candidate) == (leaving, want.candidate and not leaving)

    def effect_unregister(
        self, msg: Any, res: raft_pb2.CommandResult, shadow: StateMachine, t: int
    ) -> None:
        """A member without a slot, or unregistered by its own session, leaves at once (its
        slot is refilled now). Anyone else unregistering a holder marks it leaving (and no
        candidate; member_updated the first time) and asks it to step down for the best
        free candidate (cause member_left), unless its holding is revoked or a handover is
        pending: it leaves with its slot."""
        g0, g = shadow.groups.groups[msg.group], self.sm.groups.groups[msg.group]
        m0 = g0.members[msg.member_id]
        slot = g0.holder_slot(msg.member_id)
        new = self.new_events(shadow.revision, self.sm.revision)
        if slot is None or msg.session_id == m0.session_id:
            assert msg.member_id not in g.members
            if slot is not None:  # released and refilled in this apply
                h = g.holdings.get(slot)
                assert h is None or h.token > g0.holdings[slot].token
            if new:
                left = [(e.type, e.cause) for e in new if e.member == msg.member_id]
                assert left[-1] == ("member_left", "member_left"), left
            return
        expect = restored(shadow.snapshot()).groups
        ge = expect.groups[msg.group]
        me = ge.members[msg.member_id]
        me.leaving, me.candidate = True, False
        kinds = [] if m0.leaving else ["member_updated"]
        if not g0.holdings[slot].revoked and slot not in g0.handovers:
            ge.handovers[slot] = gp.Handover(
                slot=slot,
                from_member=msg.member_id,
                to_member=free_successor(shadow.groups, g0),
                cause="member_left",
                deadline_ms=t + g0.policy.switchover_timeout_ms,
                named=False,
            )
            kinds.append("stepdown_requested")
        for name in shadow.groups.groups:
            assert self.sm.groups.groups[name].to_proto() == expect.groups[name].to_proto()
        assert self.sm.groups.sessions == expect.sessions
        assert self.sm.revision == shadow.revision + len(kinds)
        if new:
            assert [e.type for e in new] == kinds
            assert all(e.member == msg.member_id for e in new)

    def effect_campaign(
        self, msg: Any, res: raft_pb2.CommandResult, shadow: StateMachine, t: int
    ) -> None:
        assert self.sm.groups.groups[msg.group].members[msg.member_id].candidate

    def effect_resign(
        self, msg: Any, res: raft_pb2.CommandResult, shadow: StateMachine, t: int
    ) -> None:
        g0, g = shadow.groups.groups[msg.group], self.sm.groups.groups[msg.group]
        m0 = g0.members[msg.member_id]
        if msg.session_id == m0.session_id:  # the holder itself
            assert not holds(g, msg.member_id)
            if m0.leaving:  # it was only waiting for its slot to go
                assert msg.member_id not in g.members
            else:
                assert not g.members[msg.member_id].candidate
            return
        # Anyone else only asks the holder to step down (once; not once revoked).
        slot = g0.holder_slot(msg.member_id)
        assert slot is not None
        if g0.holdings[slot].revoked or (
            slot in g0.handovers and g0.handovers[slot].cause in ("resign", "member_left")
        ):
            assert state_of(self.sm) == state_of(shadow)
            return
        assert g.holdings[slot] == g0.holdings[slot]
        if slot in g0.handovers:
            # A pending failback or switchover becomes the resign: same successor and
            # deadline, never cancelled from now on; one stepdown_requested event.
            assert g.handovers[slot] == copy_of(g0.handovers[slot], cause="resign", named=False)
            assert self.sm.revision == shadow.revision + 1
            return
        # Named now, like a switchover's: the best candidate no handover promised ("": none).
        assert g.handovers[slot] == gp.Handover(
            slot=slot,
            from_member=msg.member_id,
            to_member=free_successor(shadow.groups, g0),
            cause="resign",
            deadline_ms=t + g0.policy.switchover_timeout_ms,
            named=False,
        )
        assert self.sm.revision == shadow.revision + 1

    def effect_switchover(
        self, msg: Any, res: raft_pb2.CommandResult, shadow: StateMachine, t: int
    ) -> None:
        g0 = shadow.groups.groups[msg.group]
        plan = switchover_plan(shadow.groups, g0, msg.to_member)
        assert plan is not None
        slot, successor = plan
        assert self.sm.groups.groups[msg.group].handovers[slot] == gp.Handover(
            slot=slot,
            from_member=g0.holdings[slot].member_id,
            to_member=successor,
            cause="switchover",
            deadline_ms=t + g0.policy.switchover_timeout_ms,
            named=bool(msg.to_member),  # only a switchover to a given member is named
        )
        assert self.sm.revision == shadow.revision + 1

    def effect_revoke_holding(
        self, msg: Any, res: raft_pb2.CommandResult, shadow: StateMachine, t: int
    ) -> None:
        g0, g = shadow.groups.groups[msg.group], self.sm.groups.groups[msg.group]
        h0, h = g0.holdings[msg.slot], g.holdings[msg.slot]
        assert h.revoked
        if h0.revoked:
            assert state_of(self.sm) == state_of(shadow)  # revoking twice: nothing
            return
        ttl = shadow.groups.sessions[g0.members[h0.member_id].session_id].ttl_ms
        assert (h.revoked_time_ms, h.release_after_ms) == (t, t + ttl)  # t may be 0
        assert not g.members[h.member_id].candidate
        ho = g0.handovers.get(msg.slot)  # the cause its release will give
        cause = ho.cause if ho is not None else "admin_revoke"
        assert g.vacated_cause.get(msg.slot, "admin_revoke") == cause
        assert self.sm.revision == shadow.revision + 1

    # -- invariants that need no step context ---------------------------------------------

    @invariant()
    def replicas_agree_and_snapshot_round_trips(self) -> None:
        snap = self.sm.snapshot()
        assert self.replica.snapshot() == snap
        assert restored(snap).snapshot() == snap

    @invariant()
    def check_timer(self) -> None:
        """next_timer_ms() is the earliest time an Advance acts (expected_next_timer): an
        Advance strictly before it changes nothing, one at it (or now, if it is past)
        changes something. A late value would also make warm and cold replicas differ
        (run_due_timers skips timers until the cached next timer)."""
        gs, last = self.sm.groups, self.sm.last_time_ms
        got, want = gs.next_timer_ms(), expected_next_timer(gs)
        assert got == want, f"next_timer_ms() {got}, expected {want}"
        snap, rev = self.sm.snapshot(), self.sm.revision
        if want is not None:
            if want > last:
                early = restored(snap)
                early.apply(advance_cmd(want - 1, self.term))
                assert early.revision == rev, f"Advance before the timer at {want} acted"
            due = restored(snap)
            due.apply(advance_cmd(max(want, last), self.term))
            assert due.revision > rev, f"Advance at the timer {want} did nothing"
        else:  # nothing pending: no Advance, however late, does anything
            idle = restored(snap)
            idle.apply(advance_cmd(last + 10**9, self.term))
            assert idle.revision == rev

    # -- rules ----------------------------------------------------------------------------
    # Most rules pick what exists (a live session, a group, one of its members) by index;
    # ``known=False`` picks from the fixed name pools instead (dead sessions, missing
    # groups and members, ids that another session registered).

    def pick_session(self, pick: int, live: bool) -> gp.Session:
        pool = (
            [self.sm.groups.sessions[k] for k in sorted(self.sm.groups.sessions)]
            if live
            else self.opened
        )
        if not pool:
            return gp.Session(id="nope", epoch=1)
        return pool[pick % len(pool)]

    def pick_group(self, pick: int, known: bool) -> str:
        names = sorted(self.sm.groups.groups)
        if known and names:
            return names[pick % len(names)]
        return [*GROUP_NAMES, "nope"][pick % (len(GROUP_NAMES) + 1)]

    def pick_member(self, group: str, pick: int, known: bool) -> str:
        g = self.sm.groups.groups.get(group)
        if known and g is not None and g.members:
            return list(g.members)[pick % len(g.members)]
        return [*MEMBER_IDS, "nope"][pick % (len(MEMBER_IDS) + 1)]

    @initialize(
        ttls=st.lists(st.sampled_from(TTLS), min_size=1, max_size=3),
        slots=st.integers(1, 3),
        failback=FAILBACK,
        hold=st.sampled_from(HOLDS),
        timeout=st.sampled_from(TIMEOUTS),
        members=st.lists(st.tuples(PICK, PRIORITY), max_size=5),
        epoch=st.sampled_from([T0, T0, T0, 0]),
    )
    def start(
        self,
        ttls: list[int],
        slots: int,
        failback: int,
        hold: int,
        timeout: int,
        members: list[tuple[int, int]],
        epoch: int,
    ) -> None:
        self.now = epoch  # 0: a revoke at time 0 has revoked_time_ms == 0, and is one
        for ttl in ttls:
            self.open_session(0, ttl, False)
        self.create_group(0, "g0", slots, failback, hold, timeout, False)
        for i, (pick, priority) in enumerate(members):
            self.do_register(0, "g0", MEMBER_IDS[i], self.pick_session(pick, True).id, priority)

    @rule(dt=DT, ttl=st.sampled_from(TTLS + TTLS + BAD_TTLS), rid=RID)
    def open_session(self, dt: int, ttl: int, rid: bool) -> None:
        res = self.step(dt, rid, open_session=gp.OpenSession(ttl_ms=ttl))
        if not res.error_reason:
            self.opened.append(res.session)

    @rule(dt=DT, pick=PICK, live=st.booleans(), rid=RID)
    def close_session(self, dt: int, pick: int, live: bool, rid: bool) -> None:
        s = self.pick_session(pick, live)
        self.step(dt, rid, close_session=gp.CloseSession(session_id=s.id))

    @rule(
        dt=DT,
        pick=PICK,
        live=st.booleans(),
        stale=st.sampled_from([0, 1, -1]),
    )
    def expire_session(self, dt: int, pick: int, live: bool, stale: int) -> None:
        s = self.pick_session(pick, live)
        expiry = gp.ExpireSession(session_id=s.id, epoch=s.epoch + stale)
        self.step(dt, expire_session=expiry)

    @rule(
        dt=DT,
        name=st.sampled_from(GROUP_NAMES),
        slots=SLOTS,
        failback=FAILBACK,
        hold=st.sampled_from(HOLDS),
        timeout=st.sampled_from(TIMEOUTS),
        rid=RID,
    )
    def create_group(
        self, dt: int, name: str, slots: int, failback: int, hold: int, timeout: int, rid: bool
    ) -> None:
        policy = gp.GroupPolicy(
            slots=slots,
            failback=gp.FailbackMode.ValueType(failback),
            failback_hold_ms=hold,
            switchover_timeout_ms=timeout,
        )
        self.step(dt, rid, create_group=gp.CreateGroup(name=name, policy=policy))

    @rule(dt=DT, pick=PICK, known=st.sampled_from([True, False, False, False]))
    def delete_group(self, dt: int, pick: int, known: bool) -> None:
        name = self.pick_group(pick, True) if known else "nope"  # deleting is rarer
        self.step(dt, delete_group=gp.DeleteGroup(name=name))

    def do_register(
        self,
        dt: int,
        group: str,
        member: str,
        session: str,
        priority: int,
        nofailover: bool = False,
        candidate: bool = True,
        rid: bool = False,
    ) -> None:
        m = gp.Member(
            group=group,
            id=member,
            session_id=session,
            priority=priority,
            nofailover=nofailover,
            candidate=candidate,
            address=f"{member}:1",
        )
        self.step(dt, rid, register=gp.Register(member=m))

    @rule(
        dt=DT,
        group=PICK,
        known=KNOWN,
        member=st.sampled_from(MEMBER_IDS),
        pick=PICK,
        live=st.sampled_from([True, True, True, False]),
        priority=PRIORITY,
        nofailover=st.sampled_from([False, False, False, True]),
        candidate=st.sampled_from([True, True, False]),
        rid=RID,
    )
    def register(
        self,
        dt: int,
        group: int,
        known: bool,
        member: str,
        pick: int,
        live: bool,
        priority: int,
        nofailover: bool,
        candidate: bool,
        rid: bool,
    ) -> None:
        """Any registration: missing groups, dead sessions, ids of other sessions included."""
        session = self.pick_session(pick, live).id
        name = self.pick_group(group, known)
        self.do_register(dt, name, member, session, priority, nofailover, candidate, rid)

    @rule(dt=DT, group=PICK, member=st.sampled_from(MEMBER_IDS), pick=PICK, priority=PRIORITY)
    def join(self, dt: int, group: int, member: str, pick: int, priority: int) -> None:
        """A plain candidate joining a group that exists, on a live session (the common case)."""
        session = self.pick_session(pick, True).id
        self.do_register(dt, self.pick_group(group, True), member, session, priority)

    @precondition(lambda self: any(g.holdings for g in self.sm.groups.groups.values()))
    @rule(dt=st.integers(0, 60), group=PICK, member=st.sampled_from(MEMBER_IDS), pick=PICK)
    def challenger(self, dt: int, group: int, member: str, pick: int) -> None:
        """A candidate that outranks the lowest holder: what failback (and its hold) is about."""
        held = sorted(n for n, g in self.sm.groups.groups.items() if g.holdings)
        name = held[group % len(held)]
        g = self.sm.groups.groups[name]
        floor = min(g.members[h.member_id].priority for h in g.holdings.values())
        session = self.pick_session(pick, True).id
        self.do_register(dt, name, member, session, floor + 1 + pick % 2)

    def member_op(self, group: int, member: int, known: bool) -> tuple[str, str]:
        name = self.pick_group(group, known)
        return name, self.pick_member(name, member, known)

    def session_as(self, group: str, member: str, who: str, pick: int) -> str:
        """``who``: "own" (the member's session), "other" (another live session, or the
        same) or "operator" (no session)."""
        g = self.sm.groups.groups.get(group)
        m = g.members.get(member) if g is not None else None
        if who == "own" and m is not None:
            return m.session_id
        if who == "other":
            return self.pick_session(pick, True).id
        return ""

    @rule(dt=DT, group=PICK, member=PICK, known=KNOWN, who=WHO, pick=PICK, rid=RID)
    def unregister(
        self, dt: int, group: int, member: int, known: bool, who: str, pick: int, rid: bool
    ) -> None:
        name, mid = self.member_op(group, member, known)
        session = self.session_as(name, mid, who, pick)
        self.step(dt, rid, unregister=gp.Unregister(group=name, member_id=mid, session_id=session))

    @precondition(lambda self: any(g.holdings for g in self.sm.groups.groups.values()))
    @rule(dt=st.integers(0, 60), pick=PICK, who=st.sampled_from(["own", "other", "operator"]))
    def unregister_a_holder(self, dt: int, pick: int, who: str) -> None:
        """By its own session: it leaves at once. By anyone else: it is asked to step down
        and leaves with its slot."""
        group, member = self.pick_holder(pick)
        session = self.session_as(group, member, who, pick)
        self.step(dt, unregister=gp.Unregister(group=group, member_id=member, session_id=session))

    @precondition(
        lambda self: any(
            s not in g.handovers and not h.revoked
            for g in self.sm.groups.groups.values()
            for s, h in g.holdings.items()
        )
    )
    @rule(
        dt=st.integers(0, 60),
        pick=PICK,
        hows=st.lists(
            st.sampled_from(["switchover", "switchover to", "resign", "unregister"]),
            min_size=1,
            max_size=3,
        ),
        then=st.one_of(st.none(), WITHDRAW),
    )
    def ask_holders_to_step_down(
        self, dt: int, pick: int, hows: list[str], then: str | None
    ) -> None:
        """Handovers on holders of one group that have none, one per ``hows``: a switchover
        (for the best, or named), an operator's resign or unregister; ``then``, maybe, the
        successor of one of them withdraws at once (with several pending: re-targeted to a
        candidate no other handover promised)."""
        asked = sorted(
            name
            for name, g in self.sm.groups.groups.items()
            if any(s not in g.handovers and not h.revoked for s, h in g.holdings.items())
        )
        group = asked[pick % len(asked)]
        g = self.sm.groups.groups[group]
        before = set(g.handovers)
        for how in hows:
            free = [
                h.member_id
                for s, h in sorted(g.holdings.items())
                if s not in g.handovers and not h.revoked
            ]
            if not free:
                break
            member = free[pick % len(free)]
            if how.startswith("switchover"):
                to = ""
                if how == "switchover to":
                    ready = [m.id for m in g.members.values() if eligible(self.sm.groups, g, m)]
                    to = ready[pick % len(ready)] if ready else ""
                self.step(dt, switchover=gp.Switchover(group=group, to_member=to))
            elif how == "resign":
                self.step(dt, resign=gp.Resign(group=group, member_id=member, session_id=""))
            else:
                unregister = gp.Unregister(group=group, member_id=member, session_id="")
                self.step(dt, unregister=unregister)
        made = [s for s, ho in sorted(g.handovers.items()) if ho.to_member and s not in before]
        if then is not None and made:
            self.withdraw(dt % 7, group, made[pick % len(made)], then, pick)

    @precondition(
        lambda self: any(
            not h.revoked and s in g.handovers
            for g in self.sm.groups.groups.values()
            for s, h in g.holdings.items()
        )
    )
    @rule(
        dt=st.integers(0, 60),
        pick=PICK,
        act=st.sampled_from(["resign", "unregister", "unregister", "switchover"]),
        who=st.sampled_from(["own", "other", "operator"]),
    )
    def act_on_an_asked_holder(self, dt: int, pick: int, act: str, who: str) -> None:
        """A holder already asked to step down: its own session resigns or unregisters
        (the slot goes to the handover's successor), anyone else's resign changes nothing
        and their unregister only marks it leaving (the pending handover stays as it is);
        a switchover looks for another master."""
        asked = [
            (name, h.member_id)
            for name, g in sorted(self.sm.groups.groups.items())
            for s, h in sorted(g.holdings.items())
            if not h.revoked and s in g.handovers
        ]
        group, member = asked[pick % len(asked)]
        session = self.session_as(group, member, who, pick)
        if act == "resign":
            self.step(dt, resign=gp.Resign(group=group, member_id=member, session_id=session))
        elif act == "unregister":
            unregister = gp.Unregister(group=group, member_id=member, session_id=session)
            self.step(dt, unregister=unregister)
        else:
            self.step(dt, switchover=gp.Switchover(group=group, to_member=""))

    @precondition(lambda self: any(g.holdings for g in self.sm.groups.groups.values()))
    @rule(
        dt=st.integers(0, 60),
        pick=PICK,
        act=st.sampled_from(
            ["resign", "unregister", "campaign", "withdraw", "withdraw", "switchover"]
        ),
        who=st.sampled_from(["own", "other", "operator"]),
    )
    def act_on_a_revoked_holding(self, dt: int, pick: int, act: str, who: str) -> None:
        """While a revoked holding (revoked first if need be) waits out its holder's TTL:
        the holder resigns or is unregistered (its own session lets go at once, anyone
        else changes nothing but the leaving flag), campaigns again, the successor its
        handover named withdraws (no re-targeting: the slot goes to the best at its
        release), or a switchover looks for a master."""
        group, member = self.pick_holder(pick)
        g = self.sm.groups.groups[group]
        slot = g.holder_slot(member)
        assert slot is not None
        if not g.holdings[slot].revoked:
            self.step(dt, revoke_holding=gp.RevokeHolding(group=group, slot=slot))
            if slot not in g.holdings or not g.holdings[slot].revoked:
                return  # released by the timers of the revoke
        session = self.session_as(group, member, who, pick)
        if act == "resign":
            self.step(dt, resign=gp.Resign(group=group, member_id=member, session_id=session))
        elif act == "unregister":
            unregister = gp.Unregister(group=group, member_id=member, session_id=session)
            self.step(dt, unregister=unregister)
        elif act == "campaign":
            self.step(dt, campaign=gp.Campaign(group=group, member_id=member))
        elif act == "withdraw" and slot in g.handovers and g.handovers[slot].to_member:
            how = ["not a candidate", "nofailover", "resign", "unregister"][pick % 4]
            self.withdraw(dt, group, slot, how, pick)
        else:
            self.step(dt, switchover=gp.Switchover(group=group, to_member=""))

    @precondition(
        lambda self: any(
            m.leaving for g in self.sm.groups.groups.values() for m in g.members.values()
        )
    )
    @rule(
        dt=st.integers(0, 60),
        pick=PICK,
        act=st.sampled_from(["campaign", "register", "resign", "unregister", "unregister_other"]),
    )
    def poke_a_leaving_member(self, dt: int, pick: int, act: str) -> None:
        """A member on its way out: no campaign, re-registering keeps it leaving (and no
        candidate); its own resign or unregister lets it go at once, anyone else's is a
        no-op or a new step-down request."""
        leaving = [
            (name, m)
            for name, g in sorted(self.sm.groups.groups.items())
            for m in g.members.values()
            if m.leaving
        ]
        group, m = leaving[pick % len(leaving)]
        if act == "campaign":
            self.step(dt, campaign=gp.Campaign(group=group, member_id=m.id))
        elif act == "register":
            self.do_register(dt, group, m.id, m.session_id, m.priority + pick % 2)
        elif act == "resign":
            self.step(dt, resign=gp.Resign(group=group, member_id=m.id, session_id=m.session_id))
        else:
            session = m.session_id if act == "unregister" else ""
            unregister = gp.Unregister(group=group, member_id=m.id, session_id=session)
            self.step(dt, unregister=unregister)

    @precondition(
        lambda self: any(
            ho.to_member for g in self.sm.groups.groups.values() for ho in g.handovers.values()
        )
    )
    @rule(dt=st.integers(0, 60), pick=PICK, how=WITHDRAW)
    def withdraw_a_successor(self, dt: int, pick: int, how: str) -> None:
        promised = [
            (name, slot)
            for name, g in sorted(self.sm.groups.groups.items())
            for slot, ho in sorted(g.handovers.items())
            if ho.to_member
        ]
        group, slot = promised[pick % len(promised)]
        self.withdraw(dt, group, slot, how, pick)

    def withdraw(self, dt: int, group: str, slot: int, how: str, pick: int) -> None:
        """The successor the handover of ``slot`` promised stops being eligible: it withdraws
        (re-registers as no candidate, or nofailover), is unregistered, or its session ends;
        or another slot frees up and is refilled with it ("resign": its holder resigns;
        "revoke": it is revoked, then released by the timers). The handover is re-targeted
        or cancelled."""
        g = self.sm.groups.groups[group]
        ho = g.handovers[slot]
        if not ho.to_member:
            return
        m = g.members[ho.to_member]
        if how in {"not a candidate", "nofailover"}:
            nofailover = how == "nofailover"
            self.do_register(dt, group, m.id, m.session_id, m.priority, nofailover, nofailover)
        elif how == "unregister":
            session = m.session_id if pick % 2 else ""
            self.step(dt, unregister=gp.Unregister(group=group, member_id=m.id, session_id=session))
        elif how == "close":
            self.step(dt, close_session=gp.CloseSession(session_id=m.session_id))
        elif how == "expire":
            s = self.sm.groups.sessions[m.session_id]
            self.step(dt, expire_session=gp.ExpireSession(session_id=s.id, epoch=s.epoch))
        else:  # another slot frees up: its refill may take the promised successor
            others = [(s, h) for s, h in sorted(g.holdings.items()) if s != slot and not h.revoked]
            if not others:
                return
            other, h = others[pick % len(others)]
            if how == "resign":
                session = g.members[h.member_id].session_id
                resign = gp.Resign(group=group, member_id=h.member_id, session_id=session)
                self.step(dt, resign=resign)
                return
            self.step(dt, revoke_holding=gp.RevokeHolding(group=group, slot=other))
            h = self.sm.groups.groups[group].holdings[other]
            self.step(max(0, h.release_after_ms - self.now), advance=gp.Advance())

    @rule(dt=DT, group=PICK, member=PICK, known=KNOWN, rid=RID)
    def campaign(self, dt: int, group: int, member: int, known: bool, rid: bool) -> None:
        name, mid = self.member_op(group, member, known)
        self.step(dt, rid, campaign=gp.Campaign(group=name, member_id=mid))

    def resign_as(self, dt: int, group: str, member: str, who: str, pick: int) -> None:
        """``who`` (see session_as): the member's own session resigns at once; anyone else
        only asks the holder to step down."""
        session = self.session_as(group, member, who, pick)
        self.step(dt, resign=gp.Resign(group=group, member_id=member, session_id=session))

    def pick_holder(self, pick: int) -> tuple[str, str]:
        held = [
            (name, h.member_id)
            for name, g in sorted(self.sm.groups.groups.items())
            for _, h in sorted(g.holdings.items())
        ]
        return held[pick % len(held)]

    @precondition(
        lambda self: any(
            m.nofailover for g in self.sm.groups.groups.values() for m in g.members.values()
        )
    )
    @rule(dt=st.integers(0, 60), pick=PICK)
    def campaign_nofailover(self, dt: int, pick: int) -> None:
        """Refused, and must change nothing (the refusal comes after the member lookup)."""
        members = [
            (name, m.id)
            for name, g in sorted(self.sm.groups.groups.items())
            for m in g.members.values()
            if m.nofailover
        ]
        group, member = members[pick % len(members)]
        self.step(dt, campaign=gp.Campaign(group=group, member_id=member))

    @rule(dt=DT, group=PICK, member=PICK, known=KNOWN, who=WHO, pick=PICK)
    def resign(self, dt: int, group: int, member: int, known: bool, who: str, pick: int) -> None:
        name, mid = self.member_op(group, member, known)
        self.resign_as(dt, name, mid, who, pick)

    @precondition(lambda self: any(g.holdings for g in self.sm.groups.groups.values()))
    @rule(dt=st.integers(0, 60), pick=PICK, who=WHO)
    def resign_a_holder(self, dt: int, pick: int, who: str) -> None:
        group, member = self.pick_holder(pick)
        self.resign_as(dt, group, member, who, pick)

    @rule(
        dt=DT,
        group=PICK,
        to=PICK,
        known=KNOWN,
        whom=st.sampled_from(["best", "eligible", "eligible", "any"]),
        rid=RID,
    )
    def switchover(self, dt: int, group: int, to: int, known: bool, whom: str, rid: bool) -> None:
        name, mid = self.member_op(group, to, known)
        g = self.sm.groups.groups.get(name)
        if whom == "best":
            mid = ""
        elif whom == "eligible" and g is not None:
            ready = [m.id for m in g.members.values() if eligible(self.sm.groups, g, m)]
            mid = ready[to % len(ready)] if ready else mid
        self.step(dt, rid, switchover=gp.Switchover(group=name, to_member=mid))

    @rule(dt=DT, group=PICK, known=KNOWN, slot=st.integers(0, 3))
    def revoke(self, dt: int, group: int, known: bool, slot: int) -> None:
        name = self.pick_group(group, known)
        self.step(dt, revoke_holding=gp.RevokeHolding(group=name, slot=slot))

    @rule(dt=DT)
    def advance(self, dt: int) -> None:
        self.step(dt, advance=gp.Advance())

    @precondition(lambda self: self.sm.groups.next_timer_ms() is not None)
    @rule(offset=st.sampled_from([-1, 0, 0, 1, 250]))
    def advance_to_the_next_timer(self, offset: int) -> None:
        due = self.sm.groups.next_timer_ms()
        assert due is not None
        self.step(max(0, due + offset - self.now), advance=gp.Advance())

    @rule()
    def new_term(self) -> None:
        self.term += 1

    @rule()
    def restart_from_snapshot(self) -> None:
        """A replica rebuilt from a snapshot carries on as if nothing happened."""
        self.sm = restored(self.sm.snapshot())

    @precondition(lambda self: bool(self.retryable))
    @rule(pick=PICK, dt=DT)
    def retry(self, pick: int, dt: int) -> None:
        """A retried request (re-stamped by a later leader) gets its first answer, no change."""
        data, first = self.retryable[pick % len(self.retryable)]
        self.now += dt
        again = raft_pb2.Command.FromString(data)
        again.time_ms, again.term = self.now, self.term
        before = self.sm.snapshot()
        res = clone(self.sm.apply(again.SerializeToString()))
        assert res == self.replica.apply(again.SerializeToString()) == first
        assert self.sm.snapshot() == before


class HandoverMachine(GroupsMachine):
    """The same rules and checks, from a start that makes handovers likely to change: one
    group with more candidates than slots (often with failback), so that step-down requests
    name successors that then withdraw, leave, or take another slot."""

    @initialize(
        ttls=st.lists(st.sampled_from(TTLS), min_size=2, max_size=3),
        slots=st.sampled_from([1, 2, 2, 3]),
        failback=st.sampled_from([gp.FAILBACK_OFF, gp.FAILBACK_AUTO, gp.FAILBACK_AUTO]),
        hold=st.sampled_from([0, 300]),
        timeout=st.sampled_from([200, 1500, 0]),
        members=st.lists(st.tuples(PICK, PRIORITY), min_size=3, max_size=6),
        epoch=st.sampled_from([T0, 0]),
        revoke=st.booleans(),
    )
    def start(
        self,
        ttls: list[int],
        slots: int,
        failback: int,
        hold: int,
        timeout: int,
        members: list[tuple[int, int]],
        epoch: int,
        revoke: bool = False,
    ) -> None:
        super().start(ttls, slots, failback, hold, timeout, members, epoch)
        if revoke:  # at once: at epoch 0, revoked_time_ms is 0
            self.step(0, revoke_holding=gp.RevokeHolding(group="g0", slot=0))


@pytest.mark.parametrize("machine", [GroupsMachine, HandoverMachine])
def test_groups_state_machine(
    monkeypatch: pytest.MonkeyPatch, machine: type[GroupsMachine]
) -> None:
    monkeypatch.setattr(limits, "EVENT_LOG_ENTRIES", EVENTS_KEPT)
    run_state_machine_as_test(
        machine,
        settings=settings(max_examples=150, stateful_step_count=50, deadline=None),
    )


# -- replicas and snapshots on plain command lists ----------------------------------------


def commands_for(t0: int) -> st.SearchStrategy[list[tuple[int, dict[str, Any]]]]:
    sessions = st.sampled_from(["s1", "s2", "s3", "nope"])
    ops = st.one_of(
        st.builds(lambda ttl: {"open_session": gp.OpenSession(ttl_ms=ttl)}, st.sampled_from(TTLS)),
        st.builds(
            lambda s, e: {"expire_session": gp.ExpireSession(session_id=s, epoch=e)},
            sessions,
            st.integers(1, 4),
        ),
        st.builds(
            lambda n, k, f, h: {
                "create_group": gp.CreateGroup(
                    name=n, policy=gp.GroupPolicy(slots=k, failback=f, failback_hold_ms=h)
                )
            },
            st.sampled_from(GROUP_NAMES[:2]),
            st.integers(0, 3),
            FAILBACK,
            st.sampled_from(HOLDS),
        ),
        st.builds(
            lambda g, m, s, p: {
                "register": gp.Register(
                    member=gp.Member(group=g, id=m, session_id=s, priority=p, candidate=True)
                )
            },
            st.sampled_from(GROUP_NAMES[:2]),
            st.sampled_from(MEMBER_IDS[:4]),
            sessions,
            st.integers(0, 2),
        ),
        st.builds(
            lambda g, m, s: {"resign": gp.Resign(group=g, member_id=m, session_id=s)},
            st.sampled_from(GROUP_NAMES[:2]),
            st.sampled_from(MEMBER_IDS[:4]),
            sessions,
        ),
        st.builds(
            lambda g, m, s: {"unregister": gp.Unregister(group=g, member_id=m, session_id=s)},
            st.sampled_from(GROUP_NAMES[:2]),
            st.sampled_from(MEMBER_IDS[:4]),
            sessions,
        ),
        st.builds(
            lambda g, m: {"campaign": gp.Campaign(group=g, member_id=m)},
            st.sampled_from(GROUP_NAMES[:2]),
            st.sampled_from(MEMBER_IDS[:4]),
        ),
        st.builds(
            lambda g, m: {"switchover": gp.Switchover(group=g, to_member=m)},
            st.sampled_from(GROUP_NAMES[:2]),
            st.sampled_from(["", *MEMBER_IDS[:4]]),
        ),
        st.builds(
            lambda g, s: {"revoke_holding": gp.RevokeHolding(group=g, slot=s)},
            st.sampled_from(GROUP_NAMES[:2]),
            st.integers(0, 2),
        ),
        st.just({"advance": gp.Advance()}),
    )
    return st.lists(st.tuples(DT, ops), max_size=30)


def to_bytes(steps: list[tuple[int, dict[str, Any]]]) -> list[bytes]:
    """Session ids are "s<revision in hex>": s1..s3 name the first sessions when they are
    opened first, and dangle otherwise (both are useful)."""
    out, t = [], T0
    for i, (dt, op) in enumerate(steps):
        t += dt
        out.append(command(t, 1 + i // 10, **op))
    return out


@settings(max_examples=60, deadline=None)
@given(commands_for(T0), commands_for(T0), st.integers(0, 30))
def test_replicas_and_a_replica_restored_midway_agree(
    before: list[tuple[int, dict[str, Any]]],
    after: list[tuple[int, dict[str, Any]]],
    cut: int,
) -> None:
    cmds = to_bytes(before + after)
    a, b = StateMachine(), StateMachine()
    results_a = []
    for i, data in enumerate(cmds):
        if i == cut:
            b = restored(b.snapshot())
        results_a.append(clone(a.apply(data)))
        assert b.apply(data) == results_a[-1]
    assert a.snapshot() == b.snapshot()
    assert restored(a.snapshot()).snapshot() == a.snapshot()
    assert a.groups.next_timer_ms() == b.groups.next_timer_ms()
