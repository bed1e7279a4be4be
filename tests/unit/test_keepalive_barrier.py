"""Keepalive acknowledgements share Raft barriers: their Raft cost is bounded per second.

Each barrier is a no-op entry: a journal append and fsync on every node, two
AppendEntries and their replies, an apply. On a 2-core machine one costs the leader
~1.6 ms of CPU at low rates, far more than the keepalive it covers (issue 18: 1,000
sessions at TTL 5 s cost the leader 0.30 core with one barrier per 10 ms, 0.16 with one
per 50 ms; etcd 0.16 to 0.19). So keepalives start at most 20 barriers a second, however
many sessions there are, and a keepalive on an idle leader still waits for no window.
The leader's Raft is a stand-in here (barriers that commit at once): LeaseKeeper's own
batching runs as it is.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future

from coord.raft.node import ROLE_LEADER, View
from coord.server.duties.leases import LeaseKeeper

MAX_BARRIERS_PER_S = 20


class BarrierCountingRaft:
    def __init__(self) -> None:
        self.view = View(role=ROLE_LEADER, term=3)
        self.started: list[float] = []  # monotonic time of each barrier started

    def barrier(self) -> Future[None]:
        self.started.append(time.monotonic())
        done: Future[None] = Future()
        done.set_result(None)
        return done


def test_keepalives_from_a_thousand_sessions_start_at_most_20_barriers_a_second() -> None:
    raft = BarrierCountingRaft()
    keeper = LeaseKeeper(raft)  # type: ignore[arg-type]
    acked = 0

    async def keepalive() -> None:
        nonlocal acked
        await keeper.ack_barrier(timeout=10.0)
        acked += 1

    async def load(seconds: float) -> float:
        # 1,000 sessions at TTL 5 s: 600 keepalives a second, spread out.
        start = time.monotonic()
        pending = []
        while time.monotonic() - start < seconds:
            pending.extend(asyncio.create_task(keepalive()) for _ in range(6))
            await asyncio.sleep(0.01)
        await asyncio.wait_for(asyncio.gather(*pending), 10.0)
        return time.monotonic() - start

    elapsed = asyncio.run(load(0.6))
    assert acked >= 6 * 10  # every keepalive was acknowledged
    # Starts are at least a window apart, whatever the scheduling delays were.
    assert len(raft.started) <= elapsed * MAX_BARRIERS_PER_S + 1, (
        f"{len(raft.started)} barriers in {elapsed:.2f} s"
    )
    gaps = [b - a for a, b in zip(raft.started, raft.started[1:], strict=False)]
    assert min(gaps) >= 1 / MAX_BARRIERS_PER_S - 0.001


def test_a_keepalive_on_an_idle_leader_starts_its_barrier_at_once() -> None:
    raft = BarrierCountingRaft()
    keeper = LeaseKeeper(raft)  # type: ignore[arg-type]

    async def scenario() -> None:
        task = asyncio.create_task(keeper.ack_barrier(timeout=10.0))
        await asyncio.sleep(0)  # the keepalive ran up to its wait
        assert len(raft.started) == 1  # started in the call, not after a window
        await asyncio.wait_for(task, 5.0)

    asyncio.run(scenario())
