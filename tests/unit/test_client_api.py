"""The client library's way in, without a cluster: ``client.session()``, ``client.group()``
and their objects do no I/O until started; leader discovery is one helper; the old free
functions still work, with a DeprecationWarning (issue 15)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from coord import errors
from coord.client import (
    Client,
    Group,
    Member,
    Session,
    SessionState,
    create_group,
    masters,
    observe,
    watch,
)
from coord.client import client as client_module
from coord.v1 import cluster_pb2, election_pb2, groups_pb2


class RecordingClient(Client):
    """A Client whose calls are recorded and answered from ``answers`` (no network)."""

    def __init__(self, *answers: Any) -> None:
        super().__init__("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3")
        self.calls: list[Callable[[grpc.Channel, float], Any]] = []
        self.answers = list(answers)

    def call(self, fn: Any, prefer_leader: bool = True, endpoint: str | None = None) -> Any:
        self.calls.append(fn)
        return self.answers.pop(0)


def test_a_session_is_made_without_io() -> None:
    c = RecordingClient()
    s = c.session(ttl_s=7, name="n", stepdown_grace_s=1)
    assert isinstance(s, Session)
    assert (s.client, s.ttl_s, s.name, s.stepdown_grace_s) == (c, 7, "n", 1)
    assert s.state is SessionState.NEW
    assert c.calls == []
    s.close()  # never opened: nothing to tell the cluster
    assert s.state is SessionState.CLOSED and c.calls == []
    with pytest.raises(errors.FailedPrecondition, match="open a new session"):
        s.start()


def test_bad_session_arguments_are_refused_at_once() -> None:
    with pytest.raises(errors.InvalidArgument, match="drift"):
        RecordingClient().session(5, drift=0.7)


def test_a_group_handle_and_its_member_are_made_without_io() -> None:
    c = RecordingClient()
    g = c.group("db")
    assert isinstance(g, Group) and (g.client, g.name) == (c, "db")
    s = c.session(5)
    m = g.member("db-1", s, address="10.0.0.1:5432", priority=10, tags={"zone": "a"})
    assert isinstance(m, Member)
    assert (m.client, m.session, m.group, m.id, m.registered) == (c, s, "db", "db-1", False)
    assert c.calls == [] and s.state is SessionState.NEW


def test_group_create_masters_and_get_answer_from_the_cluster() -> None:
    group = groups_pb2.Group(name="db", policy=groups_pb2.GroupPolicy(slots=1))
    holding = groups_pb2.Holding(slot=0, member_id="db-1", token=7)
    c = RecordingClient(
        election_pb2.GroupResponse(group=group),
        election_pb2.MastersResponse(masters=[holding]),
        election_pb2.GroupResponse(group=group),
    )
    g = c.group("db")
    assert g.create(slots=1) == group
    assert g.masters() == [holding]
    assert g.get() == group
    assert len(c.calls) == 3


def test_create_exist_ok_compares_the_policy() -> None:
    has = groups_pb2.Group(name="db", policy=groups_pb2.GroupPolicy(slots=2))

    class Exists(RecordingClient):
        def call(self, fn: Any, prefer_leader: bool = True, endpoint: str | None = None) -> Any:
            if not self.calls:
                self.calls.append(fn)
                raise errors.AlreadyExists("group 'db' exists")
            return super().call(fn, prefer_leader, endpoint)

    with pytest.raises(errors.AlreadyExists, match="slots: asked 1, it has 2"):
        Exists(election_pb2.GroupResponse(group=has)).group("db").create(slots=1, exist_ok=True)


def test_the_old_free_functions_still_work_and_warn() -> None:
    group = groups_pb2.Group(name="db")
    holding = groups_pb2.Holding(slot=0, member_id="db-1", token=7)
    c = RecordingClient(
        election_pb2.GroupResponse(group=group), election_pb2.MastersResponse(masters=[holding])
    )
    with pytest.warns(DeprecationWarning, match=r"client\.group\(name\)\.create"):
        assert create_group(c, "db") == group
    with pytest.warns(DeprecationWarning, match=r"client\.group\(group\)\.masters"):
        assert masters(c, "db") == [holding]
    # The streams are lazy: the warning comes with the call, the I/O with iteration.
    with pytest.warns(DeprecationWarning, match=r"client\.group\(group\)\.observe"):
        observe(c, "db")
    with pytest.warns(DeprecationWarning, match=r"client\.watch"):
        watch(c, 5, groups=["db"])
    assert len(c.calls) == 2


def test_find_leader_is_one_quick_pass_that_can_skip_a_stalled_leader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One helper for every leader lookup: the client's first call, a session's keepalive
    loop (skipping a leader that stalled on it), campaigns and resuming streams."""
    answers = {"127.0.0.1:1": None, "127.0.0.1:2": "127.0.0.1:3", "127.0.0.1:3": "127.0.0.1:3"}
    asked: list[str] = []

    def ask(ch: Any, timeout_s: float) -> cluster_pb2.GetLeaderResponse:
        asked.append(ch)
        assert timeout_s <= 0.3
        if answers[ch] is None:
            raise grpc.RpcError()
        return cluster_pb2.GetLeaderResponse(leader_id="n3", leader_api_address=answers[ch])

    c = Client("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3")
    monkeypatch.setattr(c, "channel", lambda ep: ep)
    monkeypatch.setattr(client_module, "_ask_leader", ask)
    assert c.find_leader() == "127.0.0.1:3"
    assert c._preferred == "127.0.0.1:3" and asked == ["127.0.0.1:1", "127.0.0.1:2"]
    asked.clear()
    assert c.find_leader(skip="127.0.0.1:3") is None  # only the stalled one names itself
    assert asked == ["127.0.0.1:1", "127.0.0.1:2"]


def test_the_session_keepalive_loop_finds_the_leader_through_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = RecordingClient()
    s = c.session(5)
    seen: list[tuple[str | None, float]] = []

    def find_leader(skip: str | None = None, wait: bool = False, ask_timeout_s: float = 0) -> None:
        seen.append((skip, ask_timeout_s))

    monkeypatch.setattr(c, "find_leader", find_leader)
    s._stalled_endpoint = "127.0.0.1:2"
    assert s._leader_endpoint() is None
    assert seen == [("127.0.0.1:2", 0.2)]
    assert s._stalled_endpoint is None  # nobody knew better: the stalled one is tried again


def test_errors_carry_a_declared_leader_address() -> None:
    err: errors.CoordError = errors.Unavailable("x", leader_address="127.0.0.1:2")
    assert err.leader_address == "127.0.0.1:2"
    assert errors.from_reason("no_leader", "y").leader_address == ""


class _FakeStub:
    """Captures the OpenSessionRequest a Session sends."""

    def __init__(self, sent: list[election_pb2.OpenSessionRequest]) -> None:
        self.sent = sent

    def Open(self, req: election_pb2.OpenSessionRequest, timeout: float) -> Any:
        self.sent.append(req)
        return election_pb2.OpenSessionResponse(
            session=groups_pb2.Session(id="s1", ttl_ms=req.ttl_ms)
        )


def test_a_start_after_a_lost_answer_reuses_the_first_request_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first Open was applied but its answer lost (the leader died): the app calls
    start() again, which must carry the same request id, so the cluster answers with the
    session it opened instead of opening a second one that nobody would close."""
    sent: list[election_pb2.OpenSessionRequest] = []
    monkeypatch.setattr(
        "coord.client.session.election_pb2_grpc.SessionsStub", lambda ch: _FakeStub(sent)
    )

    class LosesFirstAnswer(Client):
        def __init__(self) -> None:
            super().__init__("127.0.0.1:1")
            self.attempts = 0

        def call(self, fn: Any, prefer_leader: bool = True, endpoint: str | None = None) -> Any:
            self.attempts += 1
            answer = fn(None, 1.0)
            if self.attempts == 1:
                raise errors.Unavailable("outcome unknown: the leader went away")
            return answer

    c = LosesFirstAnswer()
    s = c.session(5)
    monkeypatch.setattr(s, "_keep_alive", lambda: None)  # no threads that talk
    monkeypatch.setattr(s, "_watch_validity", lambda: None)
    with pytest.raises(errors.Unavailable):
        s.start()
    assert s.state is SessionState.NEW
    s.start()
    assert len(sent) == 2 and sent[0].request_id == sent[1].request_id != ""
    assert s.id == "s1"
    s._stop.set()
    s._events.put(None)


def test_an_unstarted_session_is_not_valid_and_asking_does_no_io() -> None:
    c = RecordingClient()
    s = c.session(5)
    assert not s.is_valid() and s.valid_for_s() == 0.0
    s.report_load(3.0)
    assert c.calls == [] and s.state is SessionState.NEW
