"""Hypothesis against the live gRPC API of a 3-node cluster: every method, streaming ones
included, gets random bytes as its body and random valid messages built from the proto
descriptors (odd unicode, extreme integers, NaN, negative TTLs, empty names, nested
messages, maps).

For every call: a status comes back before a deadline (unary calls never time out); a
body that does not decode is INVALID_ARGUMENT; a refused call leaves the revision as it
was (the cluster is otherwise quiet); no node dies; no call ends UNKNOWN (an exception
that escaped a servicer). After the run: one leader at the same term, every node applied
the same index, writes work, and no node logged a traceback or a failed apply.

The default run is bounded to well under a minute; ``-m slow`` runs the long version.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from coord.server.security.auth import RULES
from coord.state import limits
from coord.testing import LocalCluster
from coord.v1 import (
    availability_pb2,
    cluster_pb2,
    cluster_pb2_grpc,
    election_pb2,
    kv_pb2,
    maintenance_pb2,
)

from .support import ClusterFactory, status_of, wait_all_caught_up

METHODS: dict[str, MethodDescriptor] = {
    f"/{s.full_name}/{m.name}": m
    for module in (availability_pb2, cluster_pb2, election_pb2, kv_pb2, maintenance_pb2)
    for s in module.DESCRIPTOR.services_by_name.values()
    for m in s.methods
}
assert set(METHODS) == set(RULES), "every served method is fuzzed"

UNARY_DEADLINE_S = 10.0
# A valid stream may legitimately wait (a watch from now on): it is ended after this long.
STREAM_WAIT_S = 0.4
STREAM_ITEMS = 3  # read at most this many messages of a stream
FAST = settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
SLOW = settings(FAST, max_examples=150, derandomize=False)


@dataclass
class Target:
    cluster: LocalCluster
    channels: list[grpc.Channel]
    leader: int
    term: int
    log_sizes: list[int]

    def revision(self) -> int:
        st = cluster_pb2_grpc.ClusterStub(self.channels[self.leader]).Status(
            cluster_pb2.StatusRequest(), timeout=UNARY_DEADLINE_S
        )
        return int(st.revision)


@pytest.fixture(scope="module")
def target(module_cluster_factory: ClusterFactory) -> Iterator[Target]:
    c = module_cluster_factory(3, fsync=False)
    c.wait_for_leader(timeout=60)
    wait_all_caught_up(c)
    leader = c.wait_for_leader()
    chans = [grpc.insecure_channel(ep) for ep in c.endpoints]
    try:
        yield Target(c, chans, leader, status_of(c, leader).term, [len(c.log(i)) for i in range(3)])
    finally:
        for ch in chans:
            ch.close()


# -- strategies from descriptors -------------------------------------------------------

ODD_TEXT = st.sampled_from(
    [
        "", " ", "\x00", "a\x00b", "\u202e\u202d", "\ufeff", "e\u0301", "🦄" * 3, "\U0010ffff",
        "../../etc/passwd", "*", "web-*", "n1", "%s%n", "a" * (limits.MAX_NAME_CHARS + 1),
        "é" * 200, "\n\t\r", "  padded  ",
    ]
)  # fmt: skip
TEXT = st.one_of(
    ODD_TEXT,
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.text(st.characters(codec="utf-8"), min_size=100, max_size=300),
)
BYTES = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([0, limits.MAX_KEY_BYTES, limits.MAX_KEY_BYTES + 1]).map(lambda n: b"k" * n),
)

_INT_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}


def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = [x for x in (0, 1, -1, 2, 500, 999, 1000, 3600, 10**6, lo, hi, lo + 1, hi - 1)]
    return st.one_of(
        st.sampled_from([x for x in edges if lo <= x <= hi]),
        st.integers(max(lo, -1000), min(hi, 10**7)),
        st.integers(lo, hi),
    )


def scalar(field: FieldDescriptor) -> st.SearchStrategy[object]:
    cpp = field.cpp_type
    if cpp in _INT_RANGES:
        return _ints(*_INT_RANGES[cpp])
    if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if cpp == FieldDescriptor.CPPTYPE_FLOAT:
        return st.floats(width=32, allow_nan=True, allow_infinity=True)
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans()
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        assert field.enum_type is not None
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), _ints(-(2**31), 2**31 - 1))  # open enums
    if field.type == FieldDescriptor.TYPE_BYTES:
        return BYTES
    return TEXT


def message(desc: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Random valid messages of type ``desc``: each field set or not."""
    cls = message_factory.GetMessageClass(desc)
    setters: list[st.SearchStrategy[Callable[[Message], None]]] = []
    for field in desc.fields:
        setters.append(st.one_of(st.none(), _setter(field, depth)))

    def build(chosen: list[Callable[[Message], None] | None]) -> Message:
        msg = cls()
        for set_field in chosen:
            if set_field is not None:
                set_field(msg)
        return msg

    return st.tuples(*setters).map(lambda t: build(list(t)))


def _setter(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Callable[[Message], None]]:
    name = field.name
    sub = field.message_type
    if sub is not None and sub.GetOptions().map_entry:
        key, value = sub.fields_by_name["key"], sub.fields_by_name["value"]
        if value.message_type is not None:
            values: st.SearchStrategy[object] = message(value.message_type, depth + 1)
        else:
            values = scalar(value)
        pairs = st.dictionaries(scalar(key), values, max_size=3)

        def set_map(d: dict[object, object]) -> Callable[[Message], None]:
            def apply(m: Message) -> None:
                target = getattr(m, name)
                for k, v in d.items():
                    if isinstance(v, Message):
                        target[k].CopyFrom(v)
                    else:
                        target[k] = v

            return apply

        return pairs.map(set_map)
    if sub is not None:
        if depth >= 3:
            return st.just(lambda m: getattr(m, name).SetInParent())
        inner = message(sub, depth + 1)
        if field.is_repeated:
            return st.lists(inner, max_size=3).map(lambda xs: lambda m: getattr(m, name).extend(xs))
        return inner.map(lambda x: lambda m: getattr(m, name).CopyFrom(x))
    values_ = scalar(field)
    if field.is_repeated:
        return st.lists(values_, max_size=4).map(lambda xs: lambda m: getattr(m, name).extend(xs))
    return values_.map(lambda x: lambda m: setattr(m, name, x))


# -- what must not be sent: valid calls with legitimate effects that outlive an example ---

HOST_PORT = re.compile(r"^[^:]+:\d+$")
NODE_IDS = {"n1", "n2", "n3"}


def harmless(method: str, msg: Message) -> bool:
    """False for requests that would, legitimately, change the cluster's shape or schedule
    a later state change (the revision check needs a quiet cluster)."""
    if method == "/coord.v1.Cluster/TransferLeader":
        return msg.to not in NODE_IDS | {""}  # type: ignore[attr-defined]
    if method == "/coord.v1.Cluster/RemoveNode":
        return msg.id not in NODE_IDS  # type: ignore[attr-defined]
    if method == "/coord.v1.Cluster/AddNode":
        return not (
            HOST_PORT.match(msg.raft_address)  # type: ignore[attr-defined]
            or HOST_PORT.match(msg.api_address)  # type: ignore[attr-defined]
        )
    if method == "/coord.v1.Sessions/Open":
        # A session opened expires later and bumps the revision then, inside another
        # call's check if the run lasts (the long run: well past 20 minutes).
        ttl = msg.ttl_ms  # type: ignore[attr-defined]
        return not limits.MIN_SESSION_TTL_MS <= ttl <= limits.MAX_SESSION_TTL_MS
    return True


# -- calling ------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    ended_by_us: bool  # a stream we stopped reading (deadline or cancel)


def call(ch: grpc.Channel, method: str, bodies: list[bytes], wait_s: float) -> Outcome:
    """Send ``bodies`` (one, or several for a client stream) as raw bytes."""
    m = METHODS[method]
    raw = {"request_serializer": None, "response_deserializer": None}
    try:
        if m.client_streaming:
            stream: Any = ch.stream_stream(method, **raw)
            return _drain(stream(iter(bodies), timeout=wait_s))
        if m.server_streaming:
            stream = ch.unary_stream(method, **raw)
            return _drain(stream(bodies[0], timeout=wait_s))
        unary: Any = ch.unary_unary(method, **raw)
        unary(bodies[0], timeout=wait_s)
        return Outcome(grpc.StatusCode.OK, "", False)
    except grpc.RpcError as e:
        return Outcome(e.code(), e.details() or "", False)


def _drain(it: Any) -> Outcome:
    try:
        for n, _ in enumerate(it, 1):
            if n >= STREAM_ITEMS:
                it.cancel()
                return Outcome(grpc.StatusCode.CANCELLED, "", True)
        return Outcome(grpc.StatusCode.OK, "", False)
    except grpc.RpcError as e:
        code = e.code()
        return Outcome(code, e.details() or "", code == grpc.StatusCode.DEADLINE_EXCEEDED)


def check_call(
    t: Target, node: int, method: str, bodies: list[bytes], malformed: bool, must_fail: bool
) -> None:
    m = METHODS[method]
    streaming = m.client_streaming or m.server_streaming
    before = t.revision()
    t0 = time.monotonic()
    # A malformed stream must be refused at once: give it the unary deadline.
    wait = STREAM_WAIT_S if streaming and not must_fail else UNARY_DEADLINE_S
    out = call(t.channels[node], method, bodies, wait)
    took = time.monotonic() - t0
    where = f"{method} on {t.cluster.nodes[node].node_id}: {out.code.name} {out.details!r}"
    for n in t.cluster.nodes:
        assert n.running, f"{n.node_id} died after {where}"
    assert out.code != grpc.StatusCode.UNKNOWN, f"an exception escaped: {where}"
    if malformed:
        assert out.code == grpc.StatusCode.INVALID_ARGUMENT, where
        assert "malformed" in out.details, where
    if must_fail:
        assert out.code != grpc.StatusCode.OK, f"a malformed message was accepted: {where}"
    if not streaming:
        assert out.code != grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer in {took:.1f} s: {where}"
    if out.code != grpc.StatusCode.OK and not out.ended_by_us:
        assert t.revision() == before, f"a refused call changed the state: {where}"


def decodes(method: str, body: bytes) -> Message | None:
    cls = message_factory.GetMessageClass(METHODS[method].input_type)
    try:
        return cls.FromString(body)
    except (DecodeError, ValueError, RuntimeError):
        return None


# -- the tests ------------------------------------------------------------------------------

NODES = st.integers(0, 2)
ALL = sorted(METHODS)


def _bytes_case(t: Target, method: str, node: int, bodies: list[bytes]) -> None:
    parsed = [decodes(method, b) for b in bodies]
    if METHODS[method].client_streaming:
        # A client stream is refused at its first bad message.
        # A client stream is refused at its first bad message, or before it for another
        # reason (a keepalive sent to a follower): never accepted.
        first_bad = next((i for i, p in enumerate(parsed) if p is None), None)
        malformed = first_bad == 0
        must_fail = first_bad is not None
        considered = parsed if first_bad is None else parsed[:first_bad]
    else:
        malformed = must_fail = parsed[0] is None
        considered = parsed[:1]
    assume(all(p is None or harmless(method, p) for p in considered))
    check_call(t, node, method, bodies, malformed, must_fail)


BODIES = st.lists(
    st.one_of(
        st.binary(max_size=200),
        # A valid tag and a lying length: the commonest truncation.
        st.binary(min_size=1, max_size=40).map(lambda b: b"\x0a\xff\xff\xff\x07" + b),
    ),
    min_size=1,
    max_size=3,
)


@pytest.mark.parametrize("method", ALL)
@FAST
@given(node=NODES, bodies=BODIES)
def test_random_bytes(target: Target, method: str, node: int, bodies: list[bytes]) -> None:
    _bytes_case(target, method, node, bodies)


def _valid_case(t: Target, method: str, node: int, msgs: list[Message]) -> None:
    assume(all(harmless(method, m) for m in msgs))
    bodies = [m.SerializeToString() for m in msgs]
    check_call(t, node, method, bodies, malformed=False, must_fail=False)


def valid_messages(method: str) -> st.SearchStrategy[list[Message]]:
    return st.lists(message(METHODS[method].input_type), min_size=1, max_size=3)


@pytest.mark.parametrize("method", ALL)
def test_valid_messages(target: Target, method: str) -> None:
    @FAST
    @given(node=NODES, msgs=valid_messages(method))
    def run(node: int, msgs: list[Message]) -> None:
        _valid_case(target, method, node, msgs)

    run()


def _long_run(t: Target, method: str) -> None:
    @SLOW
    @given(node=NODES, bodies=BODIES)
    def raw(node: int, bodies: list[bytes]) -> None:
        _bytes_case(t, method, node, bodies)

    @SLOW
    @given(node=NODES, msgs=valid_messages(method))
    def valid(node: int, msgs: list[Message]) -> None:
        _valid_case(t, method, node, msgs)

    raw()
    valid()


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_long_fuzz(target: Target) -> None:
    for method in ALL:
        _long_run(target, method)


def test_cluster_is_healthy_after_the_fuzz(target: Target) -> None:
    """Runs last in this module: the fuzz above left the cluster as it found it."""
    c = target.cluster
    for node in c.nodes:
        assert node.running, f"{node.node_id} died"
    assert c.wait_for_leader(timeout=10) == target.leader, "the leader changed"
    for i in range(3):
        assert status_of(c, i).term == target.term, f"{c.nodes[i].node_id}: the term changed"
    index = wait_all_caught_up(c)
    with c.client() as client:
        assert client.put("after-fuzz", "ok").succeeded
    c.wait_applied(index + 1)
    for i in range(3):
        new = c.log(i)[target.log_sizes[i] :]
        assert "Traceback" not in new, new
        assert "apply failed" not in new, new
