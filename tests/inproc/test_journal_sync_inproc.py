"""A leader's fsync on its own thread (coord.raft.journal_sync), on real RaftNodes.

fsync is on; ``os.fdatasync`` is wrapped so that one node's journal syncs slowly or
not until the test says so. What must hold: nothing is acknowledged, and no entry
counted by its own leader, before the fdatasync covering it returned (also by a
leader stepping down in the tick it counted); and a leader's slow fdatasync does not
stop its tick thread (heartbeats, commits through its followers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from coord.config import RaftTimings
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

    journal = os.stat(node.journal._path)

    def fdatasync(fd: int) -> None:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) == (journal.st_dev, journal.st_ino):  # a dup of it
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


@dataclasses.dataclass
class _Scene:
    leader: RaftNode
    f: str  # the one follower the leader hears
    follower: RaftNode
    idx: int  # the index of the put in flight
    put: Future[Any]
    release: threading.Event  # set: the held fdatasync goes on
    threads: list[str]  # the threads the held node's syncs ran on
    partition: Callable[[], None]  # cut the leader from f too


@contextlib.contextmanager
def _put_with_a_held_sync(
    cluster: MemoryCluster, monkeypatch: pytest.MonkeyPatch, hold: str
) -> Iterator[_Scene]:
    """A leader that hears one follower ``f`` (the other is cut off), ``hold``'s
    (``"leader"`` or ``"follower"``) fdatasync waiting until ``release`` is set, and a put
    in flight."""
    leader_id = cluster.wait_leader()
    cluster.put(leader_id, b"warm", b"up").result(10)
    f, g = (n for n in cluster.ids if n != leader_id)
    leader, follower = cluster.nodes[leader_id], cluster.nodes[f]
    cluster.network.partition(leader_id, g)
    release = threading.Event()
    held = leader if hold == "leader" else follower
    # The warm-up committed with one follower: the other (f, say) may not have synced
    # it yet. Held then, that sync would stop f's tick thread before it ever saw the put.
    written = leader.journal[-1][1]
    wait_until(lambda: held.journal.durable_index >= written, 10, "the warm-up durable where held")
    threads = _slow_sync_of(monkeypatch, held, lambda: release.wait(30))
    try:
        idx = leader.journal[-1][1] + 1
        put = cluster.put(leader_id, b"k", b"v")
        yield _Scene(
            leader, f, follower, idx, put, release, threads,
            lambda: cluster.network.partition(leader_id, f),
        )  # fmt: skip
    finally:
        release.set()
        cluster.heal()


def test_a_leader_counts_its_own_entry_only_once_it_is_synced(
    synced_cluster: MemoryCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _put_with_a_held_sync(synced_cluster, monkeypatch, "leader") as s:
        # f holds it durably and said so: with the leader that would be a majority,
        # but the leader's own copy is not synced yet.
        wait_until(lambda: _match_index(s.leader, s.f) >= s.idx, 10, f"{s.f} acknowledged")
        _ticks_pass(s.leader, 5)
        assert s.leader.journal.durable_index < s.idx
        assert s.leader._raft.commit_index < s.idx
        assert not s.put.done()
        s.release.set()
        assert s.put.result(10).WhichOneof("result") is not None
        assert s.leader._raft.commit_index >= s.idx


def test_a_leader_stepping_down_in_the_tick_it_counted_applies_nothing_unsynced(
    synced_cluster: MemoryCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pysyncobj counts the leader for its whole log, then may step down (it heard no
    majority for the leader fallback timeout), then applies: the count must be
    corrected even though the node no longer leads (found by review)."""
    with _put_with_a_held_sync(synced_cluster, monkeypatch, "leader") as s:
        wait_until(lambda: _match_index(s.leader, s.f) >= s.idx, 10, f"{s.f} acknowledged")
        s.partition()  # it hears no one: it steps down
        # A follower syncs on its tick thread: once that thread waits in the held
        # fdatasync, the tick in which it stepped down (count, step down, apply) is over.
        wait_until(
            lambda: any(t != "coord-journal-sync" for t in s.threads), 10, "a follower's sync"
        )
        assert not s.leader._raft.is_leader
        assert s.leader.journal.durable_index < s.idx
        assert s.leader._raft.last_applied < s.idx
        assert s.leader.journal.getRaftCommitIndex() < s.idx
        assert not s.put.done() or s.put.exception() is not None


def test_a_follower_acknowledges_an_entry_only_once_it_is_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A leader that keeps leading however long it hears no acks.
    cluster = MemoryCluster(tmp_path)
    cluster.fsync = True
    cluster.timings = dataclasses.replace(RaftTimings(), leader_fallback_timeout_s=60.0)
    cluster.start_all()
    try:
        with _put_with_a_held_sync(cluster, monkeypatch, "follower") as s:
            wait_until(lambda: s.follower.journal[-1][1] >= s.idx, 10, f"{s.f} appended")
            wait_until(lambda: s.threads, 10, f"{s.f}'s sync of {s.idx}")
            _ticks_pass(s.leader, 5)
            assert _match_index(s.leader, s.f) < s.idx
            assert not s.put.done()
            s.release.set()
            s.put.result(10)
            assert _match_index(s.leader, s.f) >= s.idx
    finally:
        cluster.close()


def test_a_slow_disk_never_stalls_the_leaders_tick_thread_and_followers_commit(
    synced_cluster: MemoryCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every fsync and fdatasync of a file in the leader's data dir takes 0.3 s; for
    more than one second of writes (pysyncobj's one-second timer stored the commit
    index with two fsyncs on the tick thread: found by the chaos nemesis
    slow-disk-leader) none of them runs on its tick thread."""
    cluster = synced_cluster
    leader_id = cluster.wait_leader()
    leader = cluster.nodes[leader_id]
    data_dir = os.path.realpath(leader.cfg.data_dir)
    threads: list[str] = []

    def slowed(real: Callable[[int], None]) -> Callable[[int], None]:
        def sync(fd: int) -> None:
            if os.path.realpath(f"/proc/self/fd/{fd}").startswith(data_dir):
                threads.append(threading.current_thread().name)
                time.sleep(0.3)
            real(fd)

        return sync

    monkeypatch.setattr(os, "fdatasync", slowed(os.fdatasync))
    monkeypatch.setattr(os, "fsync", slowed(os.fsync))
    committed_before_durable = 0
    start, i = time.monotonic(), 0
    while time.monotonic() - start < 1.5 or i < 10:
        cluster.put(leader_id, b"k%d" % i, b"v").result(10)
        i += 1
        # Applied on the leader: it committed. Its own copy may still be syncing.
        if leader.journal.durable_index < leader._raft.commit_index:
            committed_before_durable += 1
    assert threads, "the leader's journal was synced"
    assert set(threads) == {"coord-journal-sync"}, threads  # never on the tick thread
    # The two followers made the entries a majority while the leader's slow sync ran.
    assert committed_before_durable > 0


def test_a_slow_disk_never_stalls_the_leaders_tick_thread_when_it_compacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every fsync and fdatasync of a file in the leader's data dir takes 0.2 s while it
    writes and compacts its log every 50 entries: none of them runs on its tick thread.
    The journal's compaction used to rewrite the file on the tick thread (an fsync of the
    directory, of the new file, and of the directory again after the rename): 0.6 s
    without a heartbeat per compaction on such a disk."""
    cluster = MemoryCluster(tmp_path)
    cluster.fsync = True
    cluster.compaction_entries = 50
    cluster.start_all()
    try:
        leader_id = cluster.wait_leader()
        leader = cluster.nodes[leader_id]
        data_dir = os.path.realpath(leader.cfg.data_dir)
        tick_threads: set[int] = set()
        leader._raft.add_tick_callback(lambda: tick_threads.add(threading.get_ident()))
        on_tick: list[str] = []
        slowed_calls: list[str] = []

        def slowed(real: Callable[[int], None]) -> Callable[[int], None]:
            def sync(fd: int) -> None:
                if os.path.realpath(f"/proc/self/fd/{fd}").startswith(data_dir):
                    slowed_calls.append(threading.current_thread().name)
                    if threading.get_ident() in tick_threads:
                        on_tick.append("".join(traceback.format_stack(limit=6)))
                    time.sleep(0.2)
                real(fd)

            return sync

        monkeypatch.setattr(os, "fdatasync", slowed(os.fdatasync))
        monkeypatch.setattr(os, "fsync", slowed(os.fsync))
        first_before = leader.journal[0][1]
        for i in range(200):
            cluster.put(leader_id, b"k%d" % i, b"v" * 100).result(10)
        wait_until(
            lambda: leader.journal[0][1] > first_before + 100, 20, "the leader to compact its log"
        )
        assert slowed_calls, "the leader's files were synced"
        assert not on_tick, f"{len(on_tick)} syncs on the tick thread, first:\n{on_tick[0]}"
    finally:
        cluster.close()
