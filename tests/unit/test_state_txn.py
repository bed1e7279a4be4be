"""Transactions and session-bound keys in the pure state machine (issue 17, items 3-4).

Driven like the Raft log drives it: serialized ``raft_pb2.Command`` bytes into
``StateMachine.apply``. :class:`TxnModel` checks transactions against a plain-dict
model step by step (Hypothesis), with concurrent writers doing read-then-compare-
and-swap on two keys at once from stale reads: every transaction is all or nothing.
The examples below it pin session-bound keys (deleted in the apply that ends the
session, with their own kv_delete event right before the session's), snapshots,
replay and the refusals (nothing changes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from coord.state import limits, replay
from coord.state.machine import StateMachine
from coord.state.snapshot_format import decode_snapshot, encode_snapshot
from coord.v1 import groups_pb2 as gp
from coord.v1 import kv_pb2, maintenance_pb2, raft_pb2

T0 = 1_700_000_000_000
C = kv_pb2.Compare


class Driver:
    """One replica fed serialized Commands at a clock that only moves forward."""

    def __init__(self) -> None:
        self.sm = StateMachine()
        self.now = T0
        self.term = 1
        self.ok(bootstrap=raft_pb2.Bootstrap(cluster_id="c1", node_ids=["n1"]))

    def apply(self, request_id: str = "", **op: Any) -> raft_pb2.CommandResult:
        self.now += 1
        cmd = raft_pb2.Command(request_id=request_id, time_ms=self.now, term=self.term, **op)
        return self.sm.apply(cmd.SerializeToString())

    def ok(self, request_id: str = "", **op: Any) -> raft_pb2.CommandResult:
        res = self.apply(request_id, **op)
        assert not res.error_reason, res.error_message
        return res

    def session(self, ttl_ms: int = 1000) -> gp.Session:
        return self.ok(open_session=gp.OpenSession(ttl_ms=ttl_ms)).session

    def put(self, key: bytes, value: bytes = b"v", session: str = "") -> raft_pb2.CommandResult:
        return self.apply(put=kv_pb2.PutRequest(key=key, value=value, session_id=session))

    def txn(self, request_id: str = "", **parts: Any) -> raft_pb2.CommandResult:
        return self.apply(request_id, txn=kv_pb2.TxnRequest(**parts))

    def value(self, key: bytes) -> bytes | None:
        kv = self.sm.kv.get(key)
        return None if kv is None else kv.value

    def events(self, since: int) -> list[gp.Event]:
        return self.sm.events.since(since, self.sm.revision)


def put_op(key: bytes, value: bytes = b"v", session: str = "") -> kv_pb2.TxnOp:
    return kv_pb2.TxnOp(put=kv_pb2.PutRequest(key=key, value=value, session_id=session))


def del_op(key: bytes, prefix: bool = False) -> kv_pb2.TxnOp:
    return kv_pb2.TxnOp(delete=kv_pb2.DeleteRequest(key=key, prefix=prefix))


# -- the model: transactions against a dict -------------------------------------------


@dataclass(frozen=True)
class Rec:
    value: bytes
    mod: int
    version: int


def model_holds(c: kv_pb2.Compare, rec: Rec | None) -> bool:
    """The documented semantics, written out plainly (docs/protocol.md)."""
    target = c.WhichOneof("target")
    if target == "value" and rec is None:
        return False  # a value compare on a missing key is false, NOT_EQUAL too
    have: Any = {
        "exists": rec is not None,
        "value": rec.value if rec else b"",
        "mod_revision": rec.mod if rec else 0,
        "version": rec.version if rec else 0,
    }[target]  # type: ignore[index]
    given = getattr(c, target)  # type: ignore[arg-type]
    return {
        C.EQUAL: have == given,
        C.NOT_EQUAL: have != given,
        C.LESS: have < given,
        C.GREATER: have > given,
    }[c.result]


def under(key: bytes, d: kv_pb2.DeleteRequest) -> bool:
    return key.startswith(d.key) if d.prefix else key == d.key


def writes_a_key_twice(ops: list[kv_pb2.TxnOp]) -> bool:
    puts = [op.put.key for op in ops if op.HasField("put")]
    deletes = [op.delete for op in ops if op.HasField("delete")]
    return len(set(puts)) != len(puts) or any(under(k, d) for k in puts for d in deletes)


# The writers' counter (b"n", b"n-mirror") is outside what these keys and prefixes reach.
KEYS = st.sampled_from([b"a", b"ab", b"b", b"c"])
PREFIXES = st.sampled_from([b"a", b"b", b"x", b"\x00"])
VALUES = st.sampled_from([b"", b"1", b"2", b"3"])
RESULTS = st.sampled_from([C.EQUAL, C.NOT_EQUAL, C.LESS, C.GREATER])


@st.composite
def compares(draw: Any) -> kv_pb2.Compare:
    key = draw(KEYS)
    target = draw(st.sampled_from(["value", "mod_revision", "version", "exists"]))
    if target == "exists":
        result = draw(st.sampled_from([C.EQUAL, C.NOT_EQUAL]))
        return C(key=key, result=result, exists=draw(st.booleans()))
    given = draw(VALUES) if target == "value" else draw(st.integers(0, 12))
    c = C(key=key, result=draw(RESULTS))
    setattr(c, target, given)
    return c


OPS = st.one_of(
    st.builds(put_op, KEYS, VALUES),
    st.builds(del_op, KEYS),
    st.builds(del_op, PREFIXES, st.just(True)),
)


class TxnModel(RuleBasedStateMachine):
    """The state machine against a dict of records, one revision per change."""

    def __init__(self) -> None:
        super().__init__()
        self.d = Driver()
        self.model: dict[bytes, Rec] = {}
        self.rev = self.d.sm.revision
        self.reads: list[tuple[int, int]] = []  # writers' reads of the counter: (value, mod)
        self.increments = 0

    def _apply_model(self, ops: list[kv_pb2.TxnOp]) -> list[bytes]:
        """Apply a branch to the model; returns the keys it deleted, in order."""
        changed = False
        deleted: list[bytes] = []
        nxt = self.rev + 1
        for op in ops:
            if op.HasField("put"):
                old = self.model.get(op.put.key)
                self.model[op.put.key] = Rec(op.put.value, nxt, old.version + 1 if old else 1)
                changed = True
                continue
            d = op.delete
            gone = sorted(k for k in self.model if under(k, d))
            for k in gone:
                del self.model[k]
            deleted += gone
            changed = changed or bool(gone)
        if changed:
            self.rev = nxt
        return deleted

    @rule(
        cmps=st.lists(compares(), max_size=3),
        success=st.lists(OPS, max_size=3),
        failure=st.lists(OPS, max_size=3),
    )
    def txn(self, cmps: list[kv_pb2.Compare], success: list[Any], failure: list[Any]) -> None:
        res = self.d.txn(compares=cmps, success=success, failure=failure)
        if writes_a_key_twice(success) or writes_a_key_twice(failure):
            assert res.error_reason == "invalid_argument", res  # either branch: it is static
            assert "at most once" in res.error_message
            return
        assert not res.error_reason, res.error_message
        ok = all(model_holds(c, self.model.get(c.key)) for c in cmps)
        assert res.txn.succeeded == ok
        branch = success if ok else failure
        assert len(res.txn.responses) == len(branch)
        rev = self.rev
        deleted = self._apply_model(branch)
        if self.rev != rev:
            last = self.d.sm.events.last(1)[0]
            assert (last.type, last.revision) == ("kv_txn", self.rev)
            assert list(last.deleted_keys) == deleted

    @rule(key=KEYS, value=VALUES)
    def plain_put(self, key: bytes, value: bytes) -> None:
        assert not self.d.put(key, value).error_reason
        self._apply_model([put_op(key, value)])

    @rule()
    def read_counter(self) -> None:
        """A writer reads the counter (the read may be stale by the time it writes)."""
        kv = self.d.sm.kv.get(b"n")
        self.reads.append((int(kv.value) if kv else 0, kv.mod_revision if kv else 0))

    @rule(i=st.integers(0, 7))
    def increment(self, i: int) -> None:
        """Compare-and-swap from one of the reads: counter and its mirror move together."""
        if not self.reads:
            return
        n, mod = self.reads[i % len(self.reads)]
        new = str(n + 1).encode()
        res = self.d.txn(
            compares=[C(key=b"n", result=C.EQUAL, mod_revision=mod)],
            success=[put_op(b"n", new), put_op(b"n-mirror", new)],
        )
        assert not res.error_reason, res.error_message
        ok = model_holds(C(key=b"n", mod_revision=mod), self.model.get(b"n"))
        assert res.txn.succeeded == ok
        if ok:
            self.increments += 1
            self._apply_model([put_op(b"n", new), put_op(b"n-mirror", new)])

    @invariant()
    def same_as_model(self) -> None:
        got = {kv.key: Rec(kv.value, kv.mod_revision, kv.version) for kv in self.d.sm.kv.items()}
        assert got == self.model
        assert self.d.sm.revision == self.rev
        counter = self.model.get(b"n")
        assert (int(counter.value) if counter else 0) == self.increments
        assert self.d.value(b"n") == self.d.value(b"n-mirror")

    @invariant()
    def one_event_per_revision(self) -> None:
        last = self.d.sm.events.last(1)[0]
        assert last.revision == self.d.sm.revision


TestTxnModel = TxnModel.TestCase
TestTxnModel.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip


# -- compares on missing keys ------------------------------------------------------------


@pytest.mark.parametrize(
    ("compare", "holds"),
    [
        (C(key=b"gone", result=C.EQUAL, value=b""), False),
        (C(key=b"gone", result=C.NOT_EQUAL, value=b"x"), False),  # no value to differ from
        (C(key=b"gone", result=C.EQUAL, exists=False), True),
        (C(key=b"gone", result=C.NOT_EQUAL, exists=True), True),
        (C(key=b"gone", result=C.EQUAL, mod_revision=0), True),
        (C(key=b"gone", result=C.EQUAL, version=0), True),
        (C(key=b"gone", result=C.LESS, mod_revision=1), True),
    ],
)
def test_a_compare_on_a_missing_key_is_well_defined(compare: kv_pb2.Compare, holds: bool) -> None:
    d = Driver()
    res = d.txn(compares=[compare], success=[put_op(b"yes")], failure=[put_op(b"no")])
    assert res.txn.succeeded is holds
    assert (d.value(b"yes"), d.value(b"no")) == ((b"v", None) if holds else (None, b"v"))


def test_a_txn_is_one_revision_and_one_event_and_a_retry_applies_once() -> None:
    d = Driver()
    d.put(b"old/1")
    d.put(b"old/2")
    rev = d.sm.revision
    ops = [put_op(b"map", b"m2"), put_op(b"owner", b"n2"), del_op(b"old/", prefix=True)]
    first = d.txn("rid-1", compares=[C(key=b"map", exists=False)], success=ops)
    assert first.txn.succeeded and first.revision == rev + 1 == d.sm.revision
    (e,) = d.events(rev + 1)
    assert e.type == "kv_txn" and [kv.key for kv in e.kvs] == [b"map", b"owner"]
    assert list(e.deleted_keys) == [b"old/1", b"old/2"]
    assert {kv.mod_revision for kv in e.kvs} == {rev + 1}
    assert [r.WhichOneof("response") for r in first.txn.responses] == ["put", "put", "delete"]
    assert first.txn.responses[2].delete.deleted == 2
    again = d.txn("rid-1", compares=[C(key=b"map", exists=False)], success=ops)
    assert again == first and d.sm.revision == rev + 1
    # A branch that changes nothing takes no revision.
    none = d.txn(compares=[C(key=b"map", exists=False)], success=ops, failure=[del_op(b"zz")])
    assert not none.txn.succeeded and d.sm.revision == rev + 1


# -- refusals: clear, and nothing changes ---------------------------------------------------


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("too many ops", {"success": [put_op(b"k%d" % i) for i in range(limits.MAX_TXN_OPS + 1)]},
     f"the limit is {limits.MAX_TXN_OPS}"),
    ("too many bytes", {"success": [put_op(b"a", b"x" * (limits.MAX_VALUE_BYTES - 10)),
                                    put_op(b"b", b"x" * (limits.MAX_VALUE_BYTES - 10))]},
     f"the limit is {limits.MAX_TXN_BYTES}"),
    ("no target", {"compares": [C(key=b"a")]}, "compares[0]: a compare needs a target"),
    ("empty key", {"compares": [C(value=b"x")]}, "compares[0]: key is empty"),
    ("exists <", {"compares": [C(key=b"a", result=C.LESS, exists=True)]},
     "takes EQUAL or NOT_EQUAL"),
    ("unknown result", {"compares": [C(key=b"a", result=9, value=b"")]}, "result 9 is unknown"),  # type: ignore[arg-type]
    ("empty op", {"success": [put_op(b"a"), kv_pb2.TxnOp()]},
     "success[1]: an operation is a put or a delete"),
    ("put twice", {"failure": [put_op(b"a"), put_op(b"a")]}, "failure[1]: key b'a' is put twice"),
    ("delete covers a put", {"success": [put_op(b"ab"), del_op(b"a", prefix=True)]},
     "covers key b'ab'"),
    ("request id inside", {"success": [kv_pb2.TxnOp(put=kv_pb2.PutRequest(
        key=b"a", request_id="r"))]}, "give the transaction's request_id"),
    ("expected rev inside", {"success": [kv_pb2.TxnOp(delete=kv_pb2.DeleteRequest(
        key=b"a", expected_mod_revision=3))]}, "put the condition in the transaction's compares"),
    ("prev_kv inside", {"success": [kv_pb2.TxnOp(put=kv_pb2.PutRequest(key=b"a",
                                                                      prev_kv=True))]},
     "prev_kv is not available"),
    ("oversized value", {"success": [put_op(b"a", b"x" * (limits.MAX_VALUE_BYTES + 1))]},
     "success[0]: value is"),
    ("dead session", {"success": [put_op(b"a", session="s999")]},
     "success[0]: session 's999' does not exist"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "parts", "says"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_txn_is_refused_clearly_and_changes_nothing(
    name: str, parts: dict[str, Any], says: str
) -> None:
    d = Driver()
    d.put(b"a", b"keep")
    before = d.sm.snapshot()
    res = d.txn(**parts)
    assert res.error_reason in ("invalid_argument", "not_found"), res
    assert says in res.error_message, res.error_message
    after = d.sm.snapshot()
    assert replay.differences(decode_snapshot(before), decode_snapshot(after),
                              ignore=["last_time_ms"]) == []  # fmt: skip


# -- session-bound keys ---------------------------------------------------------------------


@pytest.mark.parametrize("how", ["expire", "close"])
def test_session_keys_go_in_the_apply_that_ends_the_session(how: str) -> None:
    d = Driver()
    s = d.session()
    other = d.session()
    d.put(b"lock/a", session=s.id)
    d.ok(txn=kv_pb2.TxnRequest(success=[put_op(b"lock/b", session=s.id)]))
    d.put(b"other", session=other.id)
    d.put(b"plain")
    mark = d.sm.revision + 1
    d.term = 3
    if how == "expire":
        d.ok(expire_session=gp.ExpireSession(session_id=s.id, epoch=s.epoch))
    else:
        d.ok(close_session=gp.CloseSession(session_id=s.id))
    gone, ended = d.events(mark)
    assert (gone.type, list(gone.deleted_keys)) == ("kv_delete", [b"lock/a", b"lock/b"])
    assert (gone.session_id, gone.cause) == (s.id, f"session_{how}d" if how == "close"
                                             else "session_expired")  # fmt: skip
    assert ended.type in ("session_expired", "session_closed") and ended.session_id == s.id
    assert ended.revision == gone.revision + 1
    assert (gone.term, gone.time_ms) == (ended.term, ended.time_ms) == (3, d.now)
    assert {kv.key for kv in d.sm.kv.items()} == {b"other", b"plain"}
    # A stale expiry of the other session's old epoch removes nothing.
    d.ok(expire_session=gp.ExpireSession(session_id=other.id, epoch=other.epoch + 5))
    assert d.value(b"other") == b"v"


def test_the_latest_put_decides_the_binding() -> None:
    d = Driver()
    s1, s2 = d.session(), d.session()
    d.put(b"unbound", session=s1.id)
    d.put(b"unbound", b"plain")  # no session: unbinds
    d.put(b"moved", session=s1.id)
    d.put(b"moved", session=s2.id)  # rebinds
    d.put(b"deleted", session=s1.id)
    d.ok(delete=kv_pb2.DeleteRequest(key=b"deleted"))
    d.put(b"deleted", b"again")  # a new key, not bound
    assert d.sm.kv.get(b"moved").session_id == s2.id
    d.ok(close_session=gp.CloseSession(session_id=s1.id))
    assert {kv.key for kv in d.sm.kv.items()} == {b"unbound", b"moved", b"deleted"}
    assert d.sm.kv.session_keys(s1.id) == []
    d.ok(close_session=gp.CloseSession(session_id=s2.id))
    assert d.value(b"moved") is None


def test_a_put_with_an_ended_or_closing_session_is_refused_and_changes_nothing() -> None:
    d = Driver()
    s = d.session()
    d.ok(close_session=gp.CloseSession(session_id=s.id))
    rev = d.sm.revision
    res = d.put(b"k", session=s.id)
    assert res.error_reason == "not_found" and "open a new session" in res.error_message
    res = d.put(b"k", session="x" * 1000)
    assert res.error_reason == "invalid_argument"
    assert d.sm.revision == rev and d.value(b"k") is None


def test_an_operators_close_keeps_the_keys_until_the_session_ends() -> None:
    d = Driver()
    s = d.session()
    d.ok(create_group=gp.CreateGroup(name="g", policy=gp.GroupPolicy(slots=1)))
    d.ok(register=gp.Register(member=gp.Member(group="g", id="m1", session_id=s.id,
                                                candidate=True)))  # fmt: skip
    assert d.sm.groups.groups["g"].holdings
    d.put(b"k", session=s.id)
    d.ok(close_session=gp.CloseSession(session_id=s.id, wait_out=True))
    assert d.sm.groups.sessions[s.id].closing and d.value(b"k") == b"v"
    res = d.put(b"k2", session=s.id)
    assert res.error_reason == "failed_precondition" and "closing" in res.error_message
    d.ok(close_session=gp.CloseSession(session_id=s.id))
    assert d.value(b"k") is None and s.id not in d.sm.groups.sessions


def test_bindings_survive_a_snapshot_and_an_old_snapshot_loads_unbound() -> None:
    d = Driver()
    s = d.session()
    d.put(b"k", session=s.id)
    d.put(b"plain")
    restored = StateMachine()
    restored.restore(d.sm.snapshot())
    assert restored.kv.session_keys(s.id) == [b"k"]
    # A snapshot written before bindings existed: records without session_id.
    old = decode_snapshot(d.sm.snapshot())
    for kv in old.kvs:
        kv.ClearField("session_id")
    legacy = StateMachine()
    legacy.restore(encode_snapshot(old))
    assert legacy.kv.session_keys(s.id) == [] and legacy.kv.get(b"k") is not None
    cmd = raft_pb2.Command(time_ms=d.now + 1, close_session=gp.CloseSession(session_id=s.id))
    legacy.apply(cmd.SerializeToString())
    assert legacy.kv.get(b"k") is not None  # unbound there: kept


def test_a_diff_replays_txns_and_session_keys_exactly() -> None:
    d = Driver()
    s = d.session()
    base = d.sm.snapshot()
    base_rev = d.sm.revision
    d.put(b"k", session=s.id)
    d.ok(txn=kv_pb2.TxnRequest(success=[put_op(b"t", session=s.id), put_op(b"u")]))
    d.ok(txn=kv_pb2.TxnRequest(success=[del_op(b"u"), put_op(b"w")]))
    d.ok(expire_session=gp.ExpireSession(session_id=s.id, epoch=s.epoch))
    diff = replay.capture_diff(d.sm, base_rev)
    rebuilt = StateMachine()
    rebuilt.restore(base)
    replay.apply_diff(rebuilt, maintenance_pb2.BackupDiff.FromString(diff.SerializeToString()),
                      d.sm.revision)  # fmt: skip
    assert replay.differences(decode_snapshot(rebuilt.snapshot()),
                              decode_snapshot(d.sm.snapshot())) == []  # fmt: skip
    assert {kv.key for kv in rebuilt.kv.items()} == {b"w"}
