"""The failover breaker (coord/state/breaker.py): after K automatic failovers within W
the group pauses itself until an operator resumes it. Focused examples on the Driver of
tests/unit/test_groups.py; the Hypothesis model is in tests/unit/test_explain_properties.py.
"""

from __future__ import annotations

from coord.state.explain import explain
from coord.state.machine import StateMachine
from coord.state.replay import apply_event
from coord.v1 import groups_pb2 as gp
from tests.unit.test_groups import Driver

K, W = 2, 60_000


def flappy(k: int = K, w: int = W, members: int = 4, slots: int = 1) -> Driver:
    """Group g with the breaker at k failovers within w ms; members m0 (highest
    priority) .. m{n-1}, each on a session of its own; m0 holds slot 0."""
    d = Driver()
    policy = gp.GroupPolicy(slots=slots, breaker_failovers=k, breaker_window_ms=w)
    d.ok(create_group=gp.CreateGroup(name="g", policy=policy))
    for i in range(members):
        d.s[f"m{i}"] = d.session(1000)
        d.join(f"m{i}", d.s[f"m{i}"], priority=100 - i)
    return d


def g(d: Driver) -> gp.Group:
    return d.sm.groups.groups["g"].to_proto()


def test_the_breaker_opens_after_k_automatic_failovers_and_stops_the_next() -> None:
    d = flappy()
    d.expire(d.s["m0"], dt=1000)  # failover 1: m1
    assert d.holders() == {0: "m1"} and not g(d).HasField("pause")
    assert list(g(d).breaker_failover_ms) == [d.now]
    mark = d.sm.revision
    d.expire(d.s["m1"], dt=1000)  # failover 2 happens, then the breaker opens
    assert d.holders() == {0: "m2"}
    kinds = [e[0] for e in d.since(mark)]
    assert kinds.index("master_elected") < kinds.index("breaker_opened")
    opened = next(e for e in d.events(mark) if e.type == "breaker_opened")
    assert opened.cause == "2 automatic failovers within 60s" and opened.member == "m2"
    assert g(d).pause.breaker == opened.cause
    mark = d.sm.revision
    d.expire(d.s["m2"], dt=1000)  # no third failover: the slot stays empty
    assert d.holders() == {}
    assert ("failover_paused", "m2", 0, "session_expired") in d.since(mark)
    x = explain(d.sm.groups, "g")
    assert x.breaker_open and x.paused
    assert x.slots[0].next == "" and "breaker open" in x.slots[0].why
    assert any(n.startswith("breaker open") for n in x.notes)
    assert "breaker is open" in {v.member_id: v.detail for v in x.members}["m3"]
    d.ok(resume_groups=gp.ResumeGroups(groups=["g"]))  # the operator closes it
    assert d.holders() == {0: "m3"} and not g(d).HasField("pause")
    assert list(g(d).breaker_failover_ms) == []  # counting starts again


def test_failovers_farther_apart_than_the_window_do_not_open_it() -> None:
    d = flappy(w=1500)
    d.expire(d.s["m0"], dt=1000)
    d.expire(d.s["m1"], dt=1500)  # exactly W later: the first is out of the window
    assert d.holders() == {0: "m2"} and not g(d).HasField("pause")
    assert list(g(d).breaker_failover_ms) == [d.now]
    d.expire(d.s["m2"], dt=1499)  # within W of the last: open
    assert g(d).pause.breaker


def test_an_unhealthy_master_replaced_counts_too() -> None:
    d = Driver()
    policy = gp.GroupPolicy(
        slots=1, breaker_failovers=1, breaker_window_ms=W, failover_on_unhealthy=True
    )
    d.ok(create_group=gp.CreateGroup(name="g", policy=policy))
    for name, prio in (("a", 2), ("b", 1)):
        d.s[name] = d.session(1000)
        d.join(name, d.s[name], priority=prio)
    a = d.sm.groups.groups["g"].members["a"]
    d.ok(set_health=gp.SetHealth(group="g", member_id="a", healthy=False,
                                 registered_revision=a.registered_revision))  # fmt: skip
    d.advance(1000)  # a's TTL waited out: b takes over, cause unhealthy
    assert d.holders() == {0: "b"} and d.holding().cause == "unhealthy"
    assert g(d).pause.breaker == "1 automatic failover within 60s"


def test_resigns_closes_and_switchovers_are_not_counted() -> None:
    d = flappy(k=1, members=5)
    d.resign("m0")  # its own session: a graceful step-down
    d.ok(close_session=gp.CloseSession(session_id=d.s["m1"].id))  # its own client closes
    assert not d.switchover("m4").error_reason
    d.resign("m2")  # hands over to m4 as asked
    assert d.holders() == {0: "m4"}
    assert not g(d).HasField("pause") and not list(g(d).breaker_failover_ms)


def test_the_tripping_fill_grants_nothing_more() -> None:
    d = Driver()
    policy = gp.GroupPolicy(slots=2, breaker_failovers=1, breaker_window_ms=W)
    d.ok(create_group=gp.CreateGroup(name="g", policy=policy))
    both = d.session(1000)
    for name, prio in (("a", 9), ("b", 8)):
        d.join(name, both, priority=prio)
    d.s["c"] = d.session(1000)
    d.join("c", d.s["c"], priority=1)
    d.s["x"] = d.session(1000)
    d.join("x", d.s["x"], priority=0)
    assert d.holders() == {0: "a", 1: "b"}
    d.expire(both)  # both slots lost in one command: c fills slot 0, then it trips
    assert d.holders() == {0: "c"}
    assert g(d).pause.breaker and g(d).vacated_cause[1] == "session_expired"


def test_it_stays_open_across_a_restart_a_replay_and_a_new_pause() -> None:
    d = flappy(k=1)
    start = StateMachine()
    start.restore(d.sm.snapshot())
    mark = d.sm.revision
    d.expire(d.s["m0"])
    restarted = StateMachine()
    restarted.restore(d.sm.snapshot())  # a restart, or a follower caught up by snapshot
    assert restarted.groups.groups["g"].to_proto() == g(d)
    assert explain(restarted.groups, "g").breaker_open
    for e in d.events(mark):  # a differential backup replayed
        apply_event(start, e)
    assert start.groups.groups["g"].to_proto() == g(d)
    d.ok(pause_groups=gp.PauseGroups(groups=["g"], reason="looking into it"))
    assert g(d).pause.breaker and g(d).pause.reason == "looking into it"
    d.ok(edit_group=gp.EditGroup(group="g", policy=gp.GroupPolicy(), fields=[
        "breaker_failovers", "breaker_window_ms"]))  # fmt: skip
    assert g(d).pause.breaker  # turning it off does not resume the group
    d.ok(resume_groups=gp.ResumeGroups(groups=["g"]))
    assert not g(d).HasField("pause") and d.holders() == {0: "m1"}


def test_bad_breaker_policies_are_refused_and_change_nothing() -> None:
    d = flappy()
    rev = d.sm.revision
    bad = (
        (gp.GroupPolicy(breaker_failovers=0, breaker_window_ms=W), "breaker_failovers 0"),
        (gp.GroupPolicy(breaker_failovers=3), "breaker_window_ms 0"),
        (gp.GroupPolicy(breaker_failovers=101, breaker_window_ms=W), "1..100"),
        (gp.GroupPolicy(breaker_failovers=2, breaker_window_ms=-1), "out of bounds"),
    )
    for policy, words in bad:
        res = d.apply(create_group=gp.CreateGroup(name="h", policy=gp.GroupPolicy(
            slots=1, breaker_failovers=policy.breaker_failovers,
            breaker_window_ms=policy.breaker_window_ms)))  # fmt: skip
        assert res.error_reason == "invalid_argument" and words in res.error_message
        assert "to 0 to turn the breaker off" in res.error_message
    res = d.apply(edit_group=gp.EditGroup(group="g", policy=gp.GroupPolicy(),
                                          fields=["breaker_failovers"]))  # fmt: skip
    assert res.error_reason == "invalid_argument" and "breaker_failovers 0" in res.error_message
    res = d.apply(edit_group=gp.EditGroup(group="g", fields=["breaker_k"]))
    assert res.error_reason == "invalid_argument" and "breaker_failovers" in res.error_message
    assert d.sm.revision == rev and "h" not in d.sm.groups.groups
    assert g(d).policy.breaker_failovers == K
