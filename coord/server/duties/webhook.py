"""Webhook notifications: the leader POSTs failover and budget events as JSON.

When ``notify_webhook`` is set (``--notify-webhook URL``), the Raft leader posts:

- failover events, as the state machine recorded them: ``master_elected`` (not
  the first election of a slot, cause ``initial``), ``master_lost``,
  ``master_revoked``, ``stepdown_requested``, and ``breaker_opened`` (the group's
  failover breaker paused it: ``cause`` says why, e.g. "3 automatic failovers within
  600s"; an operator resumes it), ``scheduled_switchover_fired`` (a switchover
  scheduled for now started; ``member`` its target, empty: the best candidate) and
  ``scheduled_switchover_refused`` (it could not start: ``cause`` says why);
- budget events, from the availability ledger (coord.state.ledger):
  ``budget_spent`` when a group's 30-day downtime budget (MAD) runs out (what
  remains crosses below zero), and ``budget_burning_fast`` when more than 10 %
  of the 30-day budget was spent within the last hour (downtime in the 1 h
  window > budget / 10). Each fires on the crossing, once per crossing; groups
  without a budget (``downtime_budget_ms`` 0) have no budget events.

Body (``Content-Type: application/json``; schema version 1; fields are never
removed, new ones may be added)::

    {
      "schema": 1,
      "id": "3f1c0a9e5b7d2c41-1234-master_elected",  # cluster id, revision, type
      "type": "master_elected",
      "group": "db", "member": "db-2", "slot": 0,
      "token": 1234,          # the fencing token of the holding the event is about
      "cause": "session_expired",
      "revision": 1234,       # the event's revision (budget events: see below)
      "term": 7,              # the Raft term it was committed in
      "time_ms": 1718000000123, "time": "2024-06-10T06:13:20.123Z",  # leader's clock
      "cluster_id": "3f1c0a9e5b7d2c41",
      "node_id": "n2"         # the node that posted it (the leader)
    }

Budget events add ``"budget": {"window_s", "budget_ms", "downtime_ms",
"remaining_ms"}`` (the 30-day figures) and ``"window_downtime_ms"`` (the last
hour's downtime); their ``revision``, ``member``, ``slot`` and ``cause`` are
those of the outage that spent the budget (the one open, or the last one, when
the crossing was seen), so that the ``id`` does not depend on who posts it or
when it looked; ``token`` is 0 and ``term`` is the poster's.

Delivery: one post at a time, in the order the events were queued (failover
events in revision order). A 2xx answer delivers. 408, 425, 429, 5xx, timeouts
(``TIMEOUT_S`` per post) and connection errors are retried with exponential
backoff and full jitter (``BACKOFF_BASE_S`` doubling up to ``BACKOFF_MAX_S``),
for as long as the notification stays in the queue; any other answer (a 3xx or
4xx: the URL or the receiver is wrong) drops it, logged and counted. The queue
holds at most ``QUEUE_MAX`` notifications (``COORD_WEBHOOK_QUEUE_MAX`` in the
environment overrides it): when full the oldest is dropped, and counted, so a
receiver that is down costs bounded memory. Each post carries an
``Idempotency-Key`` header equal to ``id``; ``X-Coord-Attempt`` counts tries.

Metrics (coord.server.http.metrics, on the leader): ``coord_webhook_posted_total``;
``coord_webhook_failed_total{reason}`` per failed try (``connection``,
``timeout``, ``http_<status>``, ``rejected_<status>``);
``coord_webhook_dropped_total{reason}``: ``queue_full``, ``rejected``,
``leadership_lost`` (the queue of a deposed leader), ``compacted`` (events that
left the event log before the leader read them: not all were notifications);
``coord_webhook_queue_length``; ``coord_webhook_scanned_revision`` (how far the
leader has read the events: behind the cluster's revision, notifications are still
to be queued).

Delivery guarantee: at-least-once within one leadership (short of the queue
overflowing), at-most-once across a leader change. A node that becomes leader
posts the events after the revision it had applied when it took over, and takes
the budget state it sees then as its baseline; what the old leader had queued
but not delivered is lost (there is no replicated delivery cursor: recording
each delivery in the log would cost a commit per notification and make the
receiver's availability the cluster's problem). Within a leadership a post that
timed out may have arrived, and the new leader also posts the old term's tail it
applies after taking over, so a receiver can see an ``id`` twice: deduplicate on
``id``. A deposed leader stops posting and drops its queue. For alerts that must
not be missed, use the Prometheus rules in deploy/ (they read the replicated
ledger on every node).

Threads: the Raft tick thread only sets a flag and schedules a wake-up on the
loop (``call_soon_threadsafe``), and records the applied revision when the
leadership changes (it is the thread that applies, so that read is exact).
Reading the state runs on the default executor (it takes the apply lock);
posting runs on the loop with aiohttp's client and never waits on Raft.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from coord import __version__
from coord.errors import InvalidArgument, OutOfRange
from coord.raft.node import ROLE_LEADER, RaftNode, View
from coord.server.http.metrics import NodeMetrics
from coord.server.runtime import tasks
from coord.state import ledger
from coord.state.machine import StateMachine
from coord.v1 import availability_pb2, groups_pb2

logger = logging.getLogger(__name__)

SCHEMA = 1
QUEUE_MAX = 1000
TIMEOUT_S = 5.0
BACKOFF_BASE_S = 0.2
BACKOFF_MAX_S = 5.0
# Budget figures change with time alone while an outage is open: look this often.
BUDGET_CHECK_S = 5.0
# A burst of applies is read at most this often (each read takes the apply lock).
MIN_SCAN_INTERVAL_S = 0.05
BURN_WINDOW_S = 3600
BURN_FRACTION = 0.10  # of the 30-day budget spent within BURN_WINDOW_S: burning fast
FAILOVER_TYPES = frozenset({
    "master_elected", "master_lost", "master_revoked", "stepdown_requested",
    "breaker_opened", "scheduled_switchover_fired", "scheduled_switchover_refused",
})  # fmt: skip
_RETRY_STATUS = frozenset({408, 425, 429})
_PERIOD_S = ledger.BUDGET_PERIOD_MS // 1000


def check_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host and a valid port; InvalidArgument
    (saying what is wrong) otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port  # a ValueError when not a number or out of range
    except ValueError as e:
        raise InvalidArgument(f"coord: notify webhook {url!r} is not a valid URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(
            f"coord: notify webhook {url!r} is not an http:// or https:// URL with a host"
        )
    if port == 0:
        raise InvalidArgument(f"coord: notify webhook {url!r} has port 0")
    return url


def wanted(e: groups_pb2.Event) -> bool:
    """A failover event worth a notification (not a slot's first election)."""
    if e.type not in FAILOVER_TYPES:
        return False
    return not (e.type == "master_elected" and e.cause in ("", "initial"))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def event_body(e: groups_pb2.Event, cluster_id: str, node_id: str) -> dict[str, Any]:
    """The JSON body of a failover event's notification."""
    return {
        "schema": SCHEMA,
        "id": f"{cluster_id}-{e.revision}-{e.type}",
        "type": e.type,
        "group": e.group,
        "member": e.member,
        "slot": e.slot,
        "token": e.token,
        "cause": e.cause,
        "revision": e.revision,
        "term": e.term,
        "time_ms": e.time_ms,
        "time": _iso(e.time_ms),
        "cluster_id": cluster_id,
        "node_id": node_id,
    }


@dataclass
class BudgetState:
    """Where a group stands against its budget (None: no budget)."""

    spent: bool
    burning: bool
    figures: dict[str, Any] = field(default_factory=dict)


def budget_ledgers(state: StateMachine) -> list[availability_pb2.GroupLedger]:
    """Apply lock held: the budgeted groups' ledgers, with just what the budget needs
    (outages, not the failover history), copied so the figures are computed unlocked."""
    out = []
    for g in state.ledger.groups.values():
        if g.budget_ms > 0:
            lite = availability_pb2.GroupLedger(
                group=g.group,
                tracking_since_ms=g.tracking_since_ms,
                budget_ms=g.budget_ms,
                open_outage=g.open_outage,
            )
            lite.outages.extend(g.outages)
            out.append(lite)
    return out


def budget_states(
    ledgers: list[availability_pb2.GroupLedger], now_ms: int, revision: int
) -> dict[str, BudgetState]:
    """Each budgeted group's standing, and the figures for a post."""
    out: dict[str, BudgetState] = {}
    for g in ledgers:
        name = g.group
        rep = ledger.report(g, now_ms, (BURN_WINDOW_S, _PERIOD_S))
        hour, month = rep.windows[0], rep.windows[1]
        last = rep.timeline[-1] if rep.timeline else None
        out[name] = BudgetState(
            spent=month.budget_remaining_ms < 0,
            burning=hour.downtime_ms > g.budget_ms * BURN_FRACTION,
            figures={
                "member": last.member if last else "",
                "slot": last.slot if last else 0,
                "cause": last.cause if last else "",
                "revision": last.revision if last else revision,
                "budget": {
                    "window_s": _PERIOD_S,
                    "budget_ms": month.budget_ms,
                    "downtime_ms": month.downtime_ms,
                    "remaining_ms": month.budget_remaining_ms,
                },
                "window_downtime_ms": hour.downtime_ms,
            },
        )
    return out


def budget_body(
    kind: str, group: str, b: BudgetState, cluster_id: str, node_id: str, term: int, now_ms: int
) -> dict[str, Any]:
    f = b.figures
    return {
        "schema": SCHEMA,
        "id": f"{cluster_id}-{f['revision']}-{kind}",
        "type": kind,
        "group": group,
        "member": f["member"],
        "slot": f["slot"],
        "token": 0,
        "cause": f["cause"],
        "revision": f["revision"],
        "term": term,
        "time_ms": now_ms,
        "time": _iso(now_ms),
        "cluster_id": cluster_id,
        "node_id": node_id,
        "budget": f["budget"],
        "window_downtime_ms": f["window_downtime_ms"],
    }


@dataclass(eq=False)
class Notification:
    id: str
    type: str
    body: bytes


@dataclass
class _Scan:
    """What one read of the state found (built under the apply lock)."""

    cluster_id: str
    revision: int
    events: list[groups_pb2.Event]
    skipped: int
    ledgers: list[availability_pb2.GroupLedger] | None  # None: not looked at this time
    budgets: dict[str, BudgetState] | None = None  # computed from ledgers, unlocked


class WebhookNotifier:
    """Posts the leader's notifications to one URL. ``start``/``stop`` on the loop."""

    def __init__(
        self,
        raft: RaftNode,
        url: str,
        metrics: NodeMetrics | None = None,
        queue_max: int | None = None,
    ) -> None:
        self.raft = raft
        self.url = check_url(url)
        # Logs name the receiver's origin only: webhook paths and queries often hold secrets.
        parts = urlsplit(self.url)
        self.origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        self.metrics = metrics
        self.queue_max = queue_max or int(os.environ.get("COORD_WEBHOOK_QUEUE_MAX", QUEUE_MAX))
        if self.queue_max < 1:
            raise InvalidArgument("coord: the webhook queue must hold at least 1 notification")
        self.node_id = raft.cfg.node_id
        self.queue: deque[Notification] = deque()
        self._lock = threading.Lock()
        self._poked = False
        self._leading = False  # read by the tick thread: apply wake-ups matter only then
        self._term = -1
        self._cursor = 0  # the last revision looked at
        self._budgets: dict[str, BudgetState] | None = None  # None: no baseline yet
        self._next_budget_check = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._queued = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle (loop) ----------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
            headers={"User-Agent": f"coord/{__version__}"},
        )
        self.raft.add_listener(self._on_view)
        self.raft.add_apply_listener(self._on_apply)
        self._tasks = [
            asyncio.create_task(self._watch()),
            asyncio.create_task(self._send()),
        ]
        self._on_view(self.raft.view)  # in case it leads already
        logger.info("webhook notifications go to %s (queue of %d)", self.origin, self.queue_max)

    async def stop(self) -> None:
        self.raft.remove_listener(self._on_view)
        with self._lock:
            self._loop = None  # the apply listener stays registered: it now does nothing
        await tasks.cancel(*self._tasks)
        if self._session is not None:
            await self._session.close()

    # -- tick thread ---------------------------------------------------------------

    def _on_view(self, view: View) -> None:
        leading = view.role == ROLE_LEADER
        # The tick thread applies, so this is exactly what was applied when it took over.
        revision = self.raft.state.revision
        self._call(self._leadership, leading, view.term, revision)

    def _on_apply(self) -> None:
        if not self._leading:
            return
        with self._lock:
            if self._poked:
                return
            self._poked = True
        self._call(self._poke)

    def _call(self, fn: Any, *args: Any) -> None:
        with self._lock:
            loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed
                loop.call_soon_threadsafe(fn, *args)

    # -- loop: what to send --------------------------------------------------------

    def _poke(self) -> None:
        with self._lock:
            self._poked = False
        self._wake.set()

    def _leadership(self, leading: bool, term: int, revision: int) -> None:
        if leading and (not self._leading or term != self._term):
            self._leading, self._term, self._cursor = True, term, revision
            self._budgets = None  # the first look takes them as they are: the baseline
            self._next_budget_check = 0.0
            logger.info("webhook: leading in term %d, notifying after revision %d", term, revision)
            self._wake.set()
        elif not leading and self._leading:
            self._leading = False
            if self.queue:
                logger.warning(
                    "webhook: no longer the leader; dropping %d undelivered notifications",
                    len(self.queue),
                )
                self._count_dropped("leadership_lost", len(self.queue))
                self.queue.clear()
                self._set_queue_gauge()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            timeout = max(0.0, self._next_budget_check - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout if self._leading else None)
            self._wake.clear()
            if not self._leading:
                continue
            term, cursor = self._term, self._cursor
            check_budget = time.monotonic() >= self._next_budget_check
            if check_budget:
                self._next_budget_check = time.monotonic() + BUDGET_CHECK_S
            try:
                scan = await loop.run_in_executor(None, self._read, cursor, check_budget)
            except Exception:
                logger.exception("webhook: reading the state failed")
                self._wake.set()
                await asyncio.sleep(BACKOFF_MAX_S)
                continue
            if self._leading and term == self._term:  # else it changed meanwhile: start over
                self._take(scan, term)
            await asyncio.sleep(MIN_SCAN_INTERVAL_S)  # coalesce the next burst

    def _read(self, cursor: int, check_budget: bool) -> _Scan:
        """Executor: the events after ``cursor``, and the budgets if due."""
        now_ms = int(time.time() * 1000)

        def read(s: StateMachine) -> _Scan:
            skipped = 0
            try:
                events = s.events.since(cursor + 1, s.revision)
            except OutOfRange:
                oldest = s.events.oldest_revision
                skipped = oldest - cursor - 1
                events = s.events.since(oldest, s.revision) if oldest else []
            # Failovers move the figures; otherwise only time does (checked periodically).
            look = check_budget or any(wanted(e) for e in events)
            ledgers = budget_ledgers(s) if look else None
            return _Scan(s.cluster_id, s.revision, events, skipped, ledgers)

        scan: _Scan = self.raft.read(read)
        if scan.ledgers is not None:
            scan.budgets = budget_states(scan.ledgers, now_ms, scan.revision)
        return scan

    def _take(self, scan: _Scan, term: int) -> None:
        cluster_id = scan.cluster_id or self.raft.cfg.cluster_id
        if scan.skipped:
            logger.warning("webhook: %d events were compacted before they were read", scan.skipped)
            self._count_dropped("compacted", scan.skipped)
        for e in scan.events:
            if wanted(e):
                self._enqueue(e.type, event_body(e, cluster_id, self.node_id))
        self._cursor = max(self._cursor, scan.revision)
        if self.metrics is not None:
            self.metrics.webhook_scanned.set(self._cursor)
        if scan.budgets is not None:
            self._take_budgets(scan.budgets, cluster_id, term)

    def _take_budgets(self, now: dict[str, BudgetState], cluster_id: str, term: int) -> None:
        """Post the crossings since the last look (none on the first: the baseline)."""
        before_all, self._budgets = self._budgets, now
        if before_all is None:
            return
        now_ms = int(time.time() * 1000)
        for group, b in sorted(now.items()):
            before = before_all.get(group, BudgetState(False, False))
            for kind, was, is_ in (
                ("budget_spent", before.spent, b.spent),
                ("budget_burning_fast", before.burning, b.burning),
            ):
                if is_ and not was:
                    body = budget_body(kind, group, b, cluster_id, self.node_id, term, now_ms)
                    self._enqueue(kind, body)

    def _enqueue(self, kind: str, body: dict[str, Any]) -> None:
        if len(self.queue) >= self.queue_max:
            old = self.queue.popleft()
            logger.warning("webhook: queue full (%d): dropped %s", self.queue_max, old.id)
            self._count_dropped("queue_full", 1)
        self.queue.append(Notification(body["id"], kind, json.dumps(body).encode()))
        self._set_queue_gauge()
        self._queued.set()

    # -- loop: sending -------------------------------------------------------------

    async def _send(self) -> None:
        while True:
            if not self.queue:
                self._queued.clear()
                await self._queued.wait()
                continue
            await self._deliver(self.queue[0])

    async def _deliver(self, n: Notification) -> None:
        attempt = 0
        while self.queue and self.queue[0] is n:
            attempt += 1
            outcome = await self._post(n, attempt)
            if outcome == "ok":
                self._done(n)
                if self.metrics is not None:
                    self.metrics.webhook_posted.inc()
                if attempt > 1:
                    logger.info("webhook: delivered %s after %d tries", n.id, attempt)
                return
            if self.metrics is not None:
                self.metrics.webhook_failed.labels(outcome).inc()
            if outcome.startswith("rejected"):
                logger.error("webhook: %s answered %s to %s: dropped", self.origin, outcome, n.id)
                self._done(n)
                self._count_dropped("rejected", 1)
                return
            delay = random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1)))
            # One warning per notification, not one per retry of a receiver down for hours.
            logger.log(
                logging.WARNING if attempt == 1 else logging.DEBUG,
                "webhook: post of %s to %s failed (%s, try %d): retrying in %.2f s",
                n.id,
                self.origin,
                outcome,
                attempt,
                delay,
            )
            await asyncio.sleep(delay)  # backoff before the retry, not synchronisation

    async def _post(self, n: Notification, attempt: int) -> str:
        """One try: "ok", a retryable reason, or "rejected_<status>"."""
        assert self._session is not None
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": n.id,
            "X-Coord-Attempt": str(attempt),
        }
        try:
            async with self._session.post(
                self.url, data=n.body, headers=headers, allow_redirects=False
            ) as resp:
                await resp.read()
                status = resp.status
        except TimeoutError:
            return "timeout"
        except (aiohttp.ClientError, OSError):
            return "connection"
        if 200 <= status < 300:
            return "ok"
        if status >= 500 or status in _RETRY_STATUS:
            return f"http_{status}"
        return f"rejected_{status}"

    def _done(self, n: Notification) -> None:
        if self.queue and self.queue[0] is n:
            self.queue.popleft()
            self._set_queue_gauge()

    # -- metrics -------------------------------------------------------------------

    def _count_dropped(self, reason: str, n: int) -> None:
        if self.metrics is not None:
            self.metrics.webhook_dropped.labels(reason).inc(n)

    def _set_queue_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.webhook_queue.set(len(self.queue))
