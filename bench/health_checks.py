"""Health checks: detection time and the checker's CPU (coord only: etcd runs no checks).

Detection: a member with a TCP check (interval 1 s, fall 2, by default) whose
listener the script closes; measured from the close to (a) the member_unhealthy
event reaching a watcher on a follower and (b) a Balancer dropping the member.
Expected: between (fall - 1) and fall intervals, plus the check's phase.

CPU: 1,000 members (one session) checked every second (TCP connect to one
local acceptor); the leader's CPU with the checks minus its CPU with the same
members registered without checks, over ``--seconds``.

etcd has no server-side health checks (a lease only says the client process is
alive), so its column is empty; the closest etcd figure is lease expiry, which
bench/election_failover.py measures.

Usage: ``python bench/health_checks.py [--rounds 5] [--members 1000] [--json]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import threading
import time

from _harness import Comparison, add_json_flag, log, median, pct, report
from coord.client import Balancer, Client, tcp_check
from coord_adapter import CoordBenchCluster

TTL_S = 10.0


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Acceptor:
    """A TCP listener that accepts and closes every connection (on its own loop)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        async def serve() -> None:
            async def handle(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                w.close()

            server = await asyncio.start_server(handle, sock=self.sock, backlog=1024)
            async with server:
                await server.serve_forever()

        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(serve())

    def close(self) -> None:
        def stop() -> None:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()

        self.loop.call_soon_threadsafe(stop)


def detection(
    c: CoordBenchCluster, rounds: int, interval_s: float, fall: int
) -> tuple[list[float], list[float]]:
    leader = c.leader_index() or 0
    follower = next(i for i in range(len(c.endpoints())) if i != leader)
    client = Client(c.endpoints())
    watcher_client = Client([c.endpoints()[follower]])
    to_event, to_drop = [], []
    with client.session(ttl_s=TTL_S) as s:
        for r in range(rounds):
            group = f"detect{r}"
            client.group(group).create()
            acceptor = Acceptor()
            client.group(group).member("m", s, address=acceptor.address,
                                       check=tcp_check(interval_s=interval_s, fall=fall,
                                                       rise=1)).start()  # fmt: skip
            client.group(group).member("other", s, address=acceptor.address).start()
            lb = Balancer(client, group)
            lb.wait_ready()
            seen: dict[str, float] = {}
            start_rev = client.status().revision + 1

            def follow(
                group: str = group, start_rev: int = start_rev, seen: dict[str, float] = seen
            ) -> None:
                for e in watcher_client.watch(start_rev, groups=[group]):
                    if e.type == "member_unhealthy":
                        seen["event"] = time.monotonic()
                        return

            t = threading.Thread(target=follow, daemon=True)
            t.start()
            time.sleep(interval_s * 1.5)  # let a few checks pass (not synchronisation)
            closed = time.monotonic()
            acceptor.close()
            deadline = closed + interval_s * (fall + 3)
            while time.monotonic() < deadline and "m" in {m.id for m in lb.candidates()}:
                time.sleep(0.001)
            seen["drop"] = time.monotonic()
            t.join(timeout=interval_s * (fall + 3))
            lb.close()
            if "event" not in seen:
                raise RuntimeError(f"round {r}: no member_unhealthy event")
            to_event.append(seen["event"] - closed)
            to_drop.append(seen["drop"] - closed)
            log(f"round {r}: event after {to_event[-1]:.3f} s, dropped after {to_drop[-1]:.3f} s")
    return to_event, to_drop


def checker_cpu(c: CoordBenchCluster, members: int, seconds: float) -> tuple[float, float]:
    leader = c.leader_index() or 0
    pid = c.cluster.nodes[leader].proc.pid  # type: ignore[union-attr]
    client = Client(c.endpoints())
    acceptor = Acceptor()
    with client.session(ttl_s=TTL_S) as s:
        client.group("cpu").create()

        def register(with_check: bool) -> None:
            check = tcp_check(interval_s=1.0) if with_check else None
            for i in range(members):
                cpu = client.group("cpu")
                cpu.member(f"m{i}", s, address=acceptor.address, check=check).start()

        def share() -> float:
            c0, t0 = cpu_s(pid), time.monotonic()
            time.sleep(seconds)  # measuring a duration, not synchronisation
            return (cpu_s(pid) - c0) / (time.monotonic() - t0)

        register(False)
        base = share()
        register(True)
        time.sleep(2.0)  # every member's first probe is spread over one interval
        checked = share()
    acceptor.close()
    log(f"leader CPU with {members} members: {base:.3f} core unchecked, {checked:.3f} checked")
    return base, checked


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--interval-s", type=float, default=1.0)
    p.add_argument("--fall", type=int, default=2)
    p.add_argument("--members", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=8.0)
    add_json_flag(p)
    args = p.parse_args()
    with CoordBenchCluster(3) as c:
        to_event, to_drop = detection(c, args.rounds, args.interval_s, args.fall)
        base, checked = checker_cpu(c, args.members, args.seconds)
    k = f"interval {args.interval_s:g} s, fall {args.fall}"
    rows = [
        Comparison(f"service down -> member_unhealthy on a follower's watch, median ({k})", "s",
                   median(to_event)),
        Comparison("... max", "s", max(to_event)),
        Comparison("service down -> dropped by a Balancer, median", "s", median(to_drop)),
        Comparison("... p99", "s", pct(to_drop, 99)),
        Comparison(f"leader CPU for {args.members} members checked every second", "cores",
                   checked - base),
    ]  # fmt: skip
    report(
        rows,
        args.json,
        title="health checks (3 nodes; etcd runs no health checks)",
        meta={"raw": {"to_event": to_event, "to_drop": to_drop, "cpu": [base, checked]}},
    )


if __name__ == "__main__":
    main()
