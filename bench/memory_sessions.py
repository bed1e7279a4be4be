"""Leader memory per session and per member, coord vs etcd (leases + keys), one run.

coord: N sessions (TTL 1 h, so none expires during the measurement) and N members
(one per session, in N/100 groups). etcd: N leases (TTL 1 h) and N keys attached to
them (what an etcd election candidate costs). Reported: the leader's RSS growth
divided by N, after the writes settled.

Usage: ``python bench/memory_sessions.py [--n 2000] [--json]``
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor

from _harness import Comparison, add_json_flag, log, report
from coord.client import Client
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2
from coord_adapter import CoordBenchCluster
from etcd_client import EtcdClient, rpc_pb2
from etcd_cluster import DEFAULT, EtcdCluster


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def coord_side(n: int) -> float:
    with CoordBenchCluster(3) as c:
        leader = c.leader_index()
        assert leader is not None
        pid = c.cluster.nodes[leader].proc.pid  # type: ignore[union-attr]
        with Client(c.endpoints()) as cl:
            for g in range(max(1, n // 100)):
                cl.group(f"g{g}").create(slots=1)
            before = rss_kib(pid)

            def one(i: int) -> None:
                s = cl.call(
                    lambda ch, t: election_pb2_grpc.SessionsStub(ch).Open(
                        election_pb2.OpenSessionRequest(ttl_ms=3_600_000, name=f"s{i}"), timeout=t
                    )
                )
                m = groups_pb2.Member(
                    group=f"g{i % max(1, n // 100)}",
                    id=f"m{i}",
                    session_id=s.session.id,
                    address=f"10.0.{i // 250}.{i % 250}:5432",
                    priority=i % 10,
                    candidate=True,
                )
                cl.call(
                    lambda ch, t: election_pb2_grpc.GroupsStub(ch).Register(
                        election_pb2.RegisterRequest(member=m), timeout=t
                    )
                )

            with ThreadPoolExecutor(16) as pool:
                list(pool.map(one, range(n)))
            after = rss_kib(pid)
    return (after - before) * 1024 / n


def etcd_side(n: int) -> float:
    with EtcdCluster(3, DEFAULT) as e:
        leader = e.leader_index() or 0
        pid = e.group.pid(leader)
        assert pid is not None
        cli = EtcdClient(e.endpoints()[leader])
        before = rss_kib(pid)

        def one(i: int) -> None:
            lease = cli.lease_grant(3600)
            cli._s.kv.Put(
                rpc_pb2.PutRequest(
                    key=f"election/g{i % max(1, n // 100)}/{lease:x}".encode(),
                    value=f"10.0.{i // 250}.{i % 250}:5432".encode(),
                    lease=lease,
                ),
                timeout=10,
            )

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, range(n)))
        after = rss_kib(pid)
    return (after - before) * 1024 / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=2000)
    add_json_flag(p)
    args = p.parse_args()
    co = coord_side(args.n)
    log(f"coord: {co:.0f} bytes per session+member")
    et = etcd_side(args.n)
    log(f"etcd: {et:.0f} bytes per lease+key")
    report(
        [Comparison(f"leader RSS per session+member (n={args.n})", "bytes", co, et)],
        args.json,
        title="memory per session and member (3 nodes)",
    )


if __name__ == "__main__":
    main()
