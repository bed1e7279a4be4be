"""Leader election on real 3- and 5-node clusters, seen through Status and through coordctl."""

from __future__ import annotations

import json

import pytest

from coord.testing import LocalCluster, wait_until
from coord.v1 import cluster_pb2

from .support import ClusterFactory, coordctl, describe, expect_never, node_client


def agreed_statuses(cluster: LocalCluster) -> list[cluster_pb2.StatusResponse] | None:
    """Every node's Status once all of them answer and name the same leader and term."""
    sts = cluster.statuses()
    if any(s is None or not s.leader_id for s in sts):
        return None
    if len({s.leader_id for s in sts}) != 1 or len({s.term for s in sts}) != 1:  # type: ignore[union-attr]
        return None
    return sts  # type: ignore[return-value]


def check_one_leader(cluster: LocalCluster) -> cluster_pb2.StatusResponse:
    """Wait for agreement, then check it: exactly one leader, every node names it. Returns it."""
    sts = wait_until(lambda: agreed_statuses(cluster), 20, "every node to name the same leader")
    leaders = [s for s in sts if s.role == cluster_pb2.ROLE_LEADER]
    assert len(leaders) == 1, f"{len(leaders)} nodes say they lead: {[s.node_id for s in leaders]}"
    (leader,) = leaders
    assert {s.leader_id for s in sts} == {leader.node_id}
    assert {s.term for s in sts} == {leader.term} and leader.term > 0
    assert sorted(s.node_id for s in sts) == sorted(n.node_id for n in cluster.nodes)
    assert len({s.header.cluster_id for s in sts}) == 1, "nodes disagree on the cluster id"
    assert all(s.has_quorum for s in sts)
    return leader


@pytest.fixture(scope="module")
def cluster3(module_cluster_factory: ClusterFactory) -> LocalCluster:
    c = module_cluster_factory(3)
    check_one_leader(c)
    return c


@pytest.mark.parametrize("n", [3, 5])
def test_exactly_one_leader_that_every_node_names(cluster_factory: ClusterFactory, n: int) -> None:
    cluster = cluster_factory(n)
    leader = check_one_leader(cluster)

    # A healthy cluster keeps its leader: no node campaigns while heartbeats flow.
    def changed() -> str | None:
        sts = cluster.statuses()
        bad = [
            f"{s.node_id}: leader={s.leader_id!r} term={s.term}"
            for s in sts
            if s is not None and (s.leader_id != leader.node_id or s.term != leader.term)
        ]
        return "; ".join(bad) or None

    expect_never(changed, 1.5, f"leader {leader.node_id} (term {leader.term}) changed")

    p = coordctl(cluster.endpoints, "-o", "json", "leader")
    assert p.returncode == 0, describe(p)
    out = json.loads(p.stdout)
    assert out["leader_id"] == leader.node_id
    assert out["api_address"] == cluster.nodes[cluster.leader_index() or 0].api
    assert out["header"]["term"] == leader.term


def test_coordctl_leader_agrees_with_status(cluster3: LocalCluster) -> None:
    leader = check_one_leader(cluster3)
    leader_api = next(n.api for n in cluster3.nodes if n.node_id == leader.node_id)

    p = coordctl(cluster3.endpoints, "leader")
    assert p.returncode == 0, describe(p)
    lines = p.stdout.strip().splitlines()
    assert lines[0].split() == ["LEADER", "API", "ADDRESS", "TERM"], describe(p)
    assert lines[1].split() == [leader.node_id, leader_api, str(leader.term)], describe(p)

    p = coordctl(cluster3.endpoints, "-o", "json", "leader")
    assert p.returncode == 0, describe(p)
    out = json.loads(p.stdout)
    assert (out["leader_id"], out["api_address"]) == (leader.node_id, leader_api)
    assert out["header"]["term"] == leader.term
    assert out["header"]["cluster_id"] == leader.header.cluster_id

    # Asking through a single follower gives the same answer.
    follower = next(n for n in cluster3.nodes if n.node_id != leader.node_id)
    p = coordctl([follower.api], "-o", "json", "leader")
    assert p.returncode == 0, describe(p)
    assert json.loads(p.stdout)["leader_id"] == leader.node_id


def test_coordctl_status_lists_every_node(cluster3: LocalCluster) -> None:
    leader = check_one_leader(cluster3)

    p = coordctl(cluster3.endpoints, "-o", "json", "status")
    assert p.returncode == 0, describe(p)
    rows = json.loads(p.stdout)
    assert [r["endpoint"] for r in rows] == cluster3.endpoints
    assert [r["node_id"] for r in rows] == [n.node_id for n in cluster3.nodes]
    assert [r["role"] for r in rows].count("leader") == 1
    assert {r["leader"] for r in rows} == {leader.node_id}
    assert {r["term"] for r in rows} == {leader.term}
    assert len({r["cluster_id"] for r in rows}) == 1
    for r in rows:
        assert r["applied_index"] <= r["commit_index"]
        assert r["has_quorum"] is True
        assert r["role"] == ("leader" if r["node_id"] == leader.node_id else "follower")

    p = coordctl(cluster3.endpoints, "status")
    assert p.returncode == 0, describe(p)
    header, *body = p.stdout.strip().splitlines()
    assert header.split()[:5] == ["ENDPOINT", "ID", "ROLE", "TERM", "LEADER"]
    assert len(body) == 3
    table = {cols[1]: cols for cols in (line.split() for line in body)}
    assert table[leader.node_id][2] == "leader"
    assert all(cols[4] == leader.node_id for cols in table.values())


def test_coordctl_nodes_lists_members(cluster3: LocalCluster) -> None:
    leader = check_one_leader(cluster3)

    p = coordctl(cluster3.endpoints, "-o", "json", "nodes")
    assert p.returncode == 0, describe(p)
    nodes = json.loads(p.stdout)
    assert [(n["id"], n["api_address"], n["raft_address"]) for n in nodes] == [
        (n.node_id, n.api, n.raft) for n in cluster3.nodes
    ]
    assert [n["id"] for n in nodes if n["leader"]] == [leader.node_id]
    assert all(n["connected"] for n in nodes), nodes

    p = coordctl(cluster3.endpoints, "nodes")
    assert p.returncode == 0, describe(p)
    header, *body = p.stdout.strip().splitlines()
    assert header.split() == ["ID", "API", "RAFT", "CONNECTED", "LEADER", "ROLE", "MATCH", "LAG"]
    assert [line.split()[0] for line in body] == [n.node_id for n in cluster3.nodes]
    starred = [line.split()[0] for line in body if "*" in line.split()]
    assert starred == [leader.node_id]


def test_coordctl_with_a_node_down(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(3)
    leader = check_one_leader(cluster)
    down = next(n for n in cluster.nodes if n.node_id != leader.node_id)
    cluster.kill(down.index)
    # The dead endpoint first: coordctl must move on to a live one.
    eps = [down.api, *(n.api for n in cluster.nodes if n is not down)]

    p = coordctl(eps, "-o", "json", "leader")
    assert p.returncode == 0, describe(p)
    assert json.loads(p.stdout)["leader_id"] == leader.node_id

    p = coordctl(eps, "-o", "json", "status")
    assert p.returncode == 0, describe(p)
    rows = {r["endpoint"]: r for r in json.loads(p.stdout)}
    assert "error" in rows[down.api] and "node_id" not in rows[down.api]
    assert {rows[ep]["leader"] for ep in eps[1:]} == {leader.node_id}

    p = coordctl(eps, "status")
    assert p.returncode == 0, describe(p)
    (row,) = [line for line in p.stdout.splitlines() if line.startswith(down.api)]
    assert "unreachable" in row.split()

    # The leader notices the dead link; `nodes` reports it.
    def leader_sees_down() -> bool:
        q = coordctl(cluster.endpoints, "-o", "json", "nodes")
        return q.returncode == 0 and not next(
            n["connected"] for n in json.loads(q.stdout) if n["id"] == down.node_id
        )

    wait_until(leader_sees_down, 20, f"`coordctl nodes` to show {down.node_id} disconnected", 0.2)


def test_staggered_bootstrap_of_five_nodes_elects_a_leader(cluster_factory: ClusterFactory) -> None:
    """A fresh cluster whose nodes start well apart (systemd units, slow hosts) must form.

    Two of five cannot elect; they wait, connected, for several election timeouts. The
    late three must still join as voters (a probe that took the early pair's campaign
    terms for "history" made them non-voters and the cluster never elected).
    """
    cluster = cluster_factory(5, start=False)
    cluster.start(0)
    cluster.start(1)

    def early_pair_waited() -> bool:
        sts = [cluster.status(i) for i in (0, 1)]
        if any(s is None or s.uptime_s < 2.0 for s in sts):
            return False
        with node_client(cluster, 0) as c:
            nodes = {n.id: n.connected for n in c.nodes().nodes}
        return nodes["n2"]

    wait_until(early_pair_waited, 20, "n1 and n2 connected for several election timeouts")
    for i in (2, 3, 4):
        cluster.start(i)
    cluster.wait_for_leader(timeout=15)
    check_one_leader(cluster)
