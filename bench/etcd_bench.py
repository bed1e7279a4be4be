"""etcd baseline numbers: leader kill -9 -> first write, and put throughput.

For each timing profile (default 100/1000 ms, tuned 50/250 ms) a fresh local
etcd cluster is started; the failover driver kills the leader ``--rounds``
times; then (default profile only, unless ``--throughput-profiles`` says
otherwise) put throughput is measured at each ``--clients`` level.

The coord column stays empty here; the combined coord-vs-etcd script uses the
same ``measure`` functions with a coord ``ClusterUnderTest``/client factory.

Usage: ``python bench/etcd_bench.py [--rounds 10] [--clients 1,16,64]
[--seconds 5] [--profiles default,tuned] [--nodes 3] [--json]``
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from typing import Any

from _harness import Comparison, add_json_flag, log, report, summarize
from etcd_cluster import DEFAULT, TUNED, EtcdCluster, EtcdTiming
from measure import leader_first, measure_leader_kill_to_write, measure_put_throughput

PROFILES: dict[str, EtcdTiming] = {"default": DEFAULT, "tuned": TUNED}


def failover_rows(label: str, seconds: list[float]) -> list[Comparison]:
    """Table rows (median / max, in ms) for one profile's kill-to-write times."""
    s = summarize(seconds)
    return [
        Comparison(f"leader kill->write median ({label})", "ms", etcd=s["median"] * 1e3),
        Comparison(f"leader kill->write max ({label})", "ms", etcd=s["max"] * 1e3),
    ]


def throughput_rows(label: str, clients: int, res: Any) -> list[Comparison]:
    """Table rows for one throughput run."""
    tag = f"{clients} clients, {label}"
    return [
        Comparison(f"put throughput ({tag})", "ops/s", etcd=res.ops_per_s, better="higher"),
        Comparison(f"put p50 ({tag})", "ms", etcd=res.p50_ms),
        Comparison(f"put p99 ({tag})", "ms", etcd=res.p99_ms),
    ]


def run_profile(
    label: str, args: argparse.Namespace, do_throughput: bool
) -> tuple[list[Comparison], dict[str, Any]]:
    """Start a cluster for one profile, run the measurements, stop it."""
    timing = PROFILES[label]
    rows: list[Comparison] = []
    raw: dict[str, Any] = {"timing": asdict(timing)}
    with EtcdCluster(args.nodes, timing) as cluster:
        if args.rounds > 0:
            kills = measure_leader_kill_to_write(cluster, args.rounds)
            raw["kill_to_write_s"] = kills
            rows += failover_rows(label, kills)
        if do_throughput:
            raw["throughput"] = []
            for c in args.clients:
                eps = leader_first(cluster.endpoints(), cluster.leader_index())
                res = measure_put_throughput(eps, c, args.seconds)
                log(
                    f"{label}: {c} clients: {res.ops_per_s:.0f} ops/s p50 {res.p50_ms:.2f} ms "
                    f"p99 {res.p99_ms:.2f} ms errors {res.errors}"
                )
                raw["throughput"].append(res.raw)
                rows += throughput_rows(label, c, res)
    return rows, raw


def parse_args() -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--rounds", type=int, default=10, help="leader kills per profile (0: skip)")
    p.add_argument(
        "--clients", type=lambda s: [int(x) for x in s.split(",") if x], default=[1, 16, 64]
    )
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per throughput run")
    p.add_argument("--profiles", default="default,tuned")
    p.add_argument(
        "--throughput-profiles", default="default", help="profiles to run throughput on ('' = none)"
    )
    add_json_flag(p)
    return p.parse_args()


def main() -> None:
    """Run the etcd baseline and print the table (or JSON)."""
    args = parse_args()
    profiles = [p for p in args.profiles.split(",") if p]
    tp_profiles = {p for p in args.throughput_profiles.split(",") if p}
    rows: list[Comparison] = []
    raw: dict[str, Any] = {}
    started = time.monotonic()
    for label in profiles:
        prof_rows, prof_raw = run_profile(label, args, label in tp_profiles)
        rows += prof_rows
        raw[label] = prof_raw
    meta = {"nodes": args.nodes, "elapsed_s": round(time.monotonic() - started, 1), "raw": raw}
    report(rows, args.json, title=f"etcd baseline ({args.nodes} nodes)", meta=meta)


if __name__ == "__main__":
    main()
