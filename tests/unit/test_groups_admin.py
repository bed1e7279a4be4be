"""Pause (maintenance mode), live policy edits, member edits and explain
(coord/state/group_admin.py, coord/state/explain.py): focused examples on the
Driver of tests/unit/test_groups.py (the leader's waits timed on its clock)."""

from __future__ import annotations

from coord.state import waits
from coord.state.explain import explain
from coord.state.machine import StateMachine
from coord.state.replay import apply_event
from coord.v1 import groups_pb2 as gp
from tests.unit.test_groups import AUTO, Driver, master_standby


def pause(d: Driver, *groups: str, wait_ms: int = 0, all_groups: bool = False) -> gp.Group:
    d.ok(pause_groups=gp.PauseGroups(groups=list(groups), all=all_groups, wait_ms=wait_ms))
    return d.sm.groups.groups["g"].to_proto()


def edit(d: Driver, **policy: object) -> None:
    d.ok(edit_group=gp.EditGroup(group="g", policy=gp.GroupPolicy(**policy), fields=list(policy)))


def test_a_paused_group_leaves_a_lost_masters_slot_empty_and_says_so() -> None:
    d = master_standby()
    pause(d, "g")
    mark = d.sm.revision
    d.expire(d.s["a"])
    assert d.holders() == {}
    kinds = [e[0] for e in d.since(mark)]
    assert "master_lost" in kinds and "failover_paused" in kinds
    assert "master_elected" not in kinds
    assert explain(d.sm.groups, "g").slots[0].next == ""
    d.ok(resume_groups=gp.ResumeGroups(groups=["g"]))
    assert d.holders() == {0: "b"}
    assert d.holding().cause == "session_expired"


def test_pause_all_and_resume_all() -> None:
    d = master_standby()
    d.group("h")
    res = d.ok(pause_groups=gp.PauseGroups(all=True))
    assert list(res.group_names.names) == ["g", "h"]
    assert all(g.pause is not None for g in d.sm.groups.groups.values())
    res = d.ok(resume_groups=gp.ResumeGroups(all=True))
    assert list(res.group_names.names) == ["g", "h"]
    assert all(g.pause is None for g in d.sm.groups.groups.values())


def test_pause_refuses_unknown_groups_and_changes_nothing() -> None:
    d = master_standby()
    rev = d.sm.revision
    res = d.apply(pause_groups=gp.PauseGroups(groups=["g", "nope"]))
    assert res.error_reason == "not_found"
    assert d.sm.revision == rev and d.sm.groups.groups["g"].pause is None
    res = d.apply(pause_groups=gp.PauseGroups(groups=["g"], wait_ms=-5))
    assert res.error_reason == "invalid_argument" and d.sm.revision == rev


def test_a_switchover_by_hand_completes_while_paused() -> None:
    d = master_standby()
    pause(d, "g")
    assert not d.switchover("c").error_reason
    d.resign("a")
    assert d.holders() == {0: "c"}


def test_no_failback_and_no_unhealthy_revoke_while_paused() -> None:
    d = master_standby(failback=AUTO, hold=100)
    d.resign("a")  # b takes over; a campaigns again: it outranks b
    d.ok(campaign=gp.Campaign(group="g", member_id="a"))
    assert d.holders() == {0: "b"}
    assert any(k[0] == waits.FAILBACK for k in d.timer._started)
    pause(d, "g")
    assert not [w for w in d.sm.groups.pending_waits() if w.key[0] == waits.FAILBACK]
    assert d.advance(1000) == []
    d.ok(resume_groups=gp.ResumeGroups(groups=["g"]))
    d.advance(50)
    assert "failback" not in {ho.cause for ho in d.sm.groups.groups["g"].handovers.values()}
    events = d.advance(100)  # the hold counts from the resume
    assert ("stepdown_requested", "b", 0, "failback") in events


def test_a_pause_with_a_time_limit_is_a_leader_wait() -> None:
    d = master_standby()
    pause(d, "g", wait_ms=5000)
    d.expire(d.s["a"])
    assert d.holders() == {}
    assert d.advance(4000) == []
    events = d.advance(1000)
    assert ("group_resumed", "", 0, "pause_expired") in events
    assert d.holders() == {0: "b"}


def test_lowering_slots_asks_surplus_masters_to_step_down_and_raising_fills() -> None:
    d = Driver()
    d.group(slots=3, timeout=200)
    for name, prio in (("a", 3), ("b", 2), ("c", 1), ("x", 0)):
        d.s[name] = d.session(1000)
        d.join(name, d.s[name], priority=prio)
    assert d.holders() == {0: "a", 1: "b", 2: "c"}
    edit(d, slots=2)
    ho = d.sm.groups.groups["g"].handovers[2]
    assert (ho.cause, ho.to_member) == ("slots_reduced", "")
    assert d.holders() == {0: "a", 1: "b", 2: "c"}  # never an instant release
    d.resign("c")
    assert d.holders() == {0: "a", 1: "b"}  # slot 2 is never granted again
    edit(d, slots=3)
    assert d.holders() == {0: "a", 1: "b", 2: "x"}


def test_a_surplus_master_that_does_not_answer_is_revoked_then_waited_out() -> None:
    d = Driver()
    d.group(slots=2, timeout=200)
    for name in ("a", "b"):
        d.s[name] = d.session(1000)
        d.join(name, d.s[name])
    edit(d, slots=1)
    d.advance(200)
    assert d.holding(1).revoked
    d.advance(1000)
    assert d.holders() == {0: "a"}
    assert 1 not in d.sm.groups.groups["g"].vacated_cause


def test_bad_edits_are_refused_and_change_nothing() -> None:
    d = master_standby()
    rev = d.sm.revision
    for policy, fields in (
        (gp.GroupPolicy(slots=0), ["slots"]),
        (gp.GroupPolicy(), ["nope"]),
        (gp.GroupPolicy(), []),
    ):
        res = d.apply(edit_group=gp.EditGroup(group="g", policy=policy, fields=fields))
        assert res.error_reason == "invalid_argument", fields
    assert d.sm.revision == rev


def test_failback_off_cancels_a_pending_failback() -> None:
    d = master_standby(failback=AUTO, hold=0, timeout=10_000)
    d.resign("a")
    d.ok(campaign=gp.Campaign(group="g", member_id="a"))
    d.advance(1)
    assert d.sm.groups.groups["g"].handovers[0].cause == "failback"
    mark = d.sm.revision
    edit(d, failback=gp.FAILBACK_OFF)
    assert 0 not in d.sm.groups.groups["g"].handovers
    assert "stepdown_cancelled" in [e[0] for e in d.since(mark)]


def test_operator_member_edits_take_effect_in_placement_at_once() -> None:
    d = master_standby()
    upd = gp.UpdateMember(group="g", member_id="c", priority=9)
    d.ok(update_member=upd)
    x = explain(d.sm.groups, "g")
    assert x.slots[0].next == "c"
    d.ok(update_member=gp.UpdateMember(group="g", member_id="c", nofailover=True))
    x = explain(d.sm.groups, "g")
    assert x.slots[0].next == "b"
    assert {v.member_id: v.reason for v in x.members}["c"] == "nofailover"
    res = d.apply(update_member=gp.UpdateMember(group="g", member_id="c", weight=3))
    assert res.error_reason == "invalid_argument"


def test_events_replay_to_the_same_state() -> None:
    d = master_standby()
    start = StateMachine()
    start.restore(d.sm.snapshot())
    mark = d.sm.revision
    pause(d, "g", wait_ms=100)
    edit(d, slots=2, failback_hold_ms=5)
    d.ok(update_member=gp.UpdateMember(group="g", member_id="c", priority=7))
    d.advance(100)
    for e in d.events(mark):
        apply_event(start, e)
    assert start.groups.groups["g"].to_proto() == d.sm.groups.groups["g"].to_proto()
