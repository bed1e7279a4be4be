"""Spurious leader changes on an idle cluster: coord and etcd side by side.

Starts a 3-node coord cluster and a 3-node etcd cluster (etcd tuned 50/250 ms:
the timing coord's failover is compared with), leaves both idle for
``--minutes``, samples every node's term once a second and reports how many
times the term rose. A healthy cluster's term never moves while idle.

Usage: ``python bench/idle_stability.py [--minutes 10] [--json]``
"""

from __future__ import annotations

import argparse
import time

from _harness import Comparison, add_json_flag, log, report
from coord_adapter import CoordBenchCluster
from etcd_cluster import TUNED, EtcdCluster
from run_all import etcd_term


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--minutes", type=float, default=10.0)
    add_json_flag(p)
    args = p.parse_args()
    with CoordBenchCluster(3) as c, EtcdCluster(3, TUNED) as e:
        c.wait_healthy()
        e.wait_healthy()
        c0, e0 = c.term(), etcd_term(e)
        last = {"coord": c0, "etcd": e0}
        changes: list[tuple[float, str, int]] = []
        samples = 0
        start = time.monotonic()
        while time.monotonic() < start + args.minutes * 60:  # bounded by --minutes
            time.sleep(1.0)  # sampling period of the measurement, not synchronisation
            samples += 1
            for name, term in (("coord", c.term()), ("etcd", etcd_term(e))):
                if term != last[name]:
                    changes.append((round(time.monotonic() - start, 1), name, term))
                    log(f"{name}: term {last[name]} -> {term} at {changes[-1][0]} s")
                    last[name] = term
            if samples % 60 == 0:
                log(f"{samples // 60} min: coord term {last['coord']}, etcd term {last['etcd']}")
        c1, e1 = c.term(), etcd_term(e)
    rows = [
        Comparison(
            f"term increases idle {args.minutes:g} min", "terms", float(c1 - c0), float(e1 - e0)
        ),
    ]
    report(
        rows,
        args.json,
        title="idle stability (3 nodes; etcd tuned 50/250 ms)",
        meta={
            "coord_terms": [c0, c1],
            "etcd_terms": [e0, e1],
            "samples": samples,
            "changes": changes,
        },
    )


if __name__ == "__main__":
    main()
