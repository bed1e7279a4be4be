"""Watch latency: a put committed through the leader, delivered to a watcher on a follower.

A writer puts to the LEADER; a watcher streams from a FOLLOWER. Both run in this
one process on one grpc.aio event loop, so they share the monotonic clock: each
put's value is the writer's ``time.monotonic_ns()`` taken just before the call, and
the event's latency is the watcher's receive time minus that value. The put's own
acknowledgement time (sent -> the leader's reply) is reported beside it, so the
delivery cost beyond the commit shows. Puts are sequential: the next one is sent
only once the previous one was acknowledged *and* its event delivered, then
``--gap-ms`` later, so this measures latency, not throughput. The first
``--warmup`` puts are discarded. 3 nodes (``--nodes``), fsync on, etcd default timings.

* coord: ``coord.v1.Watch/Watch`` with ``types=["kv_put"]`` (the key prefix is
  checked client-side: the watch has no key filter), puts through ``CoordKV``.
* etcd: ``etcdserverpb.Watch/Watch`` on the key prefix (NODELETE), puts through
  ``EtcdKV``.

Both writers start on the leader with a 1 s per-call deadline (as the throughput
runs). Before measuring, probe puts are repeated until one is seen by the
watcher, so the watch is known to be live.

Usage: ``python bench/watch_latency.py [--count 500] [--warmup 20] [--gap-ms 5] [--json]``
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from grpc import aio

from _harness import ClusterUnderTest, Comparison, add_json_flag, log, pct, report, wait_for
from coord.v1 import election_pb2, election_pb2_grpc
from coord_adapter import CoordBenchCluster
from etcd_client import CHANNEL_OPTIONS
from etcd_cluster import DEFAULT, EtcdCluster
from etcdpb import kv_pb2, rpc_pb2, rpc_pb2_grpc

PREFIX = b"bench/watch/"
DELIVERY_TIMEOUT_S = 5.0

# A watch: given a follower's endpoint, yields (key, value, receive time in ns) for
# every put event under PREFIX, in the order received.
Watch = Callable[[str], AsyncIterator[tuple[bytes, bytes, int]]]


async def coord_watch(endpoint: str) -> AsyncIterator[tuple[bytes, bytes, int]]:
    async with aio.insecure_channel(endpoint) as ch:
        call = election_pb2_grpc.WatchStub(ch).Watch(election_pb2.WatchRequest(types=["kv_put"]))
        try:
            while True:
                resp = await call.read()
                t = time.monotonic_ns()
                if not isinstance(resp, election_pb2.WatchResponse):  # aio.EOF
                    raise RuntimeError("coord watch stream ended")
                for ev in resp.events:
                    for kv in ev.kvs:
                        if kv.key.startswith(PREFIX):
                            yield kv.key, kv.value, t
        finally:
            call.cancel()


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range_end for "every key starting with ``prefix``"."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


async def etcd_watch(endpoint: str) -> AsyncIterator[tuple[bytes, bytes, int]]:
    async with aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS) as ch:
        call = rpc_pb2_grpc.WatchStub(ch).Watch()
        create = rpc_pb2.WatchCreateRequest(
            key=PREFIX,
            range_end=prefix_end(PREFIX),
            filters=[rpc_pb2.WatchCreateRequest.NODELETE],
        )
        try:
            await call.write(rpc_pb2.WatchRequest(create_request=create))
            while True:
                resp = await call.read()
                t = time.monotonic_ns()
                if not isinstance(resp, rpc_pb2.WatchResponse):  # aio.EOF
                    raise RuntimeError("etcd watch stream ended")
                if resp.canceled:
                    raise RuntimeError(f"etcd watch canceled: {resp.cancel_reason}")
                for ev in resp.events:
                    if ev.type == kv_pb2.Event.PUT:
                        yield ev.kv.key, ev.kv.value, t
        finally:
            call.cancel()


@dataclass
class Run:
    """One system's samples, in ms."""

    leader: int
    follower: int
    delivered_ms: list[float] = field(default_factory=list)  # put sent -> event received
    ack_ms: list[float] = field(default_factory=list)  # put sent -> put acknowledged
    leader_after: int | None = None


async def _measure(
    cluster: ClusterUnderTest, watch: Watch, count: int, warmup: int, gap_s: float
) -> Run:
    leader = wait_for(cluster.leader_index, 30, f"{cluster.name} leader")
    follower = (leader + 1) % len(cluster.endpoints())
    run = Run(leader, follower)
    waiting: dict[bytes, asyncio.Future[tuple[bytes, int]]] = {}

    async def read() -> None:
        async for key, value, t in watch(cluster.endpoints()[follower]):
            fut = waiting.pop(key, None)
            if fut is not None and not fut.done():
                fut.set_result((value, t))

    reader = asyncio.create_task(read())
    kv = cluster.make_client(first=leader, call_timeout=1.0)

    def expect(key: bytes) -> asyncio.Future[tuple[bytes, int]]:
        fut = waiting[key] = asyncio.get_running_loop().create_future()
        return fut

    async def delivered(
        key: bytes, fut: asyncio.Future[tuple[bytes, int]], timeout: float
    ) -> tuple[bytes, int] | None:
        # The event may arrive before the put's reply: the reader has then resolved fut.
        either: set[asyncio.Future[Any]] = {fut, reader}
        done, _ = await asyncio.wait(either, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if reader in done:
            reader.result()  # raises the watch's error
            raise RuntimeError("watch ended")
        waiting.pop(key, None)
        return fut.result() if fut in done else None

    try:
        for i in range(int(10 / 0.2)):  # probe until the watch is live (at most ~10 s)
            key = PREFIX + f"ready-{i}".encode()
            fut = expect(key)
            await kv.put(key.decode(), b"")
            if await delivered(key, fut, 0.2) is not None:
                break
        else:
            raise TimeoutError(f"{cluster.name}: the watch on member {follower} saw no probe")
        for i in range(warmup + count):
            key = PREFIX + f"{i:06d}".encode()
            fut = expect(key)
            t0 = time.monotonic_ns()
            await kv.put(key.decode(), str(t0).encode())
            t1 = time.monotonic_ns()
            got = await delivered(key, fut, DELIVERY_TIMEOUT_S)
            if got is None:
                raise TimeoutError(f"{cluster.name}: event for {key!r} not delivered")
            value, t2 = got
            if i >= warmup:
                run.delivered_ms.append((t2 - int(value)) / 1e6)
                run.ack_ms.append((t1 - t0) / 1e6)
            await asyncio.sleep(gap_s)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await kv.close()
    run.leader_after = cluster.leader_index()
    if run.leader_after != leader:
        log(f"{cluster.name}: leader changed during the run ({leader} -> {run.leader_after})")
    return run


def run_coord(nodes: int, count: int, warmup: int, gap_s: float) -> Run:
    with CoordBenchCluster(nodes) as c:
        c.wait_healthy()
        run = asyncio.run(_measure(c, coord_watch, count, warmup, gap_s))
    _log_run("coord", run)
    return run


def run_etcd(nodes: int, count: int, warmup: int, gap_s: float) -> Run:
    with EtcdCluster(nodes, DEFAULT) as e:
        run = asyncio.run(_measure(e, etcd_watch, count, warmup, gap_s))
    _log_run("etcd", run)
    return run


def _log_run(name: str, run: Run) -> None:
    log(
        f"{name}: leader {run.leader}, watcher on {run.follower}: delivered p50 "
        f"{pct(run.delivered_ms, 50):.2f} ms p99 {pct(run.delivered_ms, 99):.2f} ms; "
        f"ack p50 {pct(run.ack_ms, 50):.2f} ms"
    )


def compare(
    nodes: int = 3, count: int = 500, warmup: int = 20, gap_ms: float = 5.0
) -> tuple[list[Comparison], dict[str, Any]]:
    """Run both systems; returns the rows and the raw samples (for run_all.py too)."""
    runs = {
        "coord": run_coord(nodes, count, warmup, gap_ms / 1e3),
        "etcd": run_etcd(nodes, count, warmup, gap_ms / 1e3),
    }
    rows = []
    for attr, label in (
        ("delivered_ms", "watch: put sent -> event on a follower"),
        ("ack_ms", "put sent -> acknowledged by the leader"),
    ):
        co, et = getattr(runs["coord"], attr), getattr(runs["etcd"], attr)
        for p in (50, 99):
            rows.append(Comparison(f"{label} (p{p})", "ms", pct(co, p), pct(et, p)))
    raw = {
        name: {
            "leader": r.leader,
            "follower": r.follower,
            "leader_after": r.leader_after,
            "delivered_ms": [round(x, 3) for x in r.delivered_ms],
            "ack_ms": [round(x, 3) for x in r.ack_ms],
        }
        for name, r in runs.items()
    }
    return rows, raw


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--count", type=int, default=500, help="measured puts per system")
    p.add_argument("--warmup", type=int, default=20, help="puts discarded first")
    p.add_argument("--gap-ms", type=float, default=5.0, help="pause after each delivery")
    add_json_flag(p)
    args = p.parse_args()
    rows, raw = compare(args.nodes, args.count, args.warmup, args.gap_ms)
    report(
        rows,
        args.json,
        title=f"watch latency, coord vs etcd 3.4 ({args.nodes} nodes, fsync on, "
        f"{args.count} puts, leader -> watcher on a follower)",
        meta={"count": args.count, "warmup": args.warmup, "gap_ms": args.gap_ms, "raw": raw},
    )


if __name__ == "__main__":
    main()
