"""Raft log compaction: state survives restarts from the dump, and a node that fell
behind the compacted log catches up through a snapshot install."""

from __future__ import annotations

import os
import uuid

import grpc

from coord.testing import LocalCluster, wait_until
from coord.v1 import kv_pb2, kv_pb2_grpc

from .support import ClusterFactory, kill_all_at_once, local_kvs, status_of, wait_all_caught_up

COMPACT_EVERY = 100


def put_keys(cluster: LocalCluster, start: int, stop: int) -> dict[bytes, bytes]:
    out = {}
    with cluster.client(timeout_s=20.0) as c:
        for i in range(start, stop):
            k, v = f"c/{i:05d}".encode(), f"value-{i}".encode()
            assert c.put(k, v).succeeded
            out[k] = v
    return out


def check_node_has(cluster: LocalCluster, i: int, expected: dict[bytes, bytes]) -> None:
    kvs = local_kvs(cluster, i, b"c/")
    got = {k: kv.value for k, kv in kvs.items()}
    missing = sorted(set(expected) - set(got))
    assert not missing, f"{cluster.nodes[i].node_id} lacks {len(missing)} keys, e.g. {missing[:5]}"
    assert got == expected, f"{cluster.nodes[i].node_id} has wrong or extra keys"


def settle(cluster: LocalCluster) -> None:
    cluster.wait_for_leader(timeout=30)
    with cluster.client(timeout_s=20.0) as c:
        c.range("", prefix=True, keys_only=True)  # commits an entry of the new term
    wait_all_caught_up(cluster)


def test_compacted_log_restart_and_snapshot_install(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(3, extra_args=["--log-compaction-entries", str(COMPACT_EVERY)])
    cluster.wait_for_leader()
    expected = put_keys(cluster, 0, 500)
    # A request id applied before compaction: the dedupe table must survive in the dump.
    req = kv_pb2.PutRequest(key=b"c/dedupe", value=b"once", request_id=uuid.uuid4().hex)
    leader = cluster.wait_for_leader()
    with grpc.insecure_channel(cluster.nodes[leader].api) as ch:
        first = kv_pb2_grpc.KVStub(ch).Put(req, timeout=10)
    expected[b"c/dedupe"] = b"once"
    wait_all_caught_up(cluster)

    # Every node compacted: its log is far shorter than the 500+ entries written, and
    # the state lives in its dump.
    def all_compacted() -> bool:
        return all(
            (st := cluster.status(i)) is not None and st.raft_log_entries < 400 for i in range(3)
        )

    wait_until(all_compacted, 20, "every node to compact its log")
    for node in cluster.nodes:
        assert os.path.exists(os.path.join(node.data_dir, "raft.dump")), node.node_id

    kill_all_at_once(cluster)
    cluster.start()
    settle(cluster)
    for i in range(3):
        check_node_has(cluster, i, expected)
    leader = cluster.wait_for_leader()
    with grpc.insecure_channel(cluster.nodes[leader].api) as ch:
        again = kv_pb2_grpc.KVStub(ch).Put(req, timeout=10)
    assert again.kv == first.kv and again.header.revision == first.header.revision

    # A follower misses 300 writes: several compactions later the leader no longer has
    # the entries it needs, so it must send its snapshot.
    leader = cluster.wait_for_leader()
    behind = (leader + 1) % 3
    applied_before = status_of(cluster, behind).applied_index
    cluster.kill(behind)
    expected.update(put_keys(cluster, 500, 800))
    leader = cluster.wait_for_leader()

    def leader_compacted_past() -> bool:
        st = cluster.status(leader)
        return st is not None and st.commit_index - st.raft_log_entries > applied_before

    wait_until(leader_compacted_past, 20, "the leader to compact past the stopped node's index")

    log_start = len(cluster.log(behind))
    cluster.start(behind)
    wait_all_caught_up(cluster)
    check_node_has(cluster, behind, expected)
    states = [local_kvs(cluster, i) for i in range(3)]
    assert states[0] == states[1] == states[2]
    assert "cannot load the Raft snapshot" not in cluster.log(behind)[log_start:]

    # And it restarts from the snapshot it installed.
    cluster.kill(behind)
    cluster.start(behind)
    wait_all_caught_up(cluster)
    check_node_has(cluster, behind, expected)
