"""Sessions, groups, holdings and the event log: focused examples.

Every test drives ``StateMachine.apply`` with the serialized ``raft_pb2.Command``
a Raft log would hold, stamped with an increasing ``time_ms`` (wall-clock-like,
so that no stamp is 0) and a term, and reads the state the machine exposes.
The driver plays the leader too: it times the state's pending waits (handover
timeouts, revoked holdings, failback holds) with a ``WaitTimer`` on its own clock
(``now``, as if monotonic), observing them after every command as the leader's
duty does, and ``advance`` proposes the ``Advance`` that ends those that are over.

Tests marked ``xfail(strict=True, reason="BUG: ...")`` pin bugs of
``coord/state/groups.py``; each reason says what goes wrong.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from coord.errors import OutOfRange
from coord.state import limits, waits
from coord.state.machine import StateMachine
from coord.v1 import groups_pb2 as gp
from coord.v1 import kv_pb2, raft_pb2

T0 = 1_700_000_000_000
OFF, AUTO = gp.FAILBACK_OFF, gp.FAILBACK_AUTO


class Driver:
    """One replica, fed serialized Commands at a clock that only moves forward."""

    def __init__(self) -> None:
        self.sm = StateMachine()
        self.now = T0
        self.term = 1
        self.s: dict[str, gp.Session] = {}  # sessions by the name of their member
        self.timer = waits.WaitTimer()  # the leader's timing of the state's waits

    def apply(self, dt: int = 1, *, at: int | None = None, **op: Any) -> raft_pb2.CommandResult:
        self.now = at if at is not None else self.now + dt
        cmd = raft_pb2.Command(time_ms=self.now, term=self.term, **op)
        out = raft_pb2.CommandResult()
        out.CopyFrom(self.sm.apply(cmd.SerializeToString()))
        self.timer.observe(self.sm.groups.pending_waits(), self._clock_s())
        return out

    def _clock_s(self) -> float:
        """The leader's monotonic clock: ``now``, in seconds from T0 (small floats)."""
        return (self.now - T0) / 1000

    def next_timer_ms(self) -> int | None:
        """When the earliest pending wait is over, on the driver's clock."""
        due = self.timer.next_due_s()
        return None if due is None else T0 + round(due * 1000)

    def ok(self, dt: int = 1, *, at: int | None = None, **op: Any) -> raft_pb2.CommandResult:
        res = self.apply(dt, at=at, **op)
        assert not res.error_reason, res.error_message
        return res

    def session(self, ttl_ms: int = 1000) -> gp.Session:
        return self.ok(open_session=gp.OpenSession(ttl_ms=ttl_ms)).session

    def group(
        self,
        name: str = "g",
        slots: int = 1,
        failback: int = OFF,
        hold: int = 0,
        timeout: int = 0,
    ) -> gp.Group:
        policy = gp.GroupPolicy(
            slots=slots, failback=failback, failback_hold_ms=hold, switchover_timeout_ms=timeout
        )
        return self.ok(create_group=gp.CreateGroup(name=name, policy=policy)).group

    def join(
        self,
        member_id: str,
        session: gp.Session,
        priority: int = 0,
        group: str = "g",
        candidate: bool = True,
        nofailover: bool = False,
        dt: int = 1,
    ) -> gp.Member:
        m = gp.Member(
            group=group,
            id=member_id,
            session_id=session.id,
            priority=priority,
            candidate=candidate,
            nofailover=nofailover,
        )
        return self.ok(dt, register=gp.Register(member=m)).member

    def expire(self, session: gp.Session, dt: int = 1) -> None:
        self.ok(dt, expire_session=gp.ExpireSession(session_id=session.id, epoch=session.epoch))

    def resign(
        self, member_id: str, group: str = "g", dt: int = 1, by: str | None = None
    ) -> raft_pb2.CommandResult:
        """Resign from the member's own session (at once), or ``by`` another session id
        ("" = an operator: the holder is only asked to step down)."""
        if by is None:
            m = self.sm.groups.groups[group].members.get(member_id)
            by = m.session_id if m is not None else ""
        return self.apply(dt, resign=gp.Resign(group=group, member_id=member_id, session_id=by))

    def switchover(self, to: str = "", group: str = "g", dt: int = 1) -> raft_pb2.CommandResult:
        return self.apply(dt, switchover=gp.Switchover(group=group, to_member=to))

    def advance(self, dt: int = 0, *, at: int | None = None) -> list[tuple[str, str, int, str]]:
        """Move the clock; as the leader would, propose an Advance ending the waits that
        are over by then (if any). Returns the events it produced."""
        mark = self.sm.revision
        self.now = at if at is not None else self.now + dt
        over = self.timer.due(self._clock_s())
        if over:
            self.ok(0, advance=gp.Advance(over=[waits.to_proto(k) for k in over]))
        return self.since(mark)

    def holders(self, group: str = "g") -> dict[int, str]:
        g = self.sm.groups.groups[group]
        return {s: h.member_id for s, h in sorted(g.holdings.items())}

    def holding(self, slot: int = 0, group: str = "g") -> gp.Holding:
        return self.sm.groups.groups[group].holdings[slot]

    def events(self, after: int) -> list[gp.Event]:
        return self.sm.events.since(after + 1, self.sm.revision)

    def since(self, after: int) -> list[tuple[str, str, int, str]]:
        """(type, member, slot, cause) of every event after revision ``after``."""
        return [(e.type, e.member, e.slot, e.cause) for e in self.events(after)]


def master_standby(failback: int = OFF, hold: int = 0, timeout: int = 0) -> Driver:
    """Group g (1 slot); a (priority 3) holds it, b (2) and c (1) stand by."""
    d = Driver()
    d.group(failback=failback, hold=hold, timeout=timeout)
    for name, prio in (("a", 3), ("b", 2), ("c", 1)):
        d.s[name] = d.session(1000)
        d.join(name, d.s[name], priority=prio)
    assert d.holders() == {0: "a"}
    return d


# -- failover -----------------------------------------------------------------------------


def test_first_candidate_is_elected_with_cause_initial_and_token_its_revision() -> None:
    d = Driver()
    d.group()
    s = d.session()
    mark = d.sm.revision
    d.join("a", s)
    assert d.since(mark) == [("member_joined", "a", 0, ""), ("master_elected", "a", 0, "initial")]
    h = d.holding()
    assert h.token == d.sm.revision
    assert h.granted_time_ms == d.now
    elected = d.events(mark)[-1]
    assert (elected.token, elected.revision, elected.session_id) == (h.token, h.token, s.id)


def test_master_standby_failover_on_session_expiry() -> None:
    d = master_standby()
    old_token = d.holding().token
    mark = d.sm.revision
    d.expire(d.s["a"], dt=5000)
    assert d.since(mark) == [
        ("master_lost", "a", 0, "session_expired"),
        ("member_left", "a", 0, "session_expired"),
        ("master_elected", "b", 0, "session_expired"),
        ("session_expired", "", 0, "session_expired"),
    ]
    assert d.holders() == {0: "b"}
    assert d.holding().token > old_token
    assert d.holding().token == d.sm.revision - 1  # master_elected, then session_expired
    assert d.s["a"].id not in d.sm.groups.sessions
    assert "a" not in d.sm.groups.groups["g"].members


def test_closing_a_session_fails_over_with_cause_session_closed() -> None:
    d = master_standby()
    mark = d.sm.revision
    d.ok(close_session=gp.CloseSession(session_id=d.s["a"].id))
    assert ("master_elected", "b", 0, "session_closed") in d.since(mark)
    assert d.since(mark)[-1] == ("session_closed", "", 0, "session_closed")


def test_a_stale_expiry_epoch_is_ignored() -> None:
    d = master_standby()
    snap, rev = d.sm.snapshot(), d.sm.revision
    for epoch in (d.s["a"].epoch - 1, d.s["a"].epoch + 1, 0):
        res = d.ok(expire_session=gp.ExpireSession(session_id=d.s["a"].id, epoch=epoch), dt=0)
        assert res.revision == rev
    assert d.sm.revision == rev
    assert d.sm.snapshot() == snap
    assert d.holders() == {0: "a"}
    # The right epoch still expires it.
    d.expire(d.s["a"])
    assert d.holders() == {0: "b"}


def test_expiring_an_unknown_or_expired_session_is_a_no_op() -> None:
    d = master_standby()
    d.expire(d.s["a"])
    rev = d.sm.revision
    d.expire(d.s["a"])  # already expired
    d.ok(expire_session=gp.ExpireSession(session_id="nope", epoch=1))
    assert d.sm.revision == rev


def test_resign_hands_over_at_once() -> None:
    d = master_standby()
    old = d.holding().token
    mark = d.sm.revision
    assert not d.resign("a").error_reason
    assert d.since(mark) == [
        ("master_lost", "a", 0, "resign"),
        ("master_elected", "b", 0, "resign"),
    ]
    assert d.holding().token == d.sm.revision > old
    a = d.sm.groups.groups["g"].members["a"]
    assert a.candidate is False  # still registered, no longer campaigning
    # Campaigning again makes it a standby, not the master (failback is off).
    d.ok(campaign=gp.Campaign(group="g", member_id="a"))
    assert d.holders() == {0: "b"}


def test_resign_by_a_non_holder_is_refused_and_changes_nothing() -> None:
    d = master_standby()
    snap = d.sm.snapshot()
    res = d.resign("b", dt=0)
    assert res.error_reason == "failed_precondition"
    assert d.sm.snapshot() == snap


def test_nofailover_member_never_becomes_master() -> None:
    d = Driver()
    d.group()
    s = d.session()
    d.join("n", s, priority=9, nofailover=True)
    assert d.holders() == {}
    snap = d.sm.snapshot()
    res = d.apply(0, campaign=gp.Campaign(group="g", member_id="n"))
    assert res.error_reason == "failed_precondition"
    assert d.sm.snapshot() == snap
    d.join("x", s, priority=1)
    assert d.holders() == {0: "x"}
    d.resign("x")
    assert d.holders() == {}  # n is not eligible, x no longer campaigns


def test_ties_in_priority_go_by_registration_order() -> None:
    d = Driver()
    d.group(slots=1)
    s = d.session()
    d.join("early", s, priority=1, candidate=False)
    d.join("first", s, priority=1)
    d.join("second", s, priority=1, dt=50)
    d.join("low", s, priority=0)
    assert d.holders() == {0: "first"}
    # "early" campaigns last but registered first: it ranks before "second".
    d.ok(campaign=gp.Campaign(group="g", member_id="early"))
    d.resign("first")
    assert d.holders() == {0: "early"}
    d.resign("early")
    assert d.holders() == {0: "second"}
    d.resign("second")
    assert d.holders() == {0: "low"}


# -- switchover ---------------------------------------------------------------------------


def test_switchover_to_a_named_member() -> None:
    d = master_standby()
    mark = d.sm.revision
    assert not d.switchover("b").error_reason
    assert d.since(mark) == [("stepdown_requested", "a", 0, "switchover")]
    ho = d.sm.groups.groups["g"].handovers[0]
    assert (ho.from_member, ho.to_member) == ("a", "b")
    assert ho.deadline_ms == d.now + limits.DEFAULT_SWITCHOVER_TIMEOUT_MS
    assert d.holders() == {0: "a"}  # a still holds until it resigns
    mark = d.sm.revision
    d.resign("a")
    assert d.since(mark) == [
        ("master_lost", "a", 0, "switchover"),
        ("master_elected", "b", 0, "switchover"),
    ]
    assert d.sm.groups.groups["g"].handovers == {}
    assert d.next_timer_ms() is None


def test_switchover_to_the_best_candidate() -> None:
    d = master_standby()
    assert not d.switchover("").error_reason
    d.resign("a")
    assert d.holders() == {0: "b"}


def test_switchover_to_a_named_member_that_is_not_the_best() -> None:
    d = master_standby()
    assert not d.switchover("c").error_reason  # c (priority 1) is eligible: accepted
    mark = d.sm.revision
    d.resign("a")
    assert d.since(mark)[-1] == ("master_elected", "c", 0, "switchover")
    assert d.holders() == {0: "c"}


def test_switchover_timeout_grants_the_named_target() -> None:
    d = master_standby(timeout=200)
    d.switchover("c")
    d.advance(200)
    d.advance(1000)
    assert d.holders() == {0: "c"}


def test_a_named_target_no_longer_eligible_falls_back_to_the_best() -> None:
    d = master_standby()
    d.switchover("c")
    d.join("c", d.s["c"], priority=1, candidate=False)  # re-registered: no longer campaigns
    d.resign("a")
    assert d.holders() == {0: "b"}
    assert d.sm.groups.groups["g"].handovers == {}  # consumed, not left behind


def test_resign_by_another_session_only_asks_the_holder_to_step_down() -> None:
    """An operator (or any other session) cannot know that the holder heard: the slot moves
    when the holder resigns itself, or after the switchover timeout plus the holder's TTL."""
    d = master_standby(timeout=300)
    token = d.holding().token
    for by in ("", d.s["b"].id):
        mark = d.sm.revision
        assert not d.resign("a", by=by).error_reason
        assert d.holders() == {0: "a"}
        assert d.holding().token == token
        # The first asks (once); the second finds the request pending and changes nothing.
        assert d.since(mark) == ([("stepdown_requested", "a", 0, "resign")] if by == "" else [])
    ho = d.sm.groups.groups["g"].handovers[0]
    assert (ho.from_member, ho.to_member, ho.cause) == ("a", "b", "resign")
    t = ho.deadline_ms
    assert d.advance(at=t - 1) == []
    assert d.advance(at=t) == [("master_revoked", "a", 0, "resign")]
    assert d.advance(at=t + 999) == []
    assert d.advance(at=t + 1000) == [
        ("master_lost", "a", 0, "resign"),
        ("master_elected", "b", 0, "resign"),
    ]


def test_switchover_timeout_revokes_then_waits_out_the_holders_ttl() -> None:
    d = master_standby(timeout=200)
    token = d.holding().token
    assert not d.switchover("b").error_reason
    t = d.now
    assert d.next_timer_ms() == t + 200
    assert d.advance(at=t + 199) == []
    assert d.advance(at=t + 200) == [("master_revoked", "a", 0, "switchover")]
    h = d.holding()
    assert (h.member_id, h.token) == ("a", token)  # still occupies the slot
    assert h.revoked_time_ms == t + 200
    assert h.release_after_ms == t + 200 + 1000  # a's session TTL
    assert d.sm.groups.groups["g"].members["a"].candidate is False
    # No grant until the TTL has passed, whatever else happens meanwhile.
    assert d.switchover("c").error_reason == "failed_precondition"  # no unrevoked master
    assert d.advance(at=t + 1199) == []
    assert d.holders() == {0: "a"}
    assert d.advance(at=t + 1200) == [
        ("master_lost", "a", 0, "switchover"),
        ("master_elected", "b", 0, "switchover"),
    ]
    assert d.holding().token > token
    assert d.next_timer_ms() is None


@pytest.mark.parametrize(
    "op",
    [
        {"open_session": gp.OpenSession(ttl_ms=1000)},
        {"put": kv_pb2.PutRequest(key=b"k", value=b"v")},
        {"noop": raft_pb2.Noop()},
        {"advance": gp.Advance()},
    ],
)
def test_no_command_time_ends_a_wait_however_far_ahead_its_clock(op: dict[str, Any]) -> None:
    """A command stamped by a node whose wall clock is ahead (or a leader whose clock
    stepped) once revoked at the handover's deadline and released a revoked slot at
    revoke time + TTL in that clock, while the old master could still believe it held
    the slot. Only the leader's Advance, naming a wait it timed out, ends one."""
    d = master_standby(timeout=200)
    d.switchover()
    far = raft_pb2.Command(time_ms=d.now + 10**9, term=d.term, **op).SerializeToString()
    mark = d.sm.revision
    d.sm.apply(far)
    assert "master_revoked" not in [e[0] for e in d.since(mark)]
    assert not d.holding().revoked
    d.ok(revoke_holding=gp.RevokeHolding(group="g", slot=0))
    mark = d.sm.revision
    d.sm.apply(far)
    assert [e[0] for e in d.since(mark)] in ([], ["session_opened"], ["kv_put"])
    assert d.holding().revoked and d.holders() == {0: "a"}  # still waited out


def test_next_timer_after_a_switchover_revocation_is_the_release_time() -> None:
    d = master_standby(timeout=200)
    d.switchover("b")
    d.advance(200)
    assert d.holding().revoked_time_ms
    assert d.next_timer_ms() == d.holding().release_after_ms  # not the deadline


def test_admin_revoke_waits_out_the_ttl_then_grants() -> None:
    d = master_standby()
    res = d.apply(revoke_holding=gp.RevokeHolding(group="g", slot=0))
    assert not res.error_reason
    t = d.now
    assert d.holding().release_after_ms == t + 1000
    rev = d.sm.revision
    assert not d.apply(revoke_holding=gp.RevokeHolding(group="g", slot=0)).error_reason
    assert d.sm.revision == rev  # revoking twice changes nothing
    assert d.advance(at=t + 999) == []
    assert d.advance(at=t + 1000) == [
        ("master_lost", "a", 0, "admin_revoke"),
        ("master_elected", "b", 0, "admin_revoke"),
    ]
    snap = d.sm.snapshot()
    res = d.apply(0, revoke_holding=gp.RevokeHolding(group="g", slot=1))
    assert res.error_reason == "failed_precondition"
    assert d.sm.snapshot() == snap


def test_a_revoke_at_time_zero_is_not_lost() -> None:
    d = Driver()
    d.now = 0
    policy = gp.GroupPolicy(slots=1)
    d.ok(at=0, create_group=gp.CreateGroup(name="g", policy=policy))
    s = d.ok(at=0, open_session=gp.OpenSession(ttl_ms=1000)).session
    d.join("a", s, dt=0)
    d.join("b", s, dt=0)
    assert d.holders() == {0: "a"}
    assert not d.apply(at=0, revoke_holding=gp.RevokeHolding(group="g", slot=0)).error_reason
    d.advance(at=5000)
    assert d.holders() == {0: "b"}


# -- failback -----------------------------------------------------------------------------


def test_failback_after_the_hold_and_not_before() -> None:
    d = Driver()
    d.group(failback=AUTO, hold=1000, timeout=500)
    high, low = d.session(), d.session()
    d.join("low", low, priority=1)
    assert d.holders() == {0: "low"}
    d.join("high", high, priority=5, dt=10)
    t = d.now
    assert d.holders() == {0: "low"}  # failback waits for the hold
    assert d.next_timer_ms() == t + 1000
    assert d.advance(at=t + 999) == []
    assert d.advance(at=t + 1000) == [("stepdown_requested", "low", 0, "failback")]
    ho = d.sm.groups.groups["g"].handovers[0]
    assert (ho.to_member, ho.deadline_ms) == ("high", t + 1500)
    mark = d.sm.revision
    d.resign("low")
    assert d.since(mark) == [
        ("master_lost", "low", 0, "failback"),
        ("master_elected", "high", 0, "failback"),
    ]


def test_failback_hold_restarts_when_the_member_campaigns_again() -> None:
    d = Driver()
    d.group(failback=AUTO, hold=1000)
    high, low = d.session(), d.session()
    d.join("low", low, priority=1)
    d.join("high", high, priority=5, candidate=False)
    d.advance(5000)
    assert d.holders() == {0: "low"}  # not a candidate: no failback
    d.ok(campaign=gp.Campaign(group="g", member_id="high"))
    t = d.now
    assert d.advance(at=t + 999) == []
    assert d.advance(at=t + 1000) == [("stepdown_requested", "low", 0, "failback")]


def test_failback_off_never_asks_the_holder_to_step_down() -> None:
    d = Driver()
    d.group(failback=OFF, hold=0)
    d.join("low", d.session(), priority=1)
    d.join("high", d.session(), priority=5)
    assert d.next_timer_ms() is None
    assert d.advance(100_000) == []
    assert d.holders() == {0: "low"}


def test_failback_timeout_revokes_the_holder_then_grants_after_its_ttl() -> None:
    d = Driver()
    d.group(failback=AUTO, hold=0, timeout=300)
    d.join("low", d.session(700), priority=1)
    d.join("high", d.session(), priority=5)
    assert d.advance() == [("stepdown_requested", "low", 0, "failback")]
    t = d.now
    assert d.advance(at=t + 300) == [("master_revoked", "low", 0, "failback")]
    assert d.advance(at=t + 999) == []
    assert d.advance(at=t + 1000) == [
        ("master_lost", "low", 0, "failback"),
        ("master_elected", "high", 0, "failback"),
    ]


def test_next_timer_during_a_failback_handover_is_its_deadline() -> None:
    d = Driver()
    d.group(failback=AUTO, hold=1000, timeout=5000)
    d.join("low", d.session(), priority=1)
    d.join("high", d.session(), priority=5)
    d.advance(1000)
    ho = d.sm.groups.groups["g"].handovers[0]
    assert d.next_timer_ms() == ho.deadline_ms  # not the (past) hold expiry


def test_next_timer_for_failback_is_a_time_at_which_advance_acts() -> None:
    d = Driver()
    d.group(failback=AUTO, hold=1000)
    d.join("low", d.session(), priority=1)
    d.join("mid", d.session(), priority=5)
    d.join("top", d.session(), priority=9, dt=500)
    due = d.next_timer_ms()
    assert due is not None
    assert d.advance(at=due) != []  # failback targets top: its hold, not mid's


def test_multi_master_failback_with_one_candidate_keeps_every_slot_held() -> None:
    d = Driver()
    d.group(slots=2, failback=AUTO, hold=0, timeout=300)
    d.join("a", d.session(), priority=2)
    d.join("b", d.session(), priority=1)
    d.join("top", d.session(), priority=9)
    asked = [e[1] for e in d.advance() if e[0] == "stepdown_requested"]
    for member in asked:
        d.resign(member)
    assert len(d.holders()) == 2
    assert "top" in d.holders().values()


@pytest.mark.parametrize(
    ("first", "to"),
    [("failback", ""), ("failback", "c"), ("switchover", "")],
)
def test_switchover_and_failback_do_not_promise_one_candidate_twice(first: str, to: str) -> None:
    """Two masters (a: 5, b: 1) and one standby (c: 9) in an auto-failback group: failback
    asks b to make way for c; a switchover of a needs a successor too, and c cannot be both."""
    d = Driver()
    d.group(slots=2, failback=AUTO, hold=1000, timeout=5000)
    d.join("a", d.session(), priority=5)
    d.join("b", d.session(), priority=1)
    d.join("c", d.session(), priority=9)
    mark = d.sm.revision
    if first == "failback":
        d.advance(1000)  # b is asked to make way for c
        d.switchover(to)  # should be refused: c is promised to slot 1
    else:
        d.switchover(to)  # a is asked to make way for the best: c
        d.advance(1000)  # failback should not ask b for c as well
    asked = [e[1] for e in d.since(mark) if e[0] == "stepdown_requested"]
    for member in asked:
        d.resign(member)
    assert len(d.holders()) == 2


def test_operator_resign_and_failback_do_not_promise_one_candidate_twice() -> None:
    d = Driver()
    d.group(slots=2, failback=AUTO, hold=1000, timeout=5000)
    d.join("a", d.session(), priority=5)
    d.join("b", d.session(), priority=1)
    d.join("c", d.session(), priority=9)
    mark = d.sm.revision
    d.resign("a", by="")  # an operator: a is asked to step down; c is the one to follow
    d.advance(1000)  # c's failback hold is over: b must not be asked to make way for c too
    asked = [e[1] for e in d.since(mark) if e[0] == "stepdown_requested"]
    for member in asked:
        d.resign(member)
    assert len(d.holders()) == 2


@pytest.mark.parametrize(
    "how", ["failback, not a candidate", "failback, nofailover", "switchover, not a candidate"]
)
def test_a_handover_whose_successor_withdrew_does_not_unseat_the_master(how: str) -> None:
    d = Driver()
    d.group(failback=AUTO if how.startswith("failback") else OFF, hold=0, timeout=300)
    d.join("low", d.session(), priority=1)
    s = d.session()
    d.join("high", s, priority=5)
    if how.startswith("switchover"):
        d.switchover("high")
    else:
        assert d.advance() == [("stepdown_requested", "low", 0, "failback")]
    nofailover = how.endswith("nofailover")
    d.join("high", s, priority=5, candidate=nofailover, nofailover=nofailover)  # withdraws
    assert d.sm.groups.groups["g"].handovers == {}  # cancelled
    d.advance(300)  # the deadline passes: nothing to revoke
    d.advance(1000)
    assert d.holders() == {0: "low"}
    assert not d.holding().revoked


def test_a_switchover_whose_successor_took_another_slot_does_not_unseat_the_master() -> None:
    d = Driver()
    d.group(slots=2, timeout=300)
    sa, sb = d.session(), d.session()
    d.join("a", sa, priority=1)
    d.join("b", sb, priority=2)
    d.join("c", d.session(), priority=3)
    d.switchover()  # a (slot 0) is asked to make way for c
    d.expire(sb)  # b's slot 1 goes to c at once: nobody is left for a's handover
    d.advance(300)
    d.advance(1000)
    assert len(d.holders()) == 2
    assert d.sm.groups.groups["g"].handovers == {}


@pytest.mark.parametrize("revoked", [False, True])
def test_unregistering_a_holder_does_not_grant_its_slot_at_once(revoked: bool) -> None:
    d = master_standby()
    if revoked:
        d.apply(revoke_holding=gp.RevokeHolding(group="g", slot=0))
    revoked_at = d.now
    mark = d.sm.revision
    d.apply(unregister=gp.Unregister(group="g", member_id="a"))  # an operator, or anyone
    t = d.now if not revoked else revoked_at
    assert d.holders() == {0: "a"}  # a may still believe it is master
    assert d.sm.groups.groups["g"].members["a"].leaving
    if not revoked:  # asked to step down, like an operator's resign
        assert d.since(mark)[-1] == ("stepdown_requested", "a", 0, "member_left")
        assert d.advance(at=t + limits.DEFAULT_SWITCHOVER_TIMEOUT_MS - 1) == []
        d.advance(at=t + limits.DEFAULT_SWITCHOVER_TIMEOUT_MS)
        t += limits.DEFAULT_SWITCHOVER_TIMEOUT_MS
    assert d.holding().revoked
    assert d.advance(at=t + 999) == []
    d.advance(at=t + 1000)  # a's TTL after the revoke
    assert d.holders() == {0: "b"}
    assert "a" not in d.sm.groups.groups["g"].members  # and a has left


def test_a_leaving_holder_that_resigns_leaves_at_once() -> None:
    d = master_standby()
    d.apply(unregister=gp.Unregister(group="g", member_id="a"))
    res = d.apply(campaign=gp.Campaign(group="g", member_id="a"))
    assert res.error_reason == "failed_precondition"  # on its way out: no campaign
    d.resign("a")  # it heard the step-down request
    assert d.holders() == {0: "b"}
    assert "a" not in d.sm.groups.groups["g"].members


def test_a_member_unregistering_itself_leaves_at_once() -> None:
    d = master_standby()
    session = d.sm.groups.groups["g"].members["a"].session_id
    d.ok(unregister=gp.Unregister(group="g", member_id="a", session_id=session))
    assert d.holders() == {0: "b"}
    assert "a" not in d.sm.groups.groups["g"].members


# -- multi-master -------------------------------------------------------------------------


def test_multi_master_refills_the_slots_of_expired_masters() -> None:
    d = Driver()
    d.group(slots=3)
    sessions = {}
    for name, prio in (("m1", 5), ("m2", 4), ("m3", 3), ("s1", 2), ("s2", 1)):
        sessions[name] = d.session()
        d.join(name, sessions[name], priority=prio)
    assert d.holders() == {0: "m1", 1: "m2", 2: "m3"}
    tokens = {s: d.holding(s).token for s in range(3)}
    mark = d.sm.revision
    d.expire(sessions["m1"], dt=2000)
    d.expire(sessions["m3"])
    assert d.holders() == {0: "s1", 1: "m2", 2: "s2"}
    assert d.holding(1).token == tokens[1]
    assert d.holding(0).token > tokens[0]
    assert d.holding(2).token > d.holding(0).token > tokens[2]
    elected = [e for e in d.since(mark) if e[0] == "master_elected"]
    assert elected == [
        ("master_elected", "s1", 0, "session_expired"),
        ("master_elected", "s2", 2, "session_expired"),
    ]
    holders = list(d.holders().values())
    assert len(holders) == len(set(holders))
    # A third expiry leaves a slot empty: nobody is left to take it.
    d.expire(sessions["s1"])
    assert d.holders() == {1: "m2", 2: "s2"}
    assert d.sm.groups.groups["g"].vacated_cause == {0: "session_expired"}
    # A new member fills it, with the cause of the vacancy.
    mark = d.sm.revision
    d.join("s3", d.session(), priority=0)
    assert d.since(mark)[-1] == ("master_elected", "s3", 0, "session_expired")


def test_one_member_never_holds_two_slots() -> None:
    d = Driver()
    d.group(slots=3)
    s = d.session()
    d.join("only", s)
    assert d.holders() == {0: "only"}
    d.ok(campaign=gp.Campaign(group="g", member_id="only"))
    d.join("only", s, priority=7)  # re-registration: an update, not a second member
    assert d.holders() == {0: "only"}
    d.join("two", s)
    assert d.holders() == {0: "only", 1: "two"}


# -- groups -------------------------------------------------------------------------------


def test_delete_group_releases_everything() -> None:
    d = Driver()
    d.group(slots=2, timeout=100)
    sa, sb = d.session(), d.session()
    d.join("a", sa, priority=2)
    d.join("b", sb, priority=1)
    d.join("c", sb, priority=0)
    d.switchover()
    mark = d.sm.revision
    d.ok(delete_group=gp.DeleteGroup(name="g"))
    assert d.since(mark) == [
        ("master_lost", "a", 0, "group_deleted"),
        ("member_left", "a", 0, "group_deleted"),
        ("master_lost", "b", 1, "group_deleted"),
        ("member_left", "b", 0, "group_deleted"),
        ("member_left", "c", 0, "group_deleted"),
        ("group_deleted", "", 0, ""),
    ]
    assert "g" not in d.sm.groups.groups
    assert {sa.id, sb.id} <= set(d.sm.groups.sessions)  # sessions outlive the group
    assert d.next_timer_ms() is None
    assert d.advance(100_000) == []
    # The same name again is a new group: nothing carried over, tokens keep growing.
    d.group(slots=2)
    assert d.holders() == {}
    d.join("c", sb)
    assert d.holding(0).token == d.sm.revision
    assert d.holding(0).cause == "initial"


def reg(group: str = "g", member_id: str = "x", session: str = "S", **kw: Any) -> dict[str, Any]:
    """A Register op; session "S"/"S2" stand for the fixture's sessions (filled in later)."""
    m = gp.Member(group=group, id=member_id, session_id=session, **kw)
    return {"register": gp.Register(member=m)}


def create(name: str, slots: int | None = 1) -> dict[str, Any]:
    policy = gp.GroupPolicy(slots=slots) if slots is not None else None
    return {"create_group": gp.CreateGroup(name=name, policy=policy)}


REJECTED = [
    ({"open_session": gp.OpenSession(ttl_ms=limits.MIN_SESSION_TTL_MS - 1)}, "invalid_argument"),
    ({"open_session": gp.OpenSession(ttl_ms=limits.MAX_SESSION_TTL_MS + 1)}, "invalid_argument"),
    ({"open_session": gp.OpenSession(ttl_ms=1000, name="n" * 129)}, "invalid_argument"),
    ({"close_session": gp.CloseSession(session_id="nope")}, "not_found"),
    (create("h", None), "invalid_argument"),  # no policy: 0 slots
    (create("h", 0), "invalid_argument"),
    (create("h", limits.MAX_SLOTS + 1), "invalid_argument"),
    (create("g"), "already_exists"),
    (create("-x"), "invalid_argument"),
    ({"delete_group": gp.DeleteGroup(name="nope")}, "not_found"),
    (reg(group="nope"), "not_found"),
    (reg(session="nope"), "not_found"),  # unknown (or dead) session
    (reg(member_id="a", session="S2"), "already_exists"),  # a is s's
    (reg(weight=-1), "invalid_argument"),
    (reg(member_id="bad id"), "invalid_argument"),
    ({"unregister": gp.Unregister(group="g", member_id="nope")}, "not_found"),
    ({"campaign": gp.Campaign(group="nope", member_id="a")}, "not_found"),
    ({"campaign": gp.Campaign(group="g", member_id="n")}, "failed_precondition"),  # nofailover
    ({"resign": gp.Resign(group="g", member_id="b")}, "failed_precondition"),  # not holder
    ({"resign": gp.Resign(group="g", member_id="nope")}, "not_found"),
    ({"switchover": gp.Switchover(group="g", to_member="n")}, "failed_precondition"),
    ({"switchover": gp.Switchover(group="g", to_member="a")}, "failed_precondition"),
    ({"switchover": gp.Switchover(group="g")}, "failed_precondition"),  # nobody eligible
    ({"switchover": gp.Switchover(group="g", to_member="nope")}, "not_found"),
    ({"switchover": gp.Switchover(group="nope")}, "not_found"),
    ({"switchover": gp.Switchover(group="e")}, "failed_precondition"),  # no master
    ({"revoke_holding": gp.RevokeHolding(group="g", slot=3)}, "failed_precondition"),
    ({"revoke_holding": gp.RevokeHolding(group="nope", slot=0)}, "not_found"),
    ({}, "invalid_argument"),  # no op: what a newer node's command looks like
]


@pytest.mark.parametrize(("op", "reason"), REJECTED)
def test_rejected_commands_change_nothing(op: dict[str, Any], reason: str) -> None:
    d = Driver()
    d.group()
    d.group("e")
    s, s2 = d.session(), d.session()
    d.join("a", s, priority=2)
    d.join("b", s2, priority=1, candidate=False)  # nobody eligible to take over
    d.join("n", s2, nofailover=True)
    snap, rev = d.sm.snapshot(), d.sm.revision
    cmd = raft_pb2.Command(time_ms=d.now, term=d.term, **op)
    if cmd.HasField("register"):
        who = cmd.register.member.session_id
        cmd.register.member.session_id = {"S": s.id, "S2": s2.id}.get(who, who)
    res = d.sm.apply(cmd.SerializeToString())
    assert res.error_reason == reason, res.error_message
    assert res.error_message.startswith("coord: ")
    assert res.revision == rev
    assert d.sm.revision == rev
    assert d.sm.snapshot() == snap


def test_switchover_while_one_is_in_progress_is_refused() -> None:
    d = master_standby()
    d.switchover("b")
    snap = d.sm.snapshot()
    res = d.switchover("c", dt=0)
    assert res.error_reason == "failed_precondition"
    assert "already in progress" in res.error_message
    assert d.sm.snapshot() == snap


def test_switchover_target_that_leaves_cancels_the_named_handover() -> None:
    d = master_standby()
    d.switchover("b")
    d.ok(unregister=gp.Unregister(group="g", member_id="b"))
    assert d.sm.groups.groups["g"].handovers == {}
    assert d.holders() == {0: "a"}


def test_policy_defaults_are_filled_in() -> None:
    d = Driver()
    g = d.group()
    assert g.policy.failback == OFF
    assert g.policy.switchover_timeout_ms == limits.DEFAULT_SWITCHOVER_TIMEOUT_MS
    assert g.created_revision == d.sm.revision


# -- events -------------------------------------------------------------------------------


def test_every_revision_has_exactly_one_event_with_term_and_time() -> None:
    d = master_standby(timeout=100)
    d.term = 4
    d.switchover()
    d.advance(100)
    d.term = 5
    d.advance(2000)
    d.expire(d.s["b"])
    events = list(d.sm.events.items())
    assert [e.revision for e in events] == list(range(1, d.sm.revision + 1))
    assert [e.term for e in events][-1] == 5
    assert all(a.time_ms <= b.time_ms for a, b in itertools.pairwise(events))
    assert all(a.term <= b.term for a, b in itertools.pairwise(events))


def test_event_log_eviction_and_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "EVENT_LOG_ENTRIES", 5)
    d = master_standby()
    cur = d.sm.revision
    assert cur > 5
    assert len(d.sm.events) == 5
    oldest = d.sm.events.oldest_revision
    assert oldest == cur - 4
    tail = d.sm.events.since(oldest, cur)
    assert [e.revision for e in tail] == list(range(oldest, cur + 1))
    assert [e.revision for e in d.sm.events.since(cur, cur)] == [cur]
    assert d.sm.events.since(cur + 1, cur) == []
    with pytest.raises(OutOfRange) as err:
        d.sm.events.since(oldest - 1, cur)
    assert str(cur) in err.value.message
    with pytest.raises(OutOfRange):
        d.sm.events.since(1, cur)
    # Kept events survive a snapshot, and so does the eviction point.
    other = StateMachine()
    other.restore(d.sm.snapshot())
    assert other.events.oldest_revision == oldest
    assert list(other.events.items()) == list(d.sm.events.items())
    d.resign("a")
    assert d.sm.events.oldest_revision == oldest + 2


def test_event_log_byte_limit_keeps_at_least_the_newest_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "EVENT_LOG_BYTES", 1)
    d = master_standby()
    assert len(d.sm.events) == 1
    assert d.sm.events.oldest_revision == d.sm.revision
    with pytest.raises(OutOfRange):
        d.sm.events.since(d.sm.revision - 1, d.sm.revision)


def test_the_event_logs_stored_encodings_are_its_events_and_its_byte_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A snapshot frames the stored encodings instead of serializing each event: they
    # must be the events, through appends, evictions and a restore; and the byte bound
    # counts their lengths, which must be ByteSize() (every replica, of any coord
    # version, evicts at the same event).
    d = master_standby()
    sizes = [e.ByteSize() for e in d.sm.events.items()]
    monkeypatch.setattr(limits, "EVENT_LOG_BYTES", sum(sizes))
    d.switchover("b")
    kept = list(d.sm.events.items())
    assert 1 < len(kept) < len(sizes) and sum(e.ByteSize() for e in kept) <= limits.EVENT_LOG_BYTES
    assert d.sm.events.encoded() == [e.SerializeToString(deterministic=True) for e in kept]
    other = StateMachine()
    other.restore(d.sm.snapshot())
    assert other.events.encoded() == d.sm.events.encoded()


# -- snapshots ----------------------------------------------------------------------------


def test_snapshot_restore_keeps_holdings_handovers_and_timers() -> None:
    d = master_standby(timeout=200)
    d.switchover("b")
    d.advance(200)
    other = StateMachine()
    other.restore(d.sm.snapshot())
    assert other.snapshot() == d.sm.snapshot()
    assert other.groups.pending_waits() == d.sm.groups.pending_waits()
    over = [waits.to_proto(w.key) for w in d.sm.groups.pending_waits()]
    cmd = raft_pb2.Command(time_ms=d.now + 5000, term=1, advance=gp.Advance(over=over))
    assert other.apply(cmd.SerializeToString()) == d.sm.apply(cmd.SerializeToString())
    assert other.snapshot() == d.sm.snapshot()
    assert other.groups.groups["g"].holdings[0].member_id == "b"


def test_a_session_ttl_out_of_bounds_is_refused_in_milliseconds_and_seconds() -> None:
    """The API field is in ms; the libraries and the CLI take seconds: the error says both."""
    d = Driver()
    res = d.apply(open_session=gp.OpenSession(ttl_ms=100))
    assert res.error_reason == "invalid_argument"
    assert "100 ms (0.1 s) is out of bounds: use 500..3600000 ms (0.5..3600 s)" in (
        res.error_message
    )
    assert not d.sm.groups.sessions
