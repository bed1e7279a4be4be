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
