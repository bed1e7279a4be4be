"""A wiped follower and a stale leader (issue 14, part 2; docs/raft-hardening.md).

The voting gate (coord.raft.gate) kept a wiped node from *voting* until it held a
leader's log, but it acknowledged appends from any leader of a term at least its own
(0 after the wipe). Three nodes: the old leader L1 (term t) is cut off; L2 (term > t)
commits with the third node W; W is wiped and restarted where it hears only L1: L1 and
W are a majority for L1's term-t entries, at indexes L2 already committed. Now a blank
node acknowledges nothing until it has heard the current term from enough of the
configuration that one of them was in every majority that committed anything.
"""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from pathlib import Path

from chaos.cluster import ProxiedCluster
from chaos.toxiproxy import Toxiproxy
from coord import errors
from coord.client import Client
from coord.testing import wait_until
from coord.v1 import cluster_pb2

# The stale leader must stay leader through the whole fault: it steps down only when it
# has heard from no majority for the fallback timeout (60 s; the fault lasts ~15 s).
# Elections: timeouts of 0.6-1.0 s (heartbeats every 50 ms) keep a leader certainly
# alive in its followers' eyes on a loaded 2-core machine.
ARGS = [
    "--election-timeout-min-s", "0.6", "--election-timeout-max-s", "1.0",
    "--connection-timeout-s", "60", "--leader-fallback-timeout-s", "60",
    "--log-compaction-entries", "1000000",
]  # fmt: skip
STALE_WINDOW_S = 3.0  # how long the stale leader and the wiped node are left together


class KeyWriter:
    """``threads`` clients putting distinct keys through one endpoint until stopped; the
    keys whose put was acknowledged are kept (failures are expected: a stale leader
    cannot commit)."""

    def __init__(self, endpoint: str, prefix: str, threads: int, timeout_s: float) -> None:
        self._endpoint = endpoint
        self._prefix = prefix
        self._timeout = timeout_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.acked: list[str] = []
        self.attempts = 0
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    def _run(self, i: int) -> None:
        with Client(
            [self._endpoint], timeout_s=self._timeout, attempt_timeout_s=self._timeout
        ) as c:
            for n in itertools.count():
                if self._stop.is_set():
                    return
                key = f"{self._prefix}/{i}/{n}"
                with self._lock:
                    self.attempts += 1
                try:
                    c.put(key, "v")
                except errors.CoordError:
                    continue
                with self._lock:
                    self.acked.append(key)

    def stop(self) -> list[str]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        with self._lock:
            return list(self.acked)


def _status(c: ProxiedCluster, node_id: str) -> cluster_pb2.StatusResponse:
    st = c.status(c.index(node_id), timeout=2.0)
    assert st is not None, f"{node_id} does not answer"
    return st


def _settled(c: ProxiedCluster, timeout_s: float = 30.0) -> str:
    """Wait until every member follows one leader and applied its commit index."""

    def settled() -> str | None:
        views = [_status(c, n) for n in c.member_ids]
        leaders = {v.leader_id for v in views}
        if len(leaders) != 1 or "" in leaders:
            return None
        commit = next(v.commit_index for v in views if v.node_id in leaders)
        if any(v.applied_index < commit for v in views):
            return None
        return leaders.pop()

    found: str = wait_until(settled, timeout_s, "every member following one leader, caught up")
    return found


def _local_keys(c: ProxiedCluster, node_id: str) -> set[str]:
    """The keys node ``node_id`` holds (a serializable read of its own state)."""
    api = c.nodes[c.index(node_id)].api
    with Client([api], timeout_s=5.0, attempt_timeout_s=2.0) as cl:
        resp = cl.range("", prefix=True, serializable=True, keys_only=True)
    assert resp.header.node_id == node_id and not resp.more
    return {kv.key.decode() for kv in resp.kvs}


def _by_whom(keys: list[str], acked: dict[str, str]) -> str:
    shown = ", ".join(f"{k} (acknowledged by {acked[k]})" for k in keys[:4])
    return shown + (f" ... and {len(keys) - 4} more" if len(keys) > 4 else "")


def _put(c: ProxiedCluster, via: str, keys: list[str], acked: dict[str, str]) -> None:
    with Client([c.nodes[c.index(via)].api], timeout_s=10) as cl:
        for key in keys:
            cl.put(key, "v")
            acked[key] = via


def _new_leader(c: ProxiedCluster, among: list[str]) -> str:
    def agreed() -> str | None:
        views = [_status(c, n) for n in among]
        lid = views[0].leader_id
        return lid if lid in among and all(v.leader_id == lid for v in views) else None

    found: str = wait_until(agreed, 20, f"a leader among {among}")
    return found


def _problems(
    c: ProxiedCluster, acked: dict[str, str], stale_commits: list[int], stale_commit: int
) -> list[str]:
    """Acknowledged writes not on every replica or not read through the leader,
    replicas whose states differ, and commits the stale leader made."""
    problems = []
    with Client(c.client_endpoints, timeout_s=10) as cl:
        held = {kv.key.decode() for kv in cl.range("", prefix=True, keys_only=True).kvs}
        resp = cl.check_consistency()
    lost = sorted(k for k in acked if k not in held)
    if lost:
        problems.append(f"{len(lost)} acknowledged writes lost: {_by_whom(lost, acked)}")
    for nid in c.member_ids:
        lacks = sorted(k for k in acked if k not in _local_keys(c, nid))
        if lacks:
            problems.append(f"{nid} lacks {len(lacks)}: {_by_whom(lacks, acked)}")
    if not resp.consistent or {n.node_id for n in resp.nodes} != set(c.member_ids):
        hashes = {n.node_id: (n.revision, n.hash[:12], n.matches) for n in resp.nodes}
        problems.append(f"replicas diverged: (revision, hash, matches) {hashes}")
    if max(stale_commits) != stale_commit:
        problems.append(
            f"the stale leader committed up to {max(stale_commits)} (from {stale_commit}) "
            "with the wiped node's acknowledgements"
        )
    return problems


def test_a_wiped_follower_does_not_help_a_stale_leader_commit(
    toxi: Toxiproxy, tmp_path: Path
) -> None:
    c = ProxiedCluster(toxi, 3, base_dir=str(tmp_path / "c"), extra_args=ARGS)
    stale: KeyWriter | None = None
    try:
        c.start()
        old = _settled(c)
        acked: dict[str, str] = {}  # acknowledged key -> who acknowledged it
        _put(c, old, [f"base/{i}" for i in range(10)], acked)
        others = [n for n in c.member_ids if n != old]
        cuts = {n: c.cut(old, n) for n in others}
        before = _status(c, old)

        # L1, cut off, keeps appending what its clients send: entries of its term that
        # it cannot commit, at the indexes L2 is about to fill.
        stale = KeyWriter(c.nodes[c.index(old)].api, "stale", threads=4, timeout_s=0.3)
        new = _new_leader(c, others)
        (wiped,) = [n for n in others if n != new]
        _put(c, new, [f"new/{i}" for i in range(30)], acked)  # committed by L2 with W
        wait_until(
            lambda: _status(c, old).raft_log_entries >= before.raft_log_entries + 5,
            10,
            "the cut-off leader appending entries it cannot commit",
        )
        new_view, old_view = _status(c, new), _status(c, old)
        assert old_view.role == cluster_pb2.ROLE_LEADER and old_view.term < new_view.term
        assert old_view.commit_index < new_view.commit_index

        # W loses its data and comes back where only L1 reaches it.
        c.kill(c.index(wiped))
        shutil.rmtree(c.nodes[c.index(wiped)].data_dir)
        cut_w = c.cut(wiped, new)
        c.undo(cuts.pop(wiped))
        c.start(c.index(wiped))

        def hears_the_stale_leader() -> bool:
            st = c.status(c.index(wiped), timeout=1.0)
            return st is not None and st.leader_id == old and st.raft_log_entries > 0

        wait_until(hears_the_stale_leader, 30, f"the wiped {wiped} receiving {old}'s log")
        # A window, not a synchronisation: record what L1 commits while W is with it.
        commits = []
        deadline = time.monotonic() + STALE_WINDOW_S
        while time.monotonic() < deadline:
            commits.append(_status(c, old).commit_index)
            time.sleep(0.05)  # polling pace
        acked.update(dict.fromkeys(stale.stop(), old))
        stale = None

        c.undo(cut_w + [t for undo in cuts.values() for t in undo])
        leader = _settled(c)
        assert _status(c, leader).term >= new_view.term
        problems = _problems(c, acked, commits, old_view.commit_index)
        assert not problems, "\n".join(problems)
    finally:
        if stale is not None:
            stale.stop()
        c.close()
