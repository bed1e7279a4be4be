"""Scheduled switchovers: ``coordctl switchover db --to db-2 --at 2026-12-24T03:00Z``.

Pure, like the rest of ``coord.state``. The rules (docs/design.md, "Scheduled
switchovers"):

- A scheduled switchover is replicated state of its group (``Group.scheduled``, in
  snapshots and in every group event's tables): it survives leader changes and
  restarts, and is listed and cancelled by its id (the revision that scheduled it).
  Scheduling checks the group is live, ``to_member`` (if named) is registered, and
  ``at_ms`` is after the command's time; the target's eligibility is checked when it
  fires, not before.
- Its time is an operator's calendar time, so the leader fires it on its **wall clock**
  (coord.server.duties.schedules): once that reads ``at_ms`` it proposes
  ``FireSwitchover`` with a request id naming it. That apply removes the entry and, in
  the same apply, starts an ordinary switchover through :meth:`Placement.switchover`
  (the one switchover path: a step-down request, then the holder resigns, or is
  revoked at the switchover timeout and waited out for its TTL on the leader's
  monotonic clock). A firing proposed twice (a retry, or a new leader) applies once:
  the request id is deduplicated and the entry is gone anyway. So a leader change
  neither loses it nor fires it twice.
- If the switchover cannot start then (the target is not eligible, the group has no
  master, a handover is in progress, the failover breaker is open, the group is being
  deleted), a ``scheduled_switchover_refused`` event says why; else a
  ``scheduled_switchover_fired`` event follows the step-down request.
"""

from __future__ import annotations

from datetime import UTC, datetime

from coord.errors import CoordError, InvalidArgument, NotFound, ResourceExhausted
from coord.state import breaker
from coord.state.group_table import GroupState
from coord.state.placement import Placement
from coord.v1 import groups_pb2

MAX_PER_GROUP = 16


def iso(ms: int) -> str:
    """A wall-clock time in ms as ISO 8601 UTC (``2026-12-24T03:00:00Z``); pure."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fire_request_id(entry_id: int) -> str:
    """The request id of the firing of scheduled switchover ``entry_id``: the same on
    every proposal of it, by any leader."""
    return f"coord:fire-switchover:{entry_id}"


class ScheduledSwitchovers(Placement):
    """Schedule, cancel and fire switchovers (each validates before it changes anything)."""

    def schedule_switchover(
        self, req: groups_pb2.ScheduleSwitchover, now: int
    ) -> groups_pb2.ScheduledSwitchover:
        g = self._live_group(req.group)
        if req.at_ms <= now:
            raise InvalidArgument(
                f"a switchover at {iso(req.at_ms)} is not in the future (the cluster's time "
                f"is {iso(now)}): give a later time, or switch over now (no --at)"
            )
        if req.to_member:
            self._member(g, req.to_member)  # NotFound: a typo shows now, not at 3 a.m.
        if len(g.scheduled) >= MAX_PER_GROUP:
            raise ResourceExhausted(
                f"group {g.name!r} has {len(g.scheduled)} scheduled switchovers, the most it "
                "may have: cancel some (coordctl schedule cancel)"
            )
        rev = self.emit.reserve()
        entry = groups_pb2.ScheduledSwitchover(
            id=rev, group=g.name, to_member=req.to_member, at_ms=req.at_ms,
            scheduled_time_ms=now,
        )  # fmt: skip
        g.scheduled[rev] = entry
        self.emit.record(
            rev, "switchover_scheduled", group=g.name, member=req.to_member, scheduled=entry
        )
        return entry

    def _scheduled(
        self, group: str, entry_id: int
    ) -> tuple[GroupState, groups_pb2.ScheduledSwitchover]:
        g = self.group(group)
        entry = g.scheduled.get(entry_id)
        if entry is None:
            raise NotFound(
                f"no switchover {entry_id} is scheduled in group {group!r} (fired, cancelled, "
                "or never scheduled): list them with coordctl schedule ls"
            )
        return g, entry

    def cancel_switchover(
        self, req: groups_pb2.CancelSwitchover, now: int
    ) -> groups_pb2.ScheduledSwitchover:
        g, entry = self._scheduled(req.group, req.id)
        del g.scheduled[req.id]
        self.emit(
            "scheduled_switchover_cancelled", group=g.name, member=entry.to_member,
            scheduled=entry,
        )  # fmt: skip
        return entry

    def fire_switchover(self, req: groups_pb2.FireSwitchover, now: int) -> None:
        """The leader's wall clock reached the entry's time: remove it and start the
        switchover now, or record why not. Nothing if it is no longer pending."""
        g = self.groups.get(req.group)
        entry = g.scheduled.pop(req.id, None) if g is not None else None
        if g is None or entry is None:
            return
        why = ""
        if breaker.is_open(g):
            assert g.pause is not None
            why = (
                f"the failover breaker of group {g.name!r} is open ({g.pause.breaker}): "
                "resume the group, then switch over"
            )
        else:
            try:
                self.switchover(
                    groups_pb2.Switchover(group=g.name, to_member=entry.to_member), now
                )  # validates everything before it changes anything
            except CoordError as e:
                why = e.message.removeprefix("coord: ")
        kind = "scheduled_switchover_refused" if why else "scheduled_switchover_fired"
        self.emit(kind, group=g.name, member=entry.to_member, cause=why, scheduled=entry)
