"""Hypothesis properties of the replicated state machine, driven by serialized Commands.

Every test feeds ``StateMachine.apply`` the bytes a Raft log would hold: puts,
deletes, prefix deletes, compare-and-set with random expected revisions, no-ops,
bootstraps, with and without request ids (duplicates included), and invalid
input (empty or oversized keys and values, undecodable bytes). Keys come from a
four-byte alphabet that includes 0x00 and 0xFF so that collisions and prefix
edge cases are frequent.

The model-based test (:class:`ModelComparison`) checks the SUT step by step
against :class:`Model`, a plain-dict reimplementation of the documented
semantics, while a second replica applies the same bytes and a third is rebuilt
from snapshots at random points.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from coord.state import limits
from coord.state.machine import StateMachine
from coord.state.snapshot_format import decode_snapshot
from coord.v1 import kv_pb2, raft_pb2

# -- command builders --------------------------------------------------------------------

ALPHABET = [0x00, 0x61, 0x62, 0xFF]  # \x00, a, b, \xff
KEYS = st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=3).map(bytes)
PREFIXES = st.lists(st.sampled_from(ALPHABET), min_size=0, max_size=2).map(bytes)
VALUES = st.binary(max_size=4)
REQUEST_IDS = st.sampled_from(["", "", "", "r1", "r2", "r3", "r4", "r5"])
TIMES = st.integers(min_value=-5, max_value=50)
EXPECTED = st.integers(min_value=0, max_value=15)
CLUSTER_IDS = st.sampled_from(["c1", "c2", ""])  # "": refused, changes nothing
NODE_IDS = st.lists(st.sampled_from(["n1", "n2", "n3"]), max_size=3, unique=True)

OVERSIZED_KEY = b"k" * (limits.MAX_KEY_BYTES + 1)
OVERSIZED_VALUE = b"v" * (limits.MAX_VALUE_BYTES + 1)


def put(
    key: bytes,
    value: bytes = b"",
    *,
    rid: str = "",
    expected: int | None = None,
    prev_kv: bool = False,
    time_ms: int = 0,
) -> bytes:
    req = kv_pb2.PutRequest(key=key, value=value, prev_kv=prev_kv, request_id=rid)
    if expected is not None:
        req.expected_mod_revision = expected
    return raft_pb2.Command(request_id=rid, time_ms=time_ms, put=req).SerializeToString()


def delete(
    key: bytes,
    *,
    prefix: bool = False,
    rid: str = "",
    expected: int | None = None,
    prev_kv: bool = False,
    time_ms: int = 0,
) -> bytes:
    req = kv_pb2.DeleteRequest(key=key, prefix=prefix, prev_kv=prev_kv, request_id=rid)
    if expected is not None:
        req.expected_mod_revision = expected
    return raft_pb2.Command(request_id=rid, time_ms=time_ms, delete=req).SerializeToString()


def noop(*, rid: str = "", time_ms: int = 0) -> bytes:
    return raft_pb2.Command(
        request_id=rid, time_ms=time_ms, noop=raft_pb2.Noop()
    ).SerializeToString()


def bootstrap(cluster_id: str, node_ids: list[str], *, rid: str = "", time_ms: int = 0) -> bytes:
    boot = raft_pb2.Bootstrap(cluster_id=cluster_id, node_ids=node_ids)
    return raft_pb2.Command(request_id=rid, time_ms=time_ms, bootstrap=boot).SerializeToString()


def oversized(what: str) -> bytes:
    """Built here, not in a strategy: Hypothesis warns about megabyte reprs (an error here)."""
    if what == "put-key":
        return put(OVERSIZED_KEY, b"v", rid="big")
    if what == "delete-key":
        return delete(OVERSIZED_KEY)
    if what == "prefix-key":
        return delete(OVERSIZED_KEY, prefix=True)
    return put(b"a", OVERSIZED_VALUE)


puts = st.builds(
    put,
    KEYS,
    VALUES,
    rid=REQUEST_IDS,
    expected=st.none() | EXPECTED,
    prev_kv=st.booleans(),
    time_ms=TIMES,
)
cas_puts = st.builds(
    put, KEYS, VALUES, rid=REQUEST_IDS, expected=EXPECTED, prev_kv=st.booleans(), time_ms=TIMES
)
deletes = st.builds(
    delete,
    KEYS,
    rid=REQUEST_IDS,
    expected=st.none() | EXPECTED,
    prev_kv=st.booleans(),
    time_ms=TIMES,
)
prefix_deletes = st.builds(
    delete, PREFIXES, prefix=st.just(True), rid=REQUEST_IDS, prev_kv=st.booleans(), time_ms=TIMES
)
noops = st.builds(noop, rid=REQUEST_IDS, time_ms=TIMES)
bootstraps = st.builds(bootstrap, CLUSTER_IDS, NODE_IDS, rid=REQUEST_IDS, time_ms=TIMES)
invalid = st.one_of(
    st.builds(put, st.just(b""), VALUES, rid=REQUEST_IDS),  # empty key
    st.builds(delete, st.just(b""), rid=REQUEST_IDS),  # empty key, not a prefix
    st.builds(oversized, st.sampled_from(["put-key", "delete-key", "prefix-key", "put-value"])),
    st.builds(delete, PREFIXES, prefix=st.just(True), expected=EXPECTED, rid=REQUEST_IDS),
    st.builds(  # a Command with no op: what a newer node's command looks like to us
        lambda rid: raft_pb2.Command(request_id=rid).SerializeToString(), REQUEST_IDS
    ),
    st.binary(max_size=24),  # garbage: mostly undecodable, sometimes a valid Command
)
COMMANDS = st.one_of(puts, puts, cas_puts, deletes, prefix_deletes, noops, bootstraps, invalid)
SEQUENCES = st.lists(COMMANDS, max_size=40)

PROPERTY = settings(max_examples=150, deadline=None)


def everything(sm: StateMachine) -> list[kv_pb2.KeyValue]:
    kvs, count = sm.range(b"", True, 0)
    assert count == len(kvs)
    return kvs


def apply_all(sm: StateMachine, cmds: list[bytes]) -> list[raft_pb2.CommandResult]:
    return [clone(sm.apply(c)) for c in cmds]


def request_id_of(data: bytes) -> str | None:
    try:
        return raft_pb2.Command.FromString(data).request_id
    except Exception:
        return None


def clone(result: raft_pb2.CommandResult) -> raft_pb2.CommandResult:
    """A copy, so that later mutations by a test cannot blur what was answered."""
    out = raft_pb2.CommandResult()
    out.CopyFrom(result)
    return out


# -- replicas agree ----------------------------------------------------------------------


@PROPERTY
@given(SEQUENCES)
def test_replicas_applying_the_same_commands_agree(cmds: list[bytes]) -> None:
    a, b = StateMachine(), StateMachine()
    for cmd in cmds:
        assert a.apply(cmd) == b.apply(cmd)
        assert a.revision == b.revision
    assert a.snapshot() == b.snapshot()
    assert everything(a) == everything(b)


@PROPERTY
@given(SEQUENCES, SEQUENCES)
def test_a_replica_caught_up_by_snapshot_agrees(before: list[bytes], after: list[bytes]) -> None:
    """What Raft does to a lagging follower: install a snapshot, then apply the rest of the log."""
    leader, follower = StateMachine(), StateMachine()
    apply_all(leader, before)
    follower.restore(leader.snapshot())
    assert apply_all(leader, after) == apply_all(follower, after)
    assert leader.snapshot() == follower.snapshot()


# -- snapshot/restore is the identity -----------------------------------------------------


@PROPERTY
@given(SEQUENCES, SEQUENCES, PREFIXES, st.integers(min_value=0, max_value=5))
def test_snapshot_then_restore_is_the_identity(
    before: list[bytes], after: list[bytes], prefix: bytes, limit: int
) -> None:
    original = StateMachine()
    apply_all(original, before)
    snap = original.snapshot()
    restored = StateMachine()
    restored.restore(snap)
    assert restored.snapshot() == snap
    assert restored.revision == original.revision
    assert restored.cluster_id == original.cluster_id
    assert restored.node_ids == original.node_ids
    assert restored.last_time_ms == original.last_time_ms
    assert restored.range(prefix, True, limit) == original.range(prefix, True, limit)
    assert everything(restored) == everything(original)
    # Same future: the dedupe table came along, so retries behave the same way too.
    assert apply_all(restored, after) == apply_all(original, after)
    assert restored.snapshot() == original.snapshot()


@PROPERTY
@given(SEQUENCES, SEQUENCES)
def test_restore_replaces_everything(theirs: list[bytes], ours: list[bytes]) -> None:
    """restore() is not a merge: whatever the machine held before is gone."""
    source, target, fresh = StateMachine(), StateMachine(), StateMachine()
    apply_all(source, theirs)
    apply_all(target, ours)
    target.restore(source.snapshot())
    fresh.restore(source.snapshot())
    assert target.snapshot() == fresh.snapshot() == source.snapshot()


# -- a retried request applies once ---------------------------------------------------------


retryable = st.one_of(puts, cas_puts, deletes, prefix_deletes, noops, bootstraps)


@PROPERTY
@given(
    SEQUENCES,
    retryable,
    st.text(min_size=1, max_size=limits.MAX_REQUEST_ID_CHARS),
    SEQUENCES,
    st.integers(min_value=0, max_value=60),
)
def test_a_retried_request_id_applies_once(
    before: list[bytes], first: bytes, rid: str, between: list[bytes], retry_time: int
) -> None:
    cmd = raft_pb2.Command.FromString(first)
    cmd.request_id = rid
    data = cmd.SerializeToString()
    sm = StateMachine()
    apply_all(sm, before)
    original = clone(sm.apply(data))

    # At once: nothing changes, the first answer comes back.
    snap = sm.snapshot()
    assert sm.apply(data) == original
    assert sm.snapshot() == snap

    # Later (still within the dedupe window, whatever happened in between): same.
    apply_all(sm, [c for c in between if request_id_of(c) != rid])
    snap, revision = sm.snapshot(), sm.revision
    retry = raft_pb2.Command.FromString(data)
    retry.time_ms = retry_time  # a retry is re-stamped by whichever leader gets it
    assert sm.apply(retry.SerializeToString()) == original
    assert sm.revision == revision
    assert sm.snapshot() == snap


def test_a_request_id_reused_for_another_command_is_refused() -> None:
    """The id is the idempotency key of one request: another request under it is refused."""
    sm = StateMachine()
    first = clone(sm.apply(put(b"a", b"1", rid="r")))
    for other in (put(b"b", b"2", rid="r"), delete(b"a", rid="r"), put(b"a", b"2", rid="r")):
        res = sm.apply(other)
        assert res.error_reason == "invalid_argument"
        assert "already used for a different request" in res.error_message
        assert res.revision == 1
    assert sm.apply(put(b"a", b"1", rid="r")) == first  # the same request: its first answer
    assert [kv.key for kv in everything(sm)] == [b"a"]
    assert sm.revision == 1


def test_a_miss_is_remembered_too() -> None:
    """A retried compare-and-set gets its first answer, even if it would now succeed."""
    sm = StateMachine()
    first = clone(sm.apply(put(b"k", b"v", rid="r", expected=2)))
    assert first.put.succeeded is False
    sm.apply(put(b"k", b"x"))
    sm.apply(put(b"k", b"y"))  # k's mod_revision is now 2
    assert sm.apply(put(b"k", b"v", rid="r", expected=2)) == first
    assert sm.kv.get(b"k") is not None
    assert sm.kv.get(b"k").value == b"y"  # type: ignore[union-attr]


def test_commands_without_request_id_are_never_deduplicated() -> None:
    sm = StateMachine()
    sm.apply(put(b"k", b"v"))
    sm.apply(put(b"k", b"v"))
    assert sm.revision == 2
    assert sm.kv.get(b"k").version == 2  # type: ignore[union-attr]


def test_dedupe_window_evicts_the_oldest_request_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "DEDUPE_ENTRIES", 3)
    sm = StateMachine()
    for i in range(4):  # r0 falls out of the window
        sm.apply(put(b"k", b"%d" % i, rid=f"r{i}"))
    assert sm.revision == 4
    assert sm.apply(put(b"k", b"1", rid="r1")).revision == 2  # still remembered
    assert sm.revision == 4
    assert sm.apply(put(b"k", b"0", rid="r0")).revision == 5  # forgotten: applies again
    assert sm.revision == 5


def test_dedupe_window_order_survives_a_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restored replica must evict the same ids as the one it was copied from."""
    monkeypatch.setattr(limits, "DEDUPE_ENTRIES", 3)
    a = StateMachine()
    for i in range(3):
        a.apply(put(b"k", b"%d" % i, rid=f"r{i}"))
    b = StateMachine()
    b.restore(a.snapshot())
    tail = [put(b"x", rid="r9"), put(b"k", rid="r0"), put(b"k", rid="r2")]
    assert apply_all(a, tail) == apply_all(b, tail)
    assert a.snapshot() == b.snapshot()


def test_request_ids_longer_than_the_limit_are_refused() -> None:
    """The server refuses such ids before they reach the log (``NodeContext.write``); the
    machine refuses them too (applied but not remembered, every retry would reapply)."""
    rid = "x" * (limits.MAX_REQUEST_ID_CHARS + 1)
    sm = StateMachine()
    for _ in range(2):
        assert sm.apply(put(b"k", rid=rid)).error_reason == "invalid_argument"
    assert sm.revision == 0
    assert list(decode_snapshot(sm.snapshot()).dedupe) == []


def test_an_error_is_remembered_too() -> None:
    sm = StateMachine()
    first = clone(sm.apply(put(b"", b"v", rid="r")))
    assert first.error_reason == "invalid_argument"
    assert sm.apply(put(b"", b"v", rid="r")) == first
    assert sm.revision == 0


def scribble_on(result: raft_pb2.CommandResult) -> None:
    """What the servicers do to a result (KVService.Put: resp = result.put; resp.header...),
    and more: every part a caller could reach."""
    result.revision += 1000
    result.error_message += " (seen)"
    if result.HasField("put"):
        result.put.header.node_id = "n1"
        result.put.header.revision = 99
        result.put.kv.value += b"!"
    if result.HasField("delete"):
        result.delete.header.node_id = "n1"
        result.delete.deleted += 7
        result.delete.prev_kvs.add(key=b"ghost")


def test_mutating_a_returned_result_does_not_change_the_machine() -> None:
    a, b = StateMachine(), StateMachine()
    cmd = put(b"k", b"v", rid="r1")
    result = a.apply(cmd)
    b.apply(cmd)
    scribble_on(result)
    assert a.snapshot() == b.snapshot()
    retried = a.apply(cmd)  # answered from the dedupe table: a copy again
    assert retried == b.apply(cmd)
    scribble_on(retried)
    assert a.snapshot() == b.snapshot()
    assert a.apply(cmd) == b.apply(cmd)
    assert a.kv.get(b"k") == b.kv.get(b"k")


@PROPERTY
@given(SEQUENCES)
def test_no_result_shares_state_with_the_machine(cmds: list[bytes]) -> None:
    """Scribbling on every result leaves the replica identical to an untouched one."""
    a, b = StateMachine(), StateMachine()
    for cmd in cmds:
        got, want = a.apply(cmd), b.apply(cmd)
        assert got == want
        scribble_on(got)
        assert a.snapshot() == b.snapshot()
    assert everything(a) == everything(b)


# -- apply never raises; revision moves by at most one -------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_apply_never_raises_on_any_bytes(blobs: list[bytes]) -> None:
    sm = StateMachine()
    for blob in blobs:
        before = sm.revision
        result = sm.apply(blob)
        assert isinstance(result, raft_pb2.CommandResult)
        assert sm.revision in (before, before + 1)
        if result.error_reason:
            assert result.error_message.startswith("coord: ")
            assert sm.revision == before


@PROPERTY
@given(SEQUENCES)
def test_revision_never_decreases_and_moves_by_at_most_one(cmds: list[bytes]) -> None:
    sm = StateMachine()
    for cmd in cmds:
        before = sm.revision
        result = sm.apply(cmd)
        assert sm.revision - before in (0, 1)
        if sm.revision == before + 1:
            assert not result.error_reason


def test_every_result_carries_the_current_revision() -> None:
    sm = StateMachine()
    sm.apply(put(b"k", b"v"))
    result = sm.apply(b"\xff\xff")
    assert result.error_reason == "invalid_argument"
    assert result.revision == sm.revision == 1


def test_bootstrap_without_cluster_id_is_rejected() -> None:
    sm = StateMachine()
    snap = sm.snapshot()
    result = sm.apply(bootstrap("", ["n1"]))
    assert result.error_reason == "invalid_argument"
    assert "cluster id" in result.error_message
    assert result.revision == sm.revision == 0
    assert sm.snapshot() == snap
    sm.apply(bootstrap("", ["n2"]))
    assert sm.revision == 0
    assert (sm.cluster_id, sm.node_ids) == ("", [])
    sm.apply(bootstrap("c1", ["n1"]))  # a real bootstrap still applies, once
    assert (sm.cluster_id, sm.node_ids, sm.revision) == ("c1", ["n1"], 1)


def test_bootstrap_without_cluster_id_is_rejected_after_a_bootstrap_too() -> None:
    sm = StateMachine()
    sm.apply(bootstrap("c1", ["n1"]))
    snap = sm.snapshot()
    result = sm.apply(bootstrap("", ["n2"]))
    assert result.error_reason == "invalid_argument"
    assert result.revision == sm.revision == 1
    assert sm.snapshot() == snap


def test_a_rejected_bootstrap_is_remembered_under_its_request_id() -> None:
    sm = StateMachine()
    first = clone(sm.apply(bootstrap("", ["n1"], rid="b")))
    assert first.error_reason == "invalid_argument"
    assert sm.apply(bootstrap("", ["n1"], rid="b")) == first  # its retry: the first answer
    other = sm.apply(bootstrap("c1", ["n1"], rid="b"))  # another request under the id
    assert "already used for a different request" in other.error_message
    assert (sm.cluster_id, sm.revision) == ("", 0)


# -- focused semantics ------------------------------------------------------------------------


def test_bootstrap_fixes_the_cluster_id_once() -> None:
    sm = StateMachine()
    sm.apply(bootstrap("c1", ["n3", "n1", "n2"]))
    assert (sm.cluster_id, sm.node_ids, sm.revision) == ("c1", ["n1", "n2", "n3"], 1)
    sm.apply(bootstrap("c2", ["x"]))
    assert (sm.cluster_id, sm.node_ids, sm.revision) == ("c1", ["n1", "n2", "n3"], 1)


def test_noop_changes_nothing_but_time() -> None:
    sm = StateMachine()
    sm.apply(put(b"k", b"v"))
    result = sm.apply(noop(time_ms=1234))
    assert not result.error_reason
    assert result.revision == sm.revision == 1
    assert sm.last_time_ms == 1234
    sm.apply(noop(time_ms=10))  # time is clamped to be non-decreasing
    assert sm.last_time_ms == 1234


def test_put_records_create_and_mod_revision_and_version() -> None:
    sm = StateMachine()
    sm.apply(put(b"k", b"1"))
    sm.apply(put(b"j", b"x"))
    result = sm.apply(put(b"k", b"2", prev_kv=True))
    assert result.put.succeeded
    assert result.put.kv == kv_pb2.KeyValue(
        key=b"k", value=b"2", create_revision=1, mod_revision=3, version=2
    )
    assert result.put.prev_kv.value == b"1"
    sm.apply(delete(b"k"))
    again = sm.apply(put(b"k", b"3"))
    assert again.put.kv.create_revision == again.put.kv.mod_revision == 5
    assert again.put.kv.version == 1


@pytest.mark.parametrize(
    ("cmd", "words"),
    [
        (put(b"", b"v"), "key is empty"),
        (put(OVERSIZED_KEY, b"v"), "limit is 4096"),
        (put(b"k", OVERSIZED_VALUE), "limit is 1048576"),
        (delete(b""), "key is empty"),
        (delete(b"a", prefix=True, expected=0), "needs a single key"),
        (raft_pb2.Command().SerializeToString(), "unknown command"),
        (b"\x0a\x05ab", "undecodable"),
    ],
)
def test_invalid_commands_are_answered_with_invalid_argument(cmd: bytes, words: str) -> None:
    sm = StateMachine()
    sm.apply(put(b"a", b"v"))
    snap = sm.snapshot()
    result = sm.apply(cmd)
    assert result.error_reason == "invalid_argument"
    assert result.error_message.startswith("coord: ")
    assert words in result.error_message
    assert sm.snapshot() == snap


def test_limits_are_inclusive() -> None:
    sm = StateMachine()
    key = b"k" * limits.MAX_KEY_BYTES
    assert sm.apply(put(key, b"v" * limits.MAX_VALUE_BYTES)).put.succeeded
    assert sm.apply(delete(key)).delete.deleted == 1


def test_prefix_delete_handles_ff_and_empty_prefixes() -> None:
    sm = StateMachine()
    for k in (b"a", b"a\xff", b"a\xff\xff", b"b", b"\xff", b"\xff\x00"):
        sm.apply(put(k))
    result = sm.apply(delete(b"a\xff", prefix=True, prev_kv=True))
    assert result.delete.deleted == 2
    assert [kv.key for kv in result.delete.prev_kvs] == [b"a\xff", b"a\xff\xff"]
    assert sm.apply(delete(b"\xff", prefix=True)).delete.deleted == 2
    assert [kv.key for kv in everything(sm)] == [b"a", b"b"]
    revision = sm.revision
    assert sm.apply(delete(b"", prefix=True)).delete.deleted == 2
    assert sm.revision == revision + 1  # one revision for the whole prefix
    assert sm.apply(delete(b"", prefix=True)).delete.deleted == 0
    assert sm.revision == revision + 1  # deleting nothing changes nothing


def test_range_limit_and_count() -> None:
    sm = StateMachine()
    for k in (b"a1", b"a2", b"a3", b"b1"):
        sm.apply(put(k))
    kvs, count = sm.range(b"a", True, 2)
    assert ([kv.key for kv in kvs], count) == ([b"a1", b"a2"], 3)
    kvs, count = sm.range(b"a2", False, 0)
    assert ([kv.key for kv in kvs], count) == ([b"a2"], 1)
    assert sm.range(b"zz", False, 0) == ([], 0)


# -- compare-and-set ------------------------------------------------------------------------


@PROPERTY
@given(SEQUENCES, KEYS, VALUES, st.data())
def test_cas_put_succeeds_exactly_when_the_mod_revision_matches(
    cmds: list[bytes], key: bytes, value: bytes, data: st.DataObject
) -> None:
    sm = StateMachine()
    apply_all(sm, cmds)
    prev = sm.kv.get(key)
    current = prev.mod_revision if prev is not None else 0
    expected = data.draw(st.sampled_from([0, current, sm.revision, sm.revision + 1]) | EXPECTED)
    snap, revision = sm.snapshot(), sm.revision
    result = sm.apply(put(key, value, expected=expected))
    if expected == current:
        assert result.put.succeeded
        assert sm.revision == revision + 1
        assert result.put.kv.value == value
        assert result.put.kv.mod_revision == sm.revision
    else:
        assert result.put.succeeded is False
        assert not result.error_reason  # a miss is an answer, not an error
        assert sm.revision == revision
        assert sm.snapshot() == snap
        if prev is None:
            assert not result.put.HasField("kv")
        else:
            assert result.put.kv == prev  # the key as it stands now


@PROPERTY
@given(SEQUENCES, KEYS, st.data())
def test_cas_delete_succeeds_exactly_when_the_mod_revision_matches(
    cmds: list[bytes], key: bytes, data: st.DataObject
) -> None:
    sm = StateMachine()
    apply_all(sm, cmds)
    prev = sm.kv.get(key)
    current = prev.mod_revision if prev is not None else 0
    expected = data.draw(st.sampled_from([0, current, sm.revision + 1]) | EXPECTED)
    snap, revision = sm.snapshot(), sm.revision
    result = sm.apply(delete(key, expected=expected))
    assert not result.error_reason
    assert result.delete.succeeded == (expected == current)
    if expected == current and prev is not None:
        assert result.delete.deleted == 1
        assert sm.revision == revision + 1
        assert sm.kv.get(key) is None
    else:
        assert result.delete.deleted == 0
        assert sm.revision == revision
        assert sm.snapshot() == snap


def test_expected_zero_means_absent() -> None:
    sm = StateMachine()
    assert sm.apply(put(b"k", b"1", expected=0)).put.succeeded  # create if absent
    miss = sm.apply(put(b"k", b"2", expected=0))
    assert miss.put.succeeded is False
    assert miss.put.kv.value == b"1"
    assert sm.apply(delete(b"nope", expected=0)).delete.succeeded  # absent: matches 0
    assert sm.revision == 1
    assert sm.apply(delete(b"k", expected=0)).delete.succeeded is False
    assert sm.apply(delete(b"k", expected=1)).delete.deleted == 1


# -- the model ------------------------------------------------------------------------------


def _invalid(revision: int) -> raft_pb2.CommandResult:
    return raft_pb2.CommandResult(error_reason="invalid_argument", revision=revision)


class Model:
    """The documented semantics over plain dicts: what ``StateMachine`` should answer."""

    def __init__(self) -> None:
        self.revision = 0
        self.last_time_ms = 0
        self.cluster_id = ""
        self.node_ids: list[str] = []
        self.data: dict[bytes, kv_pb2.KeyValue] = {}
        # request id -> (first result, the operation it answered)
        self.dedupe: dict[str, tuple[raft_pb2.CommandResult, tuple[str, bytes]]] = {}

    def apply(self, data: bytes) -> raft_pb2.CommandResult:
        """The expected result, with an empty error_message."""
        try:
            cmd = raft_pb2.Command.FromString(data)
        except Exception:
            return _invalid(self.revision)  # undecodable: nothing changes, not even the time
        rid = cmd.request_id
        op = cmd.WhichOneof("op") or ""
        what = (op, getattr(cmd, op).SerializeToString(deterministic=True) if op else b"")
        if rid in self.dedupe:
            first, first_what = self.dedupe[rid]
            # the same request: its first answer; another request under the id: refused
            return first if first_what == what else _invalid(self.revision)
        self.last_time_ms = max(self.last_time_ms, cmd.time_ms)
        result = self._dispatch(cmd)
        result.revision = self.revision
        if rid and len(rid) <= limits.MAX_REQUEST_ID_CHARS:
            assert len(self.dedupe) < limits.DEDUPE_ENTRIES  # the model has no eviction
            self.dedupe[rid] = (result, what)
        return result

    def _dispatch(self, cmd: raft_pb2.Command) -> raft_pb2.CommandResult:
        op = cmd.WhichOneof("op")
        if op == "put":
            return self._put(cmd.put)
        if op == "delete":
            return self._delete(cmd.delete)
        if op == "bootstrap":
            if not cmd.bootstrap.cluster_id:
                return _invalid(self.revision)
            if not self.cluster_id:
                self.cluster_id = cmd.bootstrap.cluster_id
                self.node_ids = sorted(cmd.bootstrap.node_ids)
                self.revision += 1
            return raft_pb2.CommandResult()
        if op == "noop":
            return raft_pb2.CommandResult()
        return _invalid(self.revision)

    @staticmethod
    def _key_ok(key: bytes, allow_empty: bool = False) -> bool:
        return (allow_empty or len(key) > 0) and len(key) <= limits.MAX_KEY_BYTES

    def _mod(self, key: bytes) -> int:
        kv = self.data.get(key)
        return kv.mod_revision if kv is not None else 0

    def _put(self, req: kv_pb2.PutRequest) -> raft_pb2.CommandResult:
        if not self._key_ok(req.key) or len(req.value) > limits.MAX_VALUE_BYTES:
            return _invalid(self.revision)
        prev = self.data.get(req.key)
        if (
            req.HasField("expected_mod_revision")
            and self._mod(req.key) != req.expected_mod_revision
        ):
            miss = kv_pb2.PutResponse(succeeded=False)
            if prev is not None:
                miss.kv.CopyFrom(prev)
            return raft_pb2.CommandResult(put=miss)
        self.revision += 1
        kv = kv_pb2.KeyValue(
            key=req.key,
            value=req.value,
            create_revision=prev.create_revision if prev is not None else self.revision,
            mod_revision=self.revision,
            version=prev.version + 1 if prev is not None else 1,
        )
        self.data[req.key] = kv
        resp = kv_pb2.PutResponse(succeeded=True, kv=kv)
        if req.prev_kv and prev is not None:
            resp.prev_kv.CopyFrom(prev)
        return raft_pb2.CommandResult(put=resp)

    def _delete(self, req: kv_pb2.DeleteRequest) -> raft_pb2.CommandResult:
        if not self._key_ok(req.key, allow_empty=req.prefix):
            return _invalid(self.revision)
        conditional = req.HasField("expected_mod_revision")
        if req.prefix and conditional:
            return _invalid(self.revision)
        if conditional and self._mod(req.key) != req.expected_mod_revision:
            return raft_pb2.CommandResult(delete=kv_pb2.DeleteResponse(succeeded=False))
        if req.prefix:
            doomed = sorted(k for k in self.data if k.startswith(req.key))
        else:
            doomed = [req.key] if req.key in self.data else []
        removed = [self.data.pop(k) for k in doomed]
        if removed:
            self.revision += 1
        resp = kv_pb2.DeleteResponse(succeeded=True, deleted=len(removed))
        if req.prev_kv:
            resp.prev_kvs.extend(removed)
        return raft_pb2.CommandResult(delete=resp)


def comparable(result: raft_pb2.CommandResult) -> raft_pb2.CommandResult:
    """A copy without the free-text message (the model does not predict wording)."""
    out = clone(result)
    if out.error_reason:
        assert out.error_message.startswith("coord: ")
    out.error_message = ""
    return out


class ModelComparison(RuleBasedStateMachine):
    """SUT vs model, step by step; a twin replica and snapshot restarts along the way."""

    sent = Bundle("sent")

    def __init__(self) -> None:
        super().__init__()
        self.sut = StateMachine()
        self.twin = StateMachine()
        self.model = Model()

    def step(self, data: bytes) -> bytes:
        before = self.sut.revision
        got = self.sut.apply(data)
        assert self.twin.apply(data) == got
        assert comparable(got) == self.model.apply(data)
        assert self.sut.revision - before in (0, 1)
        scribble_on(got)  # the caller owns the result: the invariants must not notice
        return data

    # Commands.

    @rule(target=sent, cmd=puts)
    def put(self, cmd: bytes) -> bytes:
        return self.step(cmd)

    @rule(target=sent, key=KEYS, value=VALUES, rid=REQUEST_IDS, data=st.data())
    def cas_put(self, key: bytes, value: bytes, rid: str, data: st.DataObject) -> bytes:
        current = self.model._mod(key)
        expected = data.draw(st.sampled_from([0, current, current, self.model.revision]) | EXPECTED)
        return self.step(put(key, value, rid=rid, expected=expected, prev_kv=True))

    @rule(target=sent, key=KEYS, rid=REQUEST_IDS, prev_kv=st.booleans(), data=st.data())
    def cas_delete(self, key: bytes, rid: str, prev_kv: bool, data: st.DataObject) -> bytes:
        expected = data.draw(st.sampled_from([0, self.model._mod(key)]) | EXPECTED)
        return self.step(delete(key, rid=rid, expected=expected, prev_kv=prev_kv))

    @rule(target=sent, cmd=deletes)
    def delete(self, cmd: bytes) -> bytes:
        return self.step(cmd)

    @rule(target=sent, cmd=prefix_deletes)
    def delete_prefix(self, cmd: bytes) -> bytes:
        return self.step(cmd)

    @rule(target=sent, cmd=noops | bootstraps)
    def housekeeping(self, cmd: bytes) -> bytes:
        return self.step(cmd)

    @rule(target=sent, cmd=invalid)
    def bad_input(self, cmd: bytes) -> bytes:
        return self.step(cmd)

    @rule(blob=st.binary(max_size=32))
    def garbage(self, blob: bytes) -> None:
        self.step(blob)

    @rule(cmd=sent)
    def retry(self, cmd: bytes) -> None:
        """Re-apply an earlier entry: with a request id, the first answer; else a new one."""
        self.step(cmd)

    # Replicas coming and going.

    @rule()
    def restart_from_snapshot(self) -> None:
        snap = self.sut.snapshot()
        restarted = StateMachine()
        restarted.restore(snap)
        assert restarted.snapshot() == snap
        self.sut = restarted

    @precondition(lambda self: self.model.revision % 3 == 0)
    @rule()
    def twin_catches_up_by_snapshot(self) -> None:
        self.twin = StateMachine()
        self.twin.restore(self.sut.snapshot())

    # What must hold after every step.

    @invariant()
    def matches_the_model(self) -> None:
        assert self.sut.revision == self.model.revision
        assert self.sut.last_time_ms == self.model.last_time_ms
        assert self.sut.cluster_id == self.model.cluster_id
        assert self.sut.node_ids == self.model.node_ids
        assert everything(self.sut) == [self.model.data[k] for k in sorted(self.model.data)]

    @invariant()
    def twin_agrees(self) -> None:
        assert self.twin.snapshot() == self.sut.snapshot()


ModelComparison.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestModelComparison = ModelComparison.TestCase
