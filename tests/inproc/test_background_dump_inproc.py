"""Log compaction with the dump written by a worker thread (coord.raft.background_dump).

Real RaftNodes over the in-memory network with a low compaction threshold, and the
serializer itself driven by hand where the order of events must be exact: a crash
between the dump's rename and the deletion of the entries it covers loses nothing; a
snapshot received from the leader wins over a dump still being written; the current
dump is sent while the next is written, and a new dump waits (within a bound) for
snapshots under way.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.serializer import SERIALIZER_STATE
from pysyncobj.transport import TCPTransport

from coord.raft.background_dump import BackgroundSerializer
from coord.raft.gate import VOTER
from coord.raft.node import DUMP_FILE
from coord.raft.snapshotfile import DumpError, read_dump
from coord.testing import wait_until
from tests.inproc.memory_raft import MemoryCluster

KEYS = 260  # more than two compactions at 100 entries


def _serializer(cluster: MemoryCluster, node_id: str) -> BackgroundSerializer:
    s = cluster.nodes[node_id]._raft._so._SyncObj__serializer
    assert isinstance(s, BackgroundSerializer)
    return s


def _compacting_cluster(tmp_path: Path) -> MemoryCluster:
    """Three nodes that compact their logs every 100 entries, started."""
    cluster = MemoryCluster(tmp_path)
    cluster.compaction_entries = 100
    cluster.start_all()
    return cluster


def _dump_index(data_dir: Path) -> int:
    path = data_dir / DUMP_FILE
    return read_dump(str(path)).last[1] if path.exists() else 0


def test_the_cluster_compacts_in_the_background_and_a_restart_loads_it(tmp_path: Path) -> None:
    cluster = _compacting_cluster(tmp_path)
    try:
        leader = cluster.wait_leader()
        for i in range(KEYS):
            cluster.put(leader, b"k%03d" % i, b"v%d" % i).result(10)
        state = cluster.wait_converged()
        for n in cluster.ids:
            wait_until(lambda n=n: len(cluster.nodes[n].journal) < KEYS / 2, 10, f"{n} compacted")
            assert _dump_index(tmp_path / n) > 100
    finally:
        cluster.close()
    # Every node restarts from its dump plus the rest of its journal.
    for n in cluster.ids:
        cluster.start(n, voting=VOTER)
    try:
        for n in cluster.ids:
            wait_until(lambda n=n: cluster.snapshot(n) == state, 10, f"{n} to load its state")
        assert cluster.get(cluster.wait_leader(), b"k%03d" % (KEYS - 1)) == b"v%d" % (KEYS - 1)
    finally:
        cluster.close()


def test_no_thread_is_started_on_a_tick_thread_to_write_a_dump(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thread.start waits until the new thread runs, which under a write load means
    until it gets the GIL: a leader's tick stalled 122 ms there at a compaction
    (hung_leader.py's load phase, a stack taken while the tick was away). The dump has
    one worker thread for the node's life."""
    cluster = _compacting_cluster(tmp_path)
    try:
        leader = cluster.wait_leader()
        ticks: set[int] = set()
        for node in cluster.nodes.values():
            node._raft.add_tick_callback(lambda: ticks.add(threading.get_ident()))
        started_on_tick: list[str] = []
        real_start = threading.Thread.start

        def start(thread: threading.Thread) -> None:
            if threading.get_ident() in ticks:
                started_on_tick.append(thread.name)
            real_start(thread)

        monkeypatch.setattr(threading.Thread, "start", start)
        before = {n: _dump_index(tmp_path / n) for n in cluster.ids}
        for i in range(KEYS):
            cluster.put(leader, b"k%03d" % i, b"v%d" % i).result(10)
        for n in cluster.ids:
            wait_until(lambda n=n: _dump_index(tmp_path / n) > before[n], 10, f"{n}'s dump")
        assert started_on_tick == []
    finally:
        cluster.close()


def test_a_stop_between_the_dumps_rename_and_the_log_deletion_loses_no_entry(
    tmp_path: Path,
) -> None:
    # n3's dumps are written and renamed into place, but it never gets to delete the
    # entries they cover (as when it stops right after the rename). Restarted alone, it
    # must still hold every entry it had: pysyncobj would clear a journal that does not
    # begin at the dump, the entries after the dump with it.
    cluster = _compacting_cluster(tmp_path)
    try:
        leader = cluster.wait_leader()
        n3 = _serializer(cluster, "n3")
        n3.checkSerializing = lambda: (  # type: ignore[method-assign]
            (SERIALIZER_STATE.SERIALIZING, 0)
            if n3._running is not None
            else (SERIALIZER_STATE.NOT_SERIALIZING, None)
        )
        for i in range(KEYS):
            cluster.put(leader, b"k%03d" % i, b"v%d" % i).result(10)
        cluster.wait_converged()
        applied = cluster.nodes["n3"].view.applied_index
        wait_until(lambda: _dump_index(tmp_path / "n3") > 0, 10, "n3's dump on disk")
        assert len(cluster.nodes["n3"].journal) > KEYS  # nothing deleted
    finally:
        cluster.close()
    assert _dump_index(tmp_path / "n3") < applied
    node = cluster.start("n3", voting=VOTER)
    try:
        wait_until(lambda: node.view.applied_index >= applied, 10, "n3 to apply its own log")
        assert cluster.get("n3", b"k%03d" % (KEYS - 1)) == b"v%d" % (KEYS - 1)
    finally:
        node.close()


class _Job:
    """A DumpJob whose write waits until released."""

    fsync = False

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.release = threading.Event()
        self.installed_calls = 0

    def write(self, path: str) -> None:
        assert self.release.wait(10)
        with open(path, "wb") as f:
            f.write(self.body)

    def installed(self) -> None:
        self.installed_calls += 1


def _background(tmp_path: Path, job: _Job) -> tuple[BackgroundSerializer, str]:
    path = str(tmp_path / "dump.bin")
    with open(path, "wb") as f:
        f.write(b"old dump")

    def capture(raft_data: Any) -> _Job:
        assert raft_data == ("last", "prev", "cluster")  # pysyncobj's tuple, minus data
        return job

    return BackgroundSerializer(path, 1 << 16, capture, lambda p: None, lambda p: None), path


def _finish(s: BackgroundSerializer) -> tuple[int, int | None]:
    return wait_until(
        lambda: (r := s.checkSerializing())[0] != SERIALIZER_STATE.SERIALIZING and r,
        10,
        "the dump to be written",
    )


def test_a_dump_replaces_the_old_one_only_when_written(tmp_path: Path) -> None:
    job = _Job(b"new dump")
    s, path = _background(tmp_path, job)
    s.serialize((None, "last", "prev", "cluster"), 41)
    assert s.checkSerializing() == (SERIALIZER_STATE.SERIALIZING, 41)
    assert Path(path).read_bytes() == b"old dump"
    job.release.set()
    assert _finish(s) == (SERIALIZER_STATE.SUCCESS, 41)
    assert Path(path).read_bytes() == b"new dump"
    assert job.installed_calls == 1
    assert not os.path.exists(path + ".tmp")
    assert s.getTransmissionData("follower") == (b"new dump", True, False)
    s._Serializer__transmissions.pop("follower")["file"].close()
    assert s.checkSerializing() == (SERIALIZER_STATE.NOT_SERIALIZING, None)


def _chunks(s: BackgroundSerializer, tid: str) -> bytes:
    """Everything a transmission sends, to its last (empty) chunk."""
    out = b""
    while True:
        data = s.getTransmissionData(tid)
        assert data is not None and data is not False
        chunk, _first, last = data
        out += chunk
        if last:
            return out


def test_the_current_dump_is_sent_while_the_next_one_is_written(tmp_path: Path) -> None:
    """Found by chaos isolate-leader-compacting (a follower behind for more than 2 s
    after a heal): with a large state and a low compaction threshold, a leader under
    writes is writing a dump nearly all the time, and pysyncobj sent no snapshot while
    one was written; each new dump also restarted the snapshot under way. The current
    dump is whole until the next is renamed over it, and a file opened before the
    rename reads the old one to its end: it can be sent meanwhile."""
    job = _Job(b"NEW-SNAPSHOT")
    s, path = _background(tmp_path, job)
    s._Serializer__transmissionBatchSize = 4
    s.serialize((None, "last", "prev", "cluster"), 41)
    assert s.getTransmissionData("follower") == (b"old ", True, False)
    job.release.set()
    wait_until(lambda: Path(path).read_bytes() == b"NEW-SNAPSHOT", 10, "the rename")
    # Opened before the rename: still the old dump, to its end.
    assert _chunks(s, "follower") == b"dump"
    assert _finish(s) == (SERIALIZER_STATE.SUCCESS, 41)
    assert _chunks(s, "follower") == b"NEW-SNAPSHOT"


def test_a_deposed_leaders_transmissions_hold_no_dump_back(tmp_path: Path) -> None:
    # pysyncobj cancels a transmission only for a follower that disconnects: those of a
    # leader that stepped down stay until a dump ends. They must not hold one back.
    path = str(tmp_path / "dump.bin")
    Path(path).write_bytes(b"old dump")
    leading = [True]
    job = _Job(b"new dump")
    s = BackgroundSerializer(
        path, 4, lambda d: job, lambda p: None, lambda p: None, 100, lambda: leading[0]
    )
    assert s.getTransmissionData("follower") == (b"old ", True, False)
    s.serialize((None, "last", "prev", "cluster"), 500)
    assert s.checkSerializing() == (SERIALIZER_STATE.NOT_SERIALIZING, None)  # waits
    leading[0] = False
    s.serialize((None, "last", "prev", "cluster"), 501)
    assert s.checkSerializing() == (SERIALIZER_STATE.SERIALIZING, 501)
    assert not s._Serializer__transmissions  # dropped, its file closed
    job.release.set()
    assert _finish(s) == (SERIALIZER_STATE.SUCCESS, 501)


def test_a_dump_written_restarts_the_snapshots_under_way(tmp_path: Path) -> None:
    # Entries the old dump leaves to the log are deleted once the new dump is in place:
    # a follower sent the old one would then need another snapshot.
    s, path = _background(tmp_path, _Job(b"unused"))
    s._Serializer__transmissionBatchSize = 4
    assert s.getTransmissionData("old") == (b"old ", True, False)
    job = _Job(b"new dump")
    s._capture = lambda raft_data: job
    s.serialize((None, "last", "prev", "cluster"), 41)
    job.release.set()
    wait_until(lambda: Path(path).read_bytes() == b"new dump", 10, "the rename")
    # The new dump is in place but its entries not deleted yet (the next tick):
    # pysyncobj takes a snapshot it sends to end where its log begins. Not yet.
    assert s.getTransmissionData("new") is None
    assert _finish(s) == (SERIALIZER_STATE.SUCCESS, 41)
    assert s.getTransmissionData("old") == (b"new ", True, False)  # from the start
    assert s.getTransmissionData("new") == (b"new ", True, False)
    s.cancelTransmisstion("old")
    s.cancelTransmisstion("new")


def test_compaction_waits_for_a_snapshot_being_sent_up_to_a_bound(tmp_path: Path) -> None:
    # A dump finished while a follower is sent the previous one deletes the entries
    # that follower needs after it: it would need another snapshot, and under writes
    # that repeats for as long as sending takes longer than the compaction interval.
    # So a new dump waits for the transmissions under way, for at most `defer_entries`
    # entries (the log may not grow without bound behind a follower that never ends).
    path = str(tmp_path / "dump.bin")
    Path(path).write_bytes(b"old dump")
    jobs: list[_Job] = []

    def capture(raft_data: Any) -> _Job:
        jobs.append(_Job(b"new dump"))
        return jobs[-1]

    s = BackgroundSerializer(path, 4, capture, lambda p: None, lambda p: None, defer_entries=100)
    assert s.getTransmissionData("follower") == (b"old ", True, False)
    s.serialize((None, "last", "prev", "cluster"), 500)
    assert s.checkSerializing() == (SERIALIZER_STATE.NOT_SERIALIZING, None)
    s.serialize((None, "last", "prev", "cluster"), 599)
    assert not jobs  # still waiting: 99 entries since it first waited
    s.serialize((None, "last", "prev", "cluster"), 600)
    assert len(jobs) == 1  # the bound
    jobs[0].release.set()
    assert _finish(s) == (SERIALIZER_STATE.SUCCESS, 600)
    # A transmission that ends lets the next dump start at once.
    assert _chunks(s, "follower") == b"new dump"
    s.serialize((None, "last", "prev", "cluster"), 601)
    assert len(jobs) == 2
    jobs[1].release.set()
    assert _finish(s) == (SERIALIZER_STATE.SUCCESS, 601)


def test_a_snapshot_received_while_a_dump_is_written_wins(tmp_path: Path) -> None:
    job = _Job(b"older dump of our own")
    s, path = _background(tmp_path, job)
    s.serialize((None, "last", "prev", "cluster"), 41)
    # The leader's snapshot arrives whole and is installed while the worker writes.
    assert s.setTransmissionData((b"the leader's snapshot", True, True))
    job.release.set()
    assert _finish(s) == (SERIALIZER_STATE.FAILED, 41)  # pysyncobj deletes nothing
    assert Path(path).read_bytes() == b"the leader's snapshot"
    assert job.installed_calls == 0
    assert not os.path.exists(path + ".tmp")


@pytest.mark.parametrize("fsync", [True, False])
def test_a_received_snapshot_is_durable_before_pysyncobj_clears_the_log_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool
) -> None:
    # Once setTransmissionData says "installed", pysyncobj loads the dump and clears the
    # journal to its index (a synced write). A power loss must then find the new dump:
    # its bytes synced before the rename, the rename synced (the directory) after it.
    path = str(tmp_path / "dump.bin")
    Path(path).write_bytes(b"our old dump")
    done: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def recording_fsync(fd: int) -> None:
        done.append(f"fsync {os.path.basename(os.readlink(f'/proc/self/fd/{fd}'))}")
        real_fsync(fd)

    def recording_replace(src: str, dst: str) -> None:
        done.append(f"rename {os.path.basename(src)}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    s = BackgroundSerializer(
        path, 1 << 16, lambda d: _Job(b""), lambda p: None, lambda p: None, fsync=fsync
    )
    assert not s.setTransmissionData((b"the leader's ", True, False))
    assert s.setTransmissionData((b"snapshot", False, True))  # installed
    assert Path(path).read_bytes() == b"the leader's snapshot"
    directory = os.path.basename(str(tmp_path))
    if fsync:
        assert done == ["fsync dump.bin.1.tmp", "rename dump.bin.1.tmp", f"fsync {directory}"]
    else:  # the node runs without fsync (tests, benchmarks that ask for it)
        assert done == ["rename dump.bin.1.tmp"]


def test_a_received_snapshot_that_does_not_verify_never_replaces_the_dump(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "dump.bin")
    Path(path).write_bytes(b"our good dump")

    def check(p: str) -> int | None:
        raise DumpError(f"{p}: bad checksum")

    s = BackgroundSerializer(path, 1 << 16, lambda d: _Job(b""), lambda p: None, check)
    assert s.setTransmissionData((b"garbage", True, True)) is False  # not installed
    assert Path(path).read_bytes() == b"our good dump"
    assert not os.path.exists(path + ".1.tmp")
    assert s.take_refused() is None


def test_a_failed_write_keeps_the_old_dump_and_says_failed(tmp_path: Path) -> None:
    job = _Job(b"")
    job.release.set()
    job.write = lambda path: (_ for _ in ()).throw(OSError("disk full"))  # type: ignore[method-assign]
    s, path = _background(tmp_path, job)
    s.serialize((None, "last", "prev", "cluster"), 7)
    assert _finish(s) == (SERIALIZER_STATE.FAILED, 7)
    assert Path(path).read_bytes() == b"old dump"
    assert job.installed_calls == 0


def test_a_deposed_leader_applies_nothing_while_the_new_leader_writes_its_dump(
    tmp_path: Path,
) -> None:
    # The old leader, cut off, appends puts nobody else has; the new leader commits past
    # them and compacts, so the old one can only be sent a snapshot, and while the new
    # leader cannot send it, each append-entries carries "serialized": None. Those
    # verify none of the old leader's entries: it must not commit and apply its tail
    # (and tell its clients the puts succeeded) because the leader's commit index is
    # higher.
    cluster = _compacting_cluster(tmp_path)
    try:
        old = cluster.wait_leader()
        cluster.put(old, b"before", b"x").result(10)
        cluster.wait_converged()
        deposed = cluster.nodes[old]
        applied_tail: list[bool] = []
        deposed.add_apply_listener(
            lambda: applied_tail.append(deposed.state.kv.get(b"divergent") is not None)
        )
        cluster.isolate(old)
        end = deposed.view.applied_index
        futures = [cluster.put(old, b"divergent", b"%d" % i) for i in range(3)]
        wait_until(lambda: len(deposed.journal) and deposed.journal[-1][1] >= end + 3, 10,
                   "the old leader to append its tail")  # fmt: skip
        others = [n for n in cluster.ids if n != old]
        new = cluster.wait_leader(among=others)
        for i in range(300):
            cluster.put(new, b"k%03d" % i, b"v").result(10)
        wait_until(
            lambda: cluster.nodes[new].journal[0][1] > end + 3, 10, "the new leader to compact"
        )
        writer = _serializer(cluster, new)
        # As when no dump can be sent (pysyncobj's serializer then says None).
        writer.getTransmissionData = lambda tid: None  # type: ignore[method-assign]
        cluster.heal()
        wait_until(lambda: deposed.view.leader_id == new, 10, "the old leader to follow")
        heard = cluster.network.stats["delivered"]
        wait_until(lambda: cluster.network.stats["delivered"] > heard + 30, 10, "heartbeats")
        assert not any(applied_tail), "the deposed leader applied its uncommitted tail"
        assert not any(f.done() and not f.exception() for f in futures)
        del writer.getTransmissionData  # the snapshot goes out
        state = cluster.wait_converged(timeout=20)
        assert cluster.get(old, b"divergent") is None and cluster.get(new, b"divergent") is None
        assert not any(applied_tail)
        assert state == cluster.snapshot(new)
    finally:
        cluster.close()


def test_a_capture_that_raises_is_a_failed_dump_not_a_wedged_tick(tmp_path: Path) -> None:
    path = str(tmp_path / "dump.bin")

    def capture(raft_data: Any) -> _Job:
        raise RuntimeError("cannot copy the state")

    s = BackgroundSerializer(path, 1 << 16, capture, lambda p: None, lambda p: None)
    s.serialize((None, "last", "prev", "cluster"), 9)  # does not raise into pysyncobj's tick
    assert s.checkSerializing() == (SERIALIZER_STATE.FAILED, 9)
    assert s.checkSerializing() == (SERIALIZER_STATE.NOT_SERIALIZING, None)
    assert s._Serializer__pid == 0  # snapshots may be sent again


def test_an_abandoned_write_never_replaces_the_dump(tmp_path: Path) -> None:
    # A node stopped while its worker writes (close() gave up waiting): whatever runs in
    # the data dir next must not see an older dump renamed over its own later.
    job = _Job(b"dump of a stopped node")
    s, path = _background(tmp_path, job)
    s.serialize((None, "last", "prev", "cluster"), 41)
    assert not s.wait(0.05)
    s.abandon()
    job.release.set()
    assert s.wait(10)
    assert Path(path).read_bytes() == b"old dump"
    assert not os.path.exists(path + ".tmp")
    assert job.installed_calls == 0


def test_a_snapshot_the_follower_already_holds_does_not_wipe_its_log(tmp_path: Path) -> None:
    """A leader begins a snapshot for a follower whose nextIndex fell below its log start,
    while a pipelined append catches that follower up past it: the snapshot arrives at a
    follower that holds (and acknowledged) more. pysyncobj installed it and cleared the
    log to the snapshot's index, wiping acknowledged entries the leader had counted (seen
    under load: commit 5046 clamped to 4995). Raft §7: keep the log; here the follower
    is handed the leader's dump, older than its log's end."""
    cluster = _compacting_cluster(tmp_path)
    try:
        leader = cluster.wait_leader()
        for i in range(KEYS):
            cluster.put(leader, b"k%03d" % i, b"v%d" % i).result(10)
        cluster.wait_converged()
        dump_path = tmp_path / leader / DUMP_FILE
        wait_until(dump_path.exists, 10, "the leader's dump")
        snapshot = dump_path.read_bytes()
        snapshot_last = read_dump(str(dump_path)).last[1]
        follower_id = next(n for n in cluster.ids if n != leader)
        follower = cluster.nodes[follower_id]
        last_before = follower.journal[-1][1]
        assert snapshot_last < last_before
        own_dump = (tmp_path / follower_id / DUMP_FILE).read_bytes()

        so: Any = follower._raft._so
        sender = next(n for n in so._SyncObj__otherNodes if n.id == leader)
        transport = follower._raft.transport
        delivered = threading.Event()
        after: list[tuple[int, bytes]] = []
        replies: list[dict[str, Any]] = []

        def deliver() -> None:  # on the follower's tick thread, as the leader's message
            if delivered.is_set():
                return
            message = {
                "type": "append_entries",
                "term": follower._raft.current_term,
                "commit_index": follower._raft.commit_index,
                "serialized": (snapshot, True, True),
            }
            wire = TCPTransport.send  # below coord's transport: what leaves the node

            def recorded(self: Any, node: Any, m: Any) -> Any:
                if self is transport:
                    replies.append(m)
                return wire(self, node, m)

            TCPTransport.send = recorded  # type: ignore[method-assign]
            try:
                transport._onMessageReceived(sender, message)
                transport.flush_held()
            finally:
                TCPTransport.send = wire  # type: ignore[method-assign]
            # Before any later append could refill it:
            dump = (tmp_path / follower_id / DUMP_FILE).read_bytes()
            after.append((follower.journal[-1][1], dump))
            delivered.set()

        follower._raft.add_tick_callback(deliver)
        assert delivered.wait(10)
        last_after, dump_after = after[0]
        assert last_after == last_before, "the follower's log was cut back to the snapshot"
        assert dump_after == own_dump
        # The acknowledgement says what the snapshot vouches for, not the whole log.
        acks = [m for m in replies if m.get("type") == "next_node_idx"]
        assert [(m["next_node_idx"], m.get("success")) for m in acks] == [(snapshot_last + 1, True)]
        cluster.put(leader, b"after", b"x").result(10)
        cluster.wait_converged()
    finally:
        cluster.close()


def test_a_follower_that_installs_a_snapshot_tells_its_apply_listeners(tmp_path: Path) -> None:
    # Watchers and the status page wake on apply listeners. A follower that catches up
    # by installing the leader's snapshot changed its state without an apply: unless
    # told, its watchers would send the new events only at their next idle wake-up
    # (a second), or at the next entry applied.
    cluster = _compacting_cluster(tmp_path)
    try:
        leader = cluster.wait_leader()
        behind = next(n for n in cluster.ids if n != leader)
        node = cluster.nodes[behind]
        order: list[str] = []  # on the follower's tick thread, in order
        real_restore, real_apply = node.state.restore, node.state.apply

        def restore(data: Any) -> None:
            real_restore(data)
            order.append("restored")

        def apply(data: Any) -> Any:
            order.append("applied")
            return real_apply(data)

        node.state.restore = restore  # type: ignore[method-assign]
        node.state.apply = apply  # type: ignore[method-assign]
        node.add_apply_listener(lambda: order.append("listeners"))
        cluster.isolate(behind)
        for i in range(KEYS):
            cluster.put(leader, b"k%03d" % i, b"v%d" % i).result(10)
        wait_until(lambda: _dump_index(tmp_path / leader) > 100, 10, "the leader to compact")
        cluster.heal()
        cluster.wait_converged()
        assert "restored" in order, "the follower caught up without the leader's snapshot"
        # (The restore is visible before the tick thread goes on to the listeners.)
        wait_until(lambda: order[-1] != "restored", 10, "what follows the restore")
        after = order[order.index("restored") + 1 :]
        assert after[:1] == ["listeners"], order[-8:]
    finally:
        cluster.close()
