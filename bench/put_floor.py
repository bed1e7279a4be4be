"""One client's write beside a local read: coord, etcd and ZooKeeper in one run.

Issue 18 asks for one client's puts/s at or past ZooKeeper's and for watch and resign
latencies near etcd's: all of them are one write's latency. This splits that latency
in two, for each system, with one blocking client and operations in series against the
leader (3 members each, fsync on, all three clusters up for the whole run):

- **write**: coord ``KV.Put``, etcd ``Put``, ZooKeeper ``setData``: committed by a
  majority after an fsync on each;
- **local read**: coord ``KV.Range`` serializable, etcd ``Range`` serializable,
  ZooKeeper ``getData`` (served by the member from memory): the client's round trip
  through the server's RPC layer, with no replication;
- **write - read**: what replicating and committing adds beyond a round trip.

coord and etcd are called through the same Python gRPC client (blocking stubs, one
channel), ZooKeeper through kazoo. Writes and reads alternate, so both meet the
same conditions; systems take turns round by round (``--rounds``), and each figure
is the median of the rounds' medians.

Usage: ``python bench/put_floor.py [--rounds 5] [--ops 400] [--json]``
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc

from _harness import Comparison, add_json_flag, loadavg, log, report, wait_for
from coord.v1 import kv_pb2 as coord_kv_pb2
from coord.v1 import kv_pb2_grpc as coord_kv_grpc
from coord_adapter import CoordBenchCluster
from etcd_client import EtcdClient
from etcd_cluster import DEFAULT, EtcdCluster

KEY = "bench/floor/k"
VALUE = b"v" * 256  # as run_all's puts
WARMUP = 50


@dataclass
class System:
    """One system's client: ``write()`` and ``read()`` of one key, blocking."""

    name: str
    write: Callable[[], object]
    read: Callable[[], object]
    close: Callable[[], object]
    writes: list[float] = field(default_factory=list)  # per round: median µs
    reads: list[float] = field(default_factory=list)


def coord_system(endpoint: str) -> System:
    ch = grpc.insecure_channel(endpoint)
    stub = coord_kv_grpc.KVStub(ch)
    key = KEY.encode()

    def write() -> object:
        req = coord_kv_pb2.PutRequest(key=key, value=VALUE, request_id=uuid.uuid4().hex)
        return stub.Put(req, timeout=5)

    def read() -> object:
        return stub.Range(coord_kv_pb2.RangeRequest(key=key, serializable=True), timeout=5)

    return System("coord", write, read, ch.close)


def etcd_system(endpoint: str) -> System:
    c = EtcdClient(endpoint, timeout=5.0)
    return System("etcd", lambda: c.put(KEY, VALUE), lambda: c.get(KEY, serializable=True), c.close)


def zk_system(endpoint: str) -> System:
    from zk_client import new_kazoo, znode

    zk = new_kazoo([endpoint])
    zk.start(timeout=30)
    path = znode(KEY)
    zk.ensure_path(path)

    def close() -> None:
        zk.stop()
        zk.close()

    return System("zk", lambda: zk.set(path, VALUE), lambda: zk.get(path), close)


def one_round(s: System, ops: int) -> None:
    """``ops`` writes and as many reads, alternating; the round's medians appended."""
    for _ in range(WARMUP):
        s.write()
        s.read()
    w: list[float] = []
    r: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(ops):
        t0 = clock()
        s.write()
        t1 = clock()
        s.read()
        t2 = clock()
        w.append((t1 - t0) / 1e3)
        r.append((t2 - t1) / 1e3)
    s.writes.append(statistics.median(w))
    s.reads.append(statistics.median(r))


@contextlib.contextmanager
def systems(with_zk: bool) -> Iterator[list[System]]:
    with contextlib.ExitStack() as stack:
        c = stack.enter_context(CoordBenchCluster(3))
        leader = wait_for(c.leader_index, 30, "coord leader")
        out = [coord_system(c.endpoints()[leader])]
        e = stack.enter_context(EtcdCluster(3, DEFAULT))
        e.wait_healthy()
        leader = wait_for(e.leader_index, 30, "etcd leader")
        out.append(etcd_system(e.endpoints()[leader]))
        if with_zk:
            from zk_cluster import ZkCluster

            z = stack.enter_context(ZkCluster(3))
            z.wait_healthy()
            leader = wait_for(z.leader_index, 60, "zk leader")
            out.append(zk_system(z.endpoints()[leader]))
        try:
            yield out
        finally:
            for s in out:
                s.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--ops", type=int, default=400, help="writes (and reads) per round")
    p.add_argument("--skip-zk", action="store_true")
    add_json_flag(p)
    args = p.parse_args()
    load_start = loadavg()
    with systems(not args.skip_zk) as ss:
        for r in range(args.rounds):
            for s in ss:
                one_round(s, args.ops)
            log(
                f"round {r + 1}/{args.rounds}: "
                + ", ".join(
                    f"{s.name} write {s.writes[-1]:.0f} read {s.reads[-1]:.0f} µs" for s in ss
                )
            )
    by = {s.name: s for s in ss}

    def med(name: str, pick: Callable[[System], list[float]]) -> float | None:
        return statistics.median(pick(by[name])) if name in by else None

    rows = []
    for metric, pick in (
        ("write p50", lambda s: s.writes),
        ("local read p50", lambda s: s.reads),
        ("write - read", lambda s: [w - r for w, r in zip(s.writes, s.reads, strict=True)]),
    ):
        rows.append(
            Comparison(
                metric,
                "µs",
                med("coord", pick),
                med("etcd", pick),
                zk=med("zk", pick),
                extra={"rounds": {s.name: [round(v) for v in pick(s)] for s in ss}},
            )
        )
    report(
        rows,
        args.json,
        title=f"one client, operations in series ({args.rounds} rounds x {args.ops})",
        meta={"load_start": load_start, "load_end": loadavg()},
    )
    if not args.json:
        print(f"load {load_start} at the start, {loadavg()} at the end")


if __name__ == "__main__":
    main()
