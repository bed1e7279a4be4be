"""Run chaos scenarios against real clusters and check what the workload saw.

Each scenario: a fresh ProxiedCluster (3 nodes; 5 for the bridge), the workload
(campaigners in a 1-slot and a 3-slot group, write-once acknowledged puts, a
compare-and-set register history, watchers), fault/heal cycles of one nemesis, a
final heal, then the checkers (chaos.checkers). Prints a table: scenario,
operations, failovers, longest unavailability, violations.

Usage: ``python -m chaos.run [--seed N] [--scenarios a,b] [--cycles 3] [--short] [--json]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos import checkers
from chaos.cluster import ProxiedCluster
from chaos.linearizability import History
from chaos.nemesis import NEMESES, leader_id
from chaos.records import RunRecord
from chaos.toxiproxy import Toxiproxy
from chaos.workload import AckWriter, Campaigner, EventWatcher, RegisterClient, Worker
from coord import errors
from coord.client import Client, create_group, masters
from coord.testing import wait_until
from coord.v1 import kv_pb2, kv_pb2_grpc

TTL_S = 2.0
RECOVERY_BOUND_S = 15.0  # after the final heal: one leader and every slot filled


@dataclass
class Scenario:
    name: str
    nemesis: str
    nodes: int = 3
    fault_s: float = 3.0  # each fault lasts this long (at least a TTL for pauses)
    heal_s: float = 2.0


SCENARIOS = [
    Scenario("isolate-leader", "isolate-leader"),
    Scenario("isolate-leader-and-clients", "isolate-leader-and-clients"),
    Scenario("minority-partition-5", "minority-partition", nodes=5),
    Scenario("leader-in-majority", "leader-in-majority"),
    Scenario("bridge-5", "bridge", nodes=5),
    Scenario("one-way-loss", "one-way-loss"),
    Scenario("latency-jitter", "latency-jitter"),
    Scenario("slow-close", "slow-close"),
    Scenario("reset-peer", "reset-peer"),
    Scenario("isolate-master-client", "isolate-master-client", fault_s=TTL_S * 1.5 + 0.5),
    Scenario("kill-leader", "kill-leader"),
    Scenario("kill-random-5", "kill-random", nodes=5),
    Scenario("pause-leader-beyond-ttl", "pause-leader", fault_s=TTL_S * 1.5 + 0.5),
    Scenario("rolling-restart", "rolling-restart", fault_s=0.5),
]
SHORT = ["isolate-leader", "isolate-master-client", "pause-leader-beyond-ttl"]


@dataclass
class Row:
    scenario: str
    operations: int
    failovers: int
    longest_unavailable_s: float
    recovered_after_s: float | None
    violations: list[str] = field(default_factory=list)


def run_scenario(toxi: Toxiproxy, sc: Scenario, seed: int, cycles: int, workdir: str) -> Row:
    rng = random.Random(f"{seed}/{sc.name}")
    record = RunRecord(sc.name, seed, time.monotonic())
    history = History()
    c = ProxiedCluster(toxi, sc.nodes, base_dir=f"{workdir}/{sc.name}")
    workers: list[Worker] = []
    try:
        c.start()
        leader_id(c)
        eps = c.client_endpoints
        with Client(eps, timeout_s=10) as admin:
            create_group(admin, "g1", slots=1)
            create_group(admin, "g3", slots=3)
            start_rev = admin.status().revision + 1
        workers += _workload(c, record, history, rng, start_rev)
        time.sleep(1.0)  # the workload settles before the first fault (a pacing delay)
        nemesis = NEMESES[sc.nemesis]
        for _ in range(cycles):
            heal = nemesis(c, rng, TTL_S)
            time.sleep(sc.fault_s * rng.uniform(0.7, 1.3))  # the fault lasts this long
            heal()
            time.sleep(sc.heal_s * rng.uniform(0.7, 1.3))
        c.toxi.heal()
        for i, node in enumerate(c.nodes):
            if not node.running:
                c.start(i)
            elif node.paused:
                c.resume(i)
        healed = time.monotonic()
        record.recovered_after_s = _recovery(c, healed)
        time.sleep(1.0)  # the workload runs on a healed cluster for a moment
    finally:
        for w in workers:
            w.join()
        record.end = time.monotonic()
        try:
            if c.nodes[0].proc is not None:
                _read_back(c, record)
        finally:
            c.close()
    record.kv_history = list(history.ops())
    record.operations = sum(w.ops for w in workers)
    notes = [e for w in workers for e in w.errors]
    violations = [f"{v.checker}: {v.detail}" for v in checkers.check_all(record, RECOVERY_BOUND_S)]
    violations += [f"workload: {n}" for n in notes if "did not stop" in n]
    violations += _unfed(record, history)
    return Row(
        sc.name,
        record.operations,
        _failovers(record),
        _longest_unavailable(history, record),
        record.recovered_after_s,
        violations,
    )


def _workload(
    c: ProxiedCluster,
    record: RunRecord,
    history: History,
    rng: random.Random,
    start_rev: int,
) -> list[Worker]:
    """Campaigners in a 1-slot and a 3-slot group, two writers of acknowledged keys,
    three register clients on four keys, one unfiltered watcher; all started."""
    eps = c.client_endpoints
    workers: list[Worker] = []
    workers += [
        Campaigner(record, eps, "g1", f"m{i}", 10 - i, TTL_S, c.own_links(f"g1-m{i}"))
        for i in range(3)
    ]
    workers += [Campaigner(record, eps, "g3", f"m{i}", 10 - i, TTL_S) for i in range(5)]
    workers += [AckWriter(record, eps, f"w{i}") for i in range(2)]
    keys = [f"reg/{k}" for k in range(4)]
    workers += [RegisterClient(history, eps, p, keys, rng.randrange(2**32)) for p in range(3)]
    workers += [EventWatcher(record, eps, "watch-all", start_rev)]
    for w in workers:
        w.start()
    return workers


def _unfed(record: RunRecord, history: History) -> list[str]:
    """A checker over an empty record proves nothing: the workload must have fed each."""
    fed = {
        "tenures": len(record.tenures),
        "acknowledged writes": len(record.acked),
        "register operations": sum(1 for op in history.ops() if op.status == "ok"),
        "watched events": sum(len(w.revisions) for w in record.watches),
    }
    return [f"workload: no {what} recorded" for what, n in fed.items() if n == 0]


def _recovery(c: ProxiedCluster, since: float) -> float | None:
    def whole() -> bool:
        views = [s for s in c.statuses() if s is not None]
        if len(views) != len(c.nodes) or len({s.leader_id for s in views}) != 1:
            return False
        if not views[0].leader_id:
            return False
        with Client(c.client_endpoints, timeout_s=2) as cl:
            return len(masters(cl, "g1")) == 1 and len(masters(cl, "g3")) == 3

    try:
        wait_until(whole, RECOVERY_BOUND_S, "one leader and every slot filled")
    except TimeoutError:
        return None
    return time.monotonic() - since


def _read_back(c: ProxiedCluster, record: RunRecord) -> None:
    """Every node's acknowledged keys: a linearizable range through that node, one
    bucket prefix at a time (a bucket holds at most 1,000 keys: under the range cap)."""
    buckets = sorted({k.rsplit("/", 1)[0] + "/" for k in record.acked})
    for node in c.nodes:
        keys: set[str] = set()
        with Client([node.api], timeout_s=10) as cl:
            for prefix in buckets:
                req = kv_pb2.RangeRequest(key=prefix.encode(), prefix=True, keys_only=True)

                def ask(ch: Any, t: float, req: kv_pb2.RangeRequest = req) -> Any:
                    return kv_pb2_grpc.KVStub(ch).Range(req, timeout=t)

                resp = _retrying(lambda ask=ask, ep=node.api: cl.call(ask, endpoint=ep))
                if resp.more:
                    raise RuntimeError(f"bucket {prefix} holds more keys than a range returns")
                keys |= {kv.key.decode() for kv in resp.kvs}
        record.final[node.node_id] = keys


def _retrying(fn: Any, within_s: float = 20.0) -> Any:
    """``fn()`` again after transient failures (a node still settling after the heal)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return fn()
        except errors.CoordError as e:
            if not e.retryable and not isinstance(e, errors.DeadlineExceeded):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # retry pacing


def _failovers(record: RunRecord) -> int:
    """Grants after the first, per group and slot."""
    tokens: dict[tuple[str, int], set[int]] = {}
    for t in record.tenures:
        tokens.setdefault((t.group, t.slot), set()).add(t.token)
    return sum(max(0, len(v) - 1) for v in tokens.values())


def _longest_unavailable(history: History, record: RunRecord) -> float:
    """The longest span in which no register operation completed successfully."""
    done = sorted(op.ret for op in history.ops() if op.status == "ok" and op.ret is not None)
    marks = [record.start, *done, record.end]
    return max((b - a for a, b in itertools.pairwise(marks)), default=0.0)


def print_table(rows: list[Row], seed: int) -> None:
    head = ["scenario", "ops", "failovers", "longest unavail. s", "recovered s", "violations"]
    body = [
        [r.scenario, str(r.operations), str(r.failovers), f"{r.longest_unavailable_s:.2f}",
         "-" if r.recovered_after_s is None else f"{r.recovered_after_s:.2f}",
         str(len(r.violations))]
        for r in rows
    ]  # fmt: skip
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    print(f"chaos, seed {seed}")
    for line in [head, *body]:
        print("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
    for r in rows:
        for v in r.violations:
            print(f"VIOLATION {r.scenario}: {v}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    p.add_argument("--scenarios", default="", help="comma-separated names (default: all)")
    p.add_argument("--cycles", type=int, default=3)
    p.add_argument("--short", action="store_true", help=f"only {', '.join(SHORT)}, 1 cycle")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    chosen = SCENARIOS
    if args.short:
        chosen = [s for s in SCENARIOS if s.name in SHORT]
        args.cycles = 1
    if args.scenarios:
        names = set(args.scenarios.split(","))
        chosen = [s for s in SCENARIOS if s.name in names]
        if len(chosen) != len(names):
            p.error(f"unknown scenario in {sorted(names)}: have {[s.name for s in SCENARIOS]}")
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="coord-chaos-") as workdir,
        Toxiproxy(str(Path(workdir) / "toxiproxy.log")) as toxi,
    ):
        for sc in chosen:
            print(f"[chaos] {sc.name} (seed {args.seed})", file=sys.stderr, flush=True)
            rows.append(run_scenario(toxi, sc, args.seed, args.cycles, workdir))
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
    else:
        print_table(rows, args.seed)
    return 1 if any(r.violations for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
