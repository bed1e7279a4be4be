"""Request ids in the state machine: an id too long to be remembered is refused.

Regression (issue 13, hole 5): ``StateMachine`` applied a command whose request id
was over ``MAX_REQUEST_ID_CHARS`` and silently did not remember it, so every retry
of that write applied again (a second session, a second put).
"""

from __future__ import annotations

import gc
from typing import Any

import pytest

from coord.state import limits
from coord.state.machine import StateMachine
from coord.v1 import groups_pb2, kv_pb2, raft_pb2

TOO_LONG = "r" * (limits.MAX_REQUEST_ID_CHARS + 1)

OPS: dict[str, dict[str, Any]] = {
    "put": {"put": kv_pb2.PutRequest(key=b"k", value=b"v")},
    "open_session": {"open_session": groups_pb2.OpenSession(ttl_ms=1000, name="s")},
    "create_group": {
        "create_group": groups_pb2.CreateGroup(name="g", policy=groups_pb2.GroupPolicy(slots=1))
    },
}


def apply(sm: StateMachine, request_id: str, **op: Any) -> raft_pb2.CommandResult:
    cmd = raft_pb2.Command(request_id=request_id, time_ms=1_700_000_000_000, term=1, **op)
    return sm.apply(cmd.SerializeToString())


@pytest.mark.parametrize("kind", sorted(OPS))
def test_an_overlong_request_id_is_refused_and_changes_nothing(kind: str) -> None:
    sm = StateMachine()
    for _ in range(2):  # a retry, as a client would send after a lost answer
        res = apply(sm, TOO_LONG, **OPS[kind])
        assert res.error_reason == "invalid_argument", res
        assert "request_id is" in res.error_message and "use a shorter one" in res.error_message
    assert sm.revision == 0, "a command with an over-long request id was applied"
    assert not sm.groups.sessions and not sm.groups.groups and sm.kv.get(b"k") is None


def test_a_request_id_at_the_limit_is_remembered() -> None:
    sm = StateMachine()
    longest = "r" * limits.MAX_REQUEST_ID_CHARS
    first = apply(sm, longest, **OPS["open_session"])
    again = apply(sm, longest, **OPS["open_session"])
    assert not first.error_reason and again == first
    assert len(sm.groups.sessions) == 1


def test_the_dedupe_table_gives_the_cyclic_collector_nothing_to_walk() -> None:
    """Every write with a request id stays in the table (20,000 of them): kept as result
    messages, they were most of what Python's full collections walked on a node under
    writes, and those collections (30-225 ms) stopped the Raft tick thread. Kept as
    bytes, a collection leaves them untracked; a retry still gets its first answer."""
    sm = StateMachine()
    first = apply(sm, "w0", put=kv_pb2.PutRequest(key=b"k0", value=b"v"))
    for i in range(1, 2000):
        apply(sm, f"w{i}", put=kv_pb2.PutRequest(key=b"k%d" % i, value=b"v"))
    gc.collect()
    assert len(sm._dedupe) == 2000
    tracked = [rid for rid, entry in sm._dedupe.items() if gc.is_tracked(entry)]
    assert tracked == []  # before: every entry, and its result message with it
    assert apply(sm, "w0", put=kv_pb2.PutRequest(key=b"k0", value=b"v")) == first
