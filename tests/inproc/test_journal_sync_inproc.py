"""The journal's fsync on its own thread (coord.raft.journal_sync), on real RaftNodes.

fsync is on; ``os.fdatasync`` is wrapped so that one node's journal syncs slowly or
not until the test says so. What must hold: nothing is acknowledged, and no entry
counted by its own leader, before the fdatasync covering it returned; and a slow
fdatasync does not stop the tick thread (heartbeats, other nodes' acks).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coord.raft.node import RaftNode
from coord.testing import wait_until
from tests.inproc.memory_raft import MemoryCluster

_real_fdatasync = os.fdatasync


@pytest.fixture
def synced_cluster(tmp_path: Path) -> Iterator[MemoryCluster]:
    c = MemoryCluster(tmp_path)
    c.fsync = True
    c.start_all()
    try:
        yield c
    finally:
        c.close()


def _slow_sync_of(
    monkeypatch: pytest.MonkeyPatch, node: RaftNode, wait: Callable[[], None]
) -> list[str]:
    """Make ``node``'s journal fdatasync call ``wait()`` first; returns the names of the
    threads its syncs ran on."""
    threads: list[str] = []

    def fdatasync(fd: int) -> None:
        if fd == node.journal._fd:
            threads.append(threading.current_thread().name)
            wait()
        _real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return threads


def _match_index(leader: RaftNode, follower_id: str) -> int:
    so: Any = leader._raft._so
    return max(
        (i for n, i in so._SyncObj__raftMatchIndex.items() if n.id == follower_id), default=0
    )


def _ticks_pass(node: RaftNode, count: int) -> None:
    """Wait until ``node``'s tick thread has run ``count`` more ticks."""
    seen = [node.last_tick]

    def ticked() -> bool:
        if node.last_tick != seen[-1]:
            seen.append(node.last_tick)
        return len(seen) > count

    wait_until(ticked, 10, f"{count} ticks")


def _roles(cluster: MemoryCluster) -> tuple[str, str, str]:
    leader = cluster.wait_leader()
    cluster.put(leader, b"warm", b"up").result(10)
    f, g = (n for n in cluster.ids if n != leader)
    return leader, f, g


def test_a_leader_counts_its_own_entry_only_once_it_is_synced(
    synced_cluster: MemoryCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = synced_cluster
    leader_id, f, g = _roles(cluster)
    leader = cluster.nodes[leader_id]
    cluster.network.partition(leader_id, g)  # only f can acknowledge
    release = threading.Event()
    _slow_sync_of(monkeypatch, leader, lambda: release.wait(20))
    try:
        last = leader.journal[-1][1]
        fut = cluster.put(leader_id, b"k", b"v")
        idx = last + 1
        # f holds it durably and said so: with the leader that would be a majority,
        # but the leader's own copy is not synced yet.
        wait_until(lambda: _match_index(leader, f) >= idx, 10, f"{f} acknowledged {idx}")
        _ticks_pass(leader, 5)
        assert leader.journal.durable_index < idx
        assert leader._raft.commit_index < idx
        assert not fut.done()
        release.set()
        assert fut.result(10).WhichOneof("result") is not None
        assert leader._raft.commit_index >= idx
    finally:
        release.set()
        cluster.heal()


def test_a_follower_acknowledges_an_entry_only_once_it_is_synced(
    synced_cluster: MemoryCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = synced_cluster
    leader_id, f, g = _roles(cluster)
    leader, follower = cluster.nodes[leader_id], cluster.nodes[f]
    cluster.network.partition(leader_id, g)
    release = threading.Event()
    _slow_sync_of(monkeypatch, follower, lambda: release.wait(20))
    try:
        idx = leader.journal[-1][1] + 1
        fut = cluster.put(leader_id, b"k", b"v")
        wait_until(lambda: follower.journal[-1][1] >= idx, 10, f"{f} appended {idx}")
        _ticks_pass(follower, 5)
        _ticks_pass(leader, 5)
        assert _match_index(leader, f) < idx
        assert not fut.done()
        release.set()
        fut.result(10)
        assert _match_index(leader, f) >= idx
    finally:
        release.set()
        cluster.heal()


def test_a_slow_fsync_runs_beside_the_tick_thread_and_writes_commit_through_followers(
    synced_cluster: MemoryCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = synced_cluster
    leader_id, _, _ = _roles(cluster)
    leader = cluster.nodes[leader_id]
    threads = _slow_sync_of(monkeypatch, leader, lambda: time.sleep(0.5))
    committed_before_durable = 0
    for i in range(10):
        cluster.put(leader_id, b"k%d" % i, b"v").result(10)
        # Applied on the leader: it committed. Its own copy may still be syncing.
        if leader.journal.durable_index < leader._raft.commit_index:
            committed_before_durable += 1
    assert threads, "the leader's journal was synced"
    assert set(threads) == {"coord-journal-sync"}, threads
    # The two followers made the entries a majority while the leader's 0.5 s sync ran.
    assert committed_before_durable > 0
