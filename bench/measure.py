"""System-agnostic benchmark drivers (used for both etcd and coord).

* :func:`measure_leader_kill_to_write` - failover: seconds from SIGKILL of
  the leader to the first committed put seen by a client that knows all
  endpoints (``ClusterUnderTest`` + its ``make_client``).
* :func:`measure_put_throughput` - ops/s and p50/p99 put latency with N
  concurrent in-flight puts, load generated in one separate process
  (``_loadgen.py``) given a client factory ``"module:callable"``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from _harness import BENCH_DIR, ClusterUnderTest, log, wait_for

# --------------------------------------------------------------------------
# Failover
# --------------------------------------------------------------------------


def measure_leader_kill_to_write(
    cluster: ClusterUnderTest,
    rounds: int,
    call_timeout: float = 0.1,
    healthy_timeout: float = 60.0,
) -> list[float]:
    """Kill -9 the leader ``rounds`` times; return kill-to-first-write seconds.

    Each round: wait until the cluster is healthy, find the leader, open a
    failover client whose current endpoint is the leader and do one put
    through it (connected, warm). Then take t0, SIGKILL the leader and put
    again: the client's rotate-on-failure loop (``call_timeout`` per try)
    runs until some member commits the write; the round's value is the time
    from t0 until that put returns. The killed member is then restarted and
    the cluster must be healthy again before the next round.
    """
    return asyncio.run(_kill_rounds(cluster, rounds, call_timeout, healthy_timeout))


async def _kill_rounds(
    cluster: ClusterUnderTest, rounds: int, call_timeout: float, healthy_timeout: float
) -> list[float]:
    # Cluster control calls are blocking; nothing else runs on this loop
    # meanwhile, so calling them directly is fine (and keeps child processes
    # spawned from the main thread).
    out: list[float] = []
    for r in range(rounds):
        cluster.wait_healthy(healthy_timeout)
        leader = wait_for(cluster.leader_index, healthy_timeout, f"{cluster.name} leader")
        dt = await _one_kill(cluster, leader, call_timeout, r)
        out.append(dt)
        ms = dt * 1e3
        log(f"{cluster.name}: round {r + 1}/{rounds}: killed {leader}, write after {ms:.0f} ms")
        cluster.restart(leader)
    cluster.wait_healthy(healthy_timeout)
    return out


async def _one_kill(cluster: ClusterUnderTest, leader: int, call_timeout: float, r: int) -> float:
    client = cluster.make_client(first=leader, call_timeout=call_timeout)
    try:
        await client.put("bench/failover", f"warm-{r}".encode())
        t0 = time.perf_counter()
        cluster.kill(leader)
        await client.put("bench/failover", f"after-kill-{r}".encode())
        return time.perf_counter() - t0
    finally:
        await client.close()


# --------------------------------------------------------------------------
# Throughput
# --------------------------------------------------------------------------


@dataclass
class Throughput:
    """Result of one throughput run."""

    clients: int
    ops_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    ops: int
    errors: int
    raw: dict[str, Any]


def measure_put_throughput(
    endpoints: Sequence[str],
    clients: int,
    seconds: float,
    factory: str = "etcd_client:EtcdKV",
    warmup: float = 1.0,
    value_size: int = 64,
    call_timeout: float = 1.0,
) -> Throughput:
    """Put throughput and latency with ``clients`` concurrent in-flight puts.

    Runs ``_loadgen.py`` as one separate process that builds its client with
    ``factory(endpoints, call_timeout=...)``. Put the leader's endpoint first
    in ``endpoints`` if the client should start on the leader. The per-call
    deadline defaults to 1 s here (not the 100 ms failover deadline) so that
    queueing under load is measured as latency rather than turned into retries.
    """
    cmd = [
        sys.executable, str(BENCH_DIR / "_loadgen.py"),
        "--factory", factory,
        "--endpoints", ",".join(endpoints),
        "--clients", str(clients),
        "--seconds", str(seconds),
        "--warmup", str(warmup),
        "--value-size", str(value_size),
        "--call-timeout", str(call_timeout),
    ]  # fmt: skip
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=seconds + warmup + 120,
        cwd=BENCH_DIR,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    return Throughput(
        clients=clients,
        ops_per_s=doc["ops_per_s"],
        p50_ms=doc["p50_ms"],
        p99_ms=doc["p99_ms"],
        ops=doc["ops"],
        errors=doc["errors"],
        raw=doc,
    )


def leader_first(endpoints: Sequence[str], leader: int | None) -> list[str]:
    """``endpoints`` rotated so the leader's endpoint comes first."""
    eps = list(endpoints)
    if leader is None:
        return eps
    return eps[leader:] + eps[:leader]
