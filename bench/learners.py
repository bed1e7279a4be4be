"""Growing 3 → 5 under a write load: voters added at once vs learners promoted once
caught up (issue 14, part 3).

For each mode, a fresh 3-node coord cluster (fsync on) is filled with ``--preload``
keys (so that a new node has a snapshot and a log to catch up on), then ``--writers``
threads put 64-byte values in a loop. After ``--steady`` seconds the cluster grows:
``voters``: ``node add`` (a voter) and start, for n4 then n5 (each waits for the
previous to apply the leader's index); ``learners``: ``node add --learner`` and start,
then ``node promote`` once the leader reports it within 200 entries, for n4 then n5.
Then ``--steady`` more seconds.

Reported per mode: the longest gap between two acknowledged writes (any writer) in
the steady phase before the grow and during the grow, the longest single put, write
errors, and whether an election happened (the Raft term before vs after). A
measurement, never asserted in tests.

    python bench/learners.py [--preload 20000] [--writers 8] [--steady 5] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from coord import errors
from coord.client import Client
from coord.testing import LocalCluster, NodeProc, wait_until


@dataclass
class Result:
    mode: str
    steady_max_gap_ms: float
    grow_max_gap_ms: float
    grow_s: float
    max_put_ms: float
    writes: int
    errors: int
    term_before: int
    term_after: int

    @property
    def election(self) -> bool:
        return self.term_after != self.term_before


class Load:
    def __init__(self, endpoints: list[str], writers: int) -> None:
        self.acks: list[float] = []
        self.max_put = 0.0
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(endpoints, t), daemon=True)
            for t in range(writers)
        ]

    def _run(self, endpoints: list[str], t: int) -> None:
        with Client(endpoints, timeout_s=30.0) as c:
            i = 0
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    c.put(f"bench/{t}/{i}", b"x" * 64)
                except errors.CoordError:
                    with self._lock:
                        self.errors += 1
                    continue
                t1 = time.monotonic()
                with self._lock:
                    self.acks.append(t1)
                    self.max_put = max(self.max_put, t1 - t0)
                i += 1

    def start(self) -> None:
        for th in self._threads:
            th.start()

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=60)

    def max_gap(self, start: float, end: float) -> float:
        with self._lock:
            ts = sorted(a for a in self.acks if start <= a <= end)
        points = [start, *ts, end]
        return max(b - a for a, b in itertools.pairwise(points))


def term(cluster: LocalCluster) -> int:
    st = cluster.status(cluster.wait_for_leader(), timeout=2.0)
    assert st is not None
    return int(st.term)


def caught_up(cluster: LocalCluster, node: NodeProc) -> None:
    target = cluster.status(cluster.wait_for_leader(), timeout=2.0)
    assert target is not None

    def done() -> bool:
        st = cluster.status(node.index)
        return st is not None and st.applied_index >= target.commit_index

    wait_until(done, 120, f"{node.node_id} to catch up")


def grow(cluster: LocalCluster, c: Client, learner: bool) -> None:
    for _ in range(2):
        node = cluster.new_node()
        resp = c.add_node(node.node_id, node.raft, node.api, learner=learner)
        node.joined_cluster_id = resp.cluster_id
        node.join_peers = [f"{n.id}={n.raft_address},{n.api_address}" for n in resp.nodes]
        cluster.start(node.index)
        caught_up(cluster, node)
        if learner:

            def promoted(nid: str = node.node_id) -> bool:
                n = next(n for n in c.nodes().nodes if n.id == nid)
                if not n.match_index or n.lag > 200:
                    return False
                try:
                    c.promote_node(nid)
                except errors.FailedPrecondition:
                    return False
                return True

            wait_until(promoted, 120, f"{node.node_id} promoted")


def run(mode: str, preload: int, writers: int, steady_s: float) -> Result:
    with tempfile.TemporaryDirectory(prefix="coord-bench-learners-") as tmp:
        cluster = LocalCluster(3, base_dir=tmp)
        cluster.start()
        try:
            cluster.wait_for_leader()
            with cluster.client(timeout_s=30.0) as c:
                print(f"[{mode}] preloading {preload} keys", file=sys.stderr)
                for i in range(0, preload, 500):
                    for j in range(i, min(i + 500, preload)):
                        c.put(f"fill/{j:07d}", b"y" * 100)
                before = term(cluster)
                load = Load(cluster.endpoints[:3], writers)
                load.start()
                t0 = time.monotonic()
                wait_until(lambda: time.monotonic() >= t0 + steady_s, steady_s + 5, "steady")
                t1 = time.monotonic()
                print(f"[{mode}] growing 3 -> 5", file=sys.stderr)
                grow(cluster, c, learner=mode == "learners")
                t2 = time.monotonic()
                wait_until(lambda: time.monotonic() >= t2 + steady_s, steady_s + 5, "after")
                load.stop()
                after = term(cluster)
            return Result(
                mode=mode,
                steady_max_gap_ms=1000 * load.max_gap(t0 + 1.0, t1),
                grow_max_gap_ms=1000 * load.max_gap(t1, t2 + steady_s),
                grow_s=t2 - t1,
                max_put_ms=1000 * load.max_put,
                writes=len(load.acks),
                errors=load.errors,
                term_before=before,
                term_after=after,
            )
        finally:
            cluster.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preload", type=int, default=20000)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--steady", type=float, default=5.0)
    ap.add_argument("--modes", default="voters,learners")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [run(m, args.preload, args.writers, args.steady) for m in args.modes.split(",")]
    if args.json:
        print(json.dumps([asdict(r) | {"election": r.election} for r in results], indent=2))
        return
    print(
        "| mode | longest gap, steady (ms) | longest gap, grow (ms) | grow took (s) "
        "| longest put (ms) | writes | errors | election |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r.mode} | {r.steady_max_gap_ms:.0f} | {r.grow_max_gap_ms:.0f} | "
            f"{r.grow_s:.1f} | {r.max_put_ms:.0f} | {r.writes} | {r.errors} | "
            f"{'yes' if r.election else 'no'} (term {r.term_before} → {r.term_after}) |"
        )


if __name__ == "__main__":
    main()
