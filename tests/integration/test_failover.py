"""Failover: kill -9 and SIGSTOP of the leader, clients that had the old leader cached,
and the old leader catching up when it comes back."""

from __future__ import annotations

import pytest

from coord.testing import LocalCluster, wait_until
from coord.v1 import cluster_pb2

from .support import (
    ClusterFactory,
    local_kvs,
    node_client,
    status_of,
    wait_all_acknowledging,
    wait_all_caught_up,
    write_keys,
)


def node_id(cluster: LocalCluster, i: int) -> str:
    return cluster.nodes[i].node_id


def check_has(cluster: LocalCluster, i: int, expected: dict[bytes, bytes]) -> None:
    kvs = local_kvs(cluster, i)
    missing = sorted(k for k in expected if k not in kvs)
    assert not missing, f"{node_id(cluster, i)} lacks {len(missing)} keys, e.g. {missing[:5]}"
    wrong = {k: kvs[k].value for k, v in expected.items() if kvs[k].value != v}
    assert not wrong, f"{node_id(cluster, i)} has wrong values: {wrong}"


@pytest.fixture
def cluster(cluster_factory: ClusterFactory) -> LocalCluster:
    c = cluster_factory(3)
    c.wait_for_leader()
    wait_all_acknowledging(c)  # every test here kills or hangs a member
    return c


def test_kill9_leader_new_leader_and_cached_client_writes(cluster: LocalCluster) -> None:
    old = cluster.wait_for_leader()
    before = write_keys(cluster, "before", 10)
    term_before = status_of(cluster, old).term

    client = cluster.client(timeout_s=15.0)
    try:
        resp = client.put("warm", "1")
        # The client found the leader and wrote to it directly: it has it cached.
        assert resp.header.node_id == node_id(cluster, old)

        cluster.kill(old)
        new = cluster.wait_for_leader(exclude=old, timeout=15)
        assert new != old
        assert status_of(cluster, new).term > term_before

        # Nobody tells the client: its next write must find the new leader by itself.
        # (Any live node may answer: followers forward writes to the leader.)
        resp = client.put("after-failover", "1")
        assert resp.succeeded
        assert resp.header.node_id != node_id(cluster, old)
        assert resp.header.term > term_before
        got = client.get("after-failover")
        assert got is not None and got.value == b"1"
    finally:
        client.close()

    during = write_keys(cluster, "during", 30)

    cluster.start(old)
    index = wait_all_caught_up(cluster)
    st = status_of(cluster, old)
    assert st.applied_index >= index
    assert st.role == cluster_pb2.ROLE_FOLLOWER
    assert st.leader_id == node_id(cluster, cluster.wait_for_leader())
    check_has(cluster, old, {**before, **during, b"after-failover": b"1"})
    # Every node holds the same state.
    states = [local_kvs(cluster, i) for i in range(3)]
    assert states[0] == states[1] == states[2]


def test_kill9_of_a_follower_keeps_the_leader(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    wait_all_acknowledging(cluster)  # else the two left may not make a majority yet
    term = status_of(cluster, leader).term
    follower = (leader + 1) % 3
    cluster.kill(follower)
    written = write_keys(cluster, "f", 20)
    assert cluster.wait_for_leader() == leader
    assert status_of(cluster, leader).term == term, "losing a follower must not cause an election"

    cluster.start(follower)
    wait_all_caught_up(cluster)
    check_has(cluster, follower, written)
    assert cluster.wait_for_leader() == leader
    assert status_of(cluster, follower).term == term, "a restarted follower must not disrupt"


def test_sigstop_leader_then_sigcont(cluster: LocalCluster) -> None:
    old = cluster.wait_for_leader()
    wait_all_acknowledging(cluster)  # the two left must be able to elect one of them
    term_before = status_of(cluster, old).term
    client = cluster.client(timeout_s=20.0)
    try:
        assert client.put("pre-pause", "1").header.node_id == node_id(cluster, old)

        cluster.pause(old)  # hung, not dead: its sockets stay open
        new = cluster.wait_for_leader(exclude=old, timeout=20)
        assert new != old
        assert status_of(cluster, new).term > term_before

        # The cached leader hangs; the client must give up on it and find the new one.
        resp = client.put("during-pause", "1")
        assert resp.succeeded and resp.header.node_id != node_id(cluster, old)
        assert resp.header.term > term_before
        written = write_keys(cluster, "paused", 20)
    finally:
        client.close()

    cluster.resume(old)
    # Right away, before it has heard of the new term, the old leader must not answer a
    # linearizable read from its stale state.
    with node_client(cluster, old, timeout_s=15.0) as c:
        got = c.get("during-pause")
    assert got is not None and got.value == b"1", "stale linearizable read from the old leader"

    def old_stepped_down() -> bool:
        st = cluster.status(old)
        return (
            st is not None
            and st.role == cluster_pb2.ROLE_FOLLOWER
            and st.leader_id == node_id(cluster, new)
        )

    wait_until(
        old_stepped_down, 20, f"{node_id(cluster, old)} to step down and follow the new leader"
    )
    # Exactly one leader, the new one, and the old one converges on its state.
    assert cluster.wait_for_leader() == new
    wait_all_caught_up(cluster)
    check_has(cluster, old, {**written, b"pre-pause": b"1", b"during-pause": b"1"})
    states = [local_kvs(cluster, i) for i in range(3)]
    assert states[0] == states[1] == states[2]

    # The old leader answers writes again (forwarding to the leader).
    with node_client(cluster, old) as c:
        assert c.put("after-resume", "1").succeeded
