"""The availability ledger: outages, downtime, MTTR, MTBF, failovers and budget per group.

Fed by the group events as the state machine appends them, with the leader's
timestamps (``Event.time_ms``), so every replica keeps the same ledger, and it
is part of the snapshot. No clock here: reports take ``now_ms`` from the caller.

Definitions (docs/design.md, "Monitoring and availability accounting"):

- A slot is *up* from ``master_elected`` until ``master_lost`` or
  ``master_revoked`` (a revoked master was told to stop: nobody serves while
  its TTL is waited out). A master lost to session expiry was last known to
  serve at its session's last renewal (``Event.lost_since_ms``: the expiry time
  minus the TTL): its slot is down from then, not from the expiry. A killed
  master's outage therefore lasts about a TTL, as its clients saw it.
- An *outage* is a period in which at least one slot that has had a master has
  none. A slot released and granted in the same command (a resign, a switchover
  to a ready standby) never had no master: a failover, but no outage. Slots
  that never had one (a group with no members yet) do not count: accounting
  starts at a group's first master.
- FTSD (fraction of time down) over a window = downtime in the window / the part
  of the window after accounting started. MTTR = mean duration of the outages
  that ended in the window; MTBF = up time in the window / outages started in it.
- MAD, the maximum allowed downtime, is the group's ``downtime_budget_ms`` per
  30 days, scaled to the window; what remains may go negative (overspent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from coord.v1 import availability_pb2, groups_pb2

DAY_MS = 24 * 3600 * 1000
BUDGET_PERIOD_MS = 30 * DAY_MS
KEEP_MS = 30 * DAY_MS
MAX_OUTAGES = 1000
MAX_FAILOVERS = 10_000
DEFAULT_WINDOWS_S = (3600, 24 * 3600, 30 * 24 * 3600)

_DOWN = frozenset({"master_lost", "master_revoked"})


class Ledger:
    """Every group's ledger, by group name."""

    def __init__(self) -> None:
        self.groups: dict[str, availability_pb2.GroupLedger] = {}

    # -- feeding (apply thread) --------------------------------------------------

    def on_event(self, e: groups_pb2.Event) -> None:
        kind = e.type
        if kind == "group_created":
            self.groups[e.group] = availability_pb2.GroupLedger(
                group=e.group, created_ms=e.time_ms, budget_ms=e.policy.downtime_budget_ms
            )
            return
        if kind == "group_deleted":
            self.groups.pop(e.group, None)
            return
        g = self.groups.get(e.group)
        if g is None:
            return
        if kind == "master_elected":
            _slot_up(g, e)
        elif kind in _DOWN:
            _slot_down(g, e)
        elif kind == "group_edited":
            _policy_edited(g, e)

    # -- snapshots ---------------------------------------------------------------

    def to_proto(self) -> list[availability_pb2.GroupLedger]:
        return [self.groups[name] for name in sorted(self.groups)]

    def load(self, ledgers: Iterable[availability_pb2.GroupLedger]) -> None:
        self.groups = {}
        for g in ledgers:
            copy = availability_pb2.GroupLedger()
            copy.CopyFrom(g)
            self.groups[g.group] = copy

    # -- reports -----------------------------------------------------------------

    def report(
        self, group: str, now_ms: int, windows_s: Iterable[int] = DEFAULT_WINDOWS_S
    ) -> availability_pb2.GroupAvailability:
        return report(self.groups[group], now_ms, windows_s)


def _slot_up(g: availability_pb2.GroupLedger, e: groups_pb2.Event) -> None:
    if not g.tracking_since_ms:
        g.tracking_since_ms = e.time_ms
    if e.cause and e.cause != "initial":
        g.failovers.add(time_ms=e.time_ms, cause=e.cause, slot=e.slot, member=e.member)
        g.failovers_by_cause[e.cause] += 1
        _prune(g.failovers, lambda f: f.time_ms, MAX_FAILOVERS, e.time_ms)
    g.up_since_ms[e.slot] = e.time_ms
    if e.slot not in g.up_slots:
        g.up_slots.append(e.slot)
        g.up_slots.sort()
    if e.slot in g.down_slots:
        g.down_slots.remove(e.slot)
    _end_outage(g, e.time_ms)


def _end_outage(g: availability_pb2.GroupLedger, time_ms: int) -> None:
    """Close the open outage if no slot is down any more."""
    if g.open_outage.start_ms and not g.down_slots:
        end = max(time_ms, g.open_outage.start_ms)
        if end == g.open_outage.start_ms:
            # Released and granted in one command (a resign, a switchover): there was
            # no instant without a master. A failover, not an outage.
            g.outage_count -= 1
        else:
            o = g.outages.add()
            o.CopyFrom(g.open_outage)
            o.end_ms = end
            g.downtime_ms += o.end_ms - o.start_ms
        g.ClearField("open_outage")
        _prune(g.outages, lambda o: o.end_ms, MAX_OUTAGES, time_ms)


def _policy_edited(g: availability_pb2.GroupLedger, e: groups_pb2.Event) -> None:
    """A live policy edit: the new budget, and slots beyond a lowered count no longer
    count as down."""
    g.budget_ms = e.policy.downtime_budget_ms
    surplus = [s for s in g.down_slots if s >= e.policy.slots]
    for s in surplus:
        g.down_slots.remove(s)
    if surplus:
        _end_outage(g, e.time_ms)


def _surplus(e: groups_pb2.Event) -> bool:
    """A slot beyond the group's policy (slots lowered): its master leaving is no outage."""
    return e.group_slots.HasField("policy") and e.slot >= e.group_slots.policy.slots


def _slot_down(g: availability_pb2.GroupLedger, e: groups_pb2.Event) -> None:
    if e.slot not in g.up_slots:
        return  # already down (a revoked master whose slot is now released)
    g.up_slots.remove(e.slot)
    if _surplus(e):
        g.up_since_ms.pop(e.slot, 0)
        return
    g.down_slots.append(e.slot)
    g.down_slots.sort()
    up_since = g.up_since_ms.pop(e.slot, 0)
    start = e.time_ms
    if e.lost_since_ms:
        # Down since its last renewal, but not before it was elected nor before the
        # previous outage ended (outages never overlap).
        last_end = g.outages[-1].end_ms if g.outages else 0
        start = min(e.time_ms, max(e.lost_since_ms, up_since, last_end))
    start = max(start, 1)
    if g.open_outage.start_ms:
        g.open_outage.start_ms = min(g.open_outage.start_ms, start)
    else:
        g.open_outage.CopyFrom(
            availability_pb2.Outage(
                start_ms=start,
                cause=e.cause,
                slot=e.slot,
                revision=e.revision,
                member=e.member,
            )
        )
        g.outage_count += 1


def _prune(items: Any, at_ms: Callable[[Any], int], keep: int, now_ms: int) -> None:
    """Drop the oldest of ``items`` (oldest first) beyond ``keep`` or past the horizon."""
    drop = 0
    n = len(items)
    while drop < n and (n - drop > keep or at_ms(items[drop]) < now_ms - KEEP_MS):
        drop += 1
    if drop:
        del items[:drop]


def _overlap(start: int, end: int, lo: int, hi: int) -> int:
    return max(0, min(end, hi) - max(start, lo))


def report(
    g: availability_pb2.GroupLedger, now_ms: int, windows_s: Iterable[int] = DEFAULT_WINDOWS_S
) -> availability_pb2.GroupAvailability:
    """The figures of ``g`` for each window ending at ``now_ms`` (pure)."""
    windows = sorted({int(w) for w in windows_s if int(w) > 0}) or list(DEFAULT_WINDOWS_S)
    out = availability_pb2.GroupAvailability(
        group=g.group,
        now_ms=now_ms,
        tracking_since_ms=g.tracking_since_ms,
        outage_open=bool(g.open_outage.start_ms),
        outage_count_total=g.outage_count,
        downtime_ms_total=g.downtime_ms
        + (max(0, now_ms - g.open_outage.start_ms) if g.open_outage.start_ms else 0),
        budget_ms_30d=g.budget_ms,
    )
    for cause, n in g.failovers_by_cause.items():
        out.failovers_by_cause_total[cause] = n
    spans = [(o.start_ms, o.end_ms, o) for o in g.outages]
    if g.open_outage.start_ms:
        spans.append((g.open_outage.start_ms, max(now_ms, g.open_outage.start_ms), g.open_outage))
    for w in windows:
        out.windows.append(_window(g, spans, now_ms, w))
    lo = now_ms - windows[-1] * 1000
    for _start, end, o in spans:
        if end > lo or o is g.open_outage:
            out.timeline.append(o)
    return out


def _window(
    g: availability_pb2.GroupLedger,
    spans: list[tuple[int, int, availability_pb2.Outage]],
    now_ms: int,
    window_s: int,
) -> availability_pb2.WindowFigures:
    w_ms = window_s * 1000
    lo = now_ms - w_ms
    f = availability_pb2.WindowFigures(window_s=window_s)
    f.budget_ms = g.budget_ms * w_ms // BUDGET_PERIOD_MS
    if not g.tracking_since_ms or g.tracking_since_ms >= now_ms:
        f.budget_remaining_ms = f.budget_ms
        return f
    start = max(lo, g.tracking_since_ms)
    f.observed_ms = now_ms - start
    repaired: list[int] = []
    for o_start, o_end, o in spans:
        down = _overlap(o_start, o_end, start, now_ms)
        if down <= 0 and not (o_start <= now_ms and o_end >= start and o is g.open_outage):
            continue
        f.downtime_ms += down
        f.outages += 1
        if o_start >= start:
            f.outages_started += 1
        if o.end_ms and o.end_ms > start:
            repaired.append(o.end_ms - o.start_ms)
    f.ftsd = f.downtime_ms / f.observed_ms if f.observed_ms else 0.0
    f.mttr_ms = sum(repaired) / len(repaired) if repaired else 0.0
    f.mtbf_ms = (f.observed_ms - f.downtime_ms) / f.outages_started if f.outages_started else 0.0
    for fo in g.failovers:
        if fo.time_ms > lo:
            f.failovers_by_cause[fo.cause] += 1
    f.budget_remaining_ms = f.budget_ms - f.downtime_ms
    return f
