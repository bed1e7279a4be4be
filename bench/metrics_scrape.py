"""The cost of a Prometheus /metrics scrape, and its effect on write throughput: coord vs etcd.

Scrape cost, per state size: a 3-node coord cluster (``--listen-http`` on each node) is
filled step by step with groups, sessions (TTL 1 h, so none expires) and members (one
per session, candidates: each group gets a master, so every group has live availability
figures). At each step, ``--scrapes`` back-to-back GETs of the leader's /metrics (fewer
if they take over ``--scrape-seconds``) on one keep-alive connection, measuring:

- the body's size and its number of series (sample lines);
- the latency of each GET, seen by the scraper: p50 and p99;
- the node's CPU per scrape: its CPU time (utime + stime, /proc) over the scrapes, minus
  its idle CPU over as long (measured just before, with no scrapes), divided by the count.

etcd 3.4 serves /metrics on its client port; its figures do not depend on the number of
keys or leases, so it is measured once, empty.

Throughput effect: puts/s with ``--clients`` concurrent puts (the same load-generator
process as bench/run_all.py, leader's endpoint first, ``--seconds`` each) with no
scraping, with every node scraped every 1 s, and every 100 ms (a thread here scrapes the
3 nodes in turn, like one Prometheus would). The modes are interleaved, ``--runs`` times
each, and medians are reported; coord at the smallest and at the largest state, etcd
empty. Both clusters have fsync on.

Usage: ``python bench/metrics_scrape.py [--levels 0:0,10:100,100:1000,1000:2000]
[--scrapes 200] [--scrape-seconds 20] [--runs 3] [--seconds 5] [--clients 16] [--json]``
"""

from __future__ import annotations

import argparse
import http.client
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from _harness import Comparison, add_json_flag, log, median, pct, report
from coord.client import Client
from coord.testing import LocalCluster
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2
from etcd_cluster import DEFAULT, EtcdCluster
from measure import leader_first, measure_put_throughput

SESSION_TTL_MS = 3_600_000
MODES = {"none": 0.0, "1s": 1.0, "100ms": 0.1}


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class MetricsConnection:
    """One keep-alive HTTP connection to a node's /metrics."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def get(self) -> bytes:
        self.conn.request("GET", "/metrics", headers={"Accept": "text/plain"})
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"/metrics answered {resp.status}: {body[:200]!r}")
        return body

    def close(self) -> None:
        self.conn.close()


@dataclass
class ScrapeCost:
    bytes: int
    series: int
    p50_ms: float
    p99_ms: float
    cpu_ms: float  # the node's CPU per scrape
    scrapes: int = 0


def scrape_cost(address: str, pid: int, count: int, max_s: float) -> ScrapeCost:
    """``count`` back-to-back scrapes (fewer if they take over ``max_s``, at least 10)."""
    conn = MetricsConnection(address)
    try:
        for _ in range(5):  # warm: connection, code paths
            body = conn.get()
        idle_s = 2.0
        c0, t0 = cpu_s(pid), time.monotonic()
        time.sleep(idle_s)  # measuring the idle CPU, not synchronisation
        idle_rate = (cpu_s(pid) - c0) / (time.monotonic() - t0)
        lat = []
        c0, t0 = cpu_s(pid), time.monotonic()
        for k in range(count):
            if k >= 10 and time.monotonic() - t0 > max_s:
                break
            s = time.perf_counter()
            body = conn.get()
            lat.append(time.perf_counter() - s)
        elapsed = time.monotonic() - t0
        cpu = cpu_s(pid) - c0 - idle_rate * elapsed
    finally:
        conn.close()
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return ScrapeCost(
        bytes=len(body),
        series=series,
        p50_ms=median(lat) * 1e3,
        p99_ms=pct(lat, 99) * 1e3,
        cpu_ms=max(0.0, cpu) / len(lat) * 1e3,
        scrapes=len(lat),
    )


class BackgroundScraper:
    """Scrapes every address in turn every ``interval`` s (back to back if slower)."""

    def __init__(self, addresses: Sequence[str], interval: float) -> None:
        self.addresses = list(addresses)
        self.interval = interval
        self.rounds = 0
        self.errors = 0
        self.cpu_s = 0.0  # this thread's own CPU (the scraper is on the same 2 cores)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="scraper")
        self._thread.start()

    def _run(self) -> None:
        conns = [MetricsConnection(a) for a in self.addresses]
        cpu0 = time.thread_time()
        try:
            while not self._stop.is_set():
                start = time.monotonic()
                for c in conns:
                    try:
                        c.get()
                    except (OSError, RuntimeError, http.client.HTTPException):
                        self.errors += 1
                self.rounds += 1
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - start)))
        finally:
            self.cpu_s = time.thread_time() - cpu0
            for c in conns:
                c.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def throughput_modes(
    endpoints: list[str],
    metrics: list[str],
    factory: str,
    args: argparse.Namespace,
    name: str,
) -> dict[str, list[float]]:
    """ops/s of each mode, ``args.runs`` times, interleaved (the order rotates per run)."""
    out: dict[str, list[float]] = {m: [] for m in MODES}
    order = list(MODES)
    for r in range(args.runs):
        for mode in order[r % len(order) :] + order[: r % len(order)]:
            interval = MODES[mode]
            scraper = BackgroundScraper(metrics, interval) if interval else None
            t0 = time.monotonic()
            try:
                tp = measure_put_throughput(endpoints, args.clients, args.seconds, factory=factory)
            finally:
                if scraper is not None:
                    scraper.stop()
            elapsed = time.monotonic() - t0
            rate = scraper.rounds / elapsed if scraper else 0.0
            own = scraper.cpu_s / elapsed if scraper else 0.0
            if tp.errors:
                log(f"{name}: {tp.errors} put errors in mode {mode}: {tp.raw['first_errors']}")
            out[mode].append(tp.ops_per_s)
            log(
                f"{name} run {r + 1}/{args.runs}, scraping {mode}: {tp.ops_per_s:.0f} puts/s "
                f"(p99 {tp.p99_ms:.1f} ms; {rate:.1f} scrape rounds/s, scraper {own:.3f} core)"
            )
    return out


# -- coord -------------------------------------------------------------------------------


class CoordState:
    """Fills a coord cluster up to a number of groups and of members (one session each)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.groups = 0
        self.members = 0

    def grow(self, groups: int, members: int) -> None:
        cl = self.client
        for g in range(self.groups, groups):
            cl.group(f"g{g}").create(slots=1)
        self.groups = max(self.groups, groups)

        def one(i: int) -> None:
            s = cl.call(
                lambda ch, t: election_pb2_grpc.SessionsStub(ch).Open(
                    election_pb2.OpenSessionRequest(ttl_ms=SESSION_TTL_MS, name=f"s{i}"),
                    timeout=t,
                )
            )
            m = groups_pb2.Member(
                group=f"g{i % self.groups}", id=f"m{i}", session_id=s.session.id,
                address=f"10.0.{i // 250}.{i % 250}:5432", priority=i % 10, candidate=True,
            )  # fmt: skip
            cl.call(
                lambda ch, t: election_pb2_grpc.GroupsStub(ch).Register(
                    election_pb2.RegisterRequest(member=m), timeout=t
                )
            )

        if members > self.members:
            if not self.groups:
                raise ValueError("members need groups")
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(one, range(self.members, members)))
            self.members = members


def wait_quiet(cluster: LocalCluster) -> None:
    """Every node applied what the leader committed (the fill is over everywhere)."""
    leader = cluster.wait_for_leader(timeout=30)
    st = cluster.status(leader, timeout=5)
    assert st is not None
    cluster.wait_applied(st.commit_index, timeout=60)


def coord_side(
    args: argparse.Namespace, levels: list[tuple[int, int]]
) -> tuple[list[tuple[int, int, ScrapeCost]], dict[str, dict[str, list[float]]]]:
    costs: list[tuple[int, int, ScrapeCost]] = []
    tput: dict[str, dict[str, list[float]]] = {}
    tput_at = {0, len(levels) - 1}
    with LocalCluster(3, http=True) as cluster:
        cluster.wait_for_leader(timeout=60)
        metrics = [n.http for n in cluster.nodes]
        with Client(cluster.endpoints, timeout_s=30.0) as client:
            state = CoordState(client)
            for k, (groups, members) in enumerate(levels):
                state.grow(groups, members)
                wait_quiet(cluster)
                leader = cluster.wait_for_leader(timeout=30)
                node = cluster.nodes[leader]
                assert node.proc is not None
                cost = scrape_cost(node.http, node.proc.pid, args.scrapes, args.scrape_seconds)
                costs.append((groups, members, cost))
                log(f"coord, {groups} groups / {members} members: {cost}")
                if k in tput_at:
                    eps = leader_first(cluster.endpoints, leader)
                    tput[f"{groups}:{members}"] = throughput_modes(
                        eps, metrics, "coord_adapter:make_coord_kv", args, f"coord {groups}g"
                    )
    return costs, tput


# -- etcd --------------------------------------------------------------------------------


def etcd_side(args: argparse.Namespace) -> tuple[ScrapeCost, dict[str, list[float]]]:
    with EtcdCluster(3, DEFAULT) as e:
        e.wait_healthy()
        leader = e.leader_index() or 0
        pid = e.group.pid(leader)
        assert pid is not None
        metrics = e.endpoints()  # /metrics on the client port
        cost = scrape_cost(metrics[leader], pid, args.scrapes, args.scrape_seconds)
        log(f"etcd: {cost}")
        eps = leader_first(e.endpoints(), leader)
        tput = throughput_modes(eps, metrics, "etcd_client:EtcdKV", args, "etcd")
    return cost, tput


# -- report ------------------------------------------------------------------------------


def parse_levels(spec: str) -> list[tuple[int, int]]:
    out = []
    for part in spec.split(","):
        g, _, m = part.partition(":")
        out.append((int(g), int(m)))
    return out


def rows(
    costs: list[tuple[int, int, ScrapeCost]],
    coord_tput: dict[str, dict[str, list[float]]],
    etcd_cost: ScrapeCost,
    etcd_tput: dict[str, list[float]],
    clients: int,
) -> list[Comparison]:
    out: list[Comparison] = []
    fields: list[tuple[str, str, Callable[[ScrapeCost], float], int]] = [
        ("/metrics size", "KB", lambda c: c.bytes / 1024, 1),
        ("series", "", lambda c: float(c.series), 0),
        ("scrape latency p50", "ms", lambda c: c.p50_ms, 2),
        ("scrape latency p99", "ms", lambda c: c.p99_ms, 2),
        ("node CPU per scrape", "ms", lambda c: c.cpu_ms, 2),
    ]
    for groups, members, cost in costs:
        empty = groups == 0 and members == 0
        where = "empty" if empty else f"{groups} groups, {members} members+sessions"
        for label, unit, get, _ in fields:
            out.append(
                Comparison(f"{label} ({where})", unit, get(cost), get(etcd_cost) if empty else None)
            )
    etcd_none = median(etcd_tput["none"])
    for state, tput in coord_tput.items():
        none = median(tput["none"])
        for mode in MODES:
            got = median(tput[mode])
            e = median(etcd_tput[mode])
            out.append(
                Comparison(
                    f"puts/s, {clients} clients, scraping {mode} (coord state {state})",
                    "ops/s", got, e, better="higher",
                )
            )  # fmt: skip
            if mode != "none":
                out.append(
                    Comparison(
                        f"... relative to no scraping (coord state {state})",
                        "x", got / none, e / etcd_none, better="higher",
                    )
                )  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--levels", default="0:0,10:100,100:1000,1000:2000", help="groups:members,...")
    p.add_argument("--scrapes", type=int, default=200)
    p.add_argument("--scrape-seconds", type=float, default=20.0, help="at most, per state")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--skip-etcd", action="store_true")
    add_json_flag(p)
    args = p.parse_args()
    levels = parse_levels(args.levels)
    costs, coord_tput = coord_side(args, levels)
    if args.skip_etcd:
        etcd_cost = ScrapeCost(0, 0, 0.0, 0.0, 0.0)
        etcd_tput: dict[str, list[float]] = {m: [0.0] for m in MODES}
    else:
        etcd_cost, etcd_tput = etcd_side(args)
    raw: dict[str, Any] = {
        "coord_costs": [(g, m, asdict(c)) for g, m, c in costs],
        "coord_throughput": coord_tput,
        "etcd_cost": asdict(etcd_cost),
        "etcd_throughput": etcd_tput,
    }
    report(
        rows(costs, coord_tput, etcd_cost, etcd_tput, args.clients),
        args.json,
        title=f"/metrics scrape cost and throughput effect (3 nodes, fsync on, "
        f"{args.scrapes} scrapes, {args.runs} runs x {args.seconds:g} s)",
        meta={"raw": raw},
    )


if __name__ == "__main__":
    main()
