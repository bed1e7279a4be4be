"""Keepalive capacity: leader CPU while N sessions (TTL 5 s) are kept alive, coord vs etcd.

One load process keeps N sessions alive over N bidi streams (grpc.aio), one
keepalive per session every TTL/3, like both client libraries do. For each N the
leader's CPU (share of one core) is measured over ``--seconds``, and the number of
sessions lost. The capacity is the largest N whose leader stays under half a core.

Usage: ``python bench/keepalive_capacity.py [--counts 250,500,1000,2000] [--json]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time

from grpc import aio

from _harness import Comparison, add_json_flag, log, report
from coord.v1 import election_pb2, election_pb2_grpc
from coord_adapter import CoordBenchCluster
from etcd_cluster import DEFAULT, EtcdCluster
from etcdpb import rpc_pb2, rpc_pb2_grpc

TTL_S = 5


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _coord_stream(
    stub: election_pb2_grpc.SessionsStub, sid: str, stop: asyncio.Event, lost: list[str]
) -> None:
    call = stub.KeepAlive()
    seq = 0
    try:
        while not stop.is_set():
            seq += 1
            await call.write(election_pb2.KeepAliveRequest(session_id=sid, seq=seq))
            resp = await call.read()
            if resp is aio.EOF or resp.expired:
                lost.append(sid)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TTL_S / 3)
    finally:
        call.cancel()


async def coord_load(endpoint: str, n: int, pid: int, seconds: float) -> tuple[float, int]:
    async with aio.insecure_channel(endpoint) as ch:
        stub = election_pb2_grpc.SessionsStub(ch)
        stop, lost = asyncio.Event(), []
        tasks = []
        for i in range(n):  # each stream starts at once: opening N takes longer than a TTL
            r = await stub.Open(election_pb2.OpenSessionRequest(ttl_ms=TTL_S * 1000, name=f"k{i}"))
            tasks.append(asyncio.create_task(_coord_stream(stub, r.session.id, stop, lost)))
        await asyncio.sleep(TTL_S / 3 + 1)  # every stream has sent once: measure from here
        c0, t0 = cpu_s(pid), time.monotonic()
        await asyncio.sleep(seconds)
        share = (cpu_s(pid) - c0) / (time.monotonic() - t0)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        return share, len(lost)


async def _etcd_stream(
    stub: rpc_pb2_grpc.LeaseStub, lease: int, stop: asyncio.Event, lost: list[int]
) -> None:
    call = stub.LeaseKeepAlive()
    try:
        while not stop.is_set():
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease))
            resp = await call.read()
            if resp is aio.EOF or resp.TTL <= 0:
                lost.append(lease)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TTL_S / 3)
    finally:
        call.cancel()


async def etcd_load(endpoint: str, n: int, pid: int, seconds: float) -> tuple[float, int]:
    async with aio.insecure_channel(endpoint) as ch:
        stub = rpc_pb2_grpc.LeaseStub(ch)
        stop, lost = asyncio.Event(), []
        tasks = []
        for _ in range(n):  # as for coord
            lease = (await stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=TTL_S))).ID
            tasks.append(asyncio.create_task(_etcd_stream(stub, lease, stop, lost)))
        await asyncio.sleep(TTL_S / 3 + 1)
        c0, t0 = cpu_s(pid), time.monotonic()
        await asyncio.sleep(seconds)
        share = (cpu_s(pid) - c0) / (time.monotonic() - t0)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        return share, len(lost)


SKIPPED = (float("nan"), -1)


def run_coord(n: int, seconds: float) -> tuple[float, int]:
    with CoordBenchCluster(3) as c:
        li = c.leader_index() or 0
        pid = c.cluster.nodes[li].proc.pid  # type: ignore[union-attr]
        share, lost = asyncio.run(coord_load(c.endpoints()[li], n, pid, seconds))
    log(f"coord {n} sessions: leader {share:.2f} core, lost {lost}")
    return share, lost


def run_etcd(n: int, seconds: float) -> tuple[float, int]:
    with EtcdCluster(3, DEFAULT) as e:
        li = e.leader_index() or 0
        pid = e.group.pid(li)
        assert pid is not None
        share, lost = asyncio.run(etcd_load(e.endpoints()[li], n, pid, seconds))
    log(f"etcd {n} leases: leader {share:.2f} core, lost {lost}")
    return share, lost


def capacity(results: dict[int, tuple[float, int]]) -> int:
    ok = [n for n, (share, lost) in results.items() if share < 0.5 and lost == 0]
    return max(ok, default=0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--counts", default="250,500,1000,2000")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--systems", default="coord,etcd", help="which to run (comma-separated)")
    add_json_flag(p)
    args = p.parse_args()
    counts = [int(x) for x in args.counts.split(",")]
    res: dict[str, dict[int, tuple[float, int]]] = {"coord": {}, "etcd": {}}
    systems = set(args.systems.split(","))
    for n in counts:
        res["coord"][n] = run_coord(n, args.seconds) if "coord" in systems else SKIPPED
        res["etcd"][n] = run_etcd(n, args.seconds) if "etcd" in systems else SKIPPED
    rows = [
        Comparison(
            f"leader CPU, {n} sessions at TTL {TTL_S} s",
            "cores",
            res["coord"][n][0],
            res["etcd"][n][0],
        )
        for n in counts
    ]
    rows.append(
        Comparison(
            "sessions kept alive under half a core",
            "sessions",
            float(capacity(res["coord"])),
            float(capacity(res["etcd"])),
            "higher",
        )
    )
    report(
        rows,
        args.json,
        title="keepalive capacity (3 nodes, one load process)",
        meta={"raw": {k: {str(n): v for n, v in r.items()} for k, r in res.items()}},
    )


if __name__ == "__main__":
    main()
