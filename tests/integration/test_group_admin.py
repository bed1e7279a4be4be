"""Pause, live policy edits and explain on a real cluster (issue 16, features 1, 3, 6).

Member processes with a 2 s TTL; the cluster is the shared one (its own group per test).
Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import json
import time

import pytest

from coord.cli.output import EXIT_USAGE
from coord.testing import LocalCluster, wait_until

from .members import Members, Watcher, get_group, holders
from .support import ClusterFactory, coordctl, describe
from .test_groups import TTL_S, new_group, wait_candidates


@pytest.fixture
def cluster(cluster_factory: ClusterFactory) -> LocalCluster:
    """A cluster of this module's own: a test kills its leader."""
    c = cluster_factory(3)
    c.wait_for_leader()
    return c


def test_pause_holds_through_a_master_kill_and_a_leader_kill_then_resume_fills(
    cluster: LocalCluster, members: Members
) -> None:
    g = "paused"
    new_group(cluster, g)
    m1 = members.start(g, "m1", priority=30, ttl_s=TTL_S)
    m1.elected()
    members.start(g, "m2", priority=20, ttl_s=TTL_S)
    wait_candidates(cluster, g, {"m2"})
    p = coordctl(cluster.endpoints, "group", "pause", g, "--reason", "test")
    assert p.returncode == 0, describe(p)
    watcher = Watcher(cluster.endpoints)
    leader = -1
    try:
        m1.kill()
        watcher.wait_for(
            lambda e: e.group == g and e.type == "failover_paused", TTL_S + 15, "failover_paused"
        )
        with cluster.client() as c:
            assert holders(c, g) == {}
        leader = cluster.wait_for_leader()
        cluster.kill(leader)
        cluster.wait_for_leader(exclude=leader, timeout=15)
        with cluster.client(timeout_s=15.0) as c:
            group = get_group(c, g)
            assert group.HasField("pause") and not group.holdings
            x = c.group(g).explain()
            assert x.paused and x.slots[0].next == "" and "paused" in x.slots[0].why
        p = coordctl(cluster.endpoints, "group", "resume", g)
        assert p.returncode == 0, describe(p)
        with cluster.client() as c:
            got = wait_until(lambda: holders(c, g).get(0), 15, "the resume to fill slot 0")
        assert got[0] == "m2"
    finally:
        watcher.stop()


def test_policy_edits_take_effect_and_explain_agrees(
    cluster: LocalCluster, members: Members
) -> None:
    g = "edited"
    new_group(cluster, g, switchover_timeout_ms=5000)
    m1 = members.start(g, "m1", priority=30, ttl_s=TTL_S)
    m1.elected()
    members.start(g, "m2", priority=20, ttl_s=TTL_S)
    wait_candidates(cluster, g, {"m2"})
    with cluster.client() as c:
        assert c.group(g).explain().slots[0].next == "m2"
        c.group(g).edit(slots=2)  # raising slots fills at once
        assert holders(c, g)[1][0] == "m2"
        c.group(g).edit(slots=1)  # the surplus master steps down (its library resigns)
        wait_until(lambda: 1 not in holders(c, g), 15, "slot 1's master to step down")
        assert holders(c, g)[0][0] == "m1"
    p = coordctl(cluster.endpoints, "member", "edit", g, "m2", "--priority", "50")
    assert p.returncode == 0, describe(p)
    p = coordctl(cluster.endpoints, "group", "explain", g, "-o", "json")
    assert p.returncode == 0, describe(p)
    x = json.loads(p.stdout)
    assert x["slots"][0]["next"] == "m2"
    p = coordctl(cluster.endpoints, "switchover", g)
    assert p.returncode == 0, describe(p)
    with cluster.client() as c:
        wait_until(lambda: holders(c, g).get(0, ("",))[0] == "m2", 15, "m2 to take over")


def test_bad_input_is_refused_and_changes_nothing(cluster: LocalCluster) -> None:
    g = "badedit"
    new_group(cluster, g)
    past = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 60))
    for args in (
        ("group", "pause", g, "--until", past),
        ("group", "edit", g, "--slots", "0"),
        ("group", "edit", g),
        ("group", "pause"),
    ):
        p = coordctl(cluster.endpoints, *args)
        assert p.returncode == EXIT_USAGE, describe(p)
    p = coordctl(cluster.endpoints, "group", "get", g, "-o", "json")
    assert "pause" not in json.loads(p.stdout)
