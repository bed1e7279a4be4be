"""A leader's tick-thread gaps are measured and warned about (coord.raft.node ``_tick_gap``).

Real RaftNodes over the in-memory network. Heartbeats and elections are slowed so that
a stalled leader stays leader: the stall is a tick callback that sleeps once.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path

import pytest

from coord.config import RaftTimings
from coord.testing import wait_until
from tests.inproc.memory_raft import MemoryCluster

pytestmark = pytest.mark.timeout(60)

STALL_S = 0.3
# A stall of STALL_S is more than two heartbeat intervals, far below an election timeout.
TIMINGS = RaftTimings(
    heartbeat_s=0.1,
    election_timeout_min_s=3.0,
    election_timeout_max_s=4.0,
    connection_timeout_s=10.0,
    leader_fallback_timeout_s=8.0,
)


def test_a_stalled_leader_tick_is_measured_and_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """etcd warns "leader failed to send out heartbeat on time"; coord says the same
    from the gap between two passes of the tick thread (its heartbeats leave from it),
    and the metric (``on_tick_gap``) sees every gap, followers' too. Only a leader warns."""
    cluster = MemoryCluster(tmp_path)
    cluster.timings = TIMINGS
    cluster.start_all()
    try:
        leader_id = cluster.wait_leader()
        leader = cluster.nodes[leader_id]
        follower = next(n for nid, n in cluster.nodes.items() if nid != leader_id)
        gaps: dict[str, list[float]] = {"leader": [], "follower": []}
        leader.on_tick_gap = gaps["leader"].append
        follower.on_tick_gap = gaps["follower"].append
        stalls = threading.Event()

        def stall_once() -> None:
            if not stalls.is_set():
                stalls.set()
                time.sleep(STALL_S)

        caplog.set_level(logging.WARNING, logger="coord.raft.node")
        caplog.clear()
        leader._next_late_warning = 0.0  # a gap of a loaded machine may have warned already
        leader._raft.add_tick_callback(stall_once)
        wait_until(lambda: any(g >= STALL_S for g in gaps["leader"]), 10, "the stall measured")
        wait_until(lambda: len(gaps["follower"]) > 10, 10, "the follower's ticks measured")
        away = [
            int(m.group(1))
            for r in caplog.records
            if (m := re.search(r"tick thread was away for (\d+) ms", r.getMessage()))
        ]
        assert any(ms >= 1000 * STALL_S for ms in away), away
        assert len(away) == 1, "at most one warning in 10 s"
        assert all(r.name == "coord.raft.node" for r in caplog.records if "away" in r.getMessage())
        assert cluster.wait_leader() == leader_id  # no election: the stall was short
    finally:
        cluster.close()
