"""Spreading masters across hosts and zones (coord/state/spread.py, rebalance.py;
docs/design.md "Spreading masters across hosts and zones"): the fill's preference, the
violation it records when the members leave no choice, failback and switchover under
the rule, the rebalance plan run through switchovers, and bad policies refused with
what to do (nothing changes). Pure state machine, on the Driver of test_groups.py."""

from __future__ import annotations

from typing import Any

from coord.state import spread
from coord.state.explain import explain
from coord.state.machine import StateMachine
from coord.state.replay import apply_event
from coord.v1 import groups_pb2 as gp
from tests.unit.test_groups import Driver

ZONE = {"spread_tag": "zone", "spread_max": 1}


def make(*groups: str, slots: int = 1, **policy: Any) -> Driver:
    d = Driver()
    for name in groups:
        p = gp.GroupPolicy(slots=slots, switchover_timeout_ms=1000, **policy)
        d.ok(create_group=gp.CreateGroup(name=name, policy=p))
    return d


def join(
    d: Driver, group: str, member: str, zone: str | None, priority: int = 0, host: str = ""
) -> gp.Member:
    """``member`` of ``group`` on a session of its own (named ``group/member``), tagged
    with ``zone`` (None: no tag)."""
    key = f"{group}/{member}"
    d.s[key] = d.session(1000)
    tags = {"zone": zone} if zone is not None else {}
    if host:
        tags["host"] = host
    m = gp.Member(group=group, id=member, session_id=d.s[key].id, priority=priority,
                  candidate=True, tags=tags)  # fmt: skip
    return d.ok(register=gp.Register(member=m)).member


def masters(d: Driver) -> dict[str, list[str]]:
    return {
        n: [g.holdings[s].member_id for s in sorted(g.holdings) if not g.holdings[s].revoked]
        for n, g in sorted(d.sm.groups.groups.items())
    }


def kill(d: Driver, key: str) -> None:
    d.expire(d.s.pop(key))


def elected(d: Driver, since: int) -> list[tuple[str, str, str]]:
    return [(e.group, e.member, e.spread_violated) for e in d.events(since)
            if e.type == "master_elected"]  # fmt: skip


def test_the_fill_prefers_a_member_whose_zone_has_room_over_priority() -> None:
    d = make("s0", "s1", spread_family="shards", **ZONE)
    for shard in ("s0", "s1"):
        d.ok(pause_groups=gp.PauseGroups(groups=[shard]))
        join(d, shard, f"{shard}-a", "a", priority=9)
        join(d, shard, f"{shard}-b", "b", priority=5)
    d.ok(resume_groups=gp.ResumeGroups(groups=["s0", "s1"]))  # both fill in one command
    assert masters(d) == {"s0": ["s0-a"], "s1": ["s1-b"]}  # s1-a outranks, but a is full
    x = explain(d.sm.groups, "s1")
    assert not x.spread.violated and x.spread.excess == 0 and list(x.spread.plan) == []
    assert list(x.spread.groups) == ["s0", "s1"]
    assert [(v.value, v.masters) for v in x.spread.values] == [("a", 1), ("b", 1)]
    v = {m.member_id: m for m in x.members}
    assert v["s1-a"].spread_value == "a" and "zone=a is full (1 of at most 1" in v["s1-a"].detail
    assert any(n.startswith("spread holds: at most 1 master per zone over family shards")
               for n in x.notes)  # fmt: skip
    # If s1-b's slot were vacated now, s1-a would be the only one left: granted anyway.
    assert x.slots[0].next == "s1-a" and "granted anyway, the spread is violated" in (
        x.slots[0].why
    )


def test_without_room_the_slot_is_filled_anyway_and_the_grant_says_so() -> None:
    d = make("s0", "s1", spread_family="shards", **ZONE)
    join(d, "s0", "s0-a", "a")
    mark = d.sm.revision
    join(d, "s1", "s1-a", "a")  # the only candidate: availability first
    assert masters(d) == {"s0": ["s0-a"], "s1": ["s1-a"]}
    assert elected(d, mark) == [("s1", "s1-a", "zone=a has 2 masters, at most 1")]
    x = explain(d.sm.groups, "s0")
    assert x.spread.violated and x.spread.excess == 1
    assert list(x.spread.plan) == []  # nobody to move to
    assert x.spread.stuck and "zone=a keeps 2 masters, at most 1" in x.spread.stuck[0]
    assert spread.violations(d.sm.groups.groups, d.sm.groups.groups["s1"]) == 1
    # Without a family each group counts alone: no violation.
    d.ok(edit_group=gp.EditGroup(group="s1", policy=gp.GroupPolicy(), fields=["spread_family"]))
    assert not explain(d.sm.groups, "s1").spread.violated
    assert explain(d.sm.groups, "s0").spread.groups == ["s0"]


def test_members_without_the_tag_count_together_under_one_unknown_value() -> None:
    d = make("g", slots=2, **ZONE)
    d.ok(pause_groups=gp.PauseGroups(groups=["g"]))
    join(d, "g", "x1", None, priority=9)
    join(d, "g", "x2", None, priority=8)
    join(d, "g", "b1", "b", priority=1)
    d.ok(resume_groups=gp.ResumeGroups(groups=["g"]))
    assert masters(d) == {"g": ["x1", "b1"]}  # x2 shares x1's unknown zone
    values = {v.value: v.masters for v in explain(d.sm.groups, "g").spread.values}
    assert values == {"": 1, "b": 1}


def test_a_multi_master_group_spreads_its_own_slots_and_refills_on_a_zone_with_room() -> None:
    d = make("g", slots=2, **ZONE)
    d.ok(pause_groups=gp.PauseGroups(groups=["g"]))
    for name, zone, prio in (("a1", "a", 9), ("a2", "a", 8), ("b1", "b", 1), ("c1", "c", 0)):
        join(d, "g", name, zone, priority=prio)
    d.ok(resume_groups=gp.ResumeGroups(groups=["g"]))
    assert masters(d) == {"g": ["a1", "b1"]}
    kill(d, "g/b1")  # zone b lost: c1 (zone c) before a2 (a is full)
    assert masters(d) == {"g": ["a1", "c1"]}
    kill(d, "g/c1")  # only a2 is left: granted, violated
    assert masters(d) == {"g": ["a1", "a2"]}
    assert explain(d.sm.groups, "g").spread.excess == 1


def test_failback_never_moves_a_master_onto_a_full_zone() -> None:
    policy = {**ZONE, "failback": gp.FAILBACK_AUTO, "failback_hold_ms": 100}
    d = make("s0", "s1", spread_family="shards", **policy)
    join(d, "s0", "s0-a", "a", priority=1)
    join(d, "s1", "s1-b", "b", priority=1)
    join(d, "s1", "s1-a", "a", priority=9)  # outranks s1-b, but a is taken by s0
    assert d.sm.groups.pending_waits() == []  # no failback planned
    x = explain(d.sm.groups, "s1")
    assert not any(n.startswith("failback:") for n in x.notes)
    kill(d, "s0/s0-a")  # zone a frees up: now the failback is planned
    assert [w.key[0] for w in d.sm.groups.pending_waits()] == ["failback"]


def test_a_successor_chosen_by_coord_keeps_the_spread() -> None:
    d = make("s0", "s1", spread_family="shards", **ZONE)
    join(d, "s0", "s0-a", "a")
    join(d, "s1", "s1-b", "b", priority=1)
    join(d, "s1", "s1-a", "a", priority=9)
    join(d, "s1", "s1-c", "c", priority=5)
    assert d.ok(switchover=gp.Switchover(group="s1"))  # no target: the best with room
    assert d.sm.groups.groups["s1"].handovers[0].to_member == "s1-c"
    d.resign("s1-b", group="s1")
    assert masters(d)["s1"] == ["s1-c"]
    d.ok(campaign=gp.Campaign(group="s1", member_id="s1-b"))  # a standby again
    res = d.resign("s1-c", group="s1", by="")  # an operator's resign: the same rule
    assert not res.error_reason
    assert d.sm.groups.groups["s1"].handovers[0].to_member == "s1-b"  # not s1-a (9)


def test_a_switchover_asks_the_master_on_the_full_zone_to_step_down() -> None:
    d = make("g", slots=3, spread_tag="zone", spread_max=1)
    d.ok(pause_groups=gp.PauseGroups(groups=["g"]))
    for name, zone, prio in (("a1", "a", 9), ("b1", "b", 8), ("c1", "c", 7)):
        join(d, "g", name, zone, priority=prio)
    d.ok(resume_groups=gp.ResumeGroups(groups=["g"]))
    kill(d, "g/c1")
    join(d, "g", "a2", "a")  # the only one left: slot 2 to a2 (a has two now)
    assert masters(d) == {"g": ["a1", "b1", "a2"]}
    join(d, "g", "c2", "c")  # zone c returns
    [move] = explain(d.sm.groups, "g").spread.plan
    assert (move.slot, move.from_member, move.to_member) == (2, "a2", "c2")  # newest grant
    d.ok(switchover=gp.Switchover(group="g", to_member="c2"))
    assert d.sm.groups.groups["g"].handovers[2].from_member == "a2"  # not slot 0's a1
    d.resign("a2")
    assert masters(d) == {"g": ["a1", "b1", "c2"]}
    assert not explain(d.sm.groups, "g").spread.violated


def run_plan(d: Driver, group: str) -> int:
    """Run the rebalance plan the way coordctl rebalance does: one switchover at a time
    (the master resigns at once, as the client library does), planning again after
    each; every move must go exactly as planned. Returns the moves run."""
    first = list(explain(d.sm.groups, group).spread.plan)
    done = 0
    while True:
        now = list(explain(d.sm.groups, group).spread.plan)
        assert now == first[done:]  # planning again gives the rest of the same plan
        if not now:
            return done
        move = now[0]
        d.ok(switchover=gp.Switchover(group=move.group, to_member=move.to_member))
        ho = d.sm.groups.groups[move.group].handovers[move.slot]
        assert (ho.from_member, ho.to_member) == (move.from_member, move.to_member)
        d.resign(move.from_member, group=move.group)
        assert d.sm.groups.groups[move.group].holdings[move.slot].member_id == move.to_member
        done += 1


def test_rebalance_restores_the_spread_after_a_host_returns() -> None:
    d = make("s0", "s1", "s2", spread_family="shards", spread_tag="host", spread_max=1)
    for host, prio in (("h1", 3), ("h2", 2), ("h3", 1)):
        for shard in ("s0", "s1", "s2"):
            join(d, shard, f"{shard}-{host}", None, priority=prio, host=host)
    for shard in ("s0", "s1", "s2"):  # the first registered got each shard: all on h1
        assert masters(d)[shard] == [f"{shard}-h1"]
    x = explain(d.sm.groups, "s0")
    assert x.spread.excess == 2 and len(x.spread.plan) == 2 and not x.spread.stuck
    assert run_plan(d, "s2") == 2  # any group of the family plans for the family
    hosts = sorted(m.split("-")[1] for ms in masters(d).values() for m in ms)
    assert hosts == ["h1", "h2", "h3"]
    # Host h2 dies: its shard fails over onto h3 or h1 (both full): violated.
    for shard in ("s0", "s1", "s2"):
        kill(d, f"{shard}/{shard}-h2")
    assert explain(d.sm.groups, "s0").spread.excess == 1
    assert list(explain(d.sm.groups, "s0").spread.plan) == []  # nothing can improve it
    for shard in ("s0", "s1", "s2"):  # h2 returns: a standby of each shard
        join(d, shard, f"{shard}-h2", None, priority=2, host="h2")
    assert explain(d.sm.groups, "s0").spread.excess == 1  # no master moves by itself
    assert run_plan(d, "s0") == 1
    assert explain(d.sm.groups, "s0").spread.excess == 0


def test_the_rule_is_edited_live_recorded_and_replayed() -> None:
    d = make("g", slots=2)
    join(d, "g", "a1", "a", priority=9)
    join(d, "g", "a2", "a", priority=8)
    join(d, "g", "b1", "b", priority=1)
    assert masters(d) == {"g": ["a1", "a2"]}
    before = StateMachine()
    before.restore(d.sm.snapshot())
    mark = d.sm.revision
    policy = gp.GroupPolicy(spread_tag="zone", spread_max=1, spread_family="f")
    fields = ["spread_tag", "spread_max", "spread_family"]
    d.ok(edit_group=gp.EditGroup(group="g", policy=policy, fields=fields))
    [e] = [e for e in d.events(mark) if e.type == "group_edited"]
    assert e.cause == "spread_tag,spread_max,spread_family" and e.policy.spread_max == 1
    assert masters(d) == {"g": ["a1", "a2"]}  # nothing moves by itself: rebalance does
    assert explain(d.sm.groups, "g").spread.excess == 1
    assert run_plan(d, "g") == 1
    assert masters(d) == {"g": ["a1", "b1"]}
    for ev in d.events(mark):
        apply_event(before, ev)
    assert before.groups.groups["g"].to_proto() == d.sm.groups.groups["g"].to_proto()
    off = gp.EditGroup(group="g", policy=gp.GroupPolicy(), fields=fields)
    d.ok(edit_group=off)
    assert not explain(d.sm.groups, "g").HasField("spread")


def test_bad_rules_are_refused_with_what_to_do_and_nothing_changes() -> None:
    d = make("g")
    join(d, "g", "m1", None, priority=1)
    d.ok(update_member=gp.UpdateMember(group="g", member_id="m1",
                                       session_id=d.s["g/m1"].id, tags={"host": "h1"}))  # fmt: skip

    def edit(fields: list[str], **policy: Any) -> tuple[str, str]:
        rev = d.sm.revision
        edit = gp.EditGroup(group="g", policy=gp.GroupPolicy(**policy), fields=fields)
        res = d.apply(edit_group=edit)
        assert d.sm.revision == rev, "a refused edit changed something"
        return res.error_reason, res.error_message

    cases: list[tuple[list[str], dict[str, Any], str, str]] = [
        (["spread_tag", "spread_max"], {"spread_tag": "host", "spread_max": 0},
         "invalid_argument", "spread_max must be 1..10000"),
        (["spread_tag"], {"spread_tag": "host"}, "invalid_argument", "--no-spread"),
        (["spread_max"], {"spread_max": 2}, "invalid_argument",
         "spread_max needs spread_tag: give the member tag"),
        (["spread_family"], {"spread_family": "f"}, "invalid_argument", "needs spread_tag"),
        (["spread_tag", "spread_max", "spread_family"],
         {"spread_tag": "host", "spread_max": 1, "spread_family": "bad family"},
         "invalid_argument", "spread_family 'bad family' is invalid"),
        (["spread_tag", "spread_max"], {"spread_tag": "zone", "spread_max": 1},
         "failed_precondition", "no member of group 'g' has tag 'zone' (their tags: host)"),
        (["spread_tags"], {}, "invalid_argument", "did you mean 'spread_tag'?"),
    ]  # fmt: skip
    for fields, policy, reason, words in cases:
        got, message = edit(fields, **policy)
        assert got == reason and words in message, (fields, message)
    # Create checks the same (a new group has no members: any tag is taken).
    res = d.apply(create_group=gp.CreateGroup(name="h", policy=gp.GroupPolicy(
        slots=1, spread_tag="zone", spread_max=-1)))  # fmt: skip
    assert res.error_reason == "invalid_argument" and "spread_max must be" in res.error_message
    assert "h" not in d.sm.groups.groups
    ok = d.ok(create_group=gp.CreateGroup(name="h", policy=gp.GroupPolicy(
        slots=1, spread_tag="zone", spread_max=2)))  # fmt: skip
    assert ok.group.policy.spread_tag == "zone"
    fine = gp.GroupPolicy(spread_tag="host", spread_max=1)
    done = d.ok(
        edit_group=gp.EditGroup(group="g", policy=fine, fields=["spread_tag", "spread_max"])
    )
    assert done.group.policy.spread_tag == "host"


def test_the_client_refuses_an_unknown_policy_field_before_any_call() -> None:
    from coord import errors
    from coord.client import Client

    c = Client("127.0.0.1:1", timeout_s=0.5)  # nothing listens: no call is made
    try:
        c.group("g").create(spred_tag="zone")
    except errors.InvalidArgument as e:
        assert "unknown policy field 'spred_tag': did you mean 'spread_tag'?" in e.message
    else:
        raise AssertionError("an unknown field was accepted")
    finally:
        c.close()
