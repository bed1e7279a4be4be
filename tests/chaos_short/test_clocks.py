"""The clock nemeses' plumbing: a ProxiedCluster made with clocks runs every node under
the wall-clock shim with its own offset file, and moving one node's offset moves that
running node's wall clock (seen in the time the leader stamps on the commands it
proposes, which each event carries), and only its own."""

from __future__ import annotations

import time
from pathlib import Path

from chaos.cluster import ProxiedCluster
from chaos.toxiproxy import Toxiproxy
from coord.client import Client
from coord.testing import wait_until

HOUR_S = 3600.0


def stamped_offset_s(cl: Client, key: str) -> float:
    """Put ``key``; how far the leader's stamp on it is from this process's wall clock."""
    before = time.time()
    rev = cl.put(key, b"x").header.revision
    after = time.time()
    event = next(e for e in cl.watch(rev) if e.revision == rev)
    stamp = event.time_ms / 1000
    if before - 1 <= stamp <= after + 1:
        return 0.0
    return stamp - (before + after) / 2


def test_a_node_wall_clock_moves_while_it_runs(toxi: Toxiproxy, tmp_path: Path) -> None:
    c = ProxiedCluster(toxi, 3, clocks=True, base_dir=str(tmp_path / "c"))
    try:
        c.start()
        leader = c.agreed_leader()
        follower = next(n for n in c.member_ids if n != leader)
        with Client(c.client_endpoints, timeout_s=10) as cl:
            assert stamped_offset_s(cl, "a") == 0.0  # every offset starts at 0
            c.wall_clock(follower).set(-HOUR_S)  # one node's clock: the leader's stays
            assert stamped_offset_s(cl, "b") == 0.0
            c.wall_clock(leader).set(HOUR_S)
            offset = stamped_offset_s(cl, "c")
            assert abs(offset - HOUR_S) < 60, f"the leader stamped {offset:+.1f} s, not +1 h"
            # (Set back, the leader's clock would not show in stamps: the state machine
            # never lets its time go backwards. tests/unit/test_chaos_clockshim.py checks
            # steps back.)
        assert c.agreed_leader() == leader  # monotonic clocks untouched: no election
        wait_until(lambda: all(n.running for n in c.members), 5, "every node still running")
    finally:
        c.close()
