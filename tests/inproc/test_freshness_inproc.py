"""Freshness-aware succession through the API over the fake Raft node
(tests/inproc/fakes.py): positions reported by a member's own session, the policy's
max_lag_on_failover and synchronous set on create and live edit, and the statuses and
messages of bad input (nothing changes).
"""

from __future__ import annotations

from typing import Any

import grpc

from coord.v1 import election_pb2, groups_pb2
from tests.inproc.fakes import FakeServicerContext, handler, node_context
from tests.inproc.test_api_inproc import GROUPS, _groups, aborted, run
from tests.inproc.test_steering_inproc import group_with_two


def test_positions_and_freshness_policies_refuse_bad_input_with_what_to_do() -> None:
    async def main() -> None:
        raft, ctx = node_context()
        group_with_two(raft)
        svc = _groups(ctx, raft)
        update = handler(svc, GROUPS, "UpdateMember", ctx)
        edit = handler(svc, GROUPS, "Edit", ctx)
        create = handler(svc, GROUPS, "Create", ctx)
        m2 = raft.read(lambda s: s.groups.groups["g"].members["m2"])

        def report(position: int, request_id: str) -> election_pb2.UpdateMemberRequest:
            u = groups_pb2.UpdateMember(group="g", member_id="m2", session_id=m2.session_id)
            u.position = position
            return election_pb2.UpdateMemberRequest(update=u, request_id=request_id)

        ok = await update(report(500, "p1"), FakeServicerContext())
        assert ok.member.position == 500
        ok = await edit(election_pb2.EditGroupRequest(
            name="g", fields=["max_lag_on_failover", "synchronous"], request_id="e0",
            policy=groups_pb2.GroupPolicy(max_lag_on_failover=100, synchronous=["m2", "m3"])),
            FakeServicerContext())  # fmt: skip
        assert ok.group.policy.max_lag_on_failover == 100
        assert list(ok.group.policy.synchronous) == ["m2", "m3"]  # m3 may register later

        def policy(**fields: Any) -> groups_pb2.GroupPolicy:
            return groups_pb2.GroupPolicy(**fields)

        cases: list[tuple[Any, Any, grpc.StatusCode, str]] = [
            (update, report(499, "p2"), grpc.StatusCode.FAILED_PRECONDITION,
             "positions only increase"),
            (update, report(-5, "p3"), grpc.StatusCode.INVALID_ARGUMENT, "position must be >= 0"),
            (edit, election_pb2.EditGroupRequest(
                name="g", fields=["max_lag_on_failover"], request_id="e1",
                policy=policy(max_lag_on_failover=-1)),
             grpc.StatusCode.INVALID_ARGUMENT, "max_lag_on_failover must be >= 0 (0: off)"),
            (edit, election_pb2.EditGroupRequest(
                name="g", fields=["synchronous"], request_id="e2",
                policy=policy(synchronous=["m1", "m1"])),
             grpc.StatusCode.INVALID_ARGUMENT, "names 'm1' twice"),
            (edit, election_pb2.EditGroupRequest(
                name="g", fields=["synchronous"], request_id="e3",
                policy=policy(synchronous=["bad name"])),
             grpc.StatusCode.INVALID_ARGUMENT, "or an empty set to let any member succeed"),
            (create, election_pb2.CreateGroupRequest(
                name="h", request_id="c1", policy=policy(slots=1, max_lag_on_failover=-3)),
             grpc.StatusCode.INVALID_ARGUMENT, "max_lag_on_failover must be >= 0"),
            (create, election_pb2.CreateGroupRequest(
                name="h", request_id="c2", policy=policy(slots=1, synchronous=[""])),
             grpc.StatusCode.INVALID_ARGUMENT, "which is not a member id"),
        ]  # fmt: skip
        for call, bad, code, words in cases:
            rev = raft.read(lambda s: s.revision)
            err = await aborted(call(bad, FakeServicerContext()))
            assert err.code == code and words in err.details, err.details
            assert raft.read(lambda s: s.revision) == rev  # nothing changed
        g = raft.read(lambda s: s.groups.groups["g"].to_proto())
        assert g.members[1].position == 500 and g.policy.max_lag_on_failover == 100
        # A retry of a report answers the same (request ids), even after a later one.
        await update(report(600, "p4"), FakeServicerContext())
        again = await update(report(500, "p1"), FakeServicerContext())
        assert again.member.position == 500

    run(main())
