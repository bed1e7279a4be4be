"""coord vs etcd, side by side in one run, on this machine: the foundation's figures.

1. Leader kill -9 -> first successful write (``--rounds`` per system): coord
   with its defaults vs etcd default (100/1000 ms) and etcd tuned (50/250 ms).
2. Put throughput and p50/p99 latency at 1, 16, 64 concurrent clients, fsync on,
   one load-generator process for each (coord vs etcd default, and vs a ZooKeeper 3.8
   ensemble when ZooKeeper is installed: ``apt-get install zookeeper`` and kazoo;
   ``--skip-zk`` leaves it out; ``--zk-client wire`` is a cross-check of kazoo's
   client-side cost, see bench/README.md).
3. Spurious leader changes: the Raft term before and after the throughput runs
   (under load), and over ``--idle-minutes`` of idleness (0 skips it).
4. Watch latency: put sent to the leader -> event received by a watcher on a
   follower, p50/p99, ``--watch-count`` sequential puts (``watch_latency.py``).
5. Master failover against the dead holder's own validity end: standby elected -
   the killed holder's client-computed validity end, ``--rounds`` rounds, TTL 2 s
   (``failover_validity.py``).
6. ``--transfer-sessions`` sessions (TTL 5 s) through ``--transfers`` graceful leader
   transfers: sessions lost, longest keepalive gap (``transfer_sessions.py``).

Usage: ``python bench/run_all.py [--rounds 10] [--clients 1,16,64] [--seconds 5]
[--idle-minutes 0] [--watch-count 500] [--transfers 10] [--transfer-sessions 200]
[--skip-zk] [--zk-client kazoo|wire] [--json]``. Quote medians of several runs: this
machine is noisy. The load average (``loadavg()``) at the start and the end is in the output.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import failover_validity
import transfer_sessions
from _harness import Comparison, add_json_flag, loadavg, log, report, summarize
from coord_adapter import COORD_FACTORIES, CoordBenchCluster
from etcd_cluster import DEFAULT, TUNED, EtcdCluster
from measure import leader_first, measure_leader_kill_to_write, measure_put_throughput
from watch_latency import compare as compare_watch

# ZooKeeper's load-generator clients (``--zk-client``): kazoo (threads) or zk_wire (asyncio).
ZK_FACTORIES = {"kazoo": "zk_client:make_zk_kv", "wire": "zk_wire:make_zk_wire"}


def etcd_term(cluster: EtcdCluster) -> int:
    return max((s.raftTerm for s in cluster.statuses().values()), default=0)


def zk_unavailable() -> str | None:
    """Why ZooKeeper cannot run here (not installed, kazoo missing), or None."""
    try:
        import zk_cluster
    except ImportError as exc:  # kazoo (zk_client says how to install it)
        return str(exc)
    return zk_cluster.unavailable()


def zk_throughput(args: argparse.Namespace, raw: dict[str, Any]) -> dict[int, Any]:
    """Put throughput of a ZooKeeper ensemble at each client count (after coord and etcd);
    also the leader epoch before/after (``raw["terms_under_load"]``) and the leader's own
    mean update latency per run (``mntr`` sums, ``raw["zk_server_update_ms"]``)."""
    from zk_client import srvr
    from zk_cluster import ZkCluster

    out: dict[int, Any] = {}
    server_ms: dict[int, float | None] = {}
    with ZkCluster(args.nodes) as z:
        z.wait_healthy()
        before = z.epoch()
        for n in args.clients:
            leader = z.leader_index()
            eps = leader_first(z.endpoints(), leader)
            m0 = z.mntr(leader) if leader is not None else {}
            out[n] = measure_put_throughput(
                eps, n, args.seconds, factory=ZK_FACTORIES[args.zk_client]
            )
            m1 = z.mntr(leader) if leader is not None else {}
            count = int(m1.get("zk_cnt_updatelatency", 0)) - int(m0.get("zk_cnt_updatelatency", 0))
            total = int(m1.get("zk_sum_updatelatency", 0)) - int(m0.get("zk_sum_updatelatency", 0))
            server_ms[n] = total / count if count > 0 else None
            log(f"zk ({args.zk_client}) {n} clients: {out[n].ops_per_s:.0f} ops/s")
        raw["terms_under_load"]["zk"] = (before, z.epoch())
        info = srvr(z.endpoints()[0])
        raw["zk_version"] = info.version.split("-")[0] if info is not None else "?"
    raw["zk_client"] = args.zk_client
    raw["zk_server_update_ms"] = server_ms
    return out


def failover(args: argparse.Namespace, raw: dict[str, Any]) -> list[Comparison]:
    with CoordBenchCluster(args.nodes) as c:
        coord = summarize(measure_leader_kill_to_write(c, args.rounds))
    etcd: dict[str, dict[str, float]] = {}
    for timing in (DEFAULT, TUNED):
        with EtcdCluster(args.nodes, timing) as e:
            etcd[timing.label] = summarize(measure_leader_kill_to_write(e, args.rounds))
    raw["failover"] = {"coord": coord, "etcd": etcd}
    rows = []
    for label in ("default", "tuned"):
        for stat in ("median", "max"):
            rows.append(
                Comparison(
                    f"leader kill->write {stat} (etcd {label})",
                    "ms",
                    coord=coord[stat] * 1e3,
                    etcd=etcd[label][stat] * 1e3,
                )
            )
    return rows


def throughput(args: argparse.Namespace, raw: dict[str, Any]) -> list[Comparison]:
    results: dict[str, dict[int, Any]] = {"coord": {}, "etcd": {}}
    terms: dict[str, tuple[int, int]] = {}
    with CoordBenchCluster(args.nodes) as c:
        c.wait_healthy()
        before = c.term()
        for n in args.clients:
            eps = leader_first(c.endpoints(), c.leader_index())
            results["coord"][n] = measure_put_throughput(
                eps, n, args.seconds, factory=COORD_FACTORIES[args.coord_client]
            )
            log(f"coord {n} clients: {results['coord'][n].ops_per_s:.0f} ops/s")
        terms["coord"] = (before, c.term())
        if args.idle_minutes > 0:
            idle_before = c.term()
            log(f"coord: idle for {args.idle_minutes} min, watching the term")
            time.sleep(args.idle_minutes * 60)  # the measurement itself: idle time
            raw["coord_idle_term_change"] = c.term() - idle_before
    with EtcdCluster(args.nodes, DEFAULT) as e:
        e.wait_healthy()
        before = etcd_term(e)
        for n in args.clients:
            eps = leader_first(e.endpoints(), e.leader_index())
            results["etcd"][n] = measure_put_throughput(eps, n, args.seconds)
            log(f"etcd {n} clients: {results['etcd'][n].ops_per_s:.0f} ops/s")
        terms["etcd"] = (before, etcd_term(e))
    raw["terms_under_load"] = terms
    if not args.skip_zk:
        missing = zk_unavailable()
        if missing is None:
            results["zk"] = zk_throughput(args, raw)
        else:
            log(f"{missing}; ZooKeeper left out (--skip-zk)")
            raw["zk_skipped"] = missing
    raw["throughput"] = {k: {n: r.raw for n, r in v.items()} for k, v in results.items()}
    zk = results.get("zk", {})
    rows = []
    for n in args.clients:
        co, et, z = results["coord"][n], results["etcd"][n], zk.get(n)
        tag = f"{n} clients"
        rows += [
            Comparison(
                f"put throughput ({tag})", "ops/s", co.ops_per_s, et.ops_per_s, "higher",
                zk=z.ops_per_s if z else None,
            ),
            Comparison(f"put p50 ({tag})", "ms", co.p50_ms, et.p50_ms, zk=z.p50_ms if z else None),
            Comparison(f"put p99 ({tag})", "ms", co.p99_ms, et.p99_ms, zk=z.p99_ms if z else None),
        ]  # fmt: skip
    rows.append(
        Comparison(
            "leader changes under load",
            "terms",
            float(terms["coord"][1] - terms["coord"][0]),
            float(terms["etcd"][1] - terms["etcd"][0]),
            zk=float(terms["zk"][1] - terms["zk"][0]) if "zk" in terms else None,
        )
    )
    if "coord_idle_term_change" in raw:
        rows.append(
            Comparison(
                f"leader changes idle {args.idle_minutes} min",
                "terms",
                float(raw["coord_idle_term_change"]),
                None,
            )
        )
    return rows


def watch(args: argparse.Namespace, raw: dict[str, Any]) -> list[Comparison]:
    rows, raw["watch"] = compare_watch(args.nodes, args.watch_count)
    return rows


def validity(args: argparse.Namespace, raw: dict[str, Any]) -> list[Comparison]:
    rows, raw["failover_validity"], notes = failover_validity.compare(args.rounds, 2.0)
    for note in notes:
        log(note)
    raw["failover_validity_notes"] = notes
    return rows


def transfers(args: argparse.Namespace, raw: dict[str, Any]) -> list[Comparison]:
    rows, raw["transfer_sessions"] = transfer_sessions.compare(
        args.transfer_sessions, args.transfers
    )
    return rows


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument(
        "--clients", type=lambda s: [int(x) for x in s.split(",") if x], default=[1, 16, 64]
    )
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--idle-minutes", type=float, default=0.0)
    p.add_argument("--skip-failover", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--watch-count", type=int, default=500)
    p.add_argument("--skip-watch", action="store_true")
    p.add_argument("--skip-validity", action="store_true")
    p.add_argument("--transfers", type=int, default=10)
    p.add_argument("--transfer-sessions", type=int, default=200)
    p.add_argument("--skip-transfers", action="store_true")
    p.add_argument(
        "--skip-zk", action="store_true", help="leave ZooKeeper out of the throughput rows"
    )
    p.add_argument(
        "--zk-client",
        choices=sorted(ZK_FACTORIES),
        default="kazoo",
        help="ZooKeeper's load client: kazoo (threads; default) or wire (zk_wire.py: asyncio, "
        "no threads, a cross-check of kazoo's cost)",
    )
    p.add_argument(
        "--coord-client",
        choices=sorted(COORD_FACTORIES),
        default="pipeline",
        help="coord's load client: pipeline (concurrent puts over one KV.Pipeline stream, as "
        "coord's client library sends them; default) or unary (one call per put, as etcd's)",
    )
    add_json_flag(p)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    raw: dict[str, Any] = {}
    rows: list[Comparison] = []
    started = time.monotonic()
    load_start = loadavg()
    log(f"load average at start: {load_start}")
    if not args.skip_failover:
        rows += failover(args, raw)
    if not args.skip_throughput:
        rows += throughput(args, raw)
    if not args.skip_watch:
        rows += watch(args, raw)
    if not args.skip_validity:
        rows += validity(args, raw)
    if not args.skip_transfers:
        rows += transfers(args, raw)
    load_end = loadavg()
    log(f"load average at end: {load_end}")
    meta = {
        "nodes": args.nodes,
        "elapsed_s": round(time.monotonic() - started, 1),
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "raw": raw,
    }
    systems = "coord vs etcd 3.4"
    if "zk_version" in raw:
        systems += f" vs ZooKeeper {raw['zk_version']} ({raw['zk_client']} client)"
    report(rows, args.json, title=f"{systems} ({args.nodes} nodes, fsync on)", meta=meta)
    if not args.json:
        print(f"load average: start {load_start}, end {load_end}")
        if "zk_skipped" in raw:
            print(f"ZooKeeper left out: {raw['zk_skipped']}")
        for note in raw.get("failover_validity_notes", []):
            print(note)


if __name__ == "__main__":
    main()
