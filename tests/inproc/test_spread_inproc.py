"""The spread rule through the API over the fake Raft node (tests/inproc/fakes.py): set at
create and by a live edit (a ``group_edited`` event), bad input refused with the gRPC
status and a message that says what to do (nothing changes), explain's spread with the
rebalance plan, and the state surfaces a violation shows on: the gauge
``coord_group_spread_violations`` and the status page's data."""

from __future__ import annotations

from typing import Any

import grpc

from coord.server.http.metrics import _state_metrics, _StateFigures
from coord.server.http.server import _state_snapshot
from coord.v1 import election_pb2, groups_pb2, raft_pb2
from tests.inproc.fakes import FakeRaft, FakeServicerContext, handler, node_context
from tests.inproc.test_api_inproc import GROUPS, _groups, aborted, run

RULE = {"spread_tag": "zone", "spread_max": 1, "spread_family": "shards"}


def member(raft: FakeRaft, group: str, name: str, zone: str, priority: int = 0) -> None:
    s = raft.propose(raft_pb2.Command(open_session=groups_pb2.OpenSession(ttl_ms=60_000)))
    m = groups_pb2.Member(group=group, id=name, session_id=s.result().session.id,
                          priority=priority, candidate=True, tags={"zone": zone})  # fmt: skip
    res = raft.propose(raft_pb2.Command(register=groups_pb2.Register(member=m))).result()
    assert not res.error_reason, res.error_message


def test_the_rule_is_set_edited_explained_and_bad_input_refused_with_what_to_do() -> None:
    async def main() -> None:
        raft, ctx = node_context()
        svc = _groups(ctx, raft)
        create = handler(svc, GROUPS, "Create", ctx)
        edit = handler(svc, GROUPS, "Edit", ctx)
        explain = handler(svc, GROUPS, "Explain", ctx)
        for name in ("s0", "s1"):
            req = election_pb2.CreateGroupRequest(
                name=name, request_id=f"c-{name}", policy=groups_pb2.GroupPolicy(slots=1, **RULE)
            )
            got = await create(req, FakeServicerContext())
            assert got.group.policy.spread_family == "shards"
        member(raft, "s0", "s0-a", "a")
        member(raft, "s1", "s1-a", "a", priority=9)  # the only candidate: violated
        member(raft, "s1", "s1-b", "b")  # returns: rebalance would move s1 to b
        x = await explain(election_pb2.ExplainRequest(group="s0"), FakeServicerContext())
        spread = x.explanation.spread
        assert spread.violated and spread.excess == 1 and list(spread.groups) == ["s0", "s1"]
        [move] = spread.plan
        assert (move.group, move.from_member, move.to_member) == ("s1", "s1-a", "s1-b")

        def policy(**fields: Any) -> groups_pb2.GroupPolicy:
            return groups_pb2.GroupPolicy(**fields)

        def edit_req(rid: str, fields: list[str], **p: Any) -> election_pb2.EditGroupRequest:
            return election_pb2.EditGroupRequest(
                name="s1", fields=fields, request_id=rid, policy=policy(**p)
            )

        cases: list[tuple[Any, Any, grpc.StatusCode, str]] = [
            (edit, edit_req("e1", ["spread_max"], spread_max=0),
             grpc.StatusCode.INVALID_ARGUMENT, "spread_max must be 1..10000"),
            (edit, edit_req("e2", ["spread_tag"], spread_tag="host"),
             grpc.StatusCode.FAILED_PRECONDITION,
             "no member of group 's1' has tag 'host' (their tags: zone): check the name"),
            (edit, edit_req("e3", ["spread_tg"], spread_tag="zone"),
             grpc.StatusCode.INVALID_ARGUMENT, "unknown policy field 'spread_tg': did you mean "
             "'spread_tag'?"),
            (edit, edit_req("e4", ["spread_tag", "spread_max"]),
             grpc.StatusCode.INVALID_ARGUMENT, "spread_family needs spread_tag"),
            (create, election_pb2.CreateGroupRequest(
                name="s2", request_id="c2", policy=policy(slots=1, spread_tag="zone")),
             grpc.StatusCode.INVALID_ARGUMENT, "give spread_max (coordctl --spread-max K)"),
            (create, election_pb2.CreateGroupRequest(
                name="s2", request_id="c3", policy=policy(slots=1, spread_max=1)),
             grpc.StatusCode.INVALID_ARGUMENT, "spread_max needs spread_tag"),
        ]  # fmt: skip
        for call, bad, code, words in cases:
            rev = raft.read(lambda s: s.revision)
            err = await aborted(call(bad, FakeServicerContext()))
            assert err.code == code and words in err.details, err.details
            assert raft.read(lambda s: s.revision) == rev  # nothing changed
        ok = await edit(edit_req("e5", ["spread_max"], spread_max=2), FakeServicerContext())
        assert ok.group.policy.spread_max == 2
        last = raft.read(lambda s: s.events.last(1)[0])
        assert (last.type, last.group, last.cause) == ("group_edited", "s1", "spread_max")

    run(main())


def test_a_violation_shows_in_the_gauge_and_the_status_pages_data() -> None:
    raft = FakeRaft()
    for name in ("s0", "s1", "solo"):
        rule = RULE if name != "solo" else {}
        raft.propose(raft_pb2.Command(create_group=groups_pb2.CreateGroup(
            name=name, policy=groups_pb2.GroupPolicy(slots=1, **rule))))  # fmt: skip
    member(raft, "s0", "s0-a", "a")
    member(raft, "s1", "s1-a", "a")

    def gauge() -> dict[str, float]:
        fams = raft.read(lambda s: _state_metrics(_StateFigures(s)))
        [fam] = [f for f in fams if f.name == "coord_group_spread_violations"]
        return {s.labels["group"]: s.value for s in fam.samples}

    assert gauge() == {"s0": 1.0, "s1": 1.0, "solo": 0.0}  # each reports its family's
    page = {g["name"]: g for g in raft.read(lambda s: _state_snapshot(s, raft.time_ms))["groups"]}
    assert page["solo"]["spread"] is None
    assert page["s1"]["spread"]["excess"] == 1
    assert page["s1"]["spread"]["masters"] == [{"value": "a", "masters": 2}]
    assert page["s1"]["spread"]["rule"] == "at most 1 master per zone over family shards"
    member(raft, "s1", "s1-b", "b")  # a standby: nothing moves by itself
    assert gauge()["s1"] == 1.0
    raft.propose(raft_pb2.Command(switchover=groups_pb2.Switchover(group="s1", to_member="s1-b")))
    s1a = raft.read(lambda s: s.groups.groups["s1"].members["s1-a"])
    raft.propose(raft_pb2.Command(resign=groups_pb2.Resign(
        group="s1", member_id="s1-a", session_id=s1a.session_id)))  # fmt: skip
    assert gauge() == {"s0": 0.0, "s1": 0.0, "solo": 0.0}
