"""Acknowledged writes survive kill -9: of a minority, of every node at once, and with
writes in flight. Order is preserved: the last acknowledged value wins and mod revisions
keep the order in which the writes were acknowledged."""

from __future__ import annotations

import itertools
import threading

import pytest

from coord import errors
from coord.client import Client
from coord.testing import LocalCluster, wait_until

from .support import (
    Ack,
    ClusterFactory,
    kill_all_at_once,
    local_kvs,
    wait_all_acknowledging,
    wait_all_caught_up,
)

N_PUTS = 200
OVERWRITTEN = 5  # keys written many times each, interleaved with single-write keys


def sequential_puts(client: Client, n: int = N_PUTS) -> list[Ack]:
    """n puts in order: mostly new keys, every 4th one overwrites one of a few hot keys."""
    acks: list[Ack] = []
    for i in range(n):
        key = f"hot/{(i // 4) % OVERWRITTEN}" if i % 4 == 3 else f"seq/{i:04d}"
        resp = client.put(key, f"value-{i}")
        assert resp.succeeded
        acks.append(Ack(key.encode(), f"value-{i}".encode(), resp.kv.mod_revision))
    revs = [a.mod_revision for a in acks]
    assert all(a < b for a, b in itertools.pairwise(revs)), "acknowledged revisions must increase"
    return acks


def check_acks_on_every_node(cluster: LocalCluster, acks: list[Ack]) -> None:
    """Every running node holds every acknowledged put, with the last acked value winning."""
    last: dict[bytes, Ack] = {}
    writes: dict[bytes, int] = {}
    for a in acks:
        last[a.key] = a
        writes[a.key] = writes.get(a.key, 0) + 1
    # Keys in the order of their last acknowledged write.
    order = sorted(last, key=lambda k: last[k].mod_revision)
    for node in cluster.nodes:
        if not node.running:
            continue
        kvs = local_kvs(cluster, node.index)
        missing = [k for k in order if k not in kvs]
        assert not missing, f"{node.node_id} lost {len(missing)} acked keys, e.g. {missing[:5]}"
        for k in order:
            got, want = kvs[k], last[k]
            assert (got.value, got.mod_revision) == (want.value, want.mod_revision), (
                f"{node.node_id}: {k!r} is {got.value!r}@{got.mod_revision}, "
                f"the last acknowledged write was {want.value!r}@{want.mod_revision}"
            )
            assert got.version == writes[k], f"{node.node_id}: {k!r} applied {got.version} times"
        mods = [kvs[k].mod_revision for k in order]
        assert all(a < b for a, b in itertools.pairwise(mods)), f"{node.node_id}: order not kept"


def restart_and_settle(cluster: LocalCluster) -> None:
    """After a restart: one leader, a linearizable read (commits in the new term), all applied."""
    cluster.wait_for_leader(timeout=30)
    with cluster.client(timeout_s=20.0) as c:
        c.range("", prefix=True, keys_only=True)
    wait_all_caught_up(cluster)


@pytest.fixture
def cluster(cluster_factory: ClusterFactory) -> LocalCluster:
    c = cluster_factory(3, fsync=True)
    c.wait_for_leader()
    return c


@pytest.mark.parametrize("victim", ["leader", "follower"])
def test_kill9_minority_and_restart(cluster: LocalCluster, victim: str) -> None:
    with cluster.client() as c:
        acks = sequential_puts(c)
    leader = cluster.wait_for_leader()
    wait_all_acknowledging(cluster)  # else the two left may not make a majority yet
    i = leader if victim == "leader" else (leader + 1) % 3
    cluster.kill(i)
    cluster.start(i)
    restart_and_settle(cluster)
    assert cluster.nodes[i].running
    check_acks_on_every_node(cluster, acks)


def test_kill9_all_nodes_at_once_and_restart(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        acks = sequential_puts(c)
    kill_all_at_once(cluster)
    assert not any(n.running for n in cluster.nodes)
    cluster.start()
    restart_and_settle(cluster)
    check_acks_on_every_node(cluster, acks)
    # The cluster keeps working, and revisions continue after the recovered ones.
    with cluster.client() as c:
        resp = c.put("after-restart", "1")
    assert resp.kv.mod_revision > max(a.mod_revision for a in acks)


class Writers:
    """Threads that put ``w{n}/{seq}`` keys (and ``w{n}/last = seq``) until stopped,
    recording every put whose call returned."""

    def __init__(self, cluster: LocalCluster, n: int = 4) -> None:
        self.acked: list[list[Ack]] = [[] for _ in range(n)]
        self.last_acked = [-1] * n
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._endpoints = cluster.endpoints
        self._threads = [
            threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(n)
        ]
        for t in self._threads:
            t.start()

    def _run(self, w: int) -> None:
        with Client(self._endpoints, timeout_s=1.0, attempt_timeout_s=0.5) as c:
            i = 0
            while not self._stop.is_set():
                key = f"w{w}/{i:05d}"
                try:
                    resp = c.put(key, f"{i}")
                    self.acked[w].append(Ack(key.encode(), f"{i}".encode(), resp.kv.mod_revision))
                    c.put(f"w{w}/last", f"{i}")
                    self.last_acked[w] = i
                except errors.CoordError:
                    pass  # down or electing: this write's outcome is unknown; go on
                except BaseException as e:
                    self.failures.append(e)
                    return
                i += 1

    def count(self) -> int:
        return sum(len(a) for a in self.acked)

    def wait_for(self, n: int) -> None:
        wait_until(lambda: self.count() >= n, 60, f"{n} acknowledged writes")

    def stop(self) -> list[Ack]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in self._threads), "a writer thread hangs"
        assert not self.failures, self.failures
        return [a for per in self.acked for a in per]

    def check(self, cluster: LocalCluster) -> None:
        """Every acknowledged write is on every node, with the revision it was acked at."""
        acks = [a for per in self.acked for a in per]
        assert len({a.mod_revision for a in acks}) == len(acks), "two writes share a revision"
        for node in cluster.nodes:
            kvs = local_kvs(cluster, node.index)
            lost = [a for a in acks if a.key not in kvs]
            assert not lost, f"{node.node_id} lost {len(lost)} acknowledged writes: {lost[:3]}"
            for a in acks:
                assert (kvs[a.key].value, kvs[a.key].mod_revision) == (a.value, a.mod_revision)
            for w, last in enumerate(self.last_acked):
                if last >= 0:
                    # A later write may have committed without its ack; never an older one.
                    assert int(kvs[f"w{w}/last".encode()].value) >= last, node.node_id


def test_kill9_all_nodes_with_writes_in_flight(cluster: LocalCluster) -> None:
    writers = Writers(cluster)
    try:
        writers.wait_for(150)
        kill_all_at_once(cluster)  # while the writers have puts in flight
    finally:
        acks = writers.stop()
    assert len(acks) >= 150
    cluster.start()
    restart_and_settle(cluster)
    writers.check(cluster)


@pytest.mark.parametrize("rounds", [6, pytest.param(30, marks=pytest.mark.slow)])
def test_repeated_crashes_under_load(cluster: LocalCluster, rounds: int) -> None:
    """Rounds of kill -9 under a steady write load: all nodes at once, or the leader."""
    writers = Writers(cluster)
    try:
        for round_ in range(rounds):
            writers.wait_for(100 * (round_ + 1))
            if round_ % 2 == 0:
                kill_all_at_once(cluster)
                cluster.start()
            else:
                leader = cluster.wait_for_leader(timeout=30)
                cluster.kill(leader)
                cluster.wait_for_leader(exclude=leader, timeout=30)
                cluster.start(leader)
    finally:
        writers.stop()
    restart_and_settle(cluster)
    writers.check(cluster)


@pytest.mark.slow
def test_followers_never_truncate_acknowledged_entries(cluster: LocalCluster) -> None:
    """A healthy cluster under concurrent load: no follower drops entries it acknowledged.

    Statistical (the overlap needs two appends in flight), hence many puts and ``slow``.
    """
    failures: list[BaseException] = []

    def load(t: int) -> None:
        try:
            with cluster.client(timeout_s=30.0) as c:
                for i in range(1000):
                    c.put(f"t/{t}/{i % 50}", f"{i}")
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=load, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, failures
    wait_all_caught_up(cluster)
    truncations = [
        line for line in cluster.logs().splitlines() if "truncating already-applied" in line
    ]
    assert not truncations, f"{len(truncations)} truncations, e.g. {truncations[:3]}"
