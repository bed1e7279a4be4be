"""Operator actions that take slots away: they revoke and wait out the holder's TTL.

An operator closing another client's session, or deleting a group, used to
release the slots at once and grant them again in the same apply (or let the
group be re-created and granted), while the old holder still believed it was
master until its next keepalive answer, or, cut off, until its validity ended.
Like every forced handover they now revoke, grant nothing until the leader has
waited out the holder's TTL, and then finish; ``force`` keeps the old, unsafe
behaviour for an operator who says so.
"""

from __future__ import annotations

from test_groups import Driver, master_standby

from coord.v1 import groups_pb2 as gp


def close(d: Driver, name: str, *, wait_out: bool) -> None:
    d.ok(close_session=gp.CloseSession(session_id=d.s[name].id, wait_out=wait_out))


def test_an_operator_closing_a_masters_session_waits_out_its_ttl() -> None:
    d = master_standby()
    mark = d.sm.revision
    close(d, "a", wait_out=True)
    assert d.since(mark) == [
        ("session_closing", "", 0, ""),
        ("master_revoked", "a", 0, "session_closed"),
    ]
    assert d.holders() == {0: "a"} and d.holding().revoked
    assert d.sm.groups.sessions[d.s["a"].id].closing
    t = d.now
    assert d.advance(at=t + 999) == []  # a's TTL is 1000 ms: nobody else yet
    assert d.advance(at=t + 1000) == [
        ("master_lost", "a", 0, "session_closed"),
        ("master_elected", "b", 0, "session_closed"),
        ("member_left", "a", 0, "session_closed"),
        ("session_closed", "", 0, "session_closed"),
    ]
    assert d.s["a"].id not in d.sm.groups.sessions


def test_a_closing_sessions_other_members_are_never_granted() -> None:
    """a's session also has a standby member in a second group: while closing, that
    member is not eligible, even when its group's slot falls vacant."""
    d = master_standby()
    d.group("h")
    d.join("a2", d.s["a"], priority=9, group="h")
    d.join("z", d.session(), priority=1, group="h")
    assert d.holders("h") == {0: "a2"}
    close(d, "a", wait_out=True)
    assert d.holding(group="h").revoked
    d.advance(1000)
    assert d.holders("h") == {0: "z"}
    assert "a2" not in d.sm.groups.groups["h"].members  # left with the session


def test_a_closing_session_refuses_new_members_and_campaigns() -> None:
    d = master_standby()
    close(d, "a", wait_out=True)
    m = gp.Member(group="g", id="a9", session_id=d.s["a"].id, candidate=True)
    res = d.apply(register=gp.Register(member=m))
    assert res.error_reason == "failed_precondition" and "closing" in res.error_message


def test_closing_a_session_without_slots_is_immediate_even_when_waiting_out() -> None:
    d = master_standby()
    mark = d.sm.revision
    close(d, "c", wait_out=True)
    assert ("session_closed", "", 0, "session_closed") in d.since(mark)
    assert d.holders() == {0: "a"}


def test_the_sessions_own_close_or_a_forced_one_releases_at_once() -> None:
    d = master_standby()
    close(d, "a", wait_out=False)
    assert d.holders() == {0: "b"}


def test_an_expiry_while_closing_ends_it_at_once() -> None:
    d = master_standby()
    close(d, "a", wait_out=True)
    d.expire(d.s["a"])
    assert d.holders() == {0: "b"}
    assert d.s["a"].id not in d.sm.groups.sessions


def test_deleting_a_group_with_a_master_waits_out_its_ttl() -> None:
    d = master_standby()
    mark = d.sm.revision
    d.ok(delete_group=gp.DeleteGroup(name="g", wait_out=True))
    assert d.since(mark) == [
        ("group_deleting", "", 0, ""),
        ("master_revoked", "a", 0, "group_deleted"),
    ]
    assert d.sm.groups.groups["g"].deleting
    t = d.now
    again = d.apply(create_group=gp.CreateGroup(name="g", policy=gp.GroupPolicy(slots=1)))
    assert again.error_reason == "already_exists" and "being deleted" in again.error_message
    for op in (
        {"switchover": gp.Switchover(group="g")},
        {"campaign": gp.Campaign(group="g", member_id="b")},
    ):
        res = d.apply(**op)
        assert res.error_reason == "failed_precondition", op
    assert d.advance(at=t + 999) == []
    events = d.advance(at=t + 1000)
    assert events[0] == ("master_lost", "a", 0, "group_deleted")
    assert events[-1] == ("group_deleted", "", 0, "")
    assert not any(e[0] == "master_elected" for e in events)
    assert "g" not in d.sm.groups.groups
    d.group("g")  # the name is free again


def test_deleting_a_group_without_masters_or_by_force_is_immediate() -> None:
    d = master_standby()
    d.ok(delete_group=gp.DeleteGroup(name="g", wait_out=False))
    assert "g" not in d.sm.groups.groups
    d.group("h")
    d.ok(delete_group=gp.DeleteGroup(name="h", wait_out=True))
    assert "h" not in d.sm.groups.groups


def test_a_deleting_groups_state_survives_snapshot_and_replay_of_its_events() -> None:
    from coord.state.machine import StateMachine

    d = master_standby()
    close(d, "b", wait_out=True)  # nothing held: closes at once
    d.ok(delete_group=gp.DeleteGroup(name="g", wait_out=True))
    other = StateMachine()
    other.restore(d.sm.snapshot())
    assert other.groups.groups["g"].deleting
    assert other.groups.pending_waits() == d.sm.groups.pending_waits()


def test_a_resign_naming_an_older_token_gives_up_nothing() -> None:
    """A process's stale Leadership (an earlier grant) must not give up the member's
    newer grant, which the same process may act on."""
    d = master_standby()
    token = d.holding().token
    m = d.sm.groups.groups["g"].members["a"]
    stale = gp.Resign(group="g", member_id="a", session_id=m.session_id, token=token - 1)
    res = d.apply(resign=stale)
    assert res.error_reason == "failed_precondition" and "given up already" in res.error_message
    assert d.holders() == {0: "a"}
    d.ok(resign=gp.Resign(group="g", member_id="a", session_id=m.session_id, token=token))
    assert d.holders() == {0: "b"}


def test_a_delete_during_a_switchover_records_its_own_cause() -> None:
    d = master_standby(timeout=5000)
    d.switchover("b")
    d.ok(delete_group=gp.DeleteGroup(name="g", wait_out=True))
    mark = d.sm.revision
    d.advance(1000)  # a's TTL
    assert ("master_lost", "a", 0, "group_deleted") in d.since(mark)
