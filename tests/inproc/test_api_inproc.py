"""The API over a fake Raft node (tests/inproc/fakes.py): validation, error mapping,
leader hints, request ids and the keepalive's leadership rule, each in milliseconds.

What runs for real: the servicers, the handler wrapper (decoding, CoordError -> status
and trailing metadata), NodeContext (request-id check, proposal, timeout, barrier) and
the state machine. What is faked: replication (a proposal commits at once, or is held)
and the leader's session clock (a stand-in satisfying the SessionDeadlines port).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from coord.raft.node import ROLE_FOLLOWER
from coord.server.api.groups import GroupsService
from coord.server.api.kv import KVService
from coord.server.api.sessions import SessionsService
from coord.server.api.watch import WatchService
from coord.server.runtime.notify import StateNotifier
from coord.server.security import guard
from coord.server.security.auth import ANONYMOUS, MEMBER, Identity
from coord.v1 import election_pb2, groups_pb2, kv_pb2, raft_pb2
from tests.inproc.fakes import (
    CLUSTER_ID,
    Aborted,
    FakeRaft,
    FakeServicerContext,
    handler,
    node_context,
)

KV = kv_pb2.DESCRIPTOR.services_by_name["KV"]
SESSIONS = election_pb2.DESCRIPTOR.services_by_name["Sessions"]
GROUPS = election_pb2.DESCRIPTOR.services_by_name["Groups"]
WATCH = election_pb2.DESCRIPTOR.services_by_name["Watch"]


def run(coro: Awaitable[Any]) -> Any:
    """Run a test body on a fresh loop, as the anonymous caller (the guard, absent here,
    sets the caller per call; another test may have left one set in this thread)."""

    async def anonymous() -> Any:
        guard._CALLER.set(ANONYMOUS)
        return await asyncio.wait_for(coro, 5)

    return asyncio.run(anonymous())


async def aborted(call: Awaitable[Any]) -> Aborted:
    with pytest.raises(Aborted) as info:
        await call
    return info.value


# -- KV: headers, request ids, bad input -----------------------------------------------


def test_a_write_is_answered_with_the_node_and_revision_that_applied_it() -> None:
    async def main() -> None:
        raft, ctx = node_context()
        kv = KVService(ctx)
        put = handler(kv, KV, "Put", ctx)
        resp = await put(
            kv_pb2.PutRequest(key=b"a", value=b"1", request_id="r1"), FakeServicerContext()
        )
        assert (resp.header.cluster_id, resp.header.node_id) == (CLUSTER_ID, "n1")
        assert resp.header.revision == raft.state.revision
        got = await handler(kv, KV, "Range", ctx)(
            kv_pb2.RangeRequest(key=b"a"), FakeServicerContext()
        )
        assert [(x.key, x.value) for x in got.kvs] == [(b"a", b"1")]

    run(main())


def test_a_retried_write_applies_once_and_a_reused_id_with_other_content_is_refused() -> None:
    async def main() -> None:
        raft, ctx = node_context()
        put = handler(KVService(ctx), KV, "Put", ctx)
        first = await put(
            kv_pb2.PutRequest(key=b"a", value=b"1", request_id="r1"), FakeServicerContext()
        )
        again = await put(
            kv_pb2.PutRequest(key=b"a", value=b"1", request_id="r1"), FakeServicerContext()
        )
        assert again.header.revision == first.header.revision == raft.state.revision
        bad = await aborted(
            put(kv_pb2.PutRequest(key=b"a", value=b"2", request_id="r1"), FakeServicerContext())
        )
        assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
        assert raft.read(lambda s: s.kv.get(b"a").value) == b"1"  # nothing stored changed

    run(main())


def test_an_undecodable_body_is_an_invalid_argument_that_names_the_message() -> None:
    async def main() -> None:
        _, ctx = node_context()
        put = handler(KVService(ctx), KV, "Put", ctx)
        bad = await aborted(put(b"\xff\xff\xff", FakeServicerContext()))
        assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "coord.v1.PutRequest" in bad.details

    run(main())


def test_an_overlong_request_id_is_refused_before_it_reaches_the_log() -> None:
    async def main() -> None:
        raft, ctx = node_context()
        put = handler(KVService(ctx), KV, "Put", ctx)
        before = len(raft.proposed)
        bad = await aborted(
            put(
                kv_pb2.PutRequest(key=b"a", value=b"1", request_id="x" * 10_000),
                FakeServicerContext(),
            )
        )
        assert bad.code == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in bad.details
        assert len(raft.proposed) == before

    run(main())


# -- leader hints and lost quorum ------------------------------------------------------


def test_a_follower_refuses_a_write_and_names_the_leader_in_trailing_metadata() -> None:
    async def main() -> None:
        raft, ctx = node_context()
        raft.step_down(new_leader="n2")
        put = handler(KVService(ctx), KV, "Put", ctx)
        bad = await aborted(put(kv_pb2.PutRequest(key=b"a", value=b"1"), FakeServicerContext()))
        assert bad.code == grpc.StatusCode.FAILED_PRECONDITION
        assert bad.trailing["coord-error"] == "not_leader"
        assert bad.trailing["coord-leader-id"] == "n2"
        assert bad.trailing["coord-leader"] == raft.api_address("n2")

    run(main())


def test_a_write_that_does_not_commit_in_time_says_its_outcome_is_unknown() -> None:
    async def main() -> None:
        raft, ctx = node_context()
        raft.hold_proposals = True  # a leader cut off from its majority
        put = handler(KVService(ctx), KV, "Put", ctx)
        bad = await aborted(
            put(kv_pb2.PutRequest(key=b"a", value=b"1", request_id="r9"), FakeServicerContext(0.05))
        )
        assert bad.code == grpc.StatusCode.UNAVAILABLE
        assert bad.trailing["coord-error"] == "outcome_unknown"
        assert "same request id" in bad.details
        raft.release()  # it commits after all: the retry must get that first result
        raft.hold_proposals = False
        retry = await put(
            kv_pb2.PutRequest(key=b"a", value=b"1", request_id="r9"), FakeServicerContext()
        )
        assert retry.header.revision == raft.state.revision
        assert raft.read(lambda s: s.kv.get(b"a").mod_revision) == retry.header.revision

    run(main())


# -- sessions: only a leader that still leads says "expired" ---------------------------


class LeaderClock:
    """A stand-in for the leader's session clock (the SessionDeadlines port)."""

    def __init__(self, raft: FakeRaft) -> None:
        self.raft = raft
        self.touched: list[str] = []
        self.during_barrier: Callable[[], None] = lambda: None

    @property
    def leading_term(self) -> int | None:
        view = self.raft.view
        return view.term if view.leader_id == self.raft.node_id else None

    @property
    def leading(self) -> bool:
        return self.leading_term is not None

    def touch(self, session_id: str, arrival: float, load: float | None = None) -> bool:
        self.touched.append(session_id)
        return self.raft.read(lambda s: session_id in s.groups.sessions)

    async def ack_barrier(self, timeout: float) -> None:
        self.during_barrier()
        await asyncio.wrap_future(self.raft.barrier())


async def _requests(*reqs: Any) -> AsyncIterator[Any]:
    for r in reqs:
        yield r


async def _collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [x async for x in stream]


def _sessions(raft: FakeRaft | None = None) -> tuple[FakeRaft, Any, LeaderClock, Any]:
    raft, ctx = node_context(raft)
    clock = LeaderClock(raft)
    svc = SessionsService(ctx, StateNotifier(asyncio.get_running_loop()), clock)
    return raft, ctx, clock, svc


def test_a_keepalive_for_a_session_the_leader_does_not_have_says_expired() -> None:
    async def main() -> None:
        _, ctx, _, svc = _sessions()
        keepalive = handler(svc, SESSIONS, "KeepAlive", ctx)
        req = election_pb2.KeepAliveRequest(session_id="s-none", seq=1)
        (answer,) = await _collect(keepalive(_requests(req), FakeServicerContext()))
        assert answer.expired and answer.seq == 1

    run(main())


def test_a_leader_that_loses_leadership_during_the_barrier_never_says_expired() -> None:
    async def main() -> None:
        raft, ctx, clock, svc = _sessions()
        clock.during_barrier = lambda: raft.become(raft.view.role, raft.view.term + 1, "n3")
        keepalive = handler(svc, SESSIONS, "KeepAlive", ctx)
        req = election_pb2.KeepAliveRequest(session_id="s-none", seq=1)
        bad = await aborted(_collect(keepalive(_requests(req), FakeServicerContext())))
        assert bad.trailing["coord-error"] == "not_leader"
        assert bad.trailing["coord-leader-id"] == "n3"

    run(main())


def test_a_follower_sends_keepalives_to_the_leader_without_touching_any_deadline() -> None:
    async def main() -> None:
        raft, ctx, clock, svc = _sessions()
        opened = await handler(svc, SESSIONS, "Open", ctx)(
            election_pb2.OpenSessionRequest(ttl_ms=5000, request_id="o1"), FakeServicerContext()
        )
        raft.become(ROLE_FOLLOWER, raft.view.term + 1, "n2")
        clock.touched.clear()
        req = election_pb2.KeepAliveRequest(session_id=opened.session.id, seq=1)
        keepalive = handler(svc, SESSIONS, "KeepAlive", ctx)
        bad = await aborted(_collect(keepalive(_requests(req), FakeServicerContext())))
        assert bad.trailing["coord-error"] == "not_leader"
        assert clock.touched == []

    run(main())


def test_a_keepalive_with_a_load_that_is_not_a_finite_number_is_refused() -> None:
    async def main() -> None:
        _, ctx, _, svc = _sessions()
        keepalive = handler(svc, SESSIONS, "KeepAlive", ctx)
        req = election_pb2.KeepAliveRequest(session_id="s", seq=1, load=float("nan"))
        bad = await aborted(_collect(keepalive(_requests(req), FakeServicerContext())))
        assert bad.code == grpc.StatusCode.INVALID_ARGUMENT and "load" in bad.details

    run(main())


def test_at_the_session_limit_a_retried_open_still_gets_its_first_answer() -> None:
    """The first Open applied but its answer was lost; meanwhile the caller reached its
    session limit. The retry (same request id) must get the session it opened, not
    RESOURCE_EXHAUSTED (which would orphan that session)."""

    async def main() -> None:
        raft, ctx = node_context()
        ctx.cfg = dataclasses.replace(ctx.cfg, max_sessions_per_identity=1)
        _, _, _, svc = _sessions(raft)
        svc.ctx = ctx
        open_ = handler(svc, SESSIONS, "Open", ctx)
        first = await open_(
            election_pb2.OpenSessionRequest(ttl_ms=5000, request_id="o1"), FakeServicerContext()
        )
        over = await aborted(
            open_(
                election_pb2.OpenSessionRequest(ttl_ms=5000, request_id="o2"), FakeServicerContext()
            )
        )
        assert over.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        retry = await open_(
            election_pb2.OpenSessionRequest(ttl_ms=5000, request_id="o1"), FakeServicerContext()
        )
        assert retry.session.id == first.session.id
        assert raft.read(lambda s: len(s.groups.sessions)) == 1

    run(main())


# -- groups and watch ------------------------------------------------------------------


def _groups(ctx: Any, raft: FakeRaft, probe: Any = None) -> GroupsService:
    async def no_probe(check: Any, address: str) -> Any:
        raise AssertionError("no probe expected")

    notifier = StateNotifier(asyncio.get_running_loop())
    checks = type("NoChecks", (), {"targets": {}})()
    return GroupsService(ctx, notifier, LeaderClock(raft), checks, probe or no_probe)


def test_creating_a_group_twice_is_already_exists_and_keeps_the_first_policy() -> None:
    async def main() -> None:
        raft, ctx = node_context()
        create = handler(_groups(ctx, raft), GROUPS, "Create", ctx)
        policy = groups_pb2.GroupPolicy(slots=2)
        req = election_pb2.CreateGroupRequest(name="db", policy=policy, request_id="c1")
        await create(req, FakeServicerContext())
        other = election_pb2.CreateGroupRequest(
            name="db", policy=groups_pb2.GroupPolicy(slots=3), request_id="c2"
        )
        bad = await aborted(create(other, FakeServicerContext()))
        assert bad.code == grpc.StatusCode.ALREADY_EXISTS
        assert raft.read(lambda s: s.groups.groups["db"].policy.slots) == 2

    run(main())


def test_run_check_probes_through_the_port_with_the_members_check() -> None:
    async def main() -> None:
        raft, ctx = node_context()
        seen: list[tuple[str, str]] = []

        async def probe(check: groups_pb2.HealthCheck, address: str) -> Any:
            seen.append((check.WhichOneof("kind") or "", address))
            return type("R", (), {"ok": True, "detail": "fine", "latency_s": 0.001})()

        groups = _groups(ctx, raft, probe)
        sess = raft.propose(
            raft_pb2.Command(open_session=groups_pb2.OpenSession(ttl_ms=5000))
        ).result()
        create = handler(groups, GROUPS, "Create", ctx)
        await create(
            election_pb2.CreateGroupRequest(name="db", policy=groups_pb2.GroupPolicy(slots=1)),
            FakeServicerContext(),
        )
        member = groups_pb2.Member(
            group="db", id="m1", session_id=sess.session.id, address="127.0.0.1:5432",
            check=groups_pb2.HealthCheck(tcp=groups_pb2.TcpCheck()),
        )  # fmt: skip
        await handler(groups, GROUPS, "Register", ctx)(
            election_pb2.RegisterRequest(member=member), FakeServicerContext()
        )
        resp = await handler(groups, GROUPS, "RunCheck", ctx)(
            election_pb2.RunCheckRequest(group="db", member_id="m1"), FakeServicerContext()
        )
        assert resp.ok and resp.detail == "fine" and resp.latency_ms == pytest.approx(1.0)
        assert seen == [("tcp", "127.0.0.1:5432")]
        missing = await aborted(
            handler(groups, GROUPS, "RunCheck", ctx)(
                election_pb2.RunCheckRequest(group="db", member_id="nobody"),
                FakeServicerContext(),
            )
        )
        assert missing.code == grpc.StatusCode.NOT_FOUND

    run(main())


def test_watch_replays_history_from_a_revision_and_refuses_a_negative_one() -> None:
    async def main() -> None:
        raft, ctx = node_context()
        groups = _groups(ctx, raft)
        create = handler(groups, GROUPS, "Create", ctx)
        await create(
            election_pb2.CreateGroupRequest(name="db", policy=groups_pb2.GroupPolicy(slots=1)),
            FakeServicerContext(),
        )
        watch_svc = WatchService(ctx, StateNotifier(asyncio.get_running_loop()))
        watch = handler(watch_svc, WATCH, "Watch", ctx)
        stream = watch(election_pb2.WatchRequest(from_revision=1), FakeServicerContext())
        first = await stream.__anext__()
        assert "group_created" in [e.type for e in first.events]
        assert first.header.revision == raft.state.revision
        await stream.aclose()
        bad = await aborted(
            _collect(watch(election_pb2.WatchRequest(from_revision=-1), FakeServicerContext()))
        )
        assert bad.code == grpc.StatusCode.INVALID_ARGUMENT

    run(main())


# -- KV.Txn, session-bound puts, watch by key prefix --------------------------------------


def _put_op(key: bytes, value: bytes = b"v", session: str = "") -> kv_pb2.TxnOp:
    return kv_pb2.TxnOp(put=kv_pb2.PutRequest(key=key, value=value, session_id=session))


def test_a_bad_txn_is_refused_before_it_reaches_the_log() -> None:
    """Oversized and malformed transactions: INVALID_ARGUMENT saying the limit or the
    part, nothing proposed; a valid one retried with its request id applies once."""

    async def main() -> None:
        raft, ctx = node_context()
        txn = handler(KVService(ctx), KV, "Txn", ctx)
        big = kv_pb2.TxnRequest(success=[_put_op(b"k%d" % i) for i in range(300)])
        huge = kv_pb2.TxnRequest(success=[_put_op(b"a", b"x" * 1_000_000),
                                          _put_op(b"b", b"x" * 1_000_000)])  # fmt: skip
        malformed = kv_pb2.TxnRequest(compares=[kv_pb2.Compare(key=b"a")])
        neither = kv_pb2.TxnRequest(success=[kv_pb2.TxnOp()])
        before = len(raft.proposed)
        for req, says in ((big, "the limit is 256"), (huge, "the limit is 1572864"),
                          (malformed, "compares[0]: a compare needs a target"),
                          (neither, "success[0]: an operation is a put or a delete")):  # fmt: skip
            bad = await aborted(txn(req, FakeServicerContext()))
            assert bad.code == grpc.StatusCode.INVALID_ARGUMENT, bad
            assert says in bad.details and bad.trailing["coord-error"] == "invalid_argument"
        assert len(raft.proposed) == before
        ok = kv_pb2.TxnRequest(
            compares=[kv_pb2.Compare(key=b"a", exists=False)],
            success=[_put_op(b"a", b"1")], request_id="t1",
        )  # fmt: skip
        first = await txn(ok, FakeServicerContext())
        again = await txn(ok, FakeServicerContext())
        assert first.succeeded and again.succeeded
        assert first.header.revision == again.header.revision == raft.state.revision

    run(main())


def test_a_put_bound_to_a_session_that_ended_is_not_found() -> None:
    async def main() -> None:
        raft, ctx = node_context()
        kv = KVService(ctx)
        put = handler(kv, KV, "Put", ctx)
        bad = await aborted(
            put(kv_pb2.PutRequest(key=b"k", session_id="s999"), FakeServicerContext())
        )
        assert bad.code == grpc.StatusCode.NOT_FOUND and "open a new session" in bad.details
        txn = handler(kv, KV, "Txn", ctx)
        req = kv_pb2.TxnRequest(success=[_put_op(b"k", session="s999")])
        bad = await aborted(txn(req, FakeServicerContext()))
        assert bad.code == grpc.StatusCode.NOT_FOUND and "success[0]: session" in bad.details
        assert raft.read(lambda s: s.kv.get(b"k")) is None

    run(main())


def test_watch_by_key_prefix_sends_only_kv_events_trimmed_to_the_prefix() -> None:
    async def main() -> None:
        raft, ctx = node_context()
        start = raft.state.revision + 1
        kv = KVService(ctx)
        await handler(kv, KV, "Put", ctx)(
            kv_pb2.PutRequest(key=b"other/x", value=b"1"), FakeServicerContext()
        )
        await handler(kv, KV, "Txn", ctx)(
            kv_pb2.TxnRequest(success=[_put_op(b"shard/map"), _put_op(b"other/y")]),
            FakeServicerContext(),
        )
        await handler(kv, KV, "Delete", ctx)(
            kv_pb2.DeleteRequest(key=b"shard/", prefix=True), FakeServicerContext()
        )
        watch_svc = WatchService(ctx, StateNotifier(asyncio.get_running_loop()))
        watch = handler(watch_svc, WATCH, "Watch", ctx)
        req = election_pb2.WatchRequest(from_revision=start, key_prefix=b"shard/")
        stream = watch(req, FakeServicerContext())
        first = await stream.__anext__()
        await stream.aclose()
        got = [(e.type, [k.key for k in e.kvs], list(e.deleted_keys)) for e in first.events]
        assert got == [("kv_txn", [b"shard/map"], []), ("kv_delete", [], [b"shard/map"])]
        assert first.header.revision == raft.state.revision
        long = election_pb2.WatchRequest(key_prefix=b"k" * 5000)
        bad = await aborted(_collect(watch(long, FakeServicerContext())))
        assert bad.code == grpc.StatusCode.INVALID_ARGUMENT

    run(main())


def test_a_put_bound_to_another_identitys_session_is_permission_denied() -> None:
    async def main() -> None:
        _, ctx, _, sessions = _sessions()
        guard._CALLER.set(Identity("alice", MEMBER))
        opened = await handler(sessions, SESSIONS, "Open", ctx)(
            election_pb2.OpenSessionRequest(ttl_ms=5000), FakeServicerContext()
        )
        guard._CALLER.set(Identity("bob", MEMBER))
        kv = KVService(ctx)
        put = kv_pb2.PutRequest(key=b"k", value=b"v", session_id=opened.session.id)
        bad = await aborted(handler(kv, KV, "Put", ctx)(put, FakeServicerContext()))
        assert bad.code == grpc.StatusCode.PERMISSION_DENIED and "alice" in bad.details
        txn = kv_pb2.TxnRequest(success=[kv_pb2.TxnOp(put=put)])
        bad = await aborted(handler(kv, KV, "Txn", ctx)(txn, FakeServicerContext()))
        assert bad.code == grpc.StatusCode.PERMISSION_DENIED
        guard._CALLER.set(Identity("alice", MEMBER))
        ok = await handler(kv, KV, "Put", ctx)(put, FakeServicerContext())
        assert ok.kv.session_id == opened.session.id

    run(main())
