"""Freshness-aware succession (coord/state/placement.py, docs/design.md "Freshness-aware
succession"): reported positions, max_lag_on_failover, prefer_most_advanced and the
synchronous set, on the Driver of tests/unit/test_groups.py."""

from __future__ import annotations

from coord.state.explain import explain
from coord.state.machine import StateMachine
from coord.state.replay import apply_event
from coord.v1 import groups_pb2 as gp
from tests.unit.test_groups import Driver


def report(d: Driver, member: str, position: int, group: str = "g") -> gp.Member:
    m = d.sm.groups.groups[group].members[member]
    update = gp.UpdateMember(group=group, member_id=member, session_id=m.session_id)
    update.position = position
    return d.ok(update_member=update).member


def edit(d: Driver, **policy: object) -> None:
    d.ok(edit_group=gp.EditGroup(group="g", policy=gp.GroupPolicy(**policy), fields=list(policy)))


def four(**policy: object) -> Driver:
    """Group g (1 slot); a (priority 9) holds it at position 100; b (priority 8) stands
    by at 10, c (priority 1) at 95, d (priority 5) at 90."""
    d = Driver()
    d.ok(create_group=gp.CreateGroup(name="g", policy=gp.GroupPolicy(slots=1, **policy)))
    for name, prio, pos in (("a", 9, 100), ("b", 8, 10), ("c", 1, 95), ("d", 5, 90)):
        d.s[name] = d.session(1000)
        d.join(name, d.s[name], priority=prio)
        report(d, name, pos)
    assert d.holders() == {0: "a"}
    return d


def verdicts(d: Driver) -> dict[str, gp.MemberVerdict]:
    return {v.member_id: v for v in explain(d.sm.groups, "g").members}


def test_a_lagging_standby_is_skipped_and_the_next_by_priority_wins() -> None:
    d = four(max_lag_on_failover=20)
    v = verdicts(d)
    assert v["b"].reason == "lagging" and "behind by 90" in v["b"].detail
    assert v["b"].position == 10 and v["b"].lag == 90
    d.expire(d.s["a"])  # best is now c's 95: b is 85 behind
    assert d.holders() == {0: "d"}  # priority 5 beats c's 1; b (8) lags


def test_prefer_most_advanced_wins_before_priority() -> None:
    d = four(max_lag_on_failover=20, prefer_most_advanced=True)
    x = explain(d.sm.groups, "g")
    assert x.best_position == 100
    assert "c would be chosen: c is the best eligible member (position 95, priority 1)" in (
        x.slots[0].why
    )
    assert [v.rank for v in x.members] == [0, 0, 1, 2]  # a holds, b lags, c, d
    d.expire(d.s["a"])
    assert d.holders() == {0: "c"}


def test_without_the_policy_positions_change_nothing() -> None:
    d = four()
    d.expire(d.s["a"])
    assert d.holders() == {0: "b"}  # highest priority, however far behind


def test_a_member_that_never_reported_is_not_eligible_under_max_lag() -> None:
    d = four(max_lag_on_failover=1000)
    d.s["e"] = d.session(1000)
    d.join("e", d.s["e"], priority=99)
    v = verdicts(d)["e"]
    assert v.reason == "no_position" and "reported no position" in v.detail
    d.expire(d.s["a"])
    assert d.holders() == {0: "b"}


def test_the_synchronous_set_only_narrows_who_succeeds() -> None:
    d = four(synchronous=["a", "c", "ghost"])
    v = verdicts(d)
    assert v["b"].reason == "not_synchronous" and "not in the synchronous set" in v["b"].detail
    notes = " ".join(explain(d.sm.groups, "g").notes)
    assert "not registered: ghost" in notes
    d.expire(d.s["a"])
    assert d.holders() == {0: "c"}
    d.expire(d.s["c"])
    assert d.holders() == {}  # nobody else may succeed
    edit(d, synchronous=[])  # an empty set: anyone
    assert d.holders() == {0: "b"}


def test_catching_up_makes_a_member_eligible_and_fills_an_empty_slot() -> None:
    d = Driver()
    d.ok(create_group=gp.CreateGroup(name="g", policy=gp.GroupPolicy(slots=1)))
    edit(d, max_lag_on_failover=10)
    for name in ("a", "b"):
        d.s[name] = d.session(1000)
        d.join(name, d.s[name])
    assert d.holders() == {}  # neither reported a position
    report(d, "a", 50)
    assert d.holders() == {0: "a"}


def test_positions_only_increase_and_bad_input_changes_nothing() -> None:
    d = four()
    rev = d.sm.revision
    m = d.sm.groups.groups["g"].members["c"]
    for position, reason in ((94, "failed_precondition"), (-1, "invalid_argument")):
        update = gp.UpdateMember(group="g", member_id="c", session_id=m.session_id)
        update.position = position
        res = d.apply(update_member=update)
        assert res.error_reason == reason, res.error_message
    operator = gp.UpdateMember(group="g", member_id="c")
    operator.position = 500
    res = d.apply(update_member=operator)
    assert res.error_reason == "invalid_argument" and "position" in res.error_message
    for policy in (
        gp.GroupPolicy(max_lag_on_failover=-1),
        gp.GroupPolicy(synchronous=["a", "a"]),
        gp.GroupPolicy(synchronous=[""]),
    ):
        fields = [f.name for f, _ in policy.ListFields()]
        res = d.apply(edit_group=gp.EditGroup(group="g", policy=policy, fields=fields))
        assert res.error_reason == "invalid_argument", res.error_message
        bad = gp.GroupPolicy(slots=1)
        bad.MergeFrom(policy)
        res = d.apply(create_group=gp.CreateGroup(name="h", policy=bad))
        assert res.error_reason == "invalid_argument", res.error_message
    assert d.sm.revision == rev
    assert d.sm.groups.groups["g"].members["c"].position == 95
    report(d, "c", 95)  # the same position: no change
    assert d.sm.revision == rev


def test_a_position_report_is_its_own_event_and_replays() -> None:
    d = four()
    before = StateMachine()
    before.restore(d.sm.snapshot())
    mark = d.sm.revision
    report(d, "c", 120)
    assert d.since(mark) == [("position_reported", "c", 0, "")]
    for e in d.events(mark):
        apply_event(before, e)
    assert before.groups.groups["g"].members["c"].position == 120


def test_registering_again_keeps_the_position() -> None:
    d = four()
    m = gp.Member(group="g", id="c", session_id=d.s["c"].id, priority=1, candidate=True)
    assert d.ok(register=gp.Register(member=m)).member.position == 95


def test_a_lagging_successor_of_a_pending_handover_is_replaced() -> None:
    d = four(max_lag_on_failover=20, switchover_timeout_ms=1000)
    assert d.switchover("c").error_reason == ""
    report(d, "a", 200)  # the master moves on: c is 105 behind, d too
    g = d.sm.groups.groups["g"]
    assert 0 not in g.handovers  # cancelled: nobody is fresh enough
    res = d.switchover("b")
    assert res.error_reason == "failed_precondition" and "behind by 190" in res.error_message
