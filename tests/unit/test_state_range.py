"""Range answers stay under the response size limit and say when there is more."""

from __future__ import annotations

from coord.state import limits
from coord.state.machine import StateMachine
from coord.v1 import kv_pb2, raft_pb2


def _put(sm: StateMachine, key: bytes, value: bytes) -> None:
    res = sm.apply(
        raft_pb2.Command(put=kv_pb2.PutRequest(key=key, value=value)).SerializeToString()
    )
    assert not res.error_reason


def test_a_range_stops_before_the_byte_limit_and_counts_everything() -> None:
    sm = StateMachine()
    for i in range(5):
        _put(sm, b"big/%d" % i, b"x" * limits.MAX_VALUE_BYTES)
    kvs, count = sm.range(b"big/", prefix=True, limit=0)
    assert count == 5
    assert 1 <= len(kvs) < 5
    assert sum(len(kv.key) + len(kv.value) for kv in kvs) <= limits.MAX_RANGE_BYTES
    assert [kv.key for kv in kvs] == [b"big/%d" % i for i in range(len(kvs))]


def test_keys_only_ranges_are_not_limited_by_value_sizes() -> None:
    sm = StateMachine()
    for i in range(5):
        _put(sm, b"big/%d" % i, b"x" * limits.MAX_VALUE_BYTES)
    kvs, count = sm.range(b"big/", prefix=True, limit=0, keys_only=True)
    assert (len(kvs), count) == (5, 5)


def test_a_single_oversized_first_record_is_still_returned() -> None:
    sm = StateMachine()
    _put(sm, b"k", b"x" * limits.MAX_VALUE_BYTES)
    kvs, count = sm.range(b"k", prefix=True, limit=0)
    assert (len(kvs), count) == (1, 1)


def test_the_stores_encoded_records_are_its_records_in_key_order() -> None:
    """Snapshots and the consistency check's digest frame ``KVStore.encoded()``: every
    live record, in key order, whatever the order of puts and deletes."""
    sm = StateMachine()
    for key in (b"m", b"a", b"z", b"b", b"a/1", b"y"):
        _put(sm, key, b"v-" + key)
    _put(sm, b"m", b"again")
    sm.apply(raft_pb2.Command(delete=kv_pb2.DeleteRequest(key=b"z")).SerializeToString())
    records = [kv_pb2.KeyValue.FromString(raw) for raw in sm.kv.encoded()]
    assert [(r.key, r.value) for r in records] == [
        (b"a", b"v-a"), (b"a/1", b"v-a/1"), (b"b", b"v-b"), (b"m", b"again"), (b"y", b"v-y")
    ]  # fmt: skip
    assert [r.key for r in sm.kv.items()] == [r.key for r in records]
