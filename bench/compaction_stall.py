"""Writes during log compaction of a large state: the longest put a client waits.

A 3-node coord cluster (fsync on) is filled with ``--keys`` keys of ``--value-bytes``
(transactions of 200 puts), then ``--clients`` threads put small values for
``--seconds`` while the nodes compact their logs every ``--compaction-entries``
entries. Reported: puts/s, p50 / p99 / p99.9 / max put latency, the number of puts
slower than 200 ms, the Raft term before and after (leader changes), and each node's
tick-thread gaps during the load (``coord_raft_tick_gap_seconds``: how many passes came
more than 100 ms after the previous one; a leader's heartbeats wait for them). Until the
snapshot was written by a worker thread (coord.raft.background_dump), each compaction
held the leader's tick thread for the whole serialization: 0.1 s at 20,000 keys,
0.4 s at 100,000. Run it against two trees to compare (``PYTHONPATH=<tree>``).

Usage: ``python bench/compaction_stall.py [--keys 100000] [--value-bytes 100]
[--clients 8] [--seconds 30] [--compaction-entries 5000] [--json]``
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
import urllib.request

from _harness import loadavg, log
from coord.client import Client
from coord.client import txn as t
from coord.testing import LocalCluster
from coord_adapter import parse_raft_timings

BATCH = 200


def term(cluster: LocalCluster) -> int:
    return max((s.term for s in cluster.statuses() if s is not None), default=0)


def tick_gaps_over_100ms(cluster: LocalCluster) -> list[int]:
    """Per node: tick-thread passes so far that came > 100 ms after the previous one."""
    out = []
    for node in cluster.nodes:
        with urllib.request.urlopen(f"http://{node.http}/metrics", timeout=5) as r:
            text = r.read().decode()
        count = re.search(r"^coord_raft_tick_gap_seconds_count (\S+)$", text, re.M)
        le = re.search(r'^coord_raft_tick_gap_seconds_bucket\{le="0.1"\} (\S+)$', text, re.M)
        out.append(int(float(count.group(1)) - float(le.group(1))) if count and le else -1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--value-bytes", type=int, default=100)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--compaction-entries", type=int, default=5000)
    p.add_argument(
        "--raft-timings",
        default="default",
        help="coord's Raft timings: default, or HB:MIN-MAX in ms (e.g. 30:120-240)",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    log(f"load average at start: {loadavg()}")
    timings = parse_raft_timings(args.raft_timings)
    extra = ["--log-compaction-entries", str(args.compaction_entries), *timings.args()]
    with LocalCluster(3, extra_args=extra, http=True) as cluster:
        cluster.wait_for_leader(timeout=60)
        value = b"v" * args.value_bytes
        with Client(cluster.endpoints, timeout_s=30) as c:
            for start in range(0, args.keys, BATCH):
                end = min(args.keys, start + BATCH)
                c.txn(success=[t.put(b"fill/%08d" % i, value) for i in range(start, end)])
        log(f"filled {args.keys} keys")
        term_before = term(cluster)
        gaps_before = tick_gaps_over_100ms(cluster)
        latencies: list[float] = []
        lock = threading.Lock()
        stop = time.monotonic() + args.seconds

        def writer(n: int) -> None:
            mine: list[float] = []
            with Client(cluster.endpoints, timeout_s=10) as wc:
                i = 0
                while time.monotonic() < stop:
                    t0 = time.monotonic()
                    wc.put(b"load/%d/%d" % (n, i % 1000), b"x")
                    mine.append(time.monotonic() - t0)
                    i += 1
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(args.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        term_after = term(cluster)
        gaps = [b - a for a, b in zip(gaps_before, tick_gaps_over_100ms(cluster), strict=True)]
    lat = sorted(latencies)

    def q(f: float) -> float:
        return lat[min(len(lat) - 1, int(f * len(lat)))] * 1000

    out = {
        "keys": args.keys,
        "raft_timings": args.raft_timings,
        "puts_per_s": round(len(lat) / args.seconds),
        "p50_ms": round(q(0.5), 1),
        "p99_ms": round(q(0.99), 1),
        "p999_ms": round(q(0.999), 1),
        "max_ms": round(lat[-1] * 1000, 1),
        "over_200ms": sum(1 for x in lat if x > 0.2),
        "terms": term_after - term_before,
        "tick_gaps_over_100ms": gaps,
        "load": loadavg(),
    }
    print(json.dumps(out) if args.json else out)


if __name__ == "__main__":
    main()
