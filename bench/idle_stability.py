"""Spurious leader changes on an idle cluster: coord and etcd side by side.

Starts a 3-node coord cluster and a 3-node etcd cluster (etcd tuned 50/250 ms:
the timing coord's failover is compared with), leaves both idle for
``--minutes``, samples every node's term once a second and reports how many
times the term rose. A healthy cluster's term never moves while idle.

``--raft-timings default,30:150-300,...`` runs one coord cluster per choice of
Raft timings (``coord_adapter.parse_raft_timings``: ``HB:MIN-MAX`` in ms), all at
the same time (so each shares the machine with the others: a harsher test than
one cluster alone).

Usage: ``python bench/idle_stability.py [--minutes 10] [--raft-timings default] [--json]``
"""

from __future__ import annotations

import argparse
import contextlib
import time

from _harness import Comparison, add_json_flag, loadavg, log, report
from coord_adapter import CoordBenchCluster, parse_raft_timings_list
from etcd_cluster import TUNED, EtcdCluster
from run_all import etcd_term


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument(
        "--raft-timings",
        type=parse_raft_timings_list,
        default=parse_raft_timings_list("default"),
        help="coord clusters to run side by side: 'default' or HB:MIN-MAX in ms, comma-separated",
    )
    add_json_flag(p)
    args = p.parse_args()
    load_start = loadavg()
    with contextlib.ExitStack() as stack:
        coords = {
            t.label: stack.enter_context(CoordBenchCluster(3, timings=t)) for t in args.raft_timings
        }
        e = stack.enter_context(EtcdCluster(3, TUNED))
        for c in coords.values():
            c.wait_healthy()
        e.wait_healthy()
        terms = {f"coord {k}": c.term for k, c in coords.items()}
        terms["etcd"] = lambda: etcd_term(e)
        first = {name: term() for name, term in terms.items()}
        last = dict(first)
        changes: list[tuple[float, str, int]] = []
        samples = 0
        start = time.monotonic()
        while time.monotonic() < start + args.minutes * 60:  # bounded by --minutes
            time.sleep(1.0)  # sampling period of the measurement, not synchronisation
            samples += 1
            for name, term_of in terms.items():
                term = term_of()
                if term != last[name]:
                    changes.append((round(time.monotonic() - start, 1), name, term))
                    log(f"{name}: term {last[name]} -> {term} at {changes[-1][0]} s")
                    last[name] = term
            if samples % 60 == 0:
                log(f"{samples // 60} min: terms {last}")
        final = {name: term() for name, term in terms.items()}
    load_end = loadavg()
    etcd_change = float(final["etcd"] - first["etcd"])
    rows = []
    for k in coords:
        name = f"coord {k}"
        label = "" if list(coords) == ["default"] else f" (coord {k})"
        rows.append(
            Comparison(
                f"term increases idle {args.minutes:g} min{label}",
                "terms",
                float(final[name] - first[name]),
                etcd_change,
            )
        )
    report(
        rows,
        args.json,
        title="idle stability (3 nodes; etcd tuned 50/250 ms)",
        meta={
            "terms_first": first,
            "terms_final": final,
            "samples": samples,
            "changes": changes,
            "raft_timings": {t.label: t.args() for t in args.raft_timings},
            "loadavg_start": load_start,
            "loadavg_end": load_end,
        },
    )
    if not args.json:
        print(f"load average: start {load_start}, end {load_end}")


if __name__ == "__main__":
    main()
