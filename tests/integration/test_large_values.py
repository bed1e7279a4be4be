"""Values near the size limits: replicated, durable, readable on every node."""

from __future__ import annotations

import random

from coord.client import Client
from coord.state import limits
from coord.testing import LocalCluster, wait_until

from .support import ClusterFactory, kill_all_at_once, status_of

KiB = 1024


def put_all(cluster: LocalCluster, values: dict[bytes, bytes]) -> int:
    """Put every value; return the revision of the last (the state every node must reach)."""
    with cluster.client(timeout_s=30.0) as c:
        revision = 0
        for k, v in values.items():
            resp = c.put(k, v)
            assert resp.succeeded
            revision = max(revision, resp.header.revision)
    return revision


def wait_every_node_reached(cluster: LocalCluster, revision: int, timeout: float = 30.0) -> None:
    """Wait until every running node's state holds ``revision``.

    Not ``wait_all_caught_up``: it waits for the leader's Status commit_index, which is
    the leader's view at the end of its last tick, and a put is acknowledged when it is
    applied, earlier in the tick: right after the last put it can name the entry
    before it, and a follower that applied only that far "is caught up" yet lacks the
    last value. Status.revision is read from each node's state machine itself.
    """
    nodes = [n.index for n in cluster.nodes if n.running]

    def reached() -> bool:
        sts = [cluster.status(i) for i in nodes]
        return all(st is not None and st.revision >= revision for st in sts)

    wait_until(reached, timeout, f"nodes {nodes} to reach revision {revision}")


def big_values(n: int, size: int, seed: int) -> dict[bytes, bytes]:
    rng = random.Random(seed)
    return {f"big/{i:03d}".encode(): rng.randbytes(size) for i in range(n)}


def check_every_node_has(cluster: LocalCluster, values: dict[bytes, bytes]) -> None:
    # One key per read: a range of several MiB of values would exceed the 4 MiB message limit.
    for node in cluster.nodes:
        with Client([node.api], timeout_s=10.0) as c:
            for k, v in values.items():
                got = c.get(k, serializable=True)
                assert got is not None, f"{node.node_id} lacks {k!r}"
                assert got.value == v, f"{node.node_id} has a different value for {k!r}"


def test_large_values_replicate_and_survive_kill9_of_all(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(3)
    cluster.wait_for_leader()
    values = big_values(8, 200 * KiB, seed=1)
    values[b"big/max"] = random.Random(2).randbytes(limits.MAX_VALUE_BYTES)
    revision = put_all(cluster, values)
    wait_every_node_reached(cluster, revision)
    check_every_node_has(cluster, values)

    kill_all_at_once(cluster)
    cluster.start()
    cluster.wait_for_leader(timeout=30)
    with cluster.client(timeout_s=20.0) as c:
        c.range("", prefix=True, keys_only=True)
    wait_every_node_reached(cluster, revision)
    check_every_node_has(cluster, values)


def test_large_values_replicate_without_errors(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(3)
    leader = cluster.wait_for_leader()
    term = status_of(cluster, leader).term
    values = big_values(10, 256 * KiB, seed=3)
    wait_every_node_reached(cluster, put_all(cluster, values))
    check_every_node_has(cluster, values)
    assert cluster.wait_for_leader() == leader and status_of(cluster, leader).term == term
    logs = cluster.logs()
    assert "Traceback" not in logs and "failed _onTick" not in logs, "errors in the Raft thread"
