"""End-to-end check of the ZooKeeper harness and client (no numbers, just asserts).

On a 3-member ensemble (``zk_cluster.ZkCluster``):

1. put on the leader, get through a follower (after ``sync``), the fsync counter moved;
   the asyncio client (``zk_client.ZkKV``) puts, and reads back.
2. kill -9 the leader: another member is elected, a write through it succeeds; the
   killed member is restarted on its data dir and catches up (its own zxid reaches the
   new write's, and it serves the new value without a ``sync``).
3. the failover driver (``measure.measure_leader_kill_to_write``, one round) and the load
   generator (``measure.measure_put_throughput``, 1 s, with ``zk_client:make_zk_kv`` and
   with ``zk_wire:make_zk_wire``) run against it without errors.

Usage: ``python bench/zk_smoke.py``. Exits non-zero on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _harness import log, wait_for
from measure import leader_first, measure_leader_kill_to_write, measure_put_throughput
from zk_cluster import ZkCluster, unavailable


def check_put_get(c: ZkCluster) -> int:
    """Put/get through the blocking inspection clients and through ZkKV; returns the leader."""
    leader = c.wait_leader()
    fsyncs = c.fsyncs(leader)
    zxid = c.put(leader, "k", b"v1")
    follower = (leader + 1) % c.n
    assert c.get(follower, "k") == b"v1", "get (after sync) via a follower"
    assert c.fsyncs(leader) > fsyncs, "the leader fsynced its log for the put (forceSync=yes)"
    log(f"leader={leader}, put zxid={zxid:#x}, get via follower {follower} ok, fsync counted")
    asyncio.run(_async_put_get(c, leader))
    return leader


async def _async_put_get(c: ZkCluster, leader: int) -> None:
    kv = c.make_client(first=leader)
    try:
        await kv.put("async/k", b"x")
        await kv.put("async/k", b"y")  # the znode exists now: a plain set
        assert await kv.get("async/k") == b"y"
        assert kv.endpoints[0] == c.endpoints()[leader], "the session starts on the leader"
    finally:
        await kv.close()
    assert c.get((leader + 2) % c.n, "async/k") == b"y"
    log("asyncio client (kazoo bridged) put + get ok")


def check_kill_restart(c: ZkCluster, old: int) -> None:
    """kill -9 the leader, new leader + write, restart, catch-up."""
    t0 = time.monotonic()
    c.kill(old)
    new = wait_for(lambda: _other_leader(c, old), 30, "new leader after kill")
    log(f"killed leader {old}; new leader {new} after {time.monotonic() - t0:.3f}s")
    zxid = c.put(new, "k", b"v2")
    assert c.get(new, "k") == b"v2"
    assert zxid >> 32 > 1, f"the new leader writes in a new epoch ({zxid:#x})"

    c.restart(old)
    c.wait_healthy(60)
    info = wait_for(lambda: c.modes().get(old), 30, f"member {old} serving again")
    assert info.zxid >= zxid, f"restarted member applied {zxid:#x} (has {info.zxid:#x})"
    # A plain read on the restarted member (no sync): it has the value itself.
    data, _stat = c.client(old).get_async("/k").get(timeout=1.0)
    assert data == b"v2", "restarted member caught up"
    log(f"restarted member {old} ({info.mode}); caught up; leader now {c.leader_index()}")


def _other_leader(c: ZkCluster, old: int) -> int | None:
    idx = c.leader_index()
    return None if idx == old else idx


def check_drivers(c: ZkCluster) -> None:
    """One failover round of the shared driver, and a 1 s run of the load generator."""
    (kill_s,) = measure_leader_kill_to_write(c, 1)
    assert 0 < kill_s < 30, kill_s
    c.wait_healthy(60)
    eps = leader_first(c.endpoints(), c.leader_index())
    log(f"failover driver: kill -9 -> write {kill_s * 1e3:.0f} ms")
    for factory in ("zk_client:make_zk_kv", "zk_wire:make_zk_wire"):
        t = measure_put_throughput(eps, 4, 1.0, factory=factory, warmup=0.5)
        assert t.errors == 0 and t.ops > 0, t.raw
        log(f"load generator ({factory}): {t.ops_per_s:.0f} puts/s at 4 clients")


def main() -> None:
    """Run the checks on one ensemble."""
    argparse.ArgumentParser(description=__doc__).parse_args()
    missing = unavailable()
    if missing:
        raise SystemExit(missing)
    with ZkCluster(3) as c:
        leader = check_put_get(c)
        check_kill_restart(c, leader)
        check_drivers(c)
    log("zookeeper smoke: all checks passed")


if __name__ == "__main__":
    main()
