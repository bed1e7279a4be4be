"""Member health, updates and loads in the state machine (coord/state/groups.py).

SetHealth is what the leader's checker proposes on a transition; UpdateMember and
SetLoads change how members are balanced. Driven through StateMachine.apply like the
rest of the group tests.
"""

from __future__ import annotations

import pytest
from test_groups import AUTO, Driver

from coord.state import healthspec
from coord.v1 import groups_pb2 as gp


def health(
    d: Driver, member: str, healthy: bool, group: str = "g", stale: bool = False, dt: int = 1
) -> None:
    m = d.sm.groups.groups[group].members[member]
    rev = m.registered_revision - (1 if stale else 0)
    d.ok(dt, set_health=gp.SetHealth(group=group, member_id=member, registered_revision=rev,
                                 healthy=healthy, detail="probe said so"))  # fmt: skip


def master_standby(failover_on_unhealthy: bool = True, **policy: int) -> Driver:
    d = Driver()
    p = gp.GroupPolicy(slots=1, failover_on_unhealthy=failover_on_unhealthy, **policy)
    d.ok(create_group=gp.CreateGroup(name="g", policy=p))
    for name, prio in (("a", 3), ("b", 2)):
        d.s[name] = d.session(1000)
        d.join(name, d.s[name], priority=prio)
    assert d.holders() == {0: "a"}
    return d


def test_an_unhealthy_master_is_revoked_and_replaced_after_its_ttl() -> None:
    d = master_standby()
    mark = d.sm.revision
    health(d, "a", False)
    t = d.now
    assert d.since(mark) == [
        ("member_unhealthy", "a", 0, "probe said so"),
        ("master_revoked", "a", 0, "unhealthy"),
    ]
    assert d.holding().revoked and d.holders() == {0: "a"}  # a may still believe it
    assert d.events(mark)[0].member_record.health_changed_ms == t
    assert d.advance(at=t + 999) == []
    assert d.advance(at=t + 1000) == [
        ("master_lost", "a", 0, "unhealthy"),
        ("master_elected", "b", 0, "unhealthy"),
    ]


def test_without_failover_on_unhealthy_the_master_stays_but_is_no_successor() -> None:
    d = master_standby(failover_on_unhealthy=False)
    health(d, "a", False)
    health(d, "b", False)
    assert not d.holding().revoked
    d.resign("a")  # nobody healthy to take over
    assert d.holders() == {}
    mark = d.sm.revision
    health(d, "b", True)  # healthy again: fills the empty slot at once
    assert d.since(mark)[-1] == ("master_elected", "b", 0, "resign")


def test_a_stale_or_repeated_verdict_changes_nothing() -> None:
    d = master_standby()
    snap = d.sm.snapshot()
    health(d, "a", False, stale=True, dt=0)  # about an earlier registration of a
    health(d, "a", True, dt=0)  # already healthy
    d.ok(0, set_health=gp.SetHealth(group="nope", member_id="a", healthy=False))
    d.ok(0, set_health=gp.SetHealth(group="g", member_id="nobody", healthy=False))
    assert d.sm.snapshot() == snap


def test_a_recovered_member_waits_out_the_failback_hold_from_its_recovery() -> None:
    d = master_standby(failback=AUTO, failback_hold_ms=5000)
    health(d, "a", False)
    d.advance(1000)  # a's TTL: b is master
    assert d.holders() == {0: "b"}
    assert not d.sm.groups.groups["g"].members["a"].candidate  # revoked: not a candidate
    d.ok(campaign=gp.Campaign(group="g", member_id="a"))  # its library campaigns again
    health(d, "a", True, group="g")
    recovered = d.now
    assert d.next_timer_ms() == recovered + 5000  # the hold-down
    assert d.advance(at=recovered + 2000) == []
    health(d, "a", False)  # flaps within the hold
    health(d, "a", True)
    again = d.now
    assert d.advance(at=recovered + 5000) == []  # the hold restarted at the second recovery
    assert d.advance(at=again + 4999) == []
    assert d.advance(at=again + 5000) == [("stepdown_requested", "b", 0, "failback")]


def test_an_unhealthy_successor_drops_out_of_a_pending_switchover() -> None:
    d = master_standby(switchover_timeout_ms=300)
    assert not d.switchover("b").error_reason
    health(d, "b", False)
    assert d.sm.groups.groups["g"].handovers == {}  # cancelled: b was named
    d.advance(300)
    assert d.holders() == {0: "a"} and not d.holding().revoked


def test_update_member_by_its_own_session_only() -> None:
    d = master_standby()
    sid = d.s["a"].id
    tags = {"zone": "z1", "rack": "r1"}
    res = d.ok(update_member=gp.UpdateMember(group="g", member_id="a", session_id=sid,
                                             weight=7, tags=tags))  # fmt: skip
    assert (res.member.weight, dict(res.member.tags)) == (7, {"zone": "z1", "rack": "r1"})
    res = d.ok(update_member=gp.UpdateMember(group="g", member_id="a", session_id=sid,
                                             tags={"rack": "", "os": "l"}))  # fmt: skip
    assert dict(res.member.tags) == {"zone": "z1", "os": "l"}  # merged; "" deletes
    assert res.member.weight == 7  # unset: unchanged
    res = d.ok(update_member=gp.UpdateMember(group="g", member_id="a", session_id=sid,
                                             tags={"only": "this"}, replace_tags=True))  # fmt: skip
    assert dict(res.member.tags) == {"only": "this"}
    assert d.sm.events.since(d.sm.revision, d.sm.revision)[0].type == "member_updated"
    snap = d.sm.snapshot()
    bad = d.apply(0, update_member=gp.UpdateMember(group="g", member_id="a", session_id="x"))
    assert bad.error_reason == "failed_precondition" and "own session" in bad.error_message
    bad = d.apply(0, update_member=gp.UpdateMember(group="g", member_id="a", session_id=sid,
                                                   weight=-1))  # fmt: skip
    assert bad.error_reason == "invalid_argument"
    assert d.sm.snapshot() == snap
    rev = d.sm.revision
    d.ok(update_member=gp.UpdateMember(group="g", member_id="a", session_id=sid, weight=7))
    assert d.sm.revision == rev  # nothing changed: no event


def test_loads_are_replicated_for_live_sessions_only() -> None:
    d = master_standby()
    a, b = d.s["a"].id, d.s["b"].id
    mark = d.sm.revision
    loads = [gp.SessionLoad(session_id=a, load=2.5), gp.SessionLoad(session_id="gone", load=1),
             gp.SessionLoad(session_id=b, load=float("nan"))]  # fmt: skip
    d.ok(set_loads=gp.SetLoads(loads=loads))
    assert d.sm.groups.sessions[a].load == 2.5 and d.sm.groups.sessions[b].load == 0
    (e,) = d.events(mark)
    assert e.type == "loads_reported" and [(x.session_id, x.load) for x in e.loads] == [(a, 2.5)]
    rev = d.sm.revision
    d.ok(set_loads=gp.SetLoads(loads=loads[:1]))  # unchanged: no event
    assert d.sm.revision == rev


CHECKS = {
    "tcp, member address": (gp.HealthCheck(tcp=gp.TcpCheck()), "10.0.0.1:80", ""),
    "http defaults": (gp.HealthCheck(http=gp.HttpCheck(url="http://h/x")), "", ""),
    "grpc": (gp.HealthCheck(grpc=gp.GrpcCheck(address="h:1")), "", ""),
    "no type": (gp.HealthCheck(interval_ms=1000), "", "no type"),
    "negative interval": (gp.HealthCheck(tcp=gp.TcpCheck(address="h:1"), interval_ms=-5), "",
                          "out of bounds"),
    # Libraries and the CLI take seconds: errors say seconds too.
    "interval in seconds too": (gp.HealthCheck(tcp=gp.TcpCheck(address="h:1"), interval_ms=50),
                                "", "50 ms (0.05 s) is out of bounds: use 100..3600000 ms (0.1..3600 s)"),  # noqa: E501
    "timeout over interval": (gp.HealthCheck(tcp=gp.TcpCheck(address="h:1"), interval_ms=200,
                                             timeout_ms=300), "", "300 ms (0.3 s) must be"),
    "fall 0 is the default, 101 is not": (gp.HealthCheck(tcp=gp.TcpCheck(address="h:1"),
                                                         fall=101), "", "fall must be"),
    "tcp without any address": (gp.HealthCheck(tcp=gp.TcpCheck()), "", "host:port"),
    "port out of range": (gp.HealthCheck(tcp=gp.TcpCheck(address="h:70000")), "", "host:port"),
    "ftp url": (gp.HealthCheck(http=gp.HttpCheck(url="ftp://h/")), "", "is invalid"),
    "url without host": (gp.HealthCheck(http=gp.HttpCheck(url="http:///x")), "", "is invalid"),
    "url bad port": (gp.HealthCheck(http=gp.HttpCheck(url="http://h:99999/")), "", "invalid"),
    "bad status": (gp.HealthCheck(http=gp.HttpCheck(url="http://h/", expect_status=[99])), "",
                   "not an HTTP status"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CHECKS))
def test_check_specs(name: str) -> None:
    check, address, error = CHECKS[name]
    if not error:
        out = healthspec.checked(check, address)
        assert out.interval_ms == 1000 and out.timeout_ms == 1000
        assert (out.rise, out.fall) == (2, 3)
        return
    d = master_standby()
    snap = d.sm.snapshot()
    m = gp.Member(group="g", id="c", session_id=d.s["a"].id, address=address, check=check)
    res = d.apply(0, register=gp.Register(member=m))
    assert res.error_reason == "invalid_argument", name
    assert error in res.error_message
    assert d.sm.snapshot() == snap


def test_a_registered_check_keeps_its_defaults_through_a_snapshot() -> None:
    d = master_standby()
    m = gp.Member(group="g", id="c", session_id=d.s["a"].id,
                  check=gp.HealthCheck(http=gp.HttpCheck(url="http://h/x"), fall=4))  # fmt: skip
    d.ok(register=gp.Register(member=m))
    stored = d.sm.groups.groups["g"].members["c"].check
    assert (stored.interval_ms, stored.timeout_ms, stored.rise, stored.fall) == (1000, 1000, 2, 4)
    from coord.state.machine import StateMachine

    other = StateMachine()
    other.restore(d.sm.snapshot())
    assert other.groups.groups["g"].members["c"].check == stored
