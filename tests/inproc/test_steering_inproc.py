"""Scheduled switchovers and the failover breaker through the API and the leader's duty,
over the fake Raft node (tests/inproc/fakes.py): statuses and messages of bad input, the
request ids, and the duty that fires a due switchover on the wall clock once, whoever
leads (coord/server/duties/schedules.py).
"""

from __future__ import annotations

from typing import Any

import grpc

from coord.raft.node import ROLE_LEADER
from coord.server.duties.schedules import RETRY_S, ScheduledSwitchoverDuty
from coord.state.scheduled import fire_request_id
from coord.v1 import election_pb2, groups_pb2, raft_pb2
from tests.inproc.fakes import FakeRaft, FakeServicerContext, handler, node_context
from tests.inproc.test_api_inproc import GROUPS, _groups, aborted, run

HOUR = 3_600_000


def group_with_two(raft: FakeRaft) -> None:
    """Group g: m1 (priority 2) holds it, m2 (1) stands by."""
    raft.propose(raft_pb2.Command(create_group=groups_pb2.CreateGroup(
        name="g", policy=groups_pb2.GroupPolicy(slots=1))))  # fmt: skip
    for name, prio in (("m1", 2), ("m2", 1)):
        s = raft.propose(
            raft_pb2.Command(open_session=groups_pb2.OpenSession(ttl_ms=60_000))
        ).result()
        member = groups_pb2.Member(
            group="g", id=name, session_id=s.session.id, priority=prio, candidate=True
        )
        raft.propose(raft_pb2.Command(register=groups_pb2.Register(member=member)))


def scheduled(raft: FakeRaft) -> list[groups_pb2.ScheduledSwitchover]:
    return raft.read(lambda s: list(s.groups.groups["g"].to_proto().scheduled))


def test_scheduling_answers_the_entry_once_and_refuses_bad_input_with_what_to_do() -> None:
    async def main() -> None:
        raft, ctx = node_context()
        group_with_two(raft)
        svc = _groups(ctx, raft)
        switchover = handler(svc, GROUPS, "Switchover", ctx)
        cancel = handler(svc, GROUPS, "CancelSwitchover", ctx)
        edit = handler(svc, GROUPS, "Edit", ctx)
        at = raft.time_ms + HOUR
        req = election_pb2.SwitchoverRequest(group="g", to_member="m2", at_ms=at, request_id="s1")
        first = await switchover(req, FakeServicerContext())
        again = await switchover(req, FakeServicerContext())  # a retry: the same entry
        assert first.scheduled == again.scheduled and first.scheduled.at_ms == at
        assert scheduled(raft) == [first.scheduled]
        cases: list[tuple[Any, Any, grpc.StatusCode, str]] = [
            (switchover, election_pb2.SwitchoverRequest(
                group="g", to_member="m2", at_ms=raft.time_ms - 1, request_id="s2"),
             grpc.StatusCode.INVALID_ARGUMENT, "give a later time"),
            (switchover, election_pb2.SwitchoverRequest(
                group="g", to_member="m9", at_ms=at, request_id="s3"),
             grpc.StatusCode.NOT_FOUND, "'m9' is not registered"),
            (switchover, election_pb2.SwitchoverRequest(
                group="nope", at_ms=at, request_id="s4"),
             grpc.StatusCode.NOT_FOUND, "group 'nope' does not exist"),
            (switchover, election_pb2.SwitchoverRequest(
                group="g", at_ms=at, request_id=fire_request_id(first.scheduled.id)),
             grpc.StatusCode.INVALID_ARGUMENT, "are the cluster's own"),
            (cancel, election_pb2.CancelSwitchoverRequest(group="g", id=12345, request_id="c1"),
             grpc.StatusCode.NOT_FOUND, "coordctl schedule ls"),
            (edit, election_pb2.EditGroupRequest(
                name="g", fields=["breaker_failovers", "breaker_window_ms"], request_id="e1",
                policy=groups_pb2.GroupPolicy(breaker_window_ms=60_000)),
             grpc.StatusCode.INVALID_ARGUMENT, "or set breaker_failovers and"),
        ]  # fmt: skip
        for call, bad, code, words in cases:
            rev = raft.read(lambda s: s.revision)
            err = await aborted(call(bad, FakeServicerContext()))
            assert err.code == code and words in err.details, err.details
            assert raft.read(lambda s: s.revision) == rev  # nothing changed
        assert scheduled(raft) == [first.scheduled]
        done = await cancel(
            election_pb2.CancelSwitchoverRequest(group="g", id=first.scheduled.id,
                                                 request_id="c2"), FakeServicerContext(),
        )  # fmt: skip
        assert done.cancelled == first.scheduled and scheduled(raft) == []

    run(main())


def test_the_leader_fires_a_due_switchover_once_on_its_wall_clock() -> None:
    raft = FakeRaft()
    group_with_two(raft)
    at = raft.time_ms + HOUR
    entry = raft.propose(raft_pb2.Command(schedule_switchover=groups_pb2.ScheduleSwitchover(
        group="g", to_member="m2", at_ms=at))).result().scheduled  # fmt: skip
    duty = ScheduledSwitchoverDuty(raft)  # type: ignore[arg-type]
    sent = len(raft.proposed)
    duty.tick(at - 1, 0.0)
    assert len(raft.proposed) == sent  # not due yet
    raft.hold_proposals = True  # the firing does not commit: a leader about to be deposed
    duty.tick(at, 0.0)
    (fire,) = raft.proposed[sent:]
    assert fire.request_id == fire_request_id(entry.id)
    assert (fire.fire_switchover.group, fire.fire_switchover.id) == ("g", entry.id)
    duty.tick(at + 10, RETRY_S / 2)
    assert len(raft.proposed) == sent + 1  # a retry waits RETRY_S
    # A new leader (the same node here) reads the replicated schedule and fires it again.
    raft.step_down()
    raft.become(ROLE_LEADER, term=raft.view.term + 1)
    duty.restart()
    duty.tick(at + 20, 0.1)
    assert [c.request_id for c in raft.proposed[sent:]] == [fire_request_id(entry.id)] * 2
    raft.hold_proposals = False
    raft.release()  # both proposals commit: the second is deduplicated
    events = raft.read(lambda s: [e.type for e in s.events.items()])
    assert events.count("scheduled_switchover_fired") == 1
    assert events[-2:] == ["stepdown_requested", "scheduled_switchover_fired"]
    assert scheduled(raft) == []
    duty.tick(at + 30, 5.0)
    assert len(raft.proposed) == sent + 2  # nothing left to fire
