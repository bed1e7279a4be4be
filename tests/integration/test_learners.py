"""Learners (issue 14, part 3): a member that receives the log but never votes or counts
towards a commit until promoted.

Real processes over TCP. What must hold: growing 3 → 5 with learners under a writer
load takes no election and loses no write; a learner killed while it catches up changes
nothing for the voters; learners are never a quorum; a lagging learner's promotion is
refused with how far behind it is; the role survives leader changes and restarts.
"""

from __future__ import annotations

import re

import pytest

from coord import errors
from coord.client import Client
from coord.testing import LocalCluster, NodeProc, wait_until

from .support import ClusterFactory, coordctl, describe, status_of
from .test_membership import Writers, assert_all_present, wait_caught_up


def roles(c: Client) -> dict[str, str]:
    return {n.id: "learner" if n.learner else "voter" for n in c.nodes().nodes}


def add_learner(cluster: LocalCluster, c: Client, auto: bool = False) -> NodeProc:
    """``node add`` as a learner, started with the flags it returned."""
    node = cluster.new_node()
    resp = c.add_node(node.node_id, node.raft, node.api, learner=True, promote_when_caught_up=auto)
    node.joined_cluster_id = resp.cluster_id
    node.join_peers = [f"{n.id}={n.raft_address},{n.api_address}" for n in resp.nodes]
    cluster.start(node.index)
    return node


def lag(c: Client, nid: str) -> int | None:
    """The leader's view of how far ``nid`` is behind (None until it matched once). A
    leader elected meanwhile knows no match for it yet (0) and counts the whole log as
    its lag: that is "at least this far behind", still a lag."""
    n = next(n for n in c.nodes().nodes if n.id == nid)
    return n.lag if n.match_index or n.lag else None


def promote_when_close(c: Client, nid: str) -> None:
    wait_until(lambda: (x := lag(c, nid)) is not None and x < 200, 30, f"{nid} to catch up")

    def promoted() -> bool:
        try:
            c.promote_node(nid)
        except errors.FailedPrecondition:
            return False  # behind again under the load, or a change pending: retry
        return True

    wait_until(promoted, 30, f"{nid} to be promoted")


def test_grow_3_to_5_with_learners_under_load_without_an_election(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3)
    leader = cluster.wait_for_leader()
    term = status_of(cluster, leader).term
    with cluster.client(timeout_s=20.0) as c, Writers(cluster.endpoints[:3], threads=3) as load:
        load.wait_more(100)
        n4 = add_learner(cluster, c)
        n5 = add_learner(cluster, c)
        assert roles(c) == {"n1": "voter", "n2": "voter", "n3": "voter"} | {
            "n4": "learner",
            "n5": "learner",
        }
        wait_caught_up(cluster, n4.index)
        wait_caught_up(cluster, n5.index)
        load.wait_more(100)
        promote_when_close(c, "n4")
        promote_when_close(c, "n5")
        assert set(roles(c).values()) == {"voter"}
        load.wait_more(100)
        after = status_of(cluster, cluster.wait_for_leader())
    assert (after.term, after.leader_id) == (term, cluster.nodes[leader].node_id), (
        "an election happened while the cluster grew"
    )
    assert not load.errors, load.errors[:3]
    assert_all_present(cluster, load.acked, list(range(5)))


def test_learners_are_never_a_quorum_and_never_campaign(cluster_factory: ClusterFactory) -> None:
    """3 voters + 2 learners: with two voters dead, the leader and both learners are 3
    of 5 members, but 1 of 3 voters: nothing commits, and no learner campaigns."""
    cluster = cluster_factory(3, fsync=False)
    leader = cluster.wait_for_leader()
    with cluster.client(timeout_s=20.0) as c:
        c.put("before", b"1")
        n4, n5 = add_learner(cluster, c), add_learner(cluster, c)
        wait_caught_up(cluster, n4.index)
        wait_caught_up(cluster, n5.index)
    others = [i for i in range(3) if i != leader]
    for i in others:
        cluster.kill(i)
    unavailable = (errors.Unavailable, errors.DeadlineExceeded, errors.OutcomeUnknown)
    with (
        Client([cluster.nodes[leader].api], timeout_s=3.0, attempt_timeout_s=1.0) as c,
        pytest.raises(unavailable),
    ):
        c.put("with-learners-only", b"x")
    # The learners follow the leader that cannot commit; neither campaigns.
    for i in (n4.index, n5.index):
        st = cluster.status(i)
        assert st is not None and st.leader_id in ("", cluster.nodes[leader].node_id)
    assert "campaigning" not in cluster.log(n4.index) + cluster.log(n5.index)
    # Back to a majority of voters: the cluster commits again; the learners are learners.
    cluster.restart(others[0])
    with cluster.client(timeout_s=20.0) as c:
        c.put("after", b"2")
        assert roles(c)["n4"] == roles(c)["n5"] == "learner"


def test_a_learner_killed_during_catch_up_changes_nothing_for_the_voters(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3, fsync=False, extra_args=["--log-compaction-entries", "500"])
    leader = cluster.wait_for_leader()
    term = status_of(cluster, leader).term
    with cluster.client(timeout_s=20.0) as c, Writers(cluster.endpoints[:3], threads=3) as load:
        load.wait_more(1500)  # a snapshot and a log to catch up on
        n4 = add_learner(cluster, c)
        wait_until(lambda: cluster.status(n4.index) is not None, 20, "n4 to answer")
        cluster.kill(n4.index)  # while it catches up
        load.wait_more(200)
        # Its promotion is refused: it is not there.
        with pytest.raises(errors.FailedPrecondition, match="n4 is not connected to the leader"):
            c.promote_node("n4")
        assert roles(c)["n4"] == "learner"
        c.remove_node("n4")
        load.wait_more(100)
        after = status_of(cluster, cluster.wait_for_leader())
    assert (after.term, after.leader_id) == (term, cluster.nodes[leader].node_id)
    assert not load.errors, load.errors[:3]
    assert_all_present(cluster, load.acked, list(range(3)))


def test_a_lagging_learner_is_refused_promotion_with_how_far_behind(
    cluster_factory: ClusterFactory,
) -> None:
    # Links survive a paused learner for 10 s (the default drops a silent link after 1 s).
    cluster = cluster_factory(3, fsync=False, extra_args=["--connection-timeout-s", "10"])
    cluster.wait_for_leader()
    with cluster.client(timeout_s=20.0) as c:
        n4 = add_learner(cluster, c)
        wait_caught_up(cluster, n4.index)
        # The leader has heard it acknowledge (a blank learner acknowledges only once it
        # learned the term): its lag is then measured, not assumed to be the whole log.
        wait_until(lambda: next(n for n in c.nodes().nodes if n.id == "n4").match_index > 0,
                   30, "the leader to see n4's acknowledgements")  # fmt: skip
        cluster.pause(n4.index)
        with Writers(cluster.endpoints[:3], threads=6) as load:
            wait_until(lambda: (lag(c, "n4") or 0) > 1100, 60, "n4 to fall 1,100 behind")
        assert not load.errors, load.errors[:3]
        p = coordctl(cluster.endpoints[:3], "node", "promote", "n4")
        says = (
            r"n4 is [\d,]+ entries behind the leader \(bound: 1,000\): "
            r"wait, or watch `coordctl node ls`"
        )
        assert p.returncode == 6 and re.search(says, p.stderr), describe(p)
        ls = coordctl(cluster.endpoints[:3], "node", "ls")
        assert ls.returncode == 0 and re.search(r"n4 .* learner +\d+ +\d{4,}", ls.stdout), describe(
            ls
        )
        assert roles(c)["n4"] == "learner"
        cluster.resume(n4.index)
        # (A lag of 0, caught up in one go, is caught up: not "unknown".)
        wait_until(lambda: (x := lag(c, "n4")) is not None and x < 1000, 90, "n4 to catch up")
        p = coordctl(cluster.endpoints[:3], "node", "promote", "n4")
        assert p.returncode == 0, describe(p)
        assert roles(c)["n4"] == "voter"
        assert coordctl(cluster.endpoints[:3], "node", "promote", "n4").returncode == 0  # again


def test_the_role_survives_leader_changes_restarts_and_snapshots(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3, fsync=False, extra_args=["--log-compaction-entries", "200"])
    cluster.wait_for_leader()
    with cluster.client(timeout_s=20.0) as c:
        n4 = add_learner(cluster, c)
        wait_caught_up(cluster, n4.index)
        for i in range(600):  # past compaction: the dumps carry the configuration
            c.put(f"fill/{i}", b"x")
        before = c.leader().leader_id
        moved = c.transfer_leader().leader_id
        assert moved not in (before, "n4")
        with pytest.raises(errors.FailedPrecondition, match="n4 is a learner"):
            c.transfer_leader("n4")
        assert roles(c)["n4"] == "learner"
    for i in range(4):
        cluster.kill(i)
    for i in range(4):
        cluster.start(i)
    cluster.wait_for_leader()
    with cluster.client(timeout_s=20.0) as c:
        wait_until(lambda: "n4" in roles(c), 20, "a leader listing n4")
        assert roles(c)["n4"] == "learner"
        c.put("after-restart", b"1")
        leader = c.leader().leader_id
        assert leader != "n4"


def test_a_learner_added_to_promote_itself_is_promoted_once_caught_up(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3, fsync=False)
    cluster.wait_for_leader()
    with cluster.client(timeout_s=20.0) as c, Writers(cluster.endpoints[:3]) as load:
        load.wait_more(50)
        p = coordctl(cluster.endpoints[:3], "node", "ls", "-o", "json")
        assert p.returncode == 0, describe(p)
        n4 = add_learner(cluster, c, auto=True)
        wait_until(lambda: roles(c).get("n4") == "voter", 30, "n4 to be promoted by the leader")
        wait_caught_up(cluster, n4.index)
        load.wait_more(50)
    assert not load.errors, load.errors[:3]
