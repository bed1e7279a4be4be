"""A hung leader (SIGSTOP: no TCP reset) is replaced: coord vs etcd in one run (issue 14).

kill -9 closes the leader's sockets, and coord's followers campaign as soon as the
link drops (``fast_election_s``); a hung or powered-off host gives no such signal,
so only the election timeout notices it. Per round (the kill -9 driver,
``measure.measure_leader_failure_to_write``, with SIGSTOP / SIGCONT instead of
kill / restart): healthy cluster, find the leader, one put through a failover
client whose current endpoint is the leader (``EndpointRotator``, 100 ms per
call, rotate on any failure), then SIGSTOP the leader and put again. Recorded:

* SIGSTOP -> that put returned OK (the round's value), and
* SIGSTOP -> a new leader elected: the other members' status (coord
  ``Cluster.Status`` role, etcd ``Maintenance.Status``) polled every 10 ms,
  concurrently with the put;

so client retry cost (write - elected) and election cost can be told apart.
Then SIGCONT, wait until healthy, next round.

Systems: coord with each ``--raft-timings`` choice (``default`` = coord's
defaults, or ``HB:MIN-MAX`` in ms, e.g. ``30:150-300``: passed to ``coord
serve`` as ``--heartbeat-s`` / ``--election-timeout-min-s`` /
``--election-timeout-max-s``), and etcd 3.4 with each ``--etcd-profiles``
(default 100/1000 ms, tuned 50/250 ms). ``--passes`` repeats the whole
sequence (fresh clusters) and reports each pass's median as well.
``--load-seconds`` (0: skip) then puts ``--load-clients`` concurrent clients
on each cluster (``measure_put_throughput``) and reports the Raft term before
and after (leader changes under load); ``--rounds 0`` runs only that.

Usage: ``python bench/hung_leader.py [--rounds 10] [--raft-timings
default,30:150-300] [--etcd-profiles default,tuned] [--passes 1]
[--load-seconds 0] [--load-clients 16] [--json]``
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shlex
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from grpc import aio

from _harness import Comparison, add_json_flag, loadavg, log, median, report
from coord.v1 import cluster_pb2, cluster_pb2_grpc
from coord_adapter import CoordBenchCluster, RaftTimingChoice, parse_raft_timings_list
from etcd_client import AsyncEtcdClient, is_self_leader
from etcd_cluster import DEFAULT, TUNED, EtcdCluster
from measure import (
    FailoverRound,
    leader_first,
    measure_leader_failure_to_write,
    measure_put_throughput,
)

POLL_S = 0.01  # status poll period while waiting for a new leader
PROBE_TIMEOUT_S = 0.05  # one status call (the members polled are not hung)

# --------------------------------------------------------------------------
# Noticing the new leader
# --------------------------------------------------------------------------

Probe = Callable[[int], Awaitable[bool]]  # member index -> "says it leads"


class StatusPoller:
    """``measure.LeaderWatch``: polls every member but the failed one every 10 ms
    and returns when one of them says it leads (its answer's arrival time)."""

    def __init__(self, n: int, probe: Probe, close: Callable[[], Awaitable[Any]]) -> None:
        self.n = n
        self._probe = probe
        self._close = close

    async def _timed(self, i: int) -> float | None:
        try:
            leads = await self._probe(i)
        except (TimeoutError, aio.AioRpcError):
            return None
        return time.perf_counter() if leads else None

    async def new_leader_after(self, old: int, t0: float, timeout: float) -> float | None:
        others = [i for i in range(self.n) if i != old]
        deadline = t0 + timeout
        next_poll = time.perf_counter()
        while next_poll < deadline:
            seen = [t for t in await asyncio.gather(*(self._timed(i) for i in others)) if t]
            if seen:
                return min(seen) - t0
            next_poll += POLL_S
            await asyncio.sleep(max(0.0, next_poll - time.perf_counter()))
        return None

    async def close(self) -> None:
        await self._close()


def coord_watch(endpoints: Sequence[str]) -> StatusPoller:
    """A :class:`StatusPoller` over coord's ``Cluster.Status`` (role == leader)."""
    channels = [aio.insecure_channel(ep) for ep in endpoints]
    stubs = [cluster_pb2_grpc.ClusterStub(ch) for ch in channels]

    async def probe(i: int) -> bool:
        st = await stubs[i].Status(cluster_pb2.StatusRequest(), timeout=PROBE_TIMEOUT_S)
        return bool(st.role == cluster_pb2.ROLE_LEADER)

    async def close() -> None:
        await asyncio.gather(*(ch.close() for ch in channels), return_exceptions=True)

    return StatusPoller(len(endpoints), probe, close)


def etcd_watch(endpoints: Sequence[str]) -> StatusPoller:
    """A :class:`StatusPoller` over etcd's ``Maintenance.Status`` (leader == itself)."""
    clients = [AsyncEtcdClient(ep) for ep in endpoints]

    async def probe(i: int) -> bool:
        return is_self_leader(await clients[i].status(timeout=PROBE_TIMEOUT_S))

    async def close() -> None:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    return StatusPoller(len(endpoints), probe, close)


# --------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------


@dataclass
class SystemResult:
    """Everything measured for one system/configuration over all passes."""

    label: str  # "coord default", "coord 30:150-300", "etcd tuned"
    system: str  # "coord" | "etcd"
    timing: str  # human-readable timings
    client: str = "rotator"  # the failover client: "rotator", "library", "library:0.1"
    rounds: list[list[dict[str, Any]]] = field(default_factory=list)  # per pass
    load: list[dict[str, Any]] = field(default_factory=list)  # per pass (if run)

    def all_rounds(self) -> list[dict[str, Any]]:
        return [r for p in self.rounds for r in p]

    def values(self, key: str) -> list[float]:
        return [r[key] for r in self.all_rounds() if r.get(key) is not None]

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rounds": len(self.all_rounds())}
        for key in ("write_ms", "elected_ms", "client_ms", "campaign_ms", "vote_ms", "retries"):
            v = self.values(key)
            if v:
                out[key] = {"median": median(v), "max": max(v), "min": min(v)}
        w = [[r["write_ms"] for r in p] for p in self.rounds if p]
        out["write_median_per_pass"] = [round(median(x), 1) for x in w]
        out["missed_elections"] = sum(1 for r in self.all_rounds() if r["elected_ms"] is None)
        out["rounds_with_2_elections"] = sum(
            1 for r in self.all_rounds() if r.get("elections", 1) > 1
        )
        if self.load:
            out["load_term_changes"] = sum(x["term_change"] for x in self.load)
        return out


def _round_doc(r: FailoverRound) -> dict[str, Any]:
    write_ms = r.write_s * 1e3
    elected_ms = None if r.elected_s is None else r.elected_s * 1e3
    return {
        "leader": r.leader,
        "write_ms": round(write_ms, 1),
        "elected_ms": None if elected_ms is None else round(elected_ms, 1),
        # What the client's retries cost beyond the election (negative: the put
        # got through before the poll saw the leader, within the poll period).
        "client_ms": None if elected_ms is None else round(write_ms - elected_ms, 1),
        "retries": r.retries,
        "failed_at": r.failed_at,
    }


def _hang_rounds(cluster: Any, rounds: int, watch: Callable[[], StatusPoller]) -> list[dict]:
    if rounds <= 0:
        return []
    done = measure_leader_failure_to_write(
        cluster,
        rounds,
        fail=lambda c, i: c.pause(i),
        recover=lambda c, i: c.resume(i),
        watch=watch,
        verb="SIGSTOPped",
    )
    return [_round_doc(r) for r in done]


# coord.raft.node logs every change of the leader it knows, with the wall time (ms).
_VIEW_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\S+) INFO coord\.raft\.node: "
    r"leader is now (None|'[^']*') \(term (\d+)\)"
)


def _view_changes(logs: dict[str, str]) -> list[tuple[float, str, str, int]]:
    """(wall time, node id, leader id or "", term) for every leader change logged."""
    out = []
    for text in logs.values():
        for line in text.splitlines():
            m = _VIEW_LINE.match(line)
            if m:
                t = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S").timestamp() + int(m[2]) / 1e3
                out.append((t, m[3], "" if m[4] == "None" else m[4].strip("'"), int(m[5])))
    return sorted(out)


def election_phases(
    rounds: list[dict[str, Any]], node_ids: list[str], logs: dict[str, str]
) -> None:
    """Split each round's election using the nodes' own logs (coord only, ms resolution):

    * ``campaign_ms``: SIGSTOP -> the first survivor campaigns (its view loses the
      leader: pysyncobj became candidate). That is the election timer plus the
      PreVote round, which only then lets pysyncobj campaign;
    * ``vote_ms``: campaign -> the winner logs itself leader (RequestVote round, the
      voter's fsync of its vote, one tick; after a split vote also the PreVote timer
      drawn again and the next campaign);
    * ``elections``: terms campaigned for until one had a leader (more than 1: a
      split vote: both survivors' PreVote timers fired within a round trip, each
      granted the other's pre-vote, both campaigned and voted for themselves).
    The status poll's ``elected_ms`` minus ``campaign_ms + vote_ms`` is the poll's lag."""
    changes = _view_changes(logs)
    for k, r in enumerate(rounds):
        start = r["failed_at"] - 0.001  # log times are truncated to ms
        end = rounds[k + 1]["failed_at"] if k + 1 < len(rounds) else float("inf")
        old = node_ids[r["leader"]]
        window = [c for c in changes if start <= c[0] < end and c[1] != old]
        won = next((c for c in window if c[2] == c[1]), None)
        if won is None:
            continue
        campaigns = [c for c in window if not c[2] and c[0] <= won[0]]
        if not campaigns:
            continue
        r["campaign_ms"] = round((campaigns[0][0] - r["failed_at"]) * 1e3, 1)
        r["vote_ms"] = round((won[0] - campaigns[0][0]) * 1e3, 1)
        # A campaign after a split vote changes no view (the leader stays unknown),
        # so count terms: the winner's minus the first campaign's, plus one.
        r["elections"] = won[3] - campaigns[0][3] + 1


def _load(
    eps: list[str], term: Callable[[], int], args: argparse.Namespace, factory: str | None
) -> dict[str, Any]:
    before = term()
    kw = {"factory": factory} if factory else {}
    tp = measure_put_throughput(eps, args.load_clients, args.load_seconds, **kw)
    after = term()
    log(
        f"  load {args.load_clients} clients x {args.load_seconds:g} s: "
        f"{tp.ops_per_s:.0f} ops/s, p99 {tp.p99_ms} ms, term {before} -> {after}"
    )
    return {
        "clients": args.load_clients,
        "seconds": args.load_seconds,
        "ops_per_s": round(tp.ops_per_s, 1),
        "p50_ms": tp.p50_ms,
        "p99_ms": tp.p99_ms,
        "errors": tp.errors,
        "term_before": before,
        "term_after": after,
        "term_change": after - before,
    }


def run_coord(args: argparse.Namespace, timing: RaftTimingChoice, res: SystemResult) -> None:
    with CoordBenchCluster(args.nodes, shlex.split(args.coord_args), timings=timing) as c:
        if res.client != "rotator":  # "library" or "library:SECONDS"
            c.library_attempt_s = float(res.client.partition(":")[2] or 0)
        c.wait_healthy()
        c.cluster.wait_ready(timeout=60)  # every member acknowledges: two can elect
        rounds = _hang_rounds(c, args.rounds, lambda: coord_watch(c.endpoints()))
        nodes = c.cluster.nodes
        election_phases(
            rounds, [n.node_id for n in nodes], {n.node_id: c.cluster.log(n.index) for n in nodes}
        )
        res.rounds.append(rounds)
        if args.load_seconds > 0:
            c.wait_healthy()
            eps = leader_first(c.endpoints(), c.leader_index())
            since = time.time()
            doc = _load(eps, c.term, args, "coord_adapter:make_coord_kv")
            # Who took over when, from the nodes' logs: (s into the load, node, leader, term).
            doc["view_changes"] = [
                (round(t - since, 2), node, leader, term)
                for t, node, leader, term in _view_changes(
                    {n.node_id: c.cluster.log(n.index) for n in nodes}
                )
                if t >= since
            ]
            res.load.append(doc)


def etcd_term(e: EtcdCluster) -> int:
    return max((s.raftTerm for s in e.statuses().values()), default=0)


def run_etcd(args: argparse.Namespace, profile: Any, res: SystemResult) -> None:
    with EtcdCluster(args.nodes, profile) as e:
        e.wait_healthy()
        res.rounds.append(_hang_rounds(e, args.rounds, lambda: etcd_watch(e.endpoints())))
        if args.load_seconds > 0:
            e.wait_healthy()
            eps = leader_first(e.endpoints(), e.leader_index())
            res.load.append(_load(eps, lambda: etcd_term(e), args, None))


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def _stat(res: SystemResult, key: str, stat: str) -> float | None:
    s = res.stats().get(key)
    return None if not s else round(s[stat], 1)


def comparison_rows(results: dict[str, SystemResult]) -> list[Comparison]:
    """coord (each timing) vs etcd tuned, and coord's defaults vs etcd's defaults."""
    coords = [r for r in results.values() if r.system == "coord" and r.client == "rotator"]
    pairs: list[tuple[SystemResult, SystemResult]] = []
    if "etcd default" in results and "coord default" in results:
        pairs.append((results["coord default"], results["etcd default"]))
    if "etcd tuned" in results:
        pairs += [(c, results["etcd tuned"]) for c in coords]
    rows: list[Comparison] = []
    for co, et in pairs:
        tag = f"{co.label} vs {et.label}"
        for key, what in (("write_ms", "SIGSTOP -> write ok"), ("elected_ms", "-> leader seen")):
            for stat in ("median", "max"):
                rows.append(
                    Comparison(
                        f"{what}, {stat} ({tag})",
                        "ms",
                        _stat(co, key, stat),
                        _stat(et, key, stat),
                    )
                )
        if co.load or et.load:
            rows.append(
                Comparison(
                    f"leader changes under load ({tag})",
                    "terms",
                    float(co.stats().get("load_term_changes", 0)) if co.load else None,
                    float(et.stats().get("load_term_changes", 0)) if et.load else None,
                )
            )
    return rows


def summary_table(results: dict[str, SystemResult]) -> str:
    """One line per system: write / elected / client cost, median and max."""
    header = [
        "system",
        "timing",
        "client",
        "rounds",
        "write ok med/max ms",
        "leader seen med/max ms",
        "client cost med/max ms",
        "failed attempts med/max",
        "campaign med/max ms",
        "vote med/max ms",
        "split votes",
        "write med per pass",
        "terms under load",
    ]
    body = []
    for r in results.values():
        st = r.stats()

        def mm(key: str, st: dict[str, Any] = st) -> str:
            s = st.get(key)
            return "-" if not s else f"{s['median']:.0f} / {s['max']:.0f}"

        body.append(
            [
                r.label,
                r.timing,
                r.client,
                str(st["rounds"]),
                mm("write_ms"),
                mm("elected_ms"),
                mm("client_ms"),
                mm("retries"),
                mm("campaign_ms"),
                mm("vote_ms"),
                str(st["rounds_with_2_elections"]) if "campaign_ms" in st else "-",
                ", ".join(f"{x:.0f}" for x in st["write_median_per_pass"]) or "-",
                str(st["load_term_changes"]) if "load_term_changes" in st else "-",
            ]
        )
    widths = [max(len(c) for c in col) for col in zip(header, *body, strict=True)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, ["-" * w for w in widths], *body]]  # fmt: skip
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument(
        "--raft-timings",
        type=parse_raft_timings_list,
        default=parse_raft_timings_list("default"),
        help="coord timings to run, comma-separated: 'default' or HB:MIN-MAX in ms "
        "(e.g. default,30:150-300,40:200-350); '+field=seconds' sets any other "
        "coord.config.RaftTimings field",
    )
    p.add_argument(
        "--coord-clients",
        default="rotator",
        help="coord's failover clients, comma-separated: rotator (CoordKV, the same "
        "EndpointRotator as etcd's), library (coord.client.Client, its default 2 s "
        "attempt timeout), library:SECONDS (that attempt timeout)",
    )
    p.add_argument(
        "--coord-args",
        default="",
        help="more coord serve flags for every coord cluster, e.g. "
        "'--log-compaction-entries 1000000' (no snapshot during a short load)",
    )
    p.add_argument(
        "--etcd-profiles",
        default="default,tuned",
        help="etcd timing profiles: default (100/1000 ms), tuned (50/250 ms); '' for none",
    )
    p.add_argument("--passes", type=int, default=1, help="repeat everything (fresh clusters)")
    p.add_argument("--load-seconds", type=float, default=0.0, help="0: no load phase")
    p.add_argument("--load-clients", type=int, default=16)
    add_json_flag(p)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    profiles = {"default": DEFAULT, "tuned": TUNED}
    etcd_profiles = [x.strip() for x in args.etcd_profiles.split(",") if x.strip()]
    for x in etcd_profiles:
        if x not in profiles:
            raise SystemExit(f"unknown etcd profile {x!r} (default, tuned)")
    results: dict[str, SystemResult] = {}
    clients = [x.strip() for x in args.coord_clients.split(",") if x.strip()]
    coord_runs: list[tuple[RaftTimingChoice, SystemResult]] = []
    for t in args.raft_timings:
        for cl in clients:
            if cl != "rotator" and not cl.startswith("library"):
                raise SystemExit(f"unknown coord client {cl!r}")
            label = f"coord {t.label}" + ("" if cl == "rotator" else f" ({cl})")
            results[label] = SystemResult(label, "coord", t.describe(), cl)
            coord_runs.append((t, results[label]))
    for x in etcd_profiles:
        pr = profiles[x]
        results[f"etcd {x}"] = SystemResult(
            f"etcd {x}", "etcd", f"heartbeat {pr.heartbeat_ms} ms, election {pr.election_ms} ms"
        )
    started = time.monotonic()
    load_start = loadavg()
    log(f"load average at start: {load_start}")
    for k in range(args.passes):
        for t, res in coord_runs:
            log(f"pass {k + 1}/{args.passes}: {res.label} ({t.describe()})")
            run_coord(args, t, res)
        for x in etcd_profiles:
            log(f"pass {k + 1}/{args.passes}: etcd {x}")
            run_etcd(args, profiles[x], results[f"etcd {x}"])
        log(f"load average after pass {k + 1}: {loadavg()}")
    load_end = loadavg()
    log(f"load average at end: {load_end}")
    meta = {
        "nodes": args.nodes,
        "rounds_per_pass": args.rounds,
        "passes": args.passes,
        "coord_args": args.coord_args,
        "load": {"clients": args.load_clients, "seconds": args.load_seconds},
        "elapsed_s": round(time.monotonic() - started, 1),
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "systems": {k: {**asdict(v), "stats": v.stats()} for k, v in results.items()},
    }
    title = f"hung leader (SIGSTOP) -> write ok, coord vs etcd 3.4 ({args.nodes} nodes, fsync on)"
    report(comparison_rows(results), args.json, title=title, meta=meta)
    if not args.json:
        print()
        print(summary_table(results))
        print(f"load average: start {load_start}, end {load_end}")


if __name__ == "__main__":
    main()
