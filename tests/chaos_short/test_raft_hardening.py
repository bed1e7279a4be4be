"""coord's pysyncobj hardening (docs/raft-hardening.md) against real clusters whose Raft
links go through Toxiproxy: a node cut off, or stalled, while the others go on.

Each test was a reproduction that failed on pysyncobj's own behaviour before the fix.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path

from chaos.cluster import ProxiedCluster
from chaos.toxiproxy import Toxiproxy
from coord import errors
from coord.client import Client
from coord.testing import wait_until
from coord.v1 import cluster_pb2


class Writers:
    """``threads`` clients putting distinct keys through ``endpoint`` until stopped;
    failures are counted, not raised (the endpoint may be cut off on purpose)."""

    def __init__(self, endpoint: str, prefix: str, threads: int, timeout_s: float) -> None:
        self._endpoint = endpoint
        self._prefix = prefix
        self._timeout = timeout_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.done: list[float] = []  # time.monotonic() of each acknowledged put
        self.failed = 0
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
                try:
                    c.put(f"{self._prefix}/{i}/{n}", "v")
                except errors.CoordError:
                    with self._lock:
                        self.failed += 1
                    continue
                with self._lock:
                    self.done.append(time.monotonic())

    def rate(self, over_s: float) -> float:
        """Acknowledged puts per second over the last ``over_s`` seconds."""
        since = time.monotonic() - over_s
        with self._lock:
            return sum(1 for t in self.done if t >= since) / over_s

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


def _status(c: ProxiedCluster, node_id: str) -> cluster_pb2.StatusResponse:
    st = c.status(c.index(node_id), timeout=2.0)
    assert st is not None, f"{node_id} does not answer"
    return st


def _settled(c: ProxiedCluster) -> str:
    """Wait until every member follows one leader, holds its log and acknowledges (a
    member that started late acknowledges and votes only once it has learned the term
    from every other member of three and caught up: coord.raft.gate); return the
    leader's id."""

    def settled() -> str | None:
        views = [_status(c, n) for n in c.member_ids]
        leaders = {v.leader_id for v in views}
        commit = max(v.commit_index for v in views)
        if len(leaders) != 1 or "" in leaders or any(v.applied_index < commit for v in views):
            return None
        if any(v.catching_up for v in views):
            return None
        return leaders.pop()

    found: str = wait_until(settled, 20, "every member following one leader, caught up")
    return found


def _holds(pred: Callable[[], str | None], duration_s: float) -> None:
    """Fail with ``pred``'s complaint if it has one at any point within ``duration_s``."""
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        complaint = pred()
        assert complaint is None, complaint
        time.sleep(0.02)  # polling pace


def test_an_old_leader_with_a_conflicting_tail_catches_up_under_load(
    toxi: Toxiproxy, tmp_path: Path
) -> None:
    """Regression (chaos isolate-leader, issue 14): after the heal the old leader kept
    its uncommitted entries and accepted nothing for ~50 s.

    The leader moves a follower's nextIndex past every entry it sends and applied every
    reset hint as it came. Under load two appends are in flight at once: the probe
    just below the follower's conflicting tail (hint: its last index) and the next
    pipelined append (hint: its last index + 1) are answered together, so nextIndex
    swung between the two and never reached the conflict; only a snapshot, once the
    leader compacted past the tail, ended it. Compaction is off here.
    """
    c = ProxiedCluster(
        toxi, 3, base_dir=str(tmp_path / "c"), extra_args=["--log-compaction-entries", "1000000"]
    )
    writers: list[Writers] = []
    try:
        c.start()
        old = _settled(c)
        others = [n for n in c.member_ids if n != old]
        undo = c.partition([old], others)
        before = _status(c, old)

        # The old leader, running and cut off, appends what it is sent (until it steps
        # down), uncommitted: its tail conflicts with what the new leader will write.
        old_api = c.nodes[c.index(old)].api
        writers.append(Writers(old_api, "old", threads=6, timeout_s=0.2))

        def new_leader() -> str | None:
            views = [_status(c, n) for n in others]
            lid = views[0].leader_id
            return lid if lid in others and all(v.leader_id == lid for v in views) else None

        new = wait_until(new_leader, 20, "a leader among the majority")
        tail = _status(c, old)
        appended = tail.raft_log_entries - before.raft_log_entries
        assert appended >= 3, f"the old leader appended {appended} entries when cut off"
        writers[0].stop()

        load = Writers(c.nodes[c.index(new)].api, "new", threads=8, timeout_s=5.0)
        writers.append(load)
        wait_until(lambda: load.rate(1.0) >= 200, 10, "the new leader taking 200 writes/s")
        heal_commit = _status(c, new).commit_index
        # The tail must conflict: the new leader wrote past the indexes it holds.
        assert heal_commit > before.raft_log_entries + appended
        c.undo(undo)
        healed = time.monotonic()

        def behind() -> list[str]:
            return [n for n in c.member_ids if _status(c, n).commit_index < heal_commit]

        try:
            wait_until(lambda: not behind(), 2.0, f"every commit index past {heal_commit}")
        except TimeoutError:
            views = {n: (s.term, s.leader_id, s.commit_index) for n in c.member_ids
                     if (s := _status(c, n))}  # fmt: skip
            raise AssertionError(
                f"{behind()} not past the heal-time commit {heal_commit} 2 s after the heal "
                f"(writes/s {load.rate(1.0):.0f}); (term, leader, commit): {views}"
            ) from None
        print(f"{appended} entries appended when cut off; caught up "
              f"{time.monotonic() - healed:.3f} s after the heal")  # fmt: skip
    finally:
        for w in writers:
            w.stop()
        c.close()


# Election timings that keep the leader certainly alive in its followers' eyes on a
# loaded machine (heartbeats every 50 ms, a leader is "alive" for 0.6 s after one).
CALM = [
    "--election-timeout-min-s", "0.6", "--election-timeout-max-s", "1.0",
    "--connection-timeout-s", "3", "--leader-fallback-timeout-s", "2",
]  # fmt: skip


def test_a_stalled_follower_cut_from_the_leader_still_asks_before_campaigning(
    toxi: Toxiproxy, tmp_path: Path
) -> None:
    """Regression (issue 13, hole 6): PreVote was bypassed by a stall of the tick thread.

    PreVote moved pysyncobj's election deadline out when it came within three ticks;
    pysyncobj's own check, at the start of every tick, campaigns once the deadline has
    passed. A follower that stops hearing the leader (here: its link cut) should run
    pre-vote rounds, which the other follower denies (the leader is alive). Stalled
    for longer than an election timeout (here SIGSTOP; in production a slow snapshot
    load, a paused VM), it resumed past its deadline and campaigned without asking:
    a new term that deposed the healthy leader.
    """
    c = ProxiedCluster(toxi, 3, base_dir=str(tmp_path / "c"), extra_args=CALM)
    try:
        c.start()
        leader = _settled(c)
        follower, other = [n for n in c.member_ids if n != leader]
        term = _status(c, leader).term
        # The follower hears the leader no more (what was in flight is held forever)
        # and stalls at once, for longer than the longest election timeout.
        c.cut(leader, follower)
        c.pause(c.index(follower))
        time.sleep(1.5)  # the length of the stall
        c.resume(c.index(follower))

        def changed() -> str | None:
            views = {n: _status(c, n) for n in c.member_ids}
            terms = {n: v.term for n, v in views.items()}
            if any(t != term for t in terms.values()):
                return f"a term changed from {term} after the stall: {terms}"
            if views[other].leader_id != leader:
                return f"{other} follows {views[other].leader_id!r}, not {leader}"
            return None

        _holds(changed, 2.0)  # two of its election timeouts: it asks, and is denied
    finally:
        c.close()
