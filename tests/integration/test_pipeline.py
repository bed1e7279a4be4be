"""KV.Pipeline on a real cluster: many requests on one stream, each served as its unary
call would be, and the client library's use of it for concurrent requests.

- One message with several requests gets one result per tag: the responses a unary
  call would give, and each bad request its own INVALID_ARGUMENT while the others
  apply; a follower serves its requests too (writes through the leader).
- A request id applies once, whether it is retried on the stream or as a unary call.
- A message that does not decode ends the stream with INVALID_ARGUMENT.
- A Client shared by threads sends concurrent requests over the pipeline, and each
  write applies once through a leader kill -9 (every key's version is the count of its
  acknowledged puts).

A module-scoped 3-node cluster without fsync; the leader kill runs on its own cluster.
"""

from __future__ import annotations

import threading
import uuid

import grpc
import pytest

from coord.client import Client
from coord.client import txn as t
from coord.testing import LocalCluster, wait_until
from coord.v1 import kv_pb2, kv_pb2_grpc

from .support import ClusterFactory, run_threads


@pytest.fixture(scope="module")
def cluster(module_cluster_factory: ClusterFactory) -> LocalCluster:
    return module_cluster_factory(3, fsync=False)


def pipelined(endpoint: str, *ops: kv_pb2.PipelineOp) -> dict[int, kv_pb2.PipelineResult]:
    """Send ``ops`` in one message on a new stream; their results by tag."""
    with grpc.insecure_channel(endpoint) as ch:
        out: dict[int, kv_pb2.PipelineResult] = {}
        for response in kv_pb2_grpc.KVStub(ch).Pipeline(
            iter([kv_pb2.PipelineRequest(ops=ops)]), timeout=10
        ):
            for result in response.results:
                assert result.tag not in out, f"tag {result.tag} answered twice"
                out[result.tag] = result
    return out


def put_op(tag: int, key: bytes, value: bytes = b"v", request_id: str = "") -> kv_pb2.PipelineOp:
    return kv_pb2.PipelineOp(
        tag=tag, put=kv_pb2.PutRequest(key=key, value=value, request_id=request_id)
    )


def test_one_message_many_requests_each_answered_under_its_tag(cluster: LocalCluster) -> None:
    leader = cluster.endpoints[cluster.wait_for_leader()]
    cas = kv_pb2.TxnRequest(
        compares=[t.version("pipe/a") == 0], success=[t.as_op(t.put("pipe/a", "first"))]
    )
    got = pipelined(
        leader,
        put_op(1, b"pipe/b", b"2"),
        put_op(2, b"", b"x"),  # bad: empty key
        kv_pb2.PipelineOp(tag=3, txn=cas),
        kv_pb2.PipelineOp(tag=4),  # bad: no operation
        kv_pb2.PipelineOp(tag=5, range=kv_pb2.RangeRequest(key=b"pipe/", prefix=True)),
        kv_pb2.PipelineOp(tag=6, delete=kv_pb2.DeleteRequest(key=b"pipe/none")),
    )
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    assert got[1].put.succeeded and got[1].put.kv.value == b"2"
    assert (got[2].error.code, got[2].error.reason) == ("INVALID_ARGUMENT", "invalid_argument")
    assert "key is empty" in got[2].error.message
    assert got[3].txn.succeeded
    assert "carries no operation" in got[4].error.message
    assert got[6].delete.deleted == 0
    assert got[1].put.header.revision != got[3].txn.header.revision
    # The unary path sees what the pipeline wrote.
    with Client(cluster.endpoints) as c:
        assert c.get("pipe/a").value == b"first"
        assert c.get("pipe/b").value == b"2"


def test_a_follower_serves_pipelined_requests(cluster: LocalCluster) -> None:
    lead = cluster.wait_for_leader()
    follower = cluster.endpoints[(lead + 1) % len(cluster.endpoints)]
    got = pipelined(follower, put_op(1, b"pipe/f", b"via-follower"))
    assert got[1].put.succeeded
    read = pipelined(follower, kv_pb2.PipelineOp(tag=2, range=kv_pb2.RangeRequest(key=b"pipe/f")))
    assert [kv.value for kv in read[2].range.kvs] == [b"via-follower"]


def test_a_request_id_applies_once_on_the_stream_and_beside_it(cluster: LocalCluster) -> None:
    leader = cluster.endpoints[cluster.wait_for_leader()]
    rid = uuid.uuid4().hex
    first = pipelined(
        leader, put_op(1, b"pipe/once", b"1", rid), put_op(2, b"pipe/once", b"1", rid)
    )
    again = pipelined(leader, put_op(3, b"pipe/once", b"1", rid))
    with grpc.insecure_channel(leader) as ch:
        unary = kv_pb2_grpc.KVStub(ch).Put(
            kv_pb2.PutRequest(key=b"pipe/once", value=b"1", request_id=rid), timeout=10
        )
    revisions = {r.put.kv.mod_revision for r in (first[1], first[2], again[3])}
    assert revisions == {unary.kv.mod_revision}
    with Client(cluster.endpoints) as c:
        assert c.get("pipe/once").version == 1


def test_a_malformed_message_ends_the_stream_with_invalid_argument(cluster: LocalCluster) -> None:
    leader = cluster.endpoints[cluster.wait_for_leader()]
    with grpc.insecure_channel(leader) as ch:
        call = ch.stream_stream(
            "/coord.v1.KV/Pipeline",
            request_serializer=lambda b: b,
            response_deserializer=kv_pb2.PipelineResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as info:
            list(call(iter([b"\xff\xff\xff"]), timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed coord.v1.PipelineRequest" in (info.value.details() or "")


def test_a_shared_client_pipelines_concurrent_requests(cluster: LocalCluster) -> None:
    per_thread = 25
    with Client(cluster.endpoints) as c:

        def write(i: int) -> None:
            for n in range(per_thread):
                resp = c.put(f"pipe/t{i}", f"{n}")
                assert resp.kv.value == f"{n}".encode(), "an answer meant for another request"
                assert c.get(f"pipe/t{i}").value == f"{n}".encode()

        run_threads(12, write)
        assert c._pipes, "concurrent requests did not use the pipeline"
        for i in range(12):
            assert c.get(f"pipe/t{i}").version == per_thread
    with Client(cluster.endpoints, pipeline=False) as c:  # unary only: the same answers
        assert c.get("pipe/t0").version == per_thread
        assert not c._pipes


def test_each_pipelined_write_applies_once_through_a_leader_kill(
    cluster_factory: ClusterFactory,
) -> None:
    """Writers keep putting while the leader is killed -9: requests on the dead leader's
    stream fail with it and are retried elsewhere with their request ids, so each key's
    version is exactly the number of puts its writer saw acknowledged."""
    c = cluster_factory(3, fsync=False)
    c.wait_ready()
    acked = [0] * 8
    killed = threading.Event()
    with Client(c.endpoints, timeout_s=30, attempt_timeout_s=1.0) as client:

        def write(i: int) -> None:
            n = 0
            while n < 40 or not killed.is_set():
                assert n < 10_000, "the leader was never killed"
                client.put(f"kill/{i}", f"{n}")
                n += 1
                acked[i] = n

        def kill_when_busy() -> None:
            st = wait_until(lambda: c.status(c.wait_for_leader()), 30, "the leader's status")
            c.wait_applied(st.applied_index + 50, timeout=60)
            c.kill(c.wait_for_leader())
            killed.set()

        killer = threading.Thread(target=kill_when_busy)
        killer.start()
        run_threads(8, write)
        killer.join(timeout=60)
        assert killed.is_set()
        assert client._pipes, "concurrent requests did not use the pipeline"
        for i in range(8):
            assert client.get(f"kill/{i}").version == acked[i], f"writer {i}"


def test_large_requests_and_answers_are_split_across_messages(cluster: LocalCluster) -> None:
    """Concurrent 1 MiB puts, then concurrent reads of 2 MiB each: together far over the
    4 MiB message limit, which a batch must not exceed in either direction (each request
    alone is within it, as for a unary call)."""
    value = b"v" * (1024 * 1024 - 64)
    with Client(cluster.endpoints, timeout_s=60) as c:
        run_threads(32, lambda i: c.put(f"big/{i // 2}/{i % 2}", value))
        assert c._pipes, "concurrent requests did not use the pipeline"

        def read(i: int) -> None:
            resp = c.range(f"big/{i}/", prefix=True)
            assert [len(kv.value) for kv in resp.kvs] == [len(value)] * 2 and not resp.more

        run_threads(16, read)
        c.delete("big/", prefix=True)
