"""An operator's runtime controls of groups: pause (maintenance mode), resume, and live
policy edits. Pure, like the rest of ``coord.state``; docs/design.md, "Pause and live
policy edits", states the rules:

- A paused group grants nothing automatically: a slot released while paused (a
  session expired, a master resigned) stays empty and a ``failover_paused`` event
  says so; no failback is planned (a pending one is cancelled); an unhealthy master
  is not revoked. Sessions still expire and release their slots. A switchover by
  hand still completes (its successor is granted), and an operator's resign,
  unregister, session close and group delete work as always.
- A pause with a time limit is a pending wait (``waits.PAUSE``): the leader times it
  on its monotonic clock and proposes ``Advance``; the wall-clock time the operator
  gave is converted to that wait by the leader that proposes the pause
  (``until_estimate_ms`` is for display). Resuming fills empty slots at once; a
  failback hold counts from the resume.
- A policy edit is checked like a new group's policy and recorded (``group_edited``).
  More slots are filled at once; fewer slots ask the masters of the surplus
  (highest-numbered) slots to step down through the normal handover (cause
  ``slots_reduced``: the switchover timeout, then a revoke and the TTL wait-out), and
  those slots are never granted again. failback off cancels a pending failback; a
  new failback hold applies to holds in progress (from when each began); a new
  switchover timeout applies to later requests; failover_on_unhealthy on revokes a
  master that is unhealthy now (unless paused); a new downtime budget applies to
  the availability report at once. The failover breaker's fields (coord.state.breaker)
  apply from the next automatic failover; turning it off forgets the failovers it
  counted (an open breaker stays open: resume the group). max_lag_on_failover,
  prefer_most_advanced and the synchronous set apply to placement at once (an empty
  slot is filled if someone qualifies, a pending handover whose successor no longer
  does is re-targeted or cancelled); a master they exclude keeps its slot. The spread
  rule (coord.state.spread) applies to the next grants: no master moves by itself (a
  rebalance moves them); a tag that no member of a group with members has is refused.
"""

from __future__ import annotations

import difflib

from coord.errors import FailedPrecondition, InvalidArgument
from coord.state import breaker, spread
from coord.state.group_table import GroupState, checked_policy
from coord.state.scheduled import ScheduledSwitchovers
from coord.v1 import groups_pb2

POLICY_FIELDS = tuple(f.name for f in groups_pb2.GroupPolicy.DESCRIPTOR.fields)
REPEATED_POLICY_FIELDS = frozenset(
    f.name for f in groups_pb2.GroupPolicy.DESCRIPTOR.fields if f.is_repeated
)


class GroupAdmin(ScheduledSwitchovers):
    """Pause, resume and policy edits (each validates everything before it changes
    anything); scheduled switchovers come from coord.state.scheduled."""

    def _named_groups(self, names: list[str], all_groups: bool, verb: str) -> list[GroupState]:
        if all_groups and names:
            raise InvalidArgument(f"{verb} either named groups or all of them, not both")
        if not all_groups and not names:
            raise InvalidArgument(f"name the groups to {verb}, or ask for all of them")
        if all_groups:
            return [self.groups[n] for n in sorted(self.groups)]
        return [self.group(n) for n in dict.fromkeys(names)]  # NotFound before any change

    def pause(self, req: groups_pb2.PauseGroups, now: int) -> list[str]:
        """Pause each group (a paused one gets the new pause: its time limit replaced)."""
        if req.wait_ms < 0:
            raise InvalidArgument(
                f"a pause of {req.wait_ms} ms is in the past: give a later time, or none "
                "(paused until resumed)"
            )
        targets = self._named_groups(list(req.groups), req.all, "pause")
        for g in targets:
            rev = self.emit.reserve()
            g.pause = groups_pb2.GroupPause(
                revision=rev, paused_time_ms=now, wait_ms=req.wait_ms,
                until_estimate_ms=now + req.wait_ms if req.wait_ms else 0,
                reason=req.reason[:256],
                breaker=g.pause.breaker if g.pause is not None else "",  # stays open
            )  # fmt: skip
            self.emit.record(rev, "group_paused", group=g.name, cause=req.reason[:256])
            self._cancel_failbacks(g)
        return [g.name for g in targets]

    def resume(self, req: groups_pb2.ResumeGroups, now: int) -> list[str]:
        """Resume each paused group (one not paused: nothing to do): fill at once."""
        targets = self._named_groups(list(req.groups), req.all, "resume")
        resumed = [g for g in targets if g.pause is not None]
        for g in resumed:
            self._resume(g, "resumed", now)
        return [g.name for g in resumed]

    def edit_group(self, req: groups_pb2.EditGroup, now: int) -> GroupState:
        """Change the fields of the policy named in ``req.fields`` (module docstring)."""
        g = self._live_group(req.group)
        if not req.fields:
            raise InvalidArgument(f"name the policy fields to change ({', '.join(POLICY_FIELDS)})")
        unknown = [f for f in req.fields if f not in POLICY_FIELDS]
        if unknown:
            close = difflib.get_close_matches(unknown[0], POLICY_FIELDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InvalidArgument(
                f"unknown policy field {unknown[0]!r}: {hint}use {', '.join(POLICY_FIELDS)}"
            )
        new = groups_pb2.GroupPolicy()
        new.CopyFrom(g.policy)
        for name in req.fields:
            if name in REPEATED_POLICY_FIELDS:
                del getattr(new, name)[:]
                getattr(new, name).extend(getattr(req.policy, name))
            else:
                setattr(new, name, getattr(req.policy, name))
        new = checked_policy(new)
        if new == g.policy:
            return g
        if new.spread_tag and new.spread_tag != g.policy.spread_tag:
            _check_spread_tag(g, new.spread_tag)
        old, g.policy = g.policy, new
        if not breaker.enabled(new):
            g.breaker_failovers = []  # an open breaker stays open: resume the group
        for slot in [s for s in g.vacated_cause if s >= new.slots and s not in g.holdings]:
            del g.vacated_cause[slot]  # before the event: it carries the slot tables
        changed = ",".join(f for f in POLICY_FIELDS if getattr(old, f) != getattr(new, f))
        self.emit("group_edited", group=g.name, policy=new, cause=changed)
        self._apply_policy_change(g, old, now)
        return g

    def _apply_policy_change(self, g: GroupState, old: groups_pb2.GroupPolicy, now: int) -> None:
        new = g.policy
        for slot, h in sorted(g.holdings.items()):
            if slot < new.slots or h.revoked:
                continue
            ho = g.handovers.get(slot)
            if ho is None:
                self._request_stepdown(g, slot, "", "slots_reduced", False, now)
            elif ho.cause in ("switchover", "failback"):
                ho.cause, ho.to_member, ho.named = "slots_reduced", "", False
                self.emit(
                    "stepdown_requested", group=g.name, member=h.member_id, slot=slot,
                    token=h.token, cause=ho.cause, handover=ho,
                )  # fmt: skip
        if old.failback == groups_pb2.FAILBACK_AUTO and new.failback != groups_pb2.FAILBACK_AUTO:
            self._cancel_failbacks(g)
        if new.failover_on_unhealthy and not old.failover_on_unhealthy and g.pause is None:
            for slot, held in sorted(g.holdings.items()):
                if not held.revoked and not g.members[held.member_id].healthy:
                    self.revoke(g.name, slot, "unhealthy", now)
        self._fill(g, now)


def _check_spread_tag(g: GroupState, tag: str) -> None:
    """A spread tag that no member of ``g`` has is refused while it has members (a typo
    would otherwise put every master under the unknown value)."""
    if not g.members or any(spread.value(m, tag) for m in g.members.values()):
        return
    have = sorted({k for m in g.members.values() for k in m.tags})
    theirs = f"their tags: {', '.join(have)}" if have else "they have no tags"
    raise FailedPrecondition(
        f"no member of group {g.name!r} has tag {tag!r} ({theirs}): check the name, or "
        f"register the members with it first (tags {{{tag!r}: ...}}), then set the rule"
    )
