"""End-to-end check of the etcd harness and client (no numbers, just asserts).

1. 3-member cluster: put/get via the sync client and the async failover
   client, kill -9 the leader, see a new leader elected and a write
   succeed, restart the killed member and see it catch up.
2. Election API: client A campaigns with a 2 s lease (kept alive), client B
   observes A; A stops refreshing its lease (simulated crash), B's pending
   campaign wins once the lease expires and the observer sees B; B resigns.

Usage: ``python bench/etcd_smoke.py [--tuned]``. Exits non-zero on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _harness import log, wait_for
from etcd_client import AsyncEtcdClient
from etcd_cluster import DEFAULT, TUNED, EtcdCluster, EtcdTiming

ELECTION = "bench-election"
LEASE_TTL = 2


def check_kill_restart(timing: EtcdTiming) -> None:
    """Put/get, kill -9 the leader, new leader + write, restart, catch-up."""
    with EtcdCluster(3, timing) as c:
        old = c.wait_leader()
        rev = c.client(old).put("k", "v1")
        follower = (old + 1) % 3
        assert c.client(follower).get("k") == b"v1", "linearizable get via follower"
        log(f"leader={old}, put rev={rev}, get via follower ok")

        asyncio.run(_async_put_get(c))

        t0 = time.monotonic()
        c.kill(old)
        new = wait_for(lambda: _other_leader(c, old), 30, "new leader after kill")
        log(f"killed leader {old}; new leader {new} after {time.monotonic() - t0:.3f}s")
        c.client(new).put("k", "v2")
        assert c.client(new).get("k") == b"v2"

        c.restart(old)
        c.wait_healthy(30)
        assert c.client(old).get("k", serializable=True) == b"v2", "restarted member caught up"
        log(f"restarted member {old}; caught up; leader now {c.leader_index()}")


def _other_leader(c: EtcdCluster, old: int) -> int | None:
    idx = c.leader_index()
    return None if idx == old else idx


async def _async_put_get(c: EtcdCluster) -> None:
    kv = c.make_client()
    try:
        await kv.put("async-k", b"x")
    finally:
        await kv.close()
    async with AsyncEtcdClient(c.endpoints()[2]) as cli:
        assert await cli.get("async-k") == b"x"
        st = await cli.status()
        assert st.leader != 0
    log("async failover client put + aio get/status ok")


def check_election(timing: EtcdTiming) -> None:
    """Campaign/observe/lease-expiry handover/resign on a 3-member cluster."""
    with EtcdCluster(3, timing) as c:
        asyncio.run(_election(c.endpoints()))


async def _election(eps: list[str]) -> None:
    a, b, obs = AsyncEtcdClient(eps[0]), AsyncEtcdClient(eps[1]), AsyncEtcdClient(eps[2])
    try:
        seen: list[bytes] = []
        observer = asyncio.create_task(_collect(obs, seen, timeout=20))

        lease_a = await a.lease_grant(LEASE_TTL)
        ka = a.start_keepalive(lease_a, interval=LEASE_TTL / 3)
        key_a = await a.campaign(ELECTION, lease_a, "A", timeout=5)
        await wait_until_seen(seen, b"A")
        assert await b.leader(ELECTION) == b"A"
        log(f"A elected (key {key_a.key.decode()}), observer saw A")

        lease_b = await b.lease_grant(LEASE_TTL)
        kb = b.start_keepalive(lease_b, interval=LEASE_TTL / 3)
        campaign_b = asyncio.create_task(b.campaign(ELECTION, lease_b, "B", timeout=15))
        # B must stay blocked for a while as long as A's lease is kept alive.
        done, _ = await asyncio.wait({campaign_b}, timeout=2 * LEASE_TTL)
        assert not done, "B must not win while A holds the lease"

        ka.cancel()  # A "crashes": its lease is no longer refreshed
        t0 = time.monotonic()
        key_b = await campaign_b
        await wait_until_seen(seen, b"B")
        log(f"A's lease expired; B elected {time.monotonic() - t0:.2f}s after A stopped keepalives")

        await b.resign(key_b)
        assert await a.leader(ELECTION) is None, "no leader after resign"
        kb.cancel()
        observer.cancel()
        log(f"B resigned; observer sequence {seen}")
    finally:
        for cli in (a, b, obs):
            await cli.close()


async def _collect(cli: AsyncEtcdClient, seen: list[bytes], timeout: float) -> None:
    async for value in cli.observe(ELECTION, timeout=timeout):
        seen.append(value)


async def wait_until_seen(seen: list[bytes], value: bytes, timeout: float = 10.0) -> None:
    """Wait until the observer has recorded ``value``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while value not in seen:
        if loop.time() > end:
            raise TimeoutError(f"observer did not see {value!r}; saw {seen}")
        await asyncio.sleep(0.005)


def main() -> None:
    """Run both checks."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tuned", action="store_true", help="heartbeat 50 ms / election 250 ms")
    args = p.parse_args()
    timing = TUNED if args.tuned else DEFAULT
    check_kill_restart(timing)
    check_election(timing)
    log("etcd smoke: all checks passed")


if __name__ == "__main__":
    main()
