"""Scheduled switchovers (coord/state/scheduled.py): scheduled, listed, cancelled,
replicated (snapshot, replay), fired once by the leader as an ordinary switchover, or
refused with the reason. Focused examples on the Driver of tests/unit/test_groups.py;
the leader's side is coord/server/duties/schedules.py (tests/inproc and integration).
"""

from __future__ import annotations

from coord.state.explain import explain
from coord.state.machine import StateMachine
from coord.state.replay import apply_event
from coord.state.scheduled import MAX_PER_GROUP, fire_request_id
from coord.v1 import groups_pb2 as gp
from coord.v1 import raft_pb2
from tests.unit.test_groups import Driver, master_standby

HOUR = 3_600_000


def schedule(d: Driver, to: str = "c", at: int | None = None) -> raft_pb2.CommandResult:
    at = d.now + HOUR if at is None else at
    return d.apply(schedule_switchover=gp.ScheduleSwitchover(group="g", to_member=to, at_ms=at))


def fire(d: Driver, entry_id: int, request_id: str | None = None) -> raft_pb2.CommandResult:
    """What the leader proposes once its wall clock reached the entry's time."""
    rid = fire_request_id(entry_id) if request_id is None else request_id
    cmd = raft_pb2.Command(
        request_id=rid, time_ms=d.now, term=d.term,
        fire_switchover=gp.FireSwitchover(group="g", id=entry_id),
    )  # fmt: skip
    out = raft_pb2.CommandResult()
    out.CopyFrom(d.sm.apply(cmd.SerializeToString()))
    d.timer.observe(d.sm.groups.pending_waits(), d._clock_s())
    return out


def pending(d: Driver) -> list[gp.ScheduledSwitchover]:
    return list(d.sm.groups.groups["g"].to_proto().scheduled)


def test_a_scheduled_switchover_fires_once_as_an_ordinary_switchover() -> None:
    d = master_standby()
    at = d.now + HOUR
    res = schedule(d, "c", at=at)
    assert not res.error_reason, res.error_message
    s = res.scheduled
    assert (s.id, s.group, s.to_member, s.at_ms) == (res.revision, "g", "c", at)
    assert pending(d) == [s]
    assert d.since(res.revision - 1) == [("switchover_scheduled", "c", 0, "")]
    notes = explain(d.sm.groups, "g").notes
    assert any(f"scheduled switchover {s.id}: to c at" in n for n in notes)
    d.now = s.at_ms
    mark = d.sm.revision
    first = fire(d, s.id)
    assert not first.error_reason
    assert d.since(mark) == [
        ("stepdown_requested", "a", 0, "switchover"),
        ("scheduled_switchover_fired", "c", 0, ""),
    ]  # one apply: the entry is gone in the same step
    fired = d.events(mark)[-1]
    assert fired.scheduled == s and not fired.group_slots.scheduled
    assert pending(d) == [] and d.sm.groups.groups["g"].handovers[0].to_member == "c"
    # A retry, or a new leader proposing it again: applied once.
    rev = d.sm.revision
    assert fire(d, s.id) == first and d.sm.revision == rev
    assert not fire(d, s.id, request_id="another").error_reason and d.sm.revision == rev
    d.resign("a")  # the master steps down as for any switchover
    assert d.holders() == {0: "c"}


def test_a_master_that_does_not_answer_is_revoked_and_waited_out_as_always() -> None:
    d = master_standby(timeout=200)
    s = schedule(d, "b").scheduled
    fire(d, s.id)
    d.advance(200)  # the switchover timeout, on the leader's monotonic clock
    assert d.holding().revoked and d.holders() == {0: "a"}
    d.advance(1000)  # a's TTL waited out
    assert d.holders() == {0: "b"}


def test_a_target_not_eligible_when_due_is_refused_and_the_event_says_why() -> None:
    d = master_standby()
    s = schedule(d, "c").scheduled
    c = d.sm.groups.groups["g"].members["c"]
    d.ok(set_health=gp.SetHealth(group="g", member_id="c", healthy=False,
                                 registered_revision=c.registered_revision))  # fmt: skip
    mark = d.sm.revision
    assert not fire(d, s.id).error_reason
    (refused,) = d.events(mark)
    assert refused.type == "scheduled_switchover_refused" and refused.member == "c"
    assert "its health check fails" in refused.cause and refused.scheduled == s
    assert pending(d) == [] and d.holders() == {0: "a"} and not d.sm.groups.groups["g"].handovers


def test_no_master_or_a_gone_target_is_refused_too() -> None:
    d = master_standby()
    s1 = schedule(d, "").scheduled  # the best candidate then
    s2 = schedule(d, "b").scheduled
    d.expire(d.s["b"])
    mark = d.sm.revision
    fire(d, s2.id)
    assert d.events(mark)[-1].cause == "member 'b' is not registered in group 'g'"
    d.expire(d.s["a"])  # c is master; nobody else is left
    mark = d.sm.revision
    fire(d, s1.id)
    assert d.events(mark)[-1].type == "scheduled_switchover_refused"
    assert "no eligible candidate" in d.events(mark)[-1].cause


def test_an_open_breaker_refuses_it_and_a_pause_by_hand_does_not() -> None:
    d = master_standby()
    s = schedule(d, "c").scheduled
    d.ok(pause_groups=gp.PauseGroups(groups=["g"]))
    fire(d, s.id)  # paused by an operator: a switchover by hand still completes
    d.resign("a")
    assert d.holders() == {0: "c"}
    d.ok(edit_group=gp.EditGroup(group="g", fields=["breaker_failovers", "breaker_window_ms"],
                                 policy=gp.GroupPolicy(breaker_failovers=1,
                                                       breaker_window_ms=HOUR)))  # fmt: skip
    d.ok(resume_groups=gp.ResumeGroups(groups=["g"]))
    d.expire(d.s["c"])  # an automatic failover to b: the breaker opens
    assert d.sm.groups.groups["g"].pause.breaker
    d.s["x"] = d.session()
    d.join("x", d.s["x"], priority=9)
    s = schedule(d, "x").scheduled
    mark = d.sm.revision
    fire(d, s.id)
    (refused,) = d.events(mark)
    assert refused.type == "scheduled_switchover_refused" and "breaker" in refused.cause
    assert "resume the group" in refused.cause and d.holders() == {0: "b"}


def test_cancel_removes_it_and_a_late_firing_does_nothing() -> None:
    d = master_standby()
    s = schedule(d, "c").scheduled
    mark = d.sm.revision
    res = d.ok(cancel_switchover=gp.CancelSwitchover(group="g", id=s.id))
    assert res.scheduled == s and pending(d) == []
    assert d.since(mark) == [("scheduled_switchover_cancelled", "c", 0, "")]
    rev = d.sm.revision
    assert not fire(d, s.id).error_reason and d.sm.revision == rev
    res = d.apply(cancel_switchover=gp.CancelSwitchover(group="g", id=s.id))
    assert res.error_reason == "not_found" and "coordctl schedule ls" in res.error_message


def test_bad_schedules_are_refused_and_change_nothing() -> None:
    d = master_standby()
    rev = d.sm.revision
    for at, to, group, reason, words in (
        (d.now, "c", "g", "invalid_argument", "not in the future"),
        (d.now - HOUR, "c", "g", "invalid_argument", "give a later time"),
        (d.now + HOUR, "nobody", "g", "not_found", "'nobody' is not registered"),
        (d.now + HOUR, "c", "nope", "not_found", "group 'nope' does not exist"),
    ):
        res = d.apply(0, schedule_switchover=gp.ScheduleSwitchover(group=group, to_member=to,
                                                                   at_ms=at))  # fmt: skip
        assert res.error_reason == reason and words in res.error_message, res.error_message
    assert d.sm.revision == rev and pending(d) == []
    for _ in range(MAX_PER_GROUP):
        assert not schedule(d, "c").error_reason
    res = schedule(d, "c")
    assert res.error_reason == "resource_exhausted" and "coordctl schedule cancel" in (
        res.error_message
    )


def test_schedules_survive_a_restart_and_replay_and_go_with_their_group() -> None:
    d = master_standby()
    base = StateMachine()
    base.restore(d.sm.snapshot())
    mark = d.sm.revision
    s1 = schedule(d, "c").scheduled
    s2 = schedule(d, "b", at=d.now + 2 * HOUR).scheduled
    d.ok(cancel_switchover=gp.CancelSwitchover(group="g", id=s1.id))
    s3 = schedule(d, "", at=d.now + 3 * HOUR).scheduled
    fire(d, s3.id)
    restarted = StateMachine()
    restarted.restore(d.sm.snapshot())
    assert list(restarted.groups.groups["g"].to_proto().scheduled) == [s2]
    for e in d.events(mark):
        apply_event(base, e)
    assert base.groups.groups["g"].to_proto() == d.sm.groups.groups["g"].to_proto()
    d.ok(delete_group=gp.DeleteGroup(name="g"))
    assert "g" not in d.sm.groups.groups
    assert not fire(d, s2.id).error_reason  # its group is gone: nothing to do
