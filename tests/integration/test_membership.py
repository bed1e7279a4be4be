"""Changing the cluster online: add and remove nodes, leadership transfer.

Real processes over TCP. A writer load runs during the changes; every write it
saw acknowledged must be on every member afterwards (kill -9 included).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time

import pytest

from coord import errors
from coord.client import Client
from coord.testing import LocalCluster, wait_until

from .support import (
    ClusterFactory,
    coordctl,
    describe,
    kill_all_at_once,
    local_kvs,
    status_of,
    wait_all_acknowledging,
    wait_all_caught_up,
)


class Writers:
    """Threads putting unique keys through the client library (which retries);
    remembers each acknowledged key, and every error a caller would have seen."""

    def __init__(self, endpoints: list[str], threads: int = 2) -> None:
        self.endpoints = endpoints
        self.acked: dict[bytes, bytes] = {}
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)
        ]

    def _run(self, t: int) -> None:
        with Client(self.endpoints, timeout_s=15.0) as c:
            i = 0
            while not self._stop.is_set():
                key, value = f"load/{t}/{i:05d}", f"v{i}".encode()
                try:
                    c.put(key, value)
                except errors.CoordError as e:
                    with self._lock:
                        self.errors.append(e)
                    continue
                with self._lock:
                    self.acked[key.encode()] = value
                i += 1

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def __enter__(self) -> Writers:
        for th in self._threads:
            th.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=30)
        assert not any(th.is_alive() for th in self._threads), "a writer hung"

    def wait_more(self, n: int, timeout: float = 20.0) -> None:
        target = self.count() + n
        wait_until(lambda: self.count() >= target, timeout, f"{n} more acknowledged writes")


def members(c: Client) -> list[str]:
    return sorted(n.id for n in c.nodes().nodes)


def wait_caught_up(cluster: LocalCluster, i: int, timeout: float = 30.0) -> None:
    target = status_of(cluster, cluster.wait_for_leader()).commit_index

    def done() -> bool:
        st = cluster.status(i)
        return st is not None and st.applied_index >= target

    wait_until(done, timeout, f"{cluster.nodes[i].node_id} to apply index {target}")


def assert_all_present(cluster: LocalCluster, acked: dict[bytes, bytes], nodes: list[int]) -> None:
    wait_all_caught_up(cluster)
    for i in nodes:
        have = local_kvs(cluster, i, b"load/")
        missing = [k for k in acked if k not in have]
        assert not missing, f"{cluster.nodes[i].node_id} lost {len(missing)}: {missing[:5]}"
        wrong = [k for k, v in acked.items() if have[k].value != v]
        assert not wrong, f"{cluster.nodes[i].node_id} has other values for {wrong[:5]}"


def test_grow_3_to_5_and_shrink_back_under_load(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(3)
    cluster.wait_for_leader()
    with cluster.client(timeout_s=20.0) as c, Writers(cluster.endpoints[:3]) as load:
        load.wait_more(50)
        n4 = cluster.add_node(c)
        wait_caught_up(cluster, n4.index)
        assert members(c) == ["n1", "n2", "n3", "n4"]

        # The fifth through the CLI, started with the command it printed.
        n5 = cluster.new_node()
        out = coordctl(
            cluster.endpoints[:3], "node", "add", "n5", "--raft", n5.raft, "--api", n5.api
        )
        assert out.returncode == 0, describe(out)
        command = next(line.strip() for line in out.stdout.splitlines() if "coord serve" in line)
        argv = shlex.split(command.replace("DATA_DIR_OF_n5", n5.data_dir))
        assert argv[:2] == ["coord", "serve"]
        argv = [os.path.join(os.path.dirname(sys.executable), "coord"), *argv[1:]]
        with open(n5.log_path, "ab") as log:
            n5.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_caught_up(cluster, n5.index)
        assert members(c) == ["n1", "n2", "n3", "n4", "n5"]
        wait_until(lambda: all(n.connected for n in c.nodes().nodes), 10, "every member connected")
        load.wait_more(50)

        # Shrink: a joined node and a bootstrap one (never the leader directly).
        leader_id = c.leader().leader_id
        doomed = ["n5", next(n for n in ("n2", "n3") if n != leader_id)]
        for nid in doomed:
            c.remove_node(nid)
            idx = int(nid[1:]) - 1
            # The removed node learns it and exits on its own.
            wait_until(lambda i=idx: not cluster.nodes[i].running, 20, f"{nid} to exit")
            load.wait_more(20)
        assert len(members(c)) == 3
    survivors = [i for i in range(5) if cluster.nodes[i].running]
    assert len(survivors) == 3
    assert not load.errors, load.errors[:3]
    assert_all_present(cluster, load.acked, survivors)
    assert "removed from the cluster" in cluster.log(4)


def test_leader_transfer_under_load(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(3)
    first = cluster.wait_for_leader()
    with cluster.client(timeout_s=20.0) as c, Writers(cluster.endpoints) as load:
        load.wait_more(30)
        target = cluster.nodes[(first + 1) % 3].node_id
        t0 = time.monotonic()
        resp = c.transfer_leader(target)
        took = time.monotonic() - t0
        assert resp.leader_id == target
        assert cluster.nodes[cluster.wait_for_leader()].node_id == target
        assert took < 5.0, f"the transfer took {took:.2f} s"
        load.wait_more(30)
        # No target: the most caught-up other member.
        resp = c.transfer_leader()
        assert resp.leader_id not in ("", target)
        load.wait_more(30)
        with pytest.raises(errors.NotFound, match="not a member"):
            c.transfer_leader("n9")
    assert not load.errors, load.errors[:3]
    assert_all_present(cluster, load.acked, [0, 1, 2])


def test_replace_a_dead_node_new_one_catches_up_by_snapshot(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3, extra_args=["--log-compaction-entries", "200"])
    leader = cluster.wait_for_leader()
    wait_all_acknowledging(cluster)  # else the two left may not make a majority yet
    dead = (leader + 1) % 3
    cluster.kill(dead)
    with cluster.client(timeout_s=20.0) as c, Writers(cluster.endpoints) as load:
        c.remove_node(cluster.nodes[dead].node_id)
        assert len(members(c)) == 2
        load.wait_more(600)  # past compaction: the new node needs the snapshot
        n4 = cluster.add_node(c)
        wait_caught_up(cluster, n4.index)
        load.wait_more(20)
    assert not load.errors, load.errors[:3]
    live = [i for i in range(4) if cluster.nodes[i].running]
    assert_all_present(cluster, load.acked, live)
    assert "catching up" in cluster.log(n4.index) or "caught up" in cluster.log(n4.index)
    first_index = _first_journal_index(cluster, n4.index)
    assert first_index > 1, "the new node replayed the whole log instead of a snapshot"


def _first_journal_index(cluster: LocalCluster, i: int) -> int:
    from coord.raft.journal import DurableJournal

    j = DurableJournal(
        os.path.join(cluster.nodes[i].data_dir, "raft.journal"), fsync=False, inspect=True
    )
    try:
        return int(j[0][1])
    finally:
        j.close()


def test_one_change_at_a_time(cluster_factory: ClusterFactory) -> None:
    # A leader that keeps leading for 10 s without a majority (the default steps down
    # within a second), so that the uncommitted change stays visible.
    slow = ["--connection-timeout-s", "10", "--leader-fallback-timeout-s", "10"]
    cluster = cluster_factory(3, extra_args=slow)
    leader = cluster.wait_for_leader()
    # Every member acknowledges before one hangs: a member that started late learns the
    # term only once it has heard from both others (coord.raft.gate).
    wait_until(
        lambda: all(not cluster.status(i).catching_up for i in range(3)),  # type: ignore[union-attr]
        20,
        "every member to acknowledge",
    )
    down = (leader + 1) % 3
    # Hung, not dead: its link stays up, so the leader's strict check (which refuses a
    # change with a member it knows is down) lets the addition through.
    cluster.pause(down)
    n4 = cluster.new_node()
    with Client([cluster.nodes[leader].api], timeout_s=2.0) as c:
        # 4 members, 2 answering: the change cannot commit (3 of 4 needed).
        with pytest.raises((errors.Unavailable, errors.DeadlineExceeded)):
            c.add_node(n4.node_id, n4.raft, n4.api)
        assert c.nodes().change_pending
        with pytest.raises(errors.FailedPrecondition, match="one change at a time"):
            c.add_node("n5", "127.0.0.1:1", "127.0.0.1:2")
    cluster.resume(down)
    with cluster.client(timeout_s=20.0) as c:
        wait_until(lambda: not c.nodes().change_pending, 20, "the change to commit")
        assert members(c) == ["n1", "n2", "n3", "n4"]
        resp = c.add_node(n4.node_id, n4.raft, n4.api)  # a retry of the same add: fine
        n4.joined_cluster_id = resp.cluster_id
        n4.join_peers = [f"{n.id}={n.raft_address},{n.api_address}" for n in resp.nodes]
        cluster.start(n4.index)
        wait_caught_up(cluster, n4.index)


def test_a_change_that_would_leave_no_quorum_is_refused(cluster_factory: ClusterFactory) -> None:
    """etcd's strict reconfiguration check: with a member down, adding one makes a
    configuration that needs every live member and the new one (still starting) to
    commit; removing a live one leaves a minority. Both are refused, nothing changes,
    and the way out — removing the dead member — is allowed."""
    cluster = cluster_factory(3, fsync=False)
    leader = cluster.wait_for_leader()
    wait_all_acknowledging(cluster)  # else the two left may not make a majority yet
    dead, live = (leader + 1) % 3, (leader + 2) % 3
    dead_id, live_id = cluster.nodes[dead].node_id, cluster.nodes[live].node_id
    cluster.kill(dead)
    n4 = cluster.new_node()
    with cluster.client(timeout_s=5.0) as c:

        def dead_seen_down() -> bool:
            return not next(n for n in c.nodes().nodes if n.id == dead_id).connected

        wait_until(dead_seen_down, 10, f"the leader to see {dead_id} down")
        before = members(c)
        says = rf"must be up to commit anything, and only 2 would be \({dead_id} not connected\)"
        with pytest.raises(errors.FailedPrecondition, match=says):
            c.add_node(n4.node_id, n4.raft, n4.api)
        with pytest.raises(errors.FailedPrecondition, match="only 1 would be"):
            c.remove_node(live_id)
        p = coordctl(cluster.endpoints, "node", "add", n4.node_id, "--raft", n4.raft,
                     "--api", n4.api, "--voter")  # fmt: skip
        assert p.returncode != 0 and f"adding '{n4.node_id}' would leave 4 members" in p.stderr, (
            describe(p)
        )
        assert members(c) == before and not c.nodes().change_pending
        c.put("still", b"writable")
        # A learner (coordctl's default) raises no quorum: allowed with a member down.
        p = coordctl(cluster.endpoints, "node", "add", n4.node_id, "--raft", n4.raft,
                     "--api", n4.api)  # fmt: skip
        assert p.returncode == 0 and "as a learner" in p.stdout, describe(p)
        c.remove_node(dead_id)
        assert members(c) == sorted((set(before) - {dead_id}) | {n4.node_id})


def test_bad_membership_requests_are_refused_and_change_nothing(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3)
    leader = cluster.wait_for_leader()
    me = cluster.nodes[leader]
    with cluster.client(timeout_s=5.0) as c:
        before = c.nodes()
        with pytest.raises(errors.InvalidArgument, match="node id"):
            c.add_node("bad id!", "127.0.0.1:1", "127.0.0.1:2")
        with pytest.raises(errors.InvalidArgument, match="host:port"):
            c.add_node("n7", "nowhere", "127.0.0.1:2")
        with pytest.raises(errors.FailedPrecondition, match="already a member"):
            c.add_node("n2", "127.0.0.1:1", "127.0.0.1:2")
        with pytest.raises(errors.FailedPrecondition, match="already used"):
            c.add_node("n7", cluster.nodes[1].raft, "127.0.0.1:2")
        with pytest.raises(errors.NotFound, match="not a member"):
            c.remove_node("n9")
        with pytest.raises(errors.FailedPrecondition, match="transfer leadership first"):
            c.remove_node(me.node_id)
        after = c.nodes()
        assert [n.id for n in after.nodes] == [n.id for n in before.nodes]
        assert not after.change_pending


def test_membership_survives_kill_9_of_every_node(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(3)
    cluster.wait_for_leader()
    with cluster.client(timeout_s=20.0) as c:
        n4 = cluster.add_node(c)
        wait_caught_up(cluster, n4.index)
        c.remove_node("n1" if c.leader().leader_id != "n1" else "n2")
        acked = {}
        for i in range(20):
            c.put(f"load/x/{i}", b"v")
            acked[f"load/x/{i}".encode()] = b"v"
    removed = next(i for i in range(2) if cluster.nodes[i].node_id not in _live_ids(cluster))
    wait_until(lambda: not cluster.nodes[removed].running, 20, "the removed node to exit")
    kill_all_at_once(cluster)
    live = [i for i in range(4) if i != removed]
    for i in live:
        cluster.start(i)
    cluster.wait_for_leader()
    with Client([cluster.nodes[i].api for i in live], timeout_s=20.0) as c:
        assert members(c) == sorted(cluster.nodes[i].node_id for i in live)
        wait_until(lambda: all(n.connected for n in c.nodes().nodes), 10, "members connected")
        c.put("after", b"restart")
    assert_all_present(cluster, acked, live)


def _live_ids(cluster: LocalCluster) -> set[str]:
    leader = cluster.wait_for_leader()
    with Client([cluster.nodes[leader].api], timeout_s=5.0) as c:
        return {n.id for n in c.nodes().nodes}


def test_a_node_joining_from_a_snapshot_older_than_its_leader_follows_that_leader(
    cluster_factory: ClusterFactory,
) -> None:
    """A leader's newest snapshot may predate the leader's own membership: it joined from
    that snapshot and has not compacted since. A node that then joins gets that snapshot,
    whose configuration names neither the leader nor the joiner: it must keep its link to
    the leader until the log after the snapshot brings the newer configuration (chaos
    grow-shrink-3-5-3, seed 11: the joiner dropped the leader as a peer and stayed at the
    snapshot's index for good)."""
    cluster = cluster_factory(3, fsync=False, extra_args=["--log-compaction-entries", "100"])
    first = cluster.wait_for_leader()
    with cluster.client(timeout_s=20.0) as c:
        for i in range(160):  # past the first compaction (above 100 entries)
            c.put(f"pre/{i:03d}", b"x")
        wait_until(
            lambda: _first_journal_index(cluster, first) > 1, 30, "the leader to compact its log"
        )
        n4 = cluster.add_node(c)
        wait_caught_up(cluster, n4.index)
        assert _first_journal_index(cluster, n4.index) > 1, "n4 should have joined by snapshot"
        assert c.transfer_leader(n4.node_id).leader_id == n4.node_id
        # n4's only snapshot is the one it joined from, taken before it was a member.
        n5 = cluster.add_node(c)
        wait_caught_up(cluster, n5.index)
        c.put("after/n5", b"y")
        assert members(c) == ["n1", "n2", "n3", "n4", "n5"]
    wait_all_caught_up(cluster)
    assert local_kvs(cluster, n5.index, b"after/")[b"after/n5"].value == b"y"
