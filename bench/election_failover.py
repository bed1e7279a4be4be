"""Master failover, coord vs etcd's election API, with member processes on both sides.

Per round: a holder process is elected, a standby process campaigns behind it;
then either the holder is killed (kill -9: the standby takes over once the
holder's lease/session TTL has run out) or it resigns (SIGTERM: it resigns at
once). Measured on the processes' shared monotonic clock, from the kill or the
signal to the standby printing "elected". Both sides renew every TTL/3, so a
kill lands on average TTL/6 after the last renewal; the kill -9 figure is
reported as measured, and also minus the TTL in the JSON's raw data.

Usage: ``python bench/election_failover.py [--rounds 10] [--ttl 2] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _harness import Comparison, add_json_flag, log, pct, report, summarize, wait_until
from coord.client import Client
from coord_adapter import CoordBenchCluster
from etcd_cluster import DEFAULT, EtcdCluster

BENCH = Path(__file__).resolve().parent


class Proc:
    """A member process whose JSON lines are collected as they come."""

    def __init__(self, argv: Sequence[str], stdin: bool = False) -> None:
        """``stdin``: a pipe to send the process lines (else none)."""
        self.p = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            cwd=BENCH, env={**os.environ, "PYTHONPATH": str(BENCH.parent)},
        )  # fmt: skip
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                continue

    def first(self, event: str, timeout: float) -> dict[str, Any]:
        return wait_until(
            lambda: next((x for x in self.lines if x.get("event") == event), None),
            timeout, f"member event {event!r}",
        )  # fmt: skip

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=10)

    def drain(self, timeout: float = 10.0) -> list[dict[str, object]]:
        """After the process ended: every line it printed (the reader reached EOF)."""
        self._reader.join(timeout)
        return list(self.lines)


def rounds(
    make: Callable[[str], Proc], n: int, kill: bool, ttl: float, waiting: float
) -> list[float]:
    out: list[float] = []
    for r in range(n):
        holder = make(f"h{r}")
        holder.first("elected", 30)
        standby = make(f"s{r}")
        standby.first("session", 30)
        time.sleep(waiting)  # let the standby's campaign reach the cluster (part of the setup)
        t0 = time.monotonic()
        if kill:
            holder.p.kill()
        else:
            holder.p.send_signal(signal.SIGTERM)
        elected = standby.first("elected", ttl * 3 + 10)
        dt = float(str(elected["t"])) - t0
        out.append(dt)
        log(f"round {r + 1}/{n} {'kill' if kill else 'resign'}: {dt * 1000:.0f} ms")
        holder.stop()
        standby.p.send_signal(signal.SIGTERM)  # resign, so the next round starts clean
        standby.p.wait(timeout=10)
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--ttl", type=int, default=2)
    add_json_flag(p)
    args = p.parse_args()
    res: dict[str, dict[str, list[float]]] = {"coord": {}, "etcd": {}}
    with CoordBenchCluster(3) as c:
        eps = ",".join(c.endpoints())
        with Client(c.endpoints()) as cl:
            cl.group("bench").create(slots=1)

        def coord_member(mid: str) -> Proc:
            prio = "10" if mid.startswith("h") else "1"
            return Proc([sys.executable, "-m", "coord.member_process", "--endpoints", eps,
                         "--group", "bench", "--id", mid, "--priority", prio,
                         "--ttl-s", str(args.ttl)])  # fmt: skip

        res["coord"]["kill"] = rounds(coord_member, args.rounds, True, args.ttl, 0.3)
        res["coord"]["resign"] = rounds(coord_member, args.rounds, False, args.ttl, 0.3)
    with EtcdCluster(3, DEFAULT) as e:
        ep = e.endpoints()[e.leader_index() or 0]

        def etcd_member(mid: str) -> Proc:
            return Proc([sys.executable, str(BENCH / "etcd_member.py"), "--endpoint", ep,
                         "--id", mid, "--ttl", str(args.ttl)])  # fmt: skip

        res["etcd"]["kill"] = rounds(etcd_member, args.rounds, True, args.ttl, 0.3)
        res["etcd"]["resign"] = rounds(etcd_member, args.rounds, False, args.ttl, 0.3)
    rows = []
    for kind, label in (
        ("kill", f"holder kill -9 -> standby elected (TTL {args.ttl} s)"),
        ("resign", "resign -> standby elected"),
    ):
        co, et = res["coord"][kind], res["etcd"][kind]
        rows.append(
            Comparison(
                f"{label} (median)",
                "ms",
                summarize(co)["median"] * 1e3,
                summarize(et)["median"] * 1e3,
            )
        )
        rows.append(Comparison(f"{label} (p99)", "ms", pct(co, 99) * 1e3, pct(et, 99) * 1e3))
    report(
        rows,
        args.json,
        title="master failover, coord vs etcd election API (3 nodes)",
        meta={"raw": res},
    )


if __name__ == "__main__":
    main()
