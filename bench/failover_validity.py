"""Master failover measured against the dead holder's own validity end, coord vs etcd.

Per round (``--rounds``, lease/session TTL ``--ttl`` s, 3 nodes): a holder member
process is elected, a standby campaigns behind it, and the holder is killed (-9) at a
random phase of its keepalive cycle. Measured, on the processes' shared monotonic
clock::

    gap = standby's "elected" line  -  the dead holder's own validity end

where the holder's validity end is what its client library computed from its newest
acknowledged keepalive, the last ``validity`` line the holder printed before it died:

* coord: ``send_time + TTL x (1 - drift)`` (``Session._valid_until``, drift 0.02;
  ``python -m coord.member_process --report-validity``);
* etcd: ``send_time + lease TTL`` of the newest keepalive whose response came back
  (``bench/etcd_member.py``, etcd's election recipe; etcd's clients use no margin).

A negative gap means the standby was elected while the old holder still believed it
was master: two masters at once. The script says so loudly.

coord's leader expires a session at ``last keepalive arrival + TTL`` on its own clock,
so the expected gap is about drift x TTL (40 ms at 2 s) + the keepalive's one-way
delay + the expiry's commit and the standby's notification. etcd's leader checks for
expired leases every 500 ms, so its gap runs from ~0 to ~0.5 s.

If the kill lands after the holder sent a keepalive but before it saw the ack, the
cluster has a newer keepalive than the holder's validity: such a round's gap is about
TTL/3 longer. It is counted as measured, and flagged (``in_flight``: the kill came at
least TTL/3 after the newest acknowledged keepalive's send, when the next one was due).

Usage: ``python bench/failover_validity.py [--rounds 12] [--ttl 2] [--systems coord,etcd]
[--json]``
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _harness import Comparison, add_json_flag, loadavg, log, median, report
from coord.client import Client
from coord_adapter import CoordBenchCluster
from election_failover import Proc
from etcd_cluster import DEFAULT, EtcdCluster

BENCH = Path(__file__).resolve().parent
GOAL_MEDIAN_MS = 50.0
GOAL_MAX_MS = 150.0


@dataclass
class Round:
    gap_ms: float  # standby elected - the dead holder's own validity end
    kill_to_elected_ms: float
    since_sent_ms: float  # kill - send time of the holder's newest acknowledged keepalive
    in_flight: bool  # the kill came when the next keepalive was due (see the docstring)
    validity_lines: int  # validity extensions the holder printed


def one_round(make: Callable[[str, bool], Proc], r: int, ttl: float) -> Round:
    holder = make(f"h{r}", True)
    standby: Proc | None = None
    try:
        holder.first("elected", 30)
        holder.first("validity", 30)
        standby = make(f"s{r}", False)
        standby.first("session", 30)
        # Let the standby's campaign reach the cluster, then kill at a random phase of
        # the holder's keepalive cycle (TTL/3).
        time.sleep(0.3 + random.uniform(0, ttl / 3))
        t_kill = time.monotonic()
        holder.p.kill()
        elected = standby.first("elected", ttl * 3 + 10)
        holder.stop()
        lines = [x for x in holder.drain() if x.get("event") == "validity"]
        newest = max(lines, key=lambda x: float(str(x["valid_until"])))
        valid_until, sent = float(str(newest["valid_until"])), float(str(newest["sent"]))
        t_elected = float(str(elected["t"]))
        return Round(
            gap_ms=(t_elected - valid_until) * 1e3,
            kill_to_elected_ms=(t_elected - t_kill) * 1e3,
            since_sent_ms=(t_kill - sent) * 1e3,
            in_flight=t_kill - sent >= ttl / 3,
            validity_lines=len(lines),
        )
    finally:
        holder.stop()
        if standby is not None:
            standby.p.send_signal(signal.SIGTERM)  # resign, so the next round starts clean
            try:
                standby.p.wait(timeout=10)
            finally:
                standby.stop()


def run_rounds(name: str, make: Callable[[str, bool], Proc], n: int, ttl: float) -> list[Round]:
    out = []
    for r in range(n):
        rd = one_round(make, r, ttl)
        out.append(rd)
        flag = " (a keepalive was in flight at the kill)" if rd.in_flight else ""
        log(
            f"{name} round {r + 1}/{n}: elected - holder's validity end = {rd.gap_ms:.1f} ms; "
            f"kill -> elected {rd.kill_to_elected_ms:.0f} ms; kill {rd.since_sent_ms:.0f} ms "
            f"after the newest acked keepalive's send{flag}"
        )
        if rd.gap_ms < 0:
            log(
                f"!!! {name} round {r + 1}: NEGATIVE GAP {rd.gap_ms:.1f} ms: the standby was "
                "elected while the dead holder still believed it was master !!!"
            )
    return out


def coord_rounds(n: int, ttl: float) -> list[Round]:
    with CoordBenchCluster(3) as c:
        eps = ",".join(c.endpoints())
        with Client(c.endpoints()) as cl:
            cl.group("validity").create(slots=1)

        def member(mid: str, report_validity: bool) -> Proc:
            argv = [sys.executable, "-m", "coord.member_process", "--endpoints", eps,
                    "--group", "validity", "--id", mid, "--ttl-s", str(ttl),
                    "--priority", "10" if mid.startswith("h") else "1"]  # fmt: skip
            return Proc([*argv, "--report-validity"] if report_validity else argv)

        return run_rounds("coord", member, n, ttl)


def etcd_rounds(n: int, ttl: float) -> list[Round]:
    with EtcdCluster(3, DEFAULT) as e:
        ep = e.endpoints()[e.leader_index() or 0]

        def member(mid: str, _report_validity: bool) -> Proc:  # it always reports
            return Proc([sys.executable, str(BENCH / "etcd_member.py"), "--endpoint", ep,
                         "--id", mid, "--ttl", str(int(ttl))])  # fmt: skip

        return run_rounds("etcd", member, n, ttl)


def _stat(rounds: list[Round] | None, fn: Callable[[list[Round]], float | None]) -> float | None:
    return None if not rounds else fn(rounds)


def compare(
    rounds: int = 12, ttl: float = 2.0, systems: tuple[str, ...] = ("coord", "etcd")
) -> tuple[list[Comparison], dict[str, Any], list[str]]:
    """Run both systems; returns the rows, the raw rounds and notes (for run_all.py too)."""
    res: dict[str, list[Round] | None] = {"coord": None, "etcd": None}
    if "coord" in systems:
        res["coord"] = coord_rounds(rounds, ttl)
    if "etcd" in systems:
        res["etcd"] = etcd_rounds(rounds, ttl)
    co, et = res["coord"], res["etcd"]

    def row(label: str, unit: str, fn: Callable[[list[Round]], float | None]) -> Comparison:
        return Comparison(label, unit, _stat(co, fn), _stat(et, fn))

    def gaps(rs: list[Round]) -> list[float]:
        return [r.gap_ms for r in rs]

    what = f"elected - dead holder's validity end (TTL {ttl:g} s)"
    rows = [
        row(f"{what}, median", "ms", lambda rs: median(gaps(rs))),
        row(f"{what}, max", "ms", lambda rs: max(gaps(rs))),
        row(f"{what}, min", "ms", lambda rs: min(gaps(rs))),
        row(
            "rounds elected before the holder's validity ended (goal 0)",
            "rounds",
            lambda rs: float(sum(g < 0 for g in gaps(rs))),
        ),
        row(
            "rounds killed with a keepalive in flight",
            "rounds",
            lambda rs: float(sum(r.in_flight for r in rs)),
        ),
        row(
            f"{what}, max without those",
            "ms",
            lambda rs: max((r.gap_ms for r in rs if not r.in_flight), default=None),
        ),
        row(
            "holder kill -9 -> standby elected, median",
            "ms",
            lambda rs: median(r.kill_to_elected_ms for r in rs),
        ),
    ]
    notes = []
    for name, rs in res.items():
        if not rs:
            continue
        g = gaps(rs)
        neg = [x for x in g if x < 0]
        if neg:
            notes.append(
                f"!!! {name}: {len(neg)} of {len(rs)} rounds NEGATIVE (min {min(neg):.1f} ms): "
                "the standby was elected while the old holder still believed it was master !!!"
            )
    if co:
        g = gaps(co)
        verdict = {True: "met", False: "NOT met"}
        notes.append(
            f"goal (issue 13) for coord: median {median(g):.1f} ms <= {GOAL_MEDIAN_MS:g}: "
            f"{verdict[median(g) <= GOAL_MEDIAN_MS]}; max {max(g):.1f} ms <= {GOAL_MAX_MS:g}: "
            f"{verdict[max(g) <= GOAL_MAX_MS]}; never negative: {verdict[min(g) >= 0]}"
        )
    raw = {k: None if v is None else [asdict(r) for r in v] for k, v in res.items()}
    return rows, raw, notes


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--ttl", type=int, default=2, help="seconds (etcd leases take whole seconds)")
    p.add_argument("--systems", default="coord,etcd", help="which to run (comma-separated)")
    add_json_flag(p)
    args = p.parse_args()
    load_start = loadavg()
    log(f"load average at start: {load_start}")
    rows, raw, notes = compare(args.rounds, float(args.ttl), tuple(args.systems.split(",")))
    load_end = loadavg()
    log(f"load average at end: {load_end}")
    for note in notes:
        log(note)
    report(
        rows,
        args.json,
        title=f"master failover vs the dead holder's own validity end "
        f"({args.rounds} rounds, TTL {args.ttl} s, 3 nodes, fsync on)",
        meta={
            "rounds": args.rounds,
            "ttl_s": args.ttl,
            "loadavg_start": load_start,
            "loadavg_end": load_end,
            "notes": notes,
            "raw": raw,
        },
    )
    if not args.json:
        print(f"load average: start {load_start}, end {load_end}")
        for note in notes:
            print(note)


if __name__ == "__main__":
    main()
