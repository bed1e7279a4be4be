"""Run chaos scenarios against real clusters and check what the workload saw.

Each scenario: a fresh ProxiedCluster (3 nodes; 5 for some), the workload
(campaigners in a 1-slot and a 3-slot group, write-once acknowledged puts, a
compare-and-set register history, watchers), fault/heal cycles of one nemesis, a
final heal, then the checkers (chaos.checkers). Membership nemeses change the
cluster under that load; a membership step that does not complete in time is a
violation too, and after the heal the leader's configuration must be the members the
harness made, with no change pending; and every member's whole state must hash alike
at one committed check point. Prints a table: scenario, operations, failovers,
longest unavailability, violations.

Some scenarios add to that workload: clock faults run every node under the wall-clock
shim (chaos.clocks); disk faults run every node under the disk shim (chaos.disks:
slowed fsync/fdatasync), and must have delayed some flushes; graceful ones (leadership
transfers, a rolling restart) keep 200+ sessions alive and must lose none of them and
change no master; lost answers run the every-kind writer (chaos.every_write), whose
writes must each be applied once (chaos.applied_once).

Usage: ``python -m chaos.run [--seed N] [--scenarios a,b] [--cycles 3] [--short] [--json]
[--workdir DIR]``
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos import checkers, handover
from chaos.applied_once import EFFECTS
from chaos.bank import Auditor, Teller
from chaos.cluster import ProxiedCluster
from chaos.convergence import ConvergenceProbe
from chaos.every_write import EveryWriter
from chaos.linearizability import History
from chaos.membership import MembershipError, leader_view
from chaos.nemesis import NEMESES, STALE_LEADER_ARGS, leader_id
from chaos.records import RunRecord
from chaos.toxiproxy import Toxiproxy
from chaos.txn_linearizability import dump_jsonl
from chaos.worker import Worker
from chaos.workload import (
    REGISTER_CLIENT_OPTIONS,
    AckWriter,
    Campaigner,
    EventWatcher,
    RegisterClient,
    SessionLoad,
    SharedClient,
)
from coord import errors
from coord.client import Client, txn
from coord.testing import wait_until
from coord.v1 import kv_pb2, kv_pb2_grpc, maintenance_pb2

TTL_S = 2.0
GRACEFUL_TTL_S = 10.0  # the session TTL of graceful scenarios (see Scenario.session_ttl_s)
RECOVERY_BOUND_S = 15.0  # after the final heal: one leader and every slot filled
READY_S = 60.0  # the workload's load in place (200 sessions open on a busy machine)
SESSION_LOAD_WORKERS = 3  # processes (chaos.session_load) sharing the session load
EVERY_WRITERS = 3


@dataclass
class Scenario:
    name: str
    nemesis: str
    nodes: int = 3
    fault_s: float = 3.0  # each fault lasts this long (at least a TTL for pauses)
    heal_s: float = 2.0
    # Nodes a membership nemesis adds per cycle: the clients are given their (proxied)
    # addresses up front (ProxiedCluster spares).
    adds_per_cycle: int = 0
    clocks: bool = False  # every node under the wall-clock shim (clock nemeses)
    disks: bool = False  # every node under the disk shim: slowed flushes (disk nemeses)
    sessions: int = 0  # extra sessions kept alive by the library (SessionLoad)
    # Leadership moves only gracefully: no session lost, no master changed.
    graceful: bool = False
    every_write: bool = False  # the every-kind writer and the applied-once checker
    # The workload's session TTL (campaigners, session load). Graceful scenarios use a
    # longer one: 200+ sessions reconnecting at once on a busy 2-core machine (a node
    # restarting beside them) must not miss their keepalives for want of CPU; a session
    # the cluster *says* expired is lost whatever its TTL.
    session_ttl_s: float = TTL_S
    extra_args: tuple[str, ...] = ()  # every node's (timings the nemesis needs)
    # Keys (of 200 bytes) put before the workload starts: a state whose snapshots take
    # long enough to write that a heal meets one being written.
    ballast_keys: int = 0


SCENARIOS = [
    Scenario("isolate-leader", "isolate-leader"),
    Scenario("isolate-leader-and-clients", "isolate-leader-and-clients"),
    # Every node compacts every 100 entries: the deposed leader, healed, is sent a
    # snapshot, often while the new leader is still writing it (serialized: None).
    Scenario(
        "isolate-leader-compacting",
        "isolate-leader-and-clients",
        extra_args=("--log-compaction-entries", "200"),
        ballast_keys=30_000,
    ),
    Scenario("minority-partition-5", "minority-partition", nodes=5),
    Scenario("leader-in-majority", "leader-in-majority"),
    Scenario("bridge-5", "bridge", nodes=5),
    Scenario("one-way-loss", "one-way-loss"),
    Scenario(
        "cut-off-leader-late-replies", "cut-off-leader-late-replies", extra_args=STALE_LEADER_ARGS
    ),
    Scenario("latency-jitter", "latency-jitter"),
    Scenario("slow-close", "slow-close"),
    Scenario("reset-peer", "reset-peer"),
    Scenario("isolate-master-client", "isolate-master-client", fault_s=TTL_S * 1.5 + 0.5),
    Scenario("kill-leader", "kill-leader"),
    Scenario("kill-random-5", "kill-random", nodes=5),
    Scenario("wipe-with-stale-leader", "wipe-with-stale-leader", extra_args=STALE_LEADER_ARGS),
    Scenario("pause-leader-beyond-ttl", "pause-leader", fault_s=TTL_S * 1.5 + 0.5),
    Scenario("rolling-restart", "rolling-restart", fault_s=0.5),
    Scenario("clock-skew", "clock-skew", clocks=True),
    Scenario(
        "clock-step-leader-during-revoke",
        "clock-step-leader-during-revoke",
        clocks=True,
        fault_s=TTL_S + 1.0,  # the wait-out and the slot's grant happen in the fault
    ),
    # Each fault lasts 6 s (jittered): tens of slowed journal syncs under the writes.
    Scenario("slow-disk-leader", "slow-disk-leader", disks=True, fault_s=6.0),
    Scenario("slow-disk-minority", "slow-disk-minority", disks=True, fault_s=6.0),
    # The slowed leader compacts every 200 entries meanwhile: nothing a compaction does
    # may flush on its tick thread (the journal's rewrite did: three flushes).
    Scenario(
        "slow-disk-leader-compacting",
        "slow-disk-leader",
        disks=True,
        fault_s=6.0,
        extra_args=("--log-compaction-entries", "200"),
    ),
    # A slowed follower falls behind a leader that compacts every 200 entries: it is
    # sent snapshots while appends catch it up (a snapshot older than its log must not
    # be installed: the node-log check below would see the cut).
    Scenario(
        "slow-disk-minority-compacting",
        "slow-disk-minority",
        disks=True,
        fault_s=6.0,
        extra_args=("--log-compaction-entries", "200"),
        ballast_keys=10_000,
    ),
    Scenario("forced-handover", "forced-handover", fault_s=TTL_S + 1.0),
    Scenario("lost-answers", "lost-answers", every_write=True, fault_s=6.0),
    Scenario(
        "transfers-under-sessions",
        "leader-transfer",
        sessions=210,
        graceful=True,
        session_ttl_s=GRACEFUL_TTL_S,
    ),
    Scenario(
        "rolling-restart-under-sessions",
        "rolling-restart",
        fault_s=0.5,
        sessions=210,
        graceful=True,
        session_ttl_s=GRACEFUL_TTL_S,
    ),
    Scenario("member-replace", "member-replace", adds_per_cycle=1),
    Scenario("leader-transfer", "leader-transfer"),
    Scenario("grow-shrink-3-5-3", "grow-shrink", adds_per_cycle=2),
    Scenario("member-change-kill-minority", "change-with-kill", adds_per_cycle=1),
    Scenario("member-change-partition-5", "change-with-partition", nodes=5, adds_per_cycle=1),
]
SHORT = [
    "isolate-leader",
    "isolate-master-client",
    "pause-leader-beyond-ttl",
    "member-replace",
    "clock-skew",
    "clock-step-leader-during-revoke",
    "transfers-under-sessions",
]


@dataclass
class Row:
    scenario: str
    operations: int
    failovers: int
    longest_unavailable_s: float
    recovered_after_s: float | None
    violations: list[str] = field(default_factory=list)
    # Over every heal: the longest a member took to pass the leader's heal-time commit
    # index (chaos.convergence; None if one never did), and how many heals were sampled.
    slowest_catch_up_s: float | None = None
    heals: int = 0


def run_scenario(toxi: Toxiproxy, sc: Scenario, seed: int, cycles: int, workdir: str) -> Row:
    rng = random.Random(f"{seed}/{sc.name}")
    record = RunRecord(sc.name, seed, time.monotonic(), graceful=sc.graceful)
    history = History()
    c = ProxiedCluster(
        toxi,
        sc.nodes,
        spares=sc.adds_per_cycle * cycles,
        clocks=sc.clocks,
        disks=sc.disks,
        base_dir=f"{workdir}/{sc.name}",
        extra_args=list(sc.extra_args),
    )
    workers: list[Worker] = []
    failed_steps: list[str] = []
    unread: list[str] = []
    diverged: list[str] = []
    started = False
    try:
        c.start()
        started = True
        leader_id(c)
        _ballast(c, sc.ballast_keys)
        _start_workload(c, sc, record, history, rng, workers)
        time.sleep(1.0)  # the workload settles before the first fault (a pacing delay)
        failed_steps += _faults(c, sc, rng, cycles, record)
        final = ConvergenceProbe(c, record)
        record.recovered_after_s = _recovery(c, final.sample.at)
        final.join()
        if record.recovered_after_s is None:
            failed_steps += _members_differ(c)
        time.sleep(1.0)  # the workload runs on a healed cluster for a moment
    finally:
        record.stopping = time.monotonic()
        unwatched = _stop_workload(c, workers)
        record.end = time.monotonic()
        try:
            if started:
                unread = _read_back(c, record)
                with Client(c.client_endpoints, timeout_s=10) as cl:
                    diverged = states_differ(cl.check_consistency)
        finally:
            delayed_flushes = sum(d.delayed for d in (c.disks or {}).values())
            c.close()
    record.kv_history = list(history.ops())
    record.operations = sum(w.ops for w in workers)
    notes = [e for w in workers for e in w.errors]
    violations = [f"{v.checker}: {v.detail}" for v in checkers.check_all(record, RECOVERY_BOUND_S)]
    # The bank's multi-key history, for a second opinion (chaos/porcupine) or a replay.
    Path(workdir, sc.name).mkdir(parents=True, exist_ok=True)
    dump_jsonl(record.bank_history, Path(workdir, sc.name, "bank-history.jsonl"))
    violations += [f"workload: {n}" for n in notes if "did not stop" in n]
    violations += [
        f"workload: {e}" for w in workers if isinstance(w, SessionLoad) for e in w.errors
    ]
    violations += [f"applied_once: {u}" for u in unwatched]
    violations += [f"membership: {e}" for e in failed_steps]
    violations += [f"acknowledged_writes_present: {u}" for u in unread]
    violations += [f"replica_states_equal: {d}" for d in diverged]
    violations += _unfed(record, history, sc, delayed_flushes) + [
        f"node_logs: {v}" for v in node_log_violations(Path(workdir, sc.name))
    ]
    return Row(
        sc.name,
        record.operations,
        _failovers(record),
        _longest_unavailable(history, record),
        record.recovered_after_s,
        violations,
        _slowest_catch_up(record),
        len(record.heals),
    )


def _ballast(c: ProxiedCluster, keys: int) -> None:
    """Put ``keys`` keys under ``ballast/`` (200 keys per transaction)."""
    value = b"b" * 200
    with Client(c.client_endpoints, timeout_s=30) as cl:
        for start in range(0, keys, 200):
            end = min(keys, start + 200)
            cl.txn(success=[txn.put(b"ballast/%08d" % i, value) for i in range(start, end)])


def _slowest_catch_up(record: RunRecord) -> float | None:
    """The longest any member took, after any heal, to pass the heal-time commit index
    (from the start of its window: chaos.convergence); None if one never did."""
    took = [
        h.passed[m] - h.answered[m] if m in h.passed and m in h.answered else None
        for h in record.heals
        for m in h.members
    ]
    return None if None in took else max((t for t in took if t is not None), default=0.0)


def _faults(
    c: ProxiedCluster, sc: Scenario, rng: random.Random, cycles: int, record: RunRecord
) -> list[str]:
    """The nemesis's fault/heal cycles, then the final heal (every toxic gone, every
    disk at full speed, every member running). After each cycle's heal, every member's
    commit index is sampled (chaos.convergence) until each is judged: the heal period
    lasts at least that long. Returns the membership steps that failed (the rest is
    skipped)."""
    fault = NEMESES[sc.nemesis]
    failed: list[str] = []
    for _ in range(cycles):
        try:
            heal = fault(c, rng, TTL_S)
            time.sleep(sc.fault_s * rng.uniform(0.7, 1.3))  # the fault lasts this long
            heal()
        except MembershipError as e:
            failed.append(str(e))
            break
        probe = ConvergenceProbe(c, record)
        time.sleep(sc.heal_s * rng.uniform(0.7, 1.3))
        probe.join()
    c.toxi.heal()
    for disk in (c.disks or {}).values():
        disk.set(0.0)  # every flush at full speed (each cycle's heal did it already)
    for node in c.members:
        if not node.running:
            c.start(node.index)
        elif node.paused:
            c.resume(node.index)
    return failed


def _members_differ(c: ProxiedCluster) -> list[str]:
    """Why the leader's configuration is not the members the harness made, if it is not."""
    view = leader_view(c)
    if view is None:
        return ["after the heal no leader answers with its configuration"]
    have = sorted(n.id for n in view.nodes)
    if have != sorted(c.member_ids) or view.change_pending:
        pending = " (a change pending)" if view.change_pending else ""
        return [f"after the heal the leader has members {have}{pending}, not {c.member_ids}"]
    return []


def _start_workload(
    c: ProxiedCluster,
    sc: Scenario,
    record: RunRecord,
    history: History,
    rng: random.Random,
    workers: list[Worker],
) -> None:
    """Groups g1 (its switchover timeout short: chaos.handover) and g3, then the
    workload, started (into ``workers``, so that the caller stops whatever started)
    and in place (the session load open)."""
    with Client(c.client_endpoints, timeout_s=10) as admin:
        switchover_ms = int(handover.SWITCHOVER_TIMEOUT_S * 1000)
        admin.group("g1").create(slots=1, switchover_timeout_ms=switchover_ms)
        admin.group("g3").create(slots=3)
        start_rev = admin.status().revision + 1
    workers += _workload(c, sc, record, history, rng, start_rev)
    wait_until(lambda: all(w.settled() for w in workers), READY_S, "the workload in place")
    record.sessions_kept = sum(w.opened for w in workers if isinstance(w, SessionLoad))


def _workload(
    c: ProxiedCluster,
    sc: Scenario,
    record: RunRecord,
    history: History,
    rng: random.Random,
    start_rev: int,
) -> list[Worker]:
    """Campaigners in a 1-slot and a 3-slot group, two writers of acknowledged keys,
    three register clients on four keys (two sharing one Client), two bank tellers and
    an auditor (chaos.bank: multi-key transactions), one unfiltered watcher (noting every
    event for the applied-once checker when the every-kind writers run); the scenario's
    session load and every-kind writers; all started."""
    eps = c.client_endpoints
    workers: list[Worker] = []
    ttl = sc.session_ttl_s
    workers += [
        Campaigner(record, eps, "g1", f"m{i}", 10 - i, ttl, c.own_links(f"g1-m{i}"))
        for i in range(3)
    ]
    workers += [Campaigner(record, eps, "g3", f"m{i}", 10 - i, ttl) for i in range(5)]
    workers += [AckWriter(record, eps, f"w{i}") for i in range(2)]
    keys = [f"reg/{k}" for k in range(4)]
    # Registers 1 and 2 share a Client: their requests in flight together go over its
    # KV.Pipeline streams (batched, answered by tag), under the same faults.
    pair = SharedClient(eps, users=2, **REGISTER_CLIENT_OPTIONS)
    workers += [
        RegisterClient(history, eps, p, keys, rng.randrange(2**32), pair if p else None)
        for p in range(3)
    ]
    workers += [EventWatcher(record, eps, "watch-all", start_rev, notes=sc.every_write)]
    workers += [Teller(record, eps, f"teller{i}", rng.randrange(2**32)) for i in range(2)]
    workers += [Auditor(record, eps, "auditor")]
    shares = [sc.sessions // SESSION_LOAD_WORKERS] * SESSION_LOAD_WORKERS if sc.sessions else []
    for i in range(sc.sessions % SESSION_LOAD_WORKERS):
        shares[i] += 1
    workers += [SessionLoad(record, eps, f"load{i}", n, ttl) for i, n in enumerate(shares)]
    if sc.every_write:
        workers += [EveryWriter(record, eps, f"every{i}", TTL_S) for i in range(EVERY_WRITERS)]
    for w in workers:
        w.start()
    return workers


def _stop_workload(c: ProxiedCluster, workers: list[Worker]) -> list[str]:
    """Stop every worker; watchers that note events last, once they have seen every
    revision up to the one the leader had when the rest stopped (so that the
    applied-once checker sees the effects of the last writes). Returns what went wrong
    with that wait."""
    watchers = [w for w in workers if isinstance(w, EventWatcher) and w.notes is not None]
    for w in workers:  # told all at once: none acts on another's stopping (a slot freed)
        if w not in watchers:
            w.stop.set()
    for w in workers:
        if w not in watchers:
            w.join()
    problems = []
    if watchers:
        try:
            with Client(c.client_endpoints, timeout_s=10) as cl:
                final = _retrying(lambda: cl.range("chaos/end").header.revision)
            wait_until(
                lambda: all(w.log.revisions and w.log.revisions[-1] >= final for w in watchers),
                20,
                f"the watcher to reach revision {final}",
            )
        except (errors.CoordError, TimeoutError) as e:
            problems.append(f"the event log was not read to its end: {e}")
    for w in watchers:
        w.join()
    return problems


def _unfed(
    record: RunRecord, history: History, sc: Scenario, delayed_flushes: int = 0
) -> list[str]:
    """A checker over an empty record proves nothing: the workload must have fed each
    (and a disk fault that delayed no flush tested nothing)."""
    fed = {
        "tenures": len(record.tenures),
        "acknowledged writes": len(record.acked),
        "register operations": sum(1 for op in history.ops() if op.status == "ok"),
        "watched events": sum(len(w.revisions) for w in record.watches),
        "bank operations": len(record.bank_history),
    }
    if sc.sessions:
        fed[f"sessions kept (of {sc.sessions})"] = int(record.sessions_kept >= sc.sessions)
    if sc.disks:
        fed["flushes delayed by the disk shim"] = delayed_flushes
    if sc.every_write:
        fed["acknowledged writes of every kind"] = int(
            all(any(w.kind == k and w.outcome == "ok" for w in record.writes) for k in EFFECTS)
        )
    return [f"workload: no {what} recorded" for what, n in fed.items() if n == 0]


def _recovery(c: ProxiedCluster, since: float) -> float | None:
    def whole() -> bool:
        views = [s for s in c.statuses() if s is not None]
        if len(views) != len(c.members) or len({s.leader_id for s in views}) != 1:
            return False
        if not views[0].leader_id or _members_differ(c):
            return False
        with Client(c.client_endpoints, timeout_s=2) as cl:
            return len(cl.group("g1").masters()) == 1 and len(cl.group("g3").masters()) == 3

    try:
        wait_until(whole, RECOVERY_BOUND_S, "one leader and every slot filled")
    except TimeoutError:
        return None
    return time.monotonic() - since


def _read_back(c: ProxiedCluster, record: RunRecord) -> list[str]:
    """Every member's acknowledged keys: a linearizable range through that node, one
    bucket prefix at a time (a bucket holds at most 1,000 keys: under the range cap).
    Returns the members that could not answer (a violation: after the heal every
    member must serve linearizable reads)."""
    buckets = sorted({k.rsplit("/", 1)[0] + "/" for k in record.acked})
    unread = []
    for node in c.members:
        keys: set[str] = set()
        with Client([node.api], timeout_s=10) as cl:
            try:
                for prefix in buckets:
                    req = kv_pb2.RangeRequest(key=prefix.encode(), prefix=True, keys_only=True)

                    def ask(ch: Any, t: float, req: kv_pb2.RangeRequest = req) -> Any:
                        return kv_pb2_grpc.KVStub(ch).Range(req, timeout=t)

                    resp = _retrying(lambda ask=ask, ep=node.api: cl.call(ask, endpoint=ep))
                    if resp.more:
                        raise RuntimeError(f"bucket {prefix} holds more keys than a range returns")
                    keys |= {kv.key.decode() for kv in resp.kvs}
            except errors.CoordError as e:
                unread.append(f"{node.node_id} could not be read back after the heal: {e.message}")
                continue
        record.final[node.node_id] = keys
    return unread


def states_differ(
    check: Callable[[], maintenance_pb2.CheckConsistencyResponse],
    within_s: float = 20.0,
    pause_s: float = 0.2,
) -> list[str]:
    """After the heal every member's whole state (keys, sessions, groups, events,
    dedupe table, ledger) must hash alike at one committed check point (``check``:
    ``Client.check_consistency``). A member that gives no hash is asked again until
    ``within_s``; one whose hash differs is a violation at once (equal logs, equal
    states: it cannot come right by waiting)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            resp = check()
        except errors.CoordError as e:
            if time.monotonic() > deadline:
                return [f"no consistency check after the heal: {e.message}"]
            time.sleep(pause_s)  # retry pacing
            continue
        bad = [n for n in resp.nodes if n.hash and not n.matches]
        if bad:
            return [
                f"{n.node_id}'s state at revision {n.revision} hashes to {n.hash[:16]}, "
                "not the majority's"
                for n in bad
            ]
        silent = [n for n in resp.nodes if not n.hash]
        if not silent:
            return []
        if time.monotonic() > deadline:
            return [f"no state hash from {n.node_id}: {n.error}" for n in silent]
        time.sleep(pause_s)  # retry pacing


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


# Lines a node logs only when something that must not happen did (with fsync on and
# kill -9 as the harshest fault, the page cache survives every crash of the suite).
NODE_LOG_VIOLATIONS = {
    "exceeds journal end": "a node's log was cut below its commit index (a snapshot install?)",
}


def node_log_violations(base_dir: Path) -> list[str]:
    """What the nodes' logs under ``base_dir`` say that must not happen."""
    found = []
    for log in sorted(base_dir.glob("*.log")):
        with open(log, errors="replace") as f:
            for line in f:
                for needle, meaning in NODE_LOG_VIOLATIONS.items():
                    if needle in line:
                        found.append(f"{log.stem}: {meaning}: {line.strip()[:200]}")
    return found


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
    head = ["scenario", "ops", "failovers", "longest unavail. s", "recovered s",
            "slowest catch-up s (heals)", "violations"]  # fmt: skip
    body = [
        [r.scenario, str(r.operations), str(r.failovers), f"{r.longest_unavailable_s:.2f}",
         "-" if r.recovered_after_s is None else f"{r.recovered_after_s:.2f}",
         ("-" if r.slowest_catch_up_s is None else f"{r.slowest_catch_up_s:.2f}")
         + f" ({r.heals})",
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
    p.add_argument(
        "--workdir",
        default="",
        help="keep the clusters' data dirs and logs here (default: a temp dir)",
    )
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
    if args.workdir:
        if Path(args.workdir).exists() and any(Path(args.workdir).iterdir()):
            p.error(f"--workdir {args.workdir} is not empty")
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    rows = []
    with (
        contextlib.nullcontext(args.workdir)
        if args.workdir
        else tempfile.TemporaryDirectory(prefix="coord-chaos-") as workdir,
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
