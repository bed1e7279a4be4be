"""Scheduled backups (``coord serve --backup-dir D --backup-every T``): only the leader
writes; a full snapshot every N-th time and diffs in between, each diff following the
file before it; the last K full snapshots (and the diffs after them) kept; files
complete (verified) and no temporary files left; the chain restores to a replica's
state; a new leader starts its own chain."""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

from coord.client import Client
from coord.server.duties.backups import chain, parse_name
from coord.state import backupfile, replay
from coord.state.snapshot_format import decode_snapshot
from coord.testing import LocalCluster, wait_until
from coord.v1 import cluster_pb2

from .support import ClusterFactory

EVERY_S = 0.3
KEEP = 2
FULL_EVERY = 3


def files_of(directory: str) -> list[str]:
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def kinds(names: list[str]) -> str:
    parsed = [parse_name(n) for n in names]
    assert all(p is not None for p in parsed), names
    return "".join("F" if p.full else "D" for p in parsed if p is not None)


def writer(cluster: LocalCluster, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        with Client(cluster.endpoints, timeout_s=10.0) as c:
            i = 0
            while not stop.is_set():
                c.put(f"sched/{i % 50}", str(i))
                i += 1

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def check_chain(directory: str, cluster_id: str) -> list[backupfile.Backup]:
    """Every file verifies; the chain starts with a full snapshot and each diff follows
    the file before it; a full snapshot every FULL_EVERY files; KEEP fulls kept."""
    names = [b.name for b in chain(directory, cluster_id)]
    assert names == [n for n in files_of(directory)], f"stray files in {directory}: {names}"
    files = [backupfile.read(os.path.join(directory, n)) for n in names]
    pattern = kinds(names)
    assert pattern.startswith("F") and pattern.count("F") == KEEP, pattern
    assert "D" * FULL_EVERY not in pattern, f"a full snapshot every {FULL_EVERY}: {pattern}"
    for prev, b in itertools.pairwise(files):
        if b.kind == "diff":
            assert b.header.base_revision == prev.header.revision, (names, prev.header, b.header)
        assert b.header.revision > prev.header.revision
    return files


def test_the_leader_writes_rotating_backups(
    cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    cluster = cluster_factory(3, fsync=False, start=False)
    dirs = [str(tmp_path / f"backups-{n.node_id}") for n in cluster.nodes]
    for node, d in zip(cluster.nodes, dirs, strict=True):
        node.extra_args = [
            "--backup-dir", d, "--backup-every", f"{int(EVERY_S * 1000)}ms",
            "--backup-keep", str(KEEP), "--backup-full-every", str(FULL_EVERY),
        ]  # fmt: skip
    cluster.start()
    leader = cluster.wait_for_leader()
    stop = threading.Event()
    load = writer(cluster, stop)
    try:
        wait_until(
            lambda: "backup rotated out" in cluster.log(leader), 30, "a rotation on the leader"
        )
    finally:
        stop.set()
        load.join(timeout=20)
    status = cluster.status(leader)
    assert status is not None and status.role == cluster_pb2.ROLE_LEADER, "leader changed"
    cluster_id = status.header.cluster_id

    # Once nothing changes, the newest file catches up with the state, then stays.
    def caught_up() -> bool:
        st = cluster.status(leader)
        files = chain(dirs[leader], cluster_id)
        return st is not None and bool(files) and files[-1].revision == st.revision

    wait_until(caught_up, 10, "a backup at the cluster's revision")
    wait_until(lambda: check_chain(dirs[leader], cluster_id), 10, "a settled chain")
    files = check_chain(dirs[leader], cluster_id)
    for i, d in enumerate(dirs):
        if i != leader:
            assert files_of(d) == [], f"follower {cluster.nodes[i].node_id} wrote backups"

    # The chain from the newest full snapshot restores to a replica's state.
    last_full = max(i for i, b in enumerate(files) if b.kind == "full")
    rebuilt = replay.rebuild(files[last_full], files[last_full + 1 :])
    api = cluster.nodes[leader].api
    with Client([api]) as c:
        _, data = c.snapshot(serializable=True, endpoint=api)
    replica = backupfile.decode(data).state
    assert replica is not None
    diffs = replay.differences(
        decode_snapshot(rebuilt.snapshot()), replica, ignore=("last_time_ms",)
    )
    assert not diffs, diffs

    # A new leader starts a chain of its own, with a full snapshot.
    cluster.kill(leader)
    new = cluster.wait_for_leader(exclude=leader)
    wait_until(lambda: kinds(files_of(dirs[new]))[:1] == "F", 10, "the new leader's backup")
