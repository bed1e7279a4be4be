"""System-agnostic benchmark drivers (used for both etcd and coord).

* :func:`measure_leader_kill_to_write` - failover: seconds from SIGKILL of
  the leader to the first committed put seen by a client that knows all
  endpoints (``ClusterUnderTest`` + its ``make_client``).
* :func:`measure_leader_failure_to_write` - the same driver with the way the
  leader fails (and recovers) as callables, e.g. SIGSTOP / SIGCONT for a hung
  leader (``hung_leader.py``), optionally timing the election as well.
* :func:`measure_put_throughput` - ops/s and p50/p99 put latency with N
  concurrent in-flight puts, load generated in one separate process
  (``_loadgen.py``) given a client factory ``"module:callable"``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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
    done = measure_leader_failure_to_write(
        cluster,
        rounds,
        fail=lambda c, i: c.kill(i),
        recover=lambda c, i: c.restart(i),
        call_timeout=call_timeout,
        healthy_timeout=healthy_timeout,
        verb="killed",
    )
    return [r.write_s for r in done]


class LeaderWatch(Protocol):
    """Notices a new leader among the members that were not failed (see
    :func:`measure_leader_failure_to_write`); built inside the event loop."""

    async def new_leader_after(self, old: int, t0: float, timeout: float) -> float | None:
        """Poll every member but ``old`` until one says it leads; return seconds
        since ``t0`` (``time.perf_counter()``) when that answer arrived, or None
        after ``timeout`` seconds."""
        ...

    async def close(self) -> None:
        """Release channels."""
        ...


@dataclass
class FailoverRound:
    """One round of :func:`measure_leader_failure_to_write`."""

    leader: int
    write_s: float  # failure -> the put returned OK
    elected_s: float | None = None  # failure -> a new leader seen (with a ``watch``)
    failed_at: float = 0.0  # time.time() of the failure (to line up with server logs)
    retries: int | None = None  # failed attempts of that put (``client.rotator.failures``)


def measure_leader_failure_to_write(
    cluster: ClusterUnderTest,
    rounds: int,
    fail: Callable[[Any, int], None],
    recover: Callable[[Any, int], None],
    call_timeout: float = 0.1,
    healthy_timeout: float = 60.0,
    watch: Callable[[], LeaderWatch] | None = None,
    verb: str = "failed",
) -> list[FailoverRound]:
    """Fail the leader ``rounds`` times with ``fail(cluster, i)``; time the next write.

    The driver behind :func:`measure_leader_kill_to_write` (``fail`` = kill -9,
    ``recover`` = restart) and ``hung_leader.py`` (SIGSTOP / SIGCONT). Each
    round as described there; ``recover(cluster, i)`` runs after the round's
    write (and the watch) and the cluster must be healthy before the next one.
    With ``watch`` (a factory called once inside the event loop), the time from
    the failure until some other member reports that it leads is recorded as
    well (``elected_s``), polled concurrently with the client's put.
    """
    return asyncio.run(
        _failure_rounds(cluster, rounds, fail, recover, call_timeout, healthy_timeout, watch, verb)
    )


async def _failure_rounds(
    cluster: ClusterUnderTest,
    rounds: int,
    fail: Callable[[Any, int], None],
    recover: Callable[[Any, int], None],
    call_timeout: float,
    healthy_timeout: float,
    watch_factory: Callable[[], LeaderWatch] | None,
    verb: str,
) -> list[FailoverRound]:
    # Cluster control calls are blocking; nothing else runs on this loop
    # meanwhile, so calling them directly is fine (and keeps child processes
    # spawned from the main thread).
    watch = watch_factory() if watch_factory is not None else None
    out: list[FailoverRound] = []
    try:
        for r in range(rounds):
            cluster.wait_healthy(healthy_timeout)
            leader = wait_for(cluster.leader_index, healthy_timeout, f"{cluster.name} leader")
            res = await _one_failure(cluster, leader, fail, call_timeout, r, watch)
            out.append(res)
            what = f"{verb} {leader}, write after {res.write_s * 1e3:.0f} ms"
            if res.elected_s is not None:
                what += f", new leader seen after {res.elected_s * 1e3:.0f} ms"
            log(f"{cluster.name}: round {r + 1}/{rounds}: {what}")
            recover(cluster, leader)
        cluster.wait_healthy(healthy_timeout)
    finally:
        if watch is not None:
            await watch.close()
    return out


async def _one_failure(
    cluster: ClusterUnderTest,
    leader: int,
    fail: Callable[[Any, int], None],
    call_timeout: float,
    r: int,
    watch: LeaderWatch | None,
) -> FailoverRound:
    client = cluster.make_client(first=leader, call_timeout=call_timeout)
    seen: asyncio.Future[float | None] | None = None
    try:
        await client.put("bench/failover", f"warm-{r}".encode())
        rotator = getattr(client, "rotator", None)
        failures = getattr(rotator, "failures", 0)
        failed_at = time.time()
        t0 = time.perf_counter()
        fail(cluster, leader)
        if watch is not None:  # starts polling once the put below awaits
            seen = asyncio.ensure_future(watch.new_leader_after(leader, t0, timeout=30.0))
        await client.put("bench/failover", f"after-fail-{r}".encode())
        write_s = time.perf_counter() - t0
        elected_s = await seen if seen is not None else None
        retries = getattr(rotator, "failures", 0) - failures if rotator is not None else None
        return FailoverRound(leader, write_s, elected_s, failed_at, retries)
    finally:
        if seen is not None and not seen.done():
            seen.cancel()
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
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=seconds + warmup + 120,
        cwd=BENCH_DIR,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    # CPU of the load generator (start-up, warm-up and run): the only child reaped meanwhile.
    doc["loadgen_cpu_s"] = round(
        after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 3
    )
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
