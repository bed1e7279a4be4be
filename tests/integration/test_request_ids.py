"""Every write carries a request id, so a retry after a lost answer applies once.

Regression (issue 13, hole 5): the client library sent session, group and member
writes without a request id while ``Client.call`` retries after an ambiguous
failure: a retried Open opened a second session, a retried Create failed with
ALREADY_EXISTS, a retried Resign with FAILED_PRECONDITION, though the first attempt
had worked. Here the answer of each write's first attempt is lost on its way back
(the server applied it), as when a connection breaks after the commit.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from coord.client import Client
from coord.client.errors import FailedCall
from coord.state import limits
from coord.testing import LocalCluster
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2

from .members import get_group, groups_stub, holders, list_sessions, sessions_stub

WRITES = {
    "/coord.v1.Sessions/Open",
    "/coord.v1.Sessions/Close",
    "/coord.v1.Groups/Create",
    "/coord.v1.Groups/Register",
    "/coord.v1.Groups/UpdateMember",
    "/coord.v1.Groups/Campaign",
    "/coord.v1.Groups/Resign",
    "/coord.v1.Groups/Unregister",
    "/coord.v1.KV/Put",
    "/coord.v1.KV/Delete",
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def lost_answer() -> FailedCall:
    """What the client sees when the answer of an applied write never arrives."""
    return FailedCall(
        grpc.StatusCode.UNAVAILABLE,
        "coord: the write did not commit in time (no quorum?): retry with the same request id",
        (("coord-error", "outcome_unknown"),),
    )


class _AppliedThenLost:
    """A Campaign stream whose first message (sent once the campaign applied) is lost."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        next(self._call)
        self._call.cancel()
        raise lost_answer()

    def cancel(self) -> bool:
        return bool(self._call.cancel())


class LosesFirstAnswers(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Records the request id of every write attempt, and loses the answer of the
    first attempt of each write method after the server applied it."""

    def __init__(self) -> None:
        self.request_ids: dict[str, list[str]] = defaultdict(list)

    def _first(self, method: str, request: Any) -> bool:
        if method not in WRITES:
            return False
        self.request_ids[method].append(request.request_id)
        return len(self.request_ids[method]) == 1

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        first = self._first(details.method, request)
        outcome = continuation(details, request)
        if first and outcome.exception() is None:
            raise lost_answer()
        return outcome

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        first = self._first(details.method, request)
        call = continuation(details, request)
        return _AppliedThenLost(call) if first else call


class LossyClient(Client):
    """A Client whose connections lose the first answer of each kind of write."""

    def __init__(self, endpoints: list[str]) -> None:
        super().__init__(endpoints, timeout_s=15.0)
        self.losses = LosesFirstAnswers()

    def channel(self, endpoint: str) -> grpc.Channel:
        return grpc.intercept_channel(super().channel(endpoint), self.losses)

    def __enter__(self) -> LossyClient:
        return self


def assert_retried_with_one_id(client: LossyClient, *methods: str) -> None:
    for method in methods:
        ids = client.losses.request_ids[method]
        assert len(ids) >= 2, f"{method} was not retried after its lost answer: {ids}"
        assert ids[0], f"{method} was sent without a request id"
        assert set(ids) == {ids[0]}, f"{method}'s retries changed the request id: {ids}"


def test_a_session_opened_and_closed_through_lost_answers_is_opened_once(
    cluster: LocalCluster,
) -> None:
    name = unique("lossy")
    with LossyClient(cluster.endpoints) as lossy, cluster.client() as c:
        session = lossy.session(ttl_s=5, name=name).start()
        try:
            named = [s.id for s in list_sessions(c) if s.name == name]
            assert named == [session.id], f"one Open opened {named}"
        finally:
            session.close()
        assert session.id not in {s.id for s in list_sessions(c)}
        assert_retried_with_one_id(lossy, "/coord.v1.Sessions/Open", "/coord.v1.Sessions/Close")


def test_a_group_created_through_a_lost_answer_is_created_once(cluster: LocalCluster) -> None:
    name = unique("lossy")
    with LossyClient(cluster.endpoints) as lossy, cluster.client() as c:
        group = lossy.group(name).create(slots=2)  # the retry must not be ALREADY_EXISTS
        assert (group.name, group.policy.slots) == (name, 2)
        assert get_group(c, name).created_revision == group.created_revision
        assert_retried_with_one_id(lossy, "/coord.v1.Groups/Create")


def test_member_writes_through_lost_answers_each_apply_once(cluster: LocalCluster) -> None:
    g = unique("lossy")
    with cluster.client() as c:
        c.group(g).create()
        with LossyClient(cluster.endpoints) as lossy, c.session(ttl_s=5) as session:
            member = lossy.group(g).member("m1", session, priority=3).start()
            assert member.update(weight=7).weight == 7
            lead = member.campaign(timeout_s=10)
            assert holders(c, g) == {0: ("m1", lead.token)}
            lead.resign()  # the retry must not be "does not hold a slot"
            assert holders(c, g) == {}
            member.leave()  # the retry must not be NOT_FOUND
            assert not get_group(c, g).members
            assert_retried_with_one_id(
                lossy,
                "/coord.v1.Groups/Register",
                "/coord.v1.Groups/UpdateMember",
                "/coord.v1.Groups/Resign",
                "/coord.v1.Groups/Unregister",
            )
            # Campaigning is idempotent: each send has its own id, so that a re-send
            # after an election and a revoke campaigns again (not a dedupe answer).
            sent = lossy.losses.request_ids["/coord.v1.Groups/Campaign"]
            assert len(sent) >= 2 and all(sent) and len(set(sent)) == len(sent), sent


def test_kv_writes_through_lost_answers_each_apply_once(cluster: LocalCluster) -> None:
    key = unique("lossy")
    with LossyClient(cluster.endpoints) as lossy, cluster.client() as c:
        put = lossy.put(key, "v")
        assert put.kv.version == 1
        assert lossy.delete(key).deleted == 1  # the retry answers the first result
        assert c.get(key) is None
        assert_retried_with_one_id(lossy, "/coord.v1.KV/Put", "/coord.v1.KV/Delete")


# -- the server: the same request twice with one id ---------------------------------------


def rid() -> str:
    return "test-" + uuid.uuid4().hex


def same_answer(a: Any, b: Any) -> bool:
    """Equal but for the fields that describe the answering node and moment."""
    out = []
    for resp in (a, b):
        copy = type(resp)()
        copy.CopyFrom(resp)
        for field in ("node_id", "applied_index", "term"):
            copy.header.ClearField(field)
        out.append(copy.SerializeToString(deterministic=True))
    return bool(out[0] == out[1])


def twice(send: Callable[[Any], Any], request: Any) -> tuple[Any, Any]:
    return send(request), send(request)


def test_open_register_create_campaign_switchover_sent_twice_apply_once(
    cluster: LocalCluster,
) -> None:
    g, name = unique("twice"), unique("twice")
    with cluster.client() as c:
        groups, sessions = groups_stub(c), sessions_stub(c)
        a, b = twice(groups.Create, election_pb2.CreateGroupRequest(
            name=g, policy=groups_pb2.GroupPolicy(slots=1), request_id=rid()))  # fmt: skip
        assert same_answer(a, b) and a.group.name == g

        a, b = twice(sessions.Open, election_pb2.OpenSessionRequest(
            ttl_ms=30_000, name=name, request_id=rid()))  # fmt: skip
        assert same_answer(a, b)
        assert [s.id for s in list_sessions(c) if s.name == name] == [a.session.id]
        sid = a.session.id
        try:
            for mid in ("m1", "m2"):
                member = groups_pb2.Member(group=g, id=mid, session_id=sid)
                a, b = twice(
                    groups.Register, election_pb2.RegisterRequest(member=member, request_id=rid())
                )
                assert same_answer(a, b)
            joined = [m.registered_revision for m in get_group(c, g).members]
            assert len(joined) == 2

            for mid in ("m1", "m2"):
                req = election_pb2.CampaignRequest(group=g, member_id=mid, request_id=rid())
                for _ in range(2):
                    stream = election_pb2_grpc.GroupsStub(c.channel(c.endpoints[0])).Campaign(
                        req, timeout=10
                    )
                    first = next(iter(stream))
                    stream.cancel()
                    assert first.masters, "the campaign was not applied"
            assert holders(c, g)[0][0] == "m1"

            a, b = twice(groups.Switchover, election_pb2.SwitchoverRequest(
                group=g, to_member="m2", request_id=rid()))  # fmt: skip
            assert same_answer(a, b)  # not "a switchover is already in progress"
            handovers = get_group(c, g).handovers
            assert [(h.from_member, h.to_member) for h in handovers] == [("m1", "m2")]
        finally:
            sessions.Close(election_pb2.CloseSessionRequest(session_id=sid, request_id=rid()))


# -- the server: request ids too long to be remembered ------------------------------------

TOO_LONG = "r" * (limits.MAX_REQUEST_ID_CHARS + 1)


def _writes_with_overlong_ids(g: str, sid: str) -> dict[str, Callable[[grpc.Channel], Any]]:
    """Each write RPC, as sent straight to one node, with a request id one too long."""
    groups = election_pb2_grpc.GroupsStub
    sessions = election_pb2_grpc.SessionsStub

    def call(stub: Any, method: str, req: Any) -> Callable[[grpc.Channel], Any]:
        return lambda ch: getattr(stub(ch), method)(req, timeout=10)

    def campaign(ch: grpc.Channel) -> Any:
        req = election_pb2.CampaignRequest(group=g, member_id="m1", request_id=TOO_LONG)
        return next(iter(groups(ch).Campaign(req, timeout=10)))

    member = groups_pb2.Member(group=g, id="m9", session_id=sid)
    update = groups_pb2.UpdateMember(group=g, member_id="m1", session_id=sid, weight=2)
    return {
        "open": call(sessions, "Open", election_pb2.OpenSessionRequest(
            ttl_ms=5000, request_id=TOO_LONG)),
        "close": call(sessions, "Close", election_pb2.CloseSessionRequest(
            session_id=sid, request_id=TOO_LONG)),
        "create": call(groups, "Create", election_pb2.CreateGroupRequest(
            name=g + "-x", policy=groups_pb2.GroupPolicy(slots=1), request_id=TOO_LONG)),
        "delete": call(groups, "Delete", election_pb2.DeleteGroupRequest(
            name=g, request_id=TOO_LONG)),
        "register": call(groups, "Register", election_pb2.RegisterRequest(
            member=member, request_id=TOO_LONG)),
        "update": call(groups, "UpdateMember", election_pb2.UpdateMemberRequest(
            update=update, request_id=TOO_LONG)),
        "unregister": call(groups, "Unregister", election_pb2.UnregisterRequest(
            group=g, member_id="m1", session_id=sid, request_id=TOO_LONG)),
        "resign": call(groups, "Resign", election_pb2.ResignRequest(
            group=g, member_id="m1", session_id=sid, request_id=TOO_LONG)),
        "switchover": call(groups, "Switchover", election_pb2.SwitchoverRequest(
            group=g, request_id=TOO_LONG)),
        "campaign": campaign,
    }  # fmt: skip


@pytest.fixture
def overlong_target(cluster: LocalCluster) -> Iterator[tuple[str, str]]:
    """A group whose member m1 is master, with its session: what the writes aim at."""
    g = unique("overlong")
    with cluster.client() as c:
        c.group(g).create()
        with c.session(ttl_s=5) as session:
            c.group(g).member("m1", session).start().campaign(timeout_s=10)
            yield g, session.id


@pytest.mark.parametrize("write", sorted(_writes_with_overlong_ids("", "")))
def test_an_overlong_request_id_is_refused_on_every_write(
    cluster: LocalCluster, overlong_target: tuple[str, str], write: str
) -> None:
    g, sid = overlong_target
    with cluster.client() as c:
        before = get_group(c, g)
        with pytest.raises(grpc.RpcError) as err:
            _writes_with_overlong_ids(g, sid)[write](c.channel(c.leader().leader_api_address))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
        assert (err.value.details() or "").startswith("coord: request_id is 129 characters")
        assert get_group(c, g) == before, "the refused write changed the group"
        assert sid in {s.id for s in list_sessions(c)}
