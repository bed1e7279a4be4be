"""A write retried with the same request id applies once and answers the first result."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import grpc
import pytest

from coord.testing import LocalCluster
from coord.v1 import kv_pb2, kv_pb2_grpc

from .support import ClusterFactory, local_kvs, wait_all_caught_up


@pytest.fixture
def stubs(cluster: LocalCluster) -> Iterator[dict[str, kv_pb2_grpc.KVStub]]:
    """Raw KV stubs: "leader" and "follower" (the leader at fixture time)."""
    leader = cluster.wait_for_leader()
    follower = (leader + 1) % 3
    chs = {
        "leader": grpc.insecure_channel(cluster.nodes[leader].api),
        "follower": grpc.insecure_channel(cluster.nodes[follower].api),
    }
    try:
        yield {name: kv_pb2_grpc.KVStub(ch) for name, ch in chs.items()}
    finally:
        for ch in chs.values():
            ch.close()


def revision(stub: kv_pb2_grpc.KVStub) -> int:
    """The cluster's revision, by a linearizable read."""
    return stub.Range(kv_pb2.RangeRequest(key=b"-", prefix=True), timeout=10).header.revision


def without_volatile_header(resp: kv_pb2.PutResponse | kv_pb2.DeleteResponse) -> bytes:
    """The response minus the fields that describe the answering node and moment
    (node id, term, applied index); the result and its revision remain."""
    out = type(resp)()
    out.CopyFrom(resp)
    out.header.ClearField("node_id")
    out.header.ClearField("applied_index")
    out.header.ClearField("term")
    return out.SerializeToString(deterministic=True)


def rid() -> str:
    return "test-" + uuid.uuid4().hex


@pytest.mark.parametrize(("first", "second"), [("leader", "leader"), ("follower", "leader")])
def test_put_retried_with_same_request_id_applies_once(
    stubs: dict[str, kv_pb2_grpc.KVStub], first: str, second: str
) -> None:
    key = f"dedupe/{first}-{second}/{uuid.uuid4().hex[:8]}".encode()
    req = kv_pb2.PutRequest(key=key, value=b"once", request_id=rid(), prev_kv=True)
    rev0 = revision(stubs["leader"])

    r1 = stubs[first].Put(req, timeout=10)
    r2 = stubs[second].Put(req, timeout=10)

    assert r1.succeeded and r1.kv.mod_revision == rev0 + 1 and r1.kv.version == 1
    assert without_volatile_header(r2) == without_volatile_header(r1)
    assert r2.header.revision == r1.header.revision == rev0 + 1
    assert revision(stubs["leader"]) == rev0 + 1, "the retry applied a second time"
    got = stubs["leader"].Range(kv_pb2.RangeRequest(key=key), timeout=10).kvs
    assert [(kv.value, kv.version, kv.mod_revision) for kv in got] == [(b"once", 1, rev0 + 1)]


def test_retry_with_a_different_payload_is_refused(
    stubs: dict[str, kv_pb2_grpc.KVStub],
) -> None:
    """The request id names one request: a 'retry' that changed its payload is refused
    with INVALID_ARGUMENT and changes nothing (a silent first answer would hide a bug)."""
    key = f"dedupe/payload/{uuid.uuid4().hex[:8]}".encode()
    request_id = rid()
    stubs["leader"].Put(kv_pb2.PutRequest(key=key, value=b"v1", request_id=request_id), timeout=10)
    rev = revision(stubs["leader"])
    with pytest.raises(grpc.RpcError) as err:
        stubs["follower"].Put(
            kv_pb2.PutRequest(key=key, value=b"v2", request_id=request_id), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "already used for a different request" in (err.value.details() or "")
    assert revision(stubs["leader"]) == rev
    (kv,) = stubs["leader"].Range(kv_pb2.RangeRequest(key=key), timeout=10).kvs
    assert kv.value == b"v1"


def test_delete_retried_with_same_request_id_applies_once(
    stubs: dict[str, kv_pb2_grpc.KVStub],
) -> None:
    prefix = f"dedupe/del/{uuid.uuid4().hex[:8]}/".encode()
    for i in range(3):
        stubs["leader"].Put(kv_pb2.PutRequest(key=prefix + b"%d" % i, value=b"x"), timeout=10)
    rev0 = revision(stubs["leader"])
    req = kv_pb2.DeleteRequest(key=prefix, prefix=True, request_id=rid())

    d1 = stubs["follower"].Delete(req, timeout=10)
    # Meanwhile a new key appears under the prefix: a second application would delete it.
    stubs["leader"].Put(kv_pb2.PutRequest(key=prefix + b"new", value=b"y"), timeout=10)
    d2 = stubs["leader"].Delete(req, timeout=10)

    assert d1.succeeded and d1.deleted == 3 and d1.header.revision == rev0 + 1
    assert without_volatile_header(d2) == without_volatile_header(d1)
    assert revision(stubs["leader"]) == rev0 + 2  # the delete, then the new put
    kvs = stubs["leader"].Range(kv_pb2.RangeRequest(key=prefix, prefix=True), timeout=10).kvs
    assert [kv.key for kv in kvs] == [prefix + b"new"]


def test_same_request_sent_to_every_node_at_once_applies_once(cluster: LocalCluster) -> None:
    key = f"dedupe/concurrent/{uuid.uuid4().hex[:8]}".encode()
    req = kv_pb2.PutRequest(key=key, value=b"v", request_id=rid())
    chs = [grpc.insecure_channel(ep) for ep in cluster.endpoints]
    try:
        rev0 = revision(kv_pb2_grpc.KVStub(chs[0]))
        results: list[kv_pb2.PutResponse | BaseException] = [None] * 3  # type: ignore[list-item]
        go = threading.Barrier(3)

        def send(i: int) -> None:
            go.wait()
            try:
                results[i] = kv_pb2_grpc.KVStub(chs[i]).Put(req, timeout=10)
            except BaseException as e:
                results[i] = e

        threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        resps = [r for r in results if isinstance(r, kv_pb2.PutResponse)]
        assert len(resps) == 3, results
        assert len({without_volatile_header(r) for r in resps}) == 1
        assert revision(kv_pb2_grpc.KVStub(chs[0])) == rev0 + 1
        assert resps[0].kv.mod_revision == rev0 + 1
    finally:
        for ch in chs:
            ch.close()
    # Every replica applied it once.
    wait_all_caught_up(cluster)
    for node in cluster.nodes:
        kv = local_kvs(cluster, node.index, key)[key]
        assert (kv.version, kv.mod_revision) == (1, rev0 + 1), node.node_id


def test_retry_after_leader_kill9_applies_once(cluster_factory: ClusterFactory) -> None:
    """The classic ambiguous outcome: the leader dies after committing, the client retries
    on the new leader with the same request id."""
    cluster = cluster_factory(3)
    old = cluster.wait_for_leader()
    req = kv_pb2.PutRequest(key=b"dedupe/failover", value=b"v", request_id=rid())
    with grpc.insecure_channel(cluster.nodes[old].api) as ch:
        r1 = kv_pb2_grpc.KVStub(ch).Put(req, timeout=10)
    wait_all_caught_up(cluster)  # the entry is on every node, so the new leader has it
    cluster.kill(old)
    new = cluster.wait_for_leader(exclude=old, timeout=15)
    with grpc.insecure_channel(cluster.nodes[new].api) as ch:
        stub = kv_pb2_grpc.KVStub(ch)
        r2 = stub.Put(req, timeout=10)
        rev = revision(stub)
    assert without_volatile_header(r2) == without_volatile_header(r1)
    assert rev == r1.header.revision, "the retry on the new leader applied again"
    cluster.start(old)
    wait_all_caught_up(cluster)
    for node in cluster.nodes:
        kv = local_kvs(cluster, node.index, b"dedupe/")[b"dedupe/failover"]
        assert kv.version == 1, node.node_id


def test_request_id_reused_by_another_kind_of_request_is_rejected(
    stubs: dict[str, kv_pb2_grpc.KVStub],
) -> None:
    key = f"dedupe/kind/{uuid.uuid4().hex[:8]}".encode()
    request_id = rid()
    stubs["leader"].Put(kv_pb2.PutRequest(key=key, value=b"v", request_id=request_id), timeout=10)
    outcome: kv_pb2.DeleteResponse | grpc.RpcError
    try:
        outcome = stubs["leader"].Delete(
            kv_pb2.DeleteRequest(key=key, request_id=request_id), timeout=10
        )
    except grpc.RpcError as e:
        outcome = e
    assert isinstance(outcome, grpc.RpcError), (
        f"a Delete reusing a Put's request id was answered OK: {outcome}"
    )
    assert outcome.code() in (  # type: ignore[attr-defined]
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert outcome.details().startswith("coord: ")  # type: ignore[attr-defined]
    assert stubs["leader"].Range(kv_pb2.RangeRequest(key=key), timeout=10).count == 1
