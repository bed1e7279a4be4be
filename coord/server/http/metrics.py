"""Prometheus metrics of one node.

Two kinds:
- event metrics, updated where things happen: gRPC requests (by method and
  code) and their latency, Raft apply and fsync latency, failed proposals,
  leader changes, this node's leaderless time;
- state metrics, read at scrape time from the replicated state (sessions,
  groups, members by health, masters, failovers by cause, the availability
  ledger per group): every node reports the same figures for them, so a
  dashboard may scrape any node, and alert rules aggregate with ``max``.

Names follow Prometheus conventions: ``coord_`` prefix, base units (seconds),
``_total`` for counters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coord import __version__
from coord.raft.node import ROLE_LEADER, RaftNode, View
from coord.state import ledger, spread
from coord.v1 import maintenance_pb2

# ``*_created`` series double the output for no use here.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
WINDOWS = {"1h": 3600, "24h": 24 * 3600, "30d": 30 * 24 * 3600}


class NodeMetrics:
    """The metrics registry of one node; hooks into the Raft node and the gRPC layer."""

    def __init__(self, raft: RaftNode) -> None:
        self.raft = raft
        self.registry = CollectorRegistry()
        r = self.registry
        self._define_rpc_and_raft_metrics(r)
        self._define_webhook_metrics(r)
        self._define_consistency_metrics(r)
        # The last check's verdicts, exported while this node leads (coord_state_diverged).
        self.last_check: maintenance_pb2.CheckConsistencyResponse | None = None
        Gauge("coord_build_info", "coord version.", ["version"], registry=r).labels(
            __version__
        ).set(1)
        r.register(_StateCollector(raft))
        r.register(_DivergenceCollector(self, raft))
        self._lock = threading.Lock()
        self._leader = raft.view.leader_id
        self._leaderless_since: float | None = None if self._leader else time.monotonic()
        raft.add_listener(self._on_view)
        raft.on_apply_latency = self.apply_latency.observe
        raft.on_tick_gap = self.tick_gap.observe
        raft.journal.on_sync_latency = self.fsync_latency.observe
        raft.on_proposal_failed = lambda reason: self.failed_proposals.labels(reason).inc()

    def _define_rpc_and_raft_metrics(self, r: CollectorRegistry) -> None:
        self.grpc_requests = Counter(
            "coord_grpc_requests",
            "gRPC requests handled, by method and status code.",
            ["method", "code"],
            registry=r,
        )
        self.grpc_latency = Histogram(
            "coord_grpc_request_duration_seconds",
            "gRPC request latency (streams: until they end), by method.",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.apply_latency = Histogram(
            "coord_raft_apply_duration_seconds",
            "Time to apply one committed command to the state machine.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fsync_latency = Histogram(
            "coord_raft_fsync_duration_seconds",
            "Journal fsync (group commit) latency.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tick_gap = Histogram(
            "coord_raft_tick_gap_seconds",
            "Time between two passes of the Raft tick thread. A leader's heartbeats wait "
            "for it: gaps past the heartbeat interval are late heartbeats.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.failed_proposals = Counter(
            "coord_raft_proposals_failed",
            "Proposals that failed (no leader, leader change, timeout...), by reason.",
            ["reason"],
            registry=r,
        )
        self.rejected = Counter(
            "coord_requests_rejected",
            "Requests refused for who sent them or how much, by reason (unauthenticated, "
            "permission_denied, rate, watch_streams, sessions, auth_failures: too many "
            "failed authentications from one host).",
            ["reason"],
            registry=r,
        )
        self.leader_changes = Counter(
            "coord_raft_leader_changes",
            "Times this node saw the leader change (including to none).",
            registry=r,
        )
        self.leaderless = Counter(
            "coord_raft_leaderless_seconds",
            "Time this node spent without a leader it could reach.",
            registry=r,
        )

    def _define_webhook_metrics(self, r: CollectorRegistry) -> None:
        # Webhook notifications (coord.server.duties.webhook; the leader posts).
        self.webhook_posted = Counter(
            "coord_webhook_posted", "Webhook notifications delivered (2xx).", registry=r
        )
        self.webhook_failed = Counter(
            "coord_webhook_failed",
            "Failed webhook post attempts (each retry counts), by reason.",
            ["reason"],
            registry=r,
        )
        self.webhook_dropped = Counter(
            "coord_webhook_dropped",
            "Webhook notifications never delivered, by reason (queue_full, rejected, ...).",
            ["reason"],
            registry=r,
        )
        self.webhook_queue = Gauge(
            "coord_webhook_queue_length", "Webhook notifications waiting.", registry=r
        )
        self.webhook_scanned = Gauge(
            "coord_webhook_scanned_revision",
            "The last revision this leader's webhook has looked at: every event up to it "
            "is queued, delivered or dropped (compare with the cluster's revision).",
            registry=r,
        )

    def _define_consistency_metrics(self, r: CollectorRegistry) -> None:
        # Consistency checks (coord.server.duties.consistency): every member's state hash at a
        # check point, compared.
        self.consistency_checks = Counter(
            "coord_consistency_checks",
            "Consistency checks run by this node, by result (consistent; diverged: a "
            "member's state hash differs from the majority's; incomplete: some gave none).",
            ["result"],
            registry=r,
        )

    def _on_view(self, view: View) -> None:  # tick thread
        with self._lock:
            if view.leader_id != self._leader:
                self.leader_changes.inc()
                self._leader = view.leader_id
            now = time.monotonic()
            if not view.leader_id and self._leaderless_since is None:
                self._leaderless_since = now
            elif view.leader_id and self._leaderless_since is not None:
                self.leaderless.inc(now - self._leaderless_since)
                self._leaderless_since = None

    def flush_leaderless(self) -> None:
        """Count an ongoing leaderless stretch up to now (called before each scrape)."""
        with self._lock:
            if self._leaderless_since is not None:
                now = time.monotonic()
                self.leaderless.inc(now - self._leaderless_since)
                self._leaderless_since = now

    def record_consistency(self, result: maintenance_pb2.CheckConsistencyResponse) -> None:
        self.last_check = result
        hashed = [n for n in result.nodes if n.hash]
        if any(not n.matches for n in hashed):
            self.consistency_checks.labels("diverged").inc()
        elif result.consistent:
            self.consistency_checks.labels("consistent").inc()
        else:
            self.consistency_checks.labels("incomplete").inc()

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        self.grpc_requests.labels(method, code).inc()
        self.grpc_latency.labels(method).observe(seconds)


class _DivergenceCollector(Collector):
    """coord_state_diverged, from the last consistency check this node ran, while it
    leads: the leader runs the periodic checks, so only its verdicts are current (a
    former leader's would linger after the node they name was replaced)."""

    def __init__(self, metrics: NodeMetrics, raft: RaftNode) -> None:
        self.metrics = metrics
        self.raft = raft

    def collect(self) -> Iterator[Metric]:
        fam = GaugeMetricFamily(
            "coord_state_diverged",
            "1 if the member's state hash differed from the majority's at the leader's "
            "last consistency check, 0 if it matched (members that gave no hash: absent).",
            labels=["node"],
        )
        check = self.metrics.last_check
        if check is not None and self.raft.view.role == ROLE_LEADER:
            for n in check.nodes:
                if n.hash:
                    fam.add_metric([n.node_id], 0 if n.matches else 1)
        yield fam


class _StateCollector(Collector):
    """Figures read from the Raft view and the replicated state at scrape time."""

    def __init__(self, raft: RaftNode) -> None:
        self.raft = raft

    def collect(self) -> Iterator[Metric]:
        raft = self.raft
        view = raft.view
        yield _gauge("coord_raft_term", "Current Raft term.", view.term)
        yield _gauge("coord_raft_is_leader", "1 if this node leads.", view.role == ROLE_LEADER)
        yield _gauge(
            "coord_raft_has_leader", "1 if this node knows a leader.", bool(view.leader_id)
        )
        yield _gauge("coord_raft_commit_index", "Raft commit index.", view.commit_index)
        yield _gauge("coord_raft_applied_index", "Last applied Raft index.", view.applied_index)
        yield _gauge("coord_raft_log_entries", "Entries in the Raft journal.", view.log_entries)
        yield _gauge("coord_raft_has_quorum", "1 if connected to a majority.", view.has_quorum)
        yield _gauge("coord_raft_members", "Members in the configuration.", len(view.members))
        yield _gauge("coord_raft_connected_peers", "Members with a live link.", len(view.connected))
        barriers = CounterMetricFamily(
            "coord_raft_read_barriers",
            "Read barriers begun (linearizable reads and keepalive acknowledgements share "
            "them), by kind: read_index (a leader's heartbeat round), noop (a no-op entry: "
            "on followers, on a leader without a commit in its term or whose peers do not "
            "number their replies, and for rounds that could not be confirmed).",
            labels=["kind"],
        )
        for kind, count in sorted(raft.barriers.items()):
            barriers.add_metric([kind], count)
        yield barriers
        # Copy plain numbers (and the ledgers) under the apply lock, which applies wait
        # for; build the metric families after releasing it.
        yield from _state_metrics(raft.read(_StateFigures))


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


class _StateFigures:
    """What the scrape needs from the replicated state, copied under the apply lock."""

    def __init__(self, state: Any) -> None:
        self.revision = int(state.revision)
        self.sessions = len(state.groups.sessions)
        self.kv_keys = len(state.kv)
        # name -> (healthy, unhealthy, masters, slots)
        self.groups: list[tuple[str, int, int, int, int]] = []
        for name, g in sorted(state.groups.groups.items()):
            healthy = sum(1 for m in g.members.values() if m.healthy)
            self.groups.append(
                (
                    name,
                    healthy,
                    len(g.members) - healthy,
                    sum(1 for h in g.holdings.values() if not h.revoked),
                    int(g.policy.slots),
                )
            )
        # name -> when paused (wall clock, ms), for the paused groups
        self.paused = {
            name: int(g.pause.paused_time_ms)
            for name, g in sorted(state.groups.groups.items())
            if g.pause is not None
        }
        # the groups whose failover breaker is open (coord.state.breaker)
        self.breaker_open = {
            name for name, g in state.groups.groups.items() if g.pause and g.pause.breaker
        }
        # name -> scheduled switchovers pending (coord.state.scheduled)
        self.scheduled = {name: len(g.scheduled) for name, g in state.groups.groups.items()}
        # name -> masters beyond the group's spread rule, over its family (coord.state.spread)
        per_value = spread.all_counts(state.groups.groups)  # each family counted once
        self.spread_violations = {
            name: spread.excess(per_value[name], g.policy.spread_max)
            for name, g in state.groups.groups.items()
            if name in per_value
        }
        # (group, member, lag behind the group's best reported position): the members
        # that reported a position (freshness-aware succession)
        self.position_lags: list[tuple[str, str, int]] = []
        for name, g in sorted(state.groups.groups.items()):
            reported = [m for m in g.members.values() if m.HasField("position")]
            best = max((m.position for m in reported), default=0)
            self.position_lags += [(name, m.id, best - m.position) for m in reported]
        self.ledger = ledger.Ledger()
        self.ledger.load(state.ledger.to_proto())  # copies


def _state_metrics(fig: _StateFigures) -> list[Metric]:
    now_ms = int(time.time() * 1000)
    out: list[Metric] = [
        _gauge("coord_revision", "State revision.", fig.revision),
        _gauge("coord_sessions", "Open sessions.", fig.sessions),
        _gauge("coord_groups", "Groups.", len(fig.groups)),
        _gauge("coord_kv_keys", "Keys in the KV store.", fig.kv_keys),
    ]
    members = GaugeMetricFamily(
        "coord_members", "Registered members, by group and health.", labels=["group", "health"]
    )
    masters = GaugeMetricFamily(
        "coord_group_masters", "Slots with a serving master.", labels=["group"]
    )
    slots = GaugeMetricFamily("coord_group_slots", "Master slots of the group.", labels=["group"])
    for name, healthy, unhealthy, serving, n_slots in fig.groups:
        members.add_metric([name, "healthy"], healthy)
        members.add_metric([name, "unhealthy"], unhealthy)
        masters.add_metric([name], serving)
        slots.add_metric([name], n_slots)
    paused = GaugeMetricFamily(
        "coord_group_paused", "1 while the group is paused (maintenance mode).", labels=["group"]
    )
    paused_for = GaugeMetricFamily(
        "coord_group_paused_seconds",
        "How long the group has been paused (wall clock; 0: not paused).",
        labels=["group"],
    )
    breaker_open = GaugeMetricFamily(
        "coord_group_breaker_open",
        "1 while the group's failover breaker is open (it paused the group after too many "
        "automatic failovers; an operator resumes it).",
        labels=["group"],
    )
    scheduled = GaugeMetricFamily(
        "coord_group_scheduled_switchovers",
        "Switchovers scheduled for later and not yet due (coordctl schedule ls).",
        labels=["group"],
    )
    spread_violations = GaugeMetricFamily(
        "coord_group_spread_violations",
        "Masters beyond the group's spread rule (at most spread_max per value of its "
        "spread_tag), counted over its spread family: 0 while the spread holds or without "
        "a rule; `coordctl rebalance GROUP` restores it.",
        labels=["group"],
    )
    for name, *_ in fig.groups:
        spread_violations.add_metric([name], fig.spread_violations.get(name, 0))
        since = fig.paused.get(name)
        paused.add_metric([name], 0.0 if since is None else 1.0)
        paused_for.add_metric([name], 0.0 if since is None else max(0, now_ms - since) / 1000)
        breaker_open.add_metric([name], 1.0 if name in fig.breaker_open else 0.0)
        scheduled.add_metric([name], fig.scheduled.get(name, 0))
    lag = GaugeMetricFamily(
        "coord_member_position_lag",
        "How far the member's reported position is behind the best one reported in its "
        "group (members that reported one; max_lag_on_failover compares with it).",
        labels=["group", "member"],
    )
    for group_name, member_id, behind in fig.position_lags:
        lag.add_metric([group_name, member_id], behind)
    out += [members, masters, slots, paused, paused_for, breaker_open, scheduled, lag]
    out.append(spread_violations)
    out += _ledger_metrics(fig.ledger, now_ms)
    return out


def _ledger_metrics(book: ledger.Ledger, now_ms: int) -> list[Metric]:
    failovers = CounterMetricFamily(
        "coord_group_failovers", "Failovers, by group and cause.", labels=["group", "cause"]
    )
    outages = CounterMetricFamily("coord_group_outages", "Outages, by group.", labels=["group"])
    down_total = CounterMetricFamily(
        "coord_group_downtime_seconds", "Downtime since the group's first master.", labels=["group"]
    )
    outage_open = GaugeMetricFamily(
        "coord_group_outage_open", "1 while a slot of the group has no master.", labels=["group"]
    )
    ftsd = GaugeMetricFamily(
        "coord_group_ftsd", "Fraction of time down over the window.", labels=["group", "window"]
    )
    downtime = GaugeMetricFamily(
        "coord_group_window_downtime_seconds", "Downtime in the window.", labels=["group", "window"]
    )
    mttr = GaugeMetricFamily(
        "coord_group_mttr_seconds",
        "Mean time to repair over the window.",
        labels=["group", "window"],
    )
    budget = GaugeMetricFamily(
        "coord_group_budget_seconds",
        "MAD: allowed downtime in the window.",
        labels=["group", "window"],
    )
    remaining = GaugeMetricFamily(
        "coord_group_budget_remaining_seconds",
        "Allowed downtime left in the window (negative: overspent).",
        labels=["group", "window"],
    )
    for name, g in sorted(book.groups.items()):
        rep = ledger.report(g, now_ms, WINDOWS.values())
        for cause, n in sorted(rep.failovers_by_cause_total.items()):
            failovers.add_metric([name, cause], n)
        outages.add_metric([name], rep.outage_count_total)
        down_total.add_metric([name], rep.downtime_ms_total / 1000)
        outage_open.add_metric([name], 1.0 if rep.outage_open else 0.0)
        for label, w in zip(WINDOWS, rep.windows, strict=True):
            ftsd.add_metric([name, label], w.ftsd)
            downtime.add_metric([name, label], w.downtime_ms / 1000)
            mttr.add_metric([name, label], w.mttr_ms / 1000)
            budget.add_metric([name, label], w.budget_ms / 1000)
            remaining.add_metric([name, label], w.budget_remaining_ms / 1000)
    return [failovers, outages, down_total, outage_open, ftsd, downtime, mttr, budget, remaining]
