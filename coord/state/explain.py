"""Explain a group's placement: for every slot who would be chosen now (or if it were
vacated now) and why, and for every member why it is or is not eligible.

Read-only, and built from the functions the state machine grants with
(``Placement.choose``, ``ineligible``, ``ranked``, ``_failback_plan``): an explanation
is what the state machine does next, never a second opinion
(tests/unit/test_explain_properties.py checks it). Sentences read like patroni's
``run_cycle``: an operator reads them as they are.
"""

from __future__ import annotations

from coord.state import breaker, spread
from coord.state.group_table import GroupState
from coord.state.placement import Placement, best_position, lag, reason_text
from coord.state.rebalance import explain_spread
from coord.state.scheduled import iso
from coord.v1 import groups_pb2


def explain(p: Placement, name: str) -> groups_pb2.GroupExplanation:
    """The explanation of group ``name`` (NotFound if it does not exist)."""
    g = p.group(name)
    out = groups_pb2.GroupExplanation(
        group=name, paused=g.pause is not None, breaker_open=breaker.is_open(g)
    )
    best = best_position(g)
    if best is not None:
        out.best_position = best
    for slot in range(max([g.policy.slots - 1, *g.holdings]) + 1):
        out.slots.append(_slot(p, g, slot))
    rank = {m.id: i + 1 for i, m in enumerate(p.ranked(g))}
    counts = spread.counts(p.groups, g) if spread.enabled(g.policy) else {}
    for m in g.members.values():
        out.members.append(_verdict(p, g, m, rank.get(m.id, 0), best, counts))
    out.notes.extend(_notes(p, g))
    rule = explain_spread(p, g)
    if rule is not None:
        out.spread.CopyFrom(rule)
        out.notes.extend(_spread_notes(g, rule))
    return out


def _slot(p: Placement, g: GroupState, slot: int) -> groups_pb2.SlotExplanation:
    h = g.holdings.get(slot)
    ho = g.handovers.get(slot)
    m, why = p.choose(g, slot)
    row = groups_pb2.SlotExplanation(slot=slot, next=m.id if m is not None else "")
    if h is None:
        row.state = "vacant" if slot < g.policy.slots else "surplus"
        cause = g.vacated_cause.get(slot, "")
        lead = f"vacant ({cause})" if cause else "vacant"
        row.why = f"{lead}: " + (f"{m.id} is granted now: {why}" if m else f"stays empty: {why}")
        return row
    row.holder, row.token = h.member_id, h.token
    if h.revoked:
        row.state = "revoked"
        cause = g.vacated_cause.get(slot, "")
        lead = f"{h.member_id} was revoked ({cause}); once its TTL is waited out"
    elif slot >= g.policy.slots:
        row.state = "surplus"
        lead = f"held by {h.member_id}, beyond the policy's {g.policy.slots} slots; "
        lead += "once it steps down"
    elif ho is not None:
        row.state = "stepping_down"
        lead = f"held by {h.member_id}, asked to step down ({ho.cause}); once it does"
    else:
        row.state = "held"
        lead = f"held by {h.member_id} (token {h.token}); if it were vacated now"
    row.why = f"{lead}: " + (f"{m.id} would be chosen: {why}" if m else f"nobody: {why}")
    return row


def _verdict(
    p: Placement,
    g: GroupState,
    m: groups_pb2.Member,
    rank: int,
    best: int | None,
    counts: dict[str, int],
) -> groups_pb2.MemberVerdict:
    reason = p.ineligible(g, m, best)
    out = groups_pb2.MemberVerdict(
        member_id=m.id, eligible=not reason, reason=reason, priority=m.priority, rank=rank
    )
    behind = lag(g, m, best)
    if m.HasField("position"):
        out.position = m.position
        out.lag = behind or 0
    order = "position, then priority" if g.policy.prefer_most_advanced else "priority"
    if reason:
        out.detail = reason_text(g, m, reason, best)
    elif breaker.is_open(g):
        out.detail = (
            f"eligible (rank {rank}), but the breaker is open: granted once an operator "
            "resumes the group"
        )
    elif g.pause is not None:
        out.detail = f"eligible (rank {rank}), but the group is paused: granted once resumed"
    else:
        out.detail = f"eligible (rank {rank} by {order}, then registration)"
    if not reason and behind is not None and g.policy.max_lag_on_failover > 0:
        out.detail += f"; behind by {behind} (max_lag_on_failover {g.policy.max_lag_on_failover})"
    if spread.enabled(g.policy):
        tag, limit = g.policy.spread_tag, g.policy.spread_max
        out.spread_value = v = spread.value(m, tag)
        n = counts.get(v, 0)
        if not reason and n >= limit:
            out.detail += (
                f"; its {spread.shown(tag, v)} is full ({n} of at most {limit} masters): passed "
                "over while an eligible member keeps the spread"
            )
    return out


def _notes(p: Placement, g: GroupState) -> list[str]:
    notes = []
    if breaker.is_open(g):
        assert g.pause is not None
        notes.append(
            f"breaker open: {g.pause.breaker} (the failover breaker paused the group); "
            f"resume it (coordctl group resume {g.name}) once the cause is fixed"
        )
    elif breaker.enabled(g.policy):
        n = len(g.breaker_failovers)
        notes.append(
            f"failover breaker: closed; the group pauses itself at {breaker.describe(g.policy)}"
            f" ({n} counted so far, each for {g.policy.breaker_window_ms / 1000:g}s)"
        )
    notes.extend(_freshness_notes(g))
    if g.pause is not None:
        until = " until resumed"
        if g.pause.wait_ms:
            until = f" for {g.pause.wait_ms / 1000:g}s from the pause (leader's clock)"
        notes.append(
            f"paused{until}: nothing is failed over, failed back or revoked automatically; "
            "a switchover by hand still completes"
        )
    for slot, ho in sorted(g.handovers.items()):
        if slot in g.holdings and not g.holdings[slot].revoked:
            to = f" for {ho.to_member}" if ho.to_member else ""
            notes.append(
                f"slot {slot}: {ho.from_member} is asked to step down ({ho.cause}){to}; revoked "
                f"after {ho.timeout_ms / 1000:g}s if it does not"
            )
    for slot, candidate in p._failback_plan(g):
        c = g.members[candidate]
        notes.append(
            f"failback: {candidate} (priority {c.priority}) outranks the master of slot "
            f"{slot}; once it has been eligible for {g.policy.failback_hold_ms / 1000:g}s "
            "(the leader times the hold) the master is asked to step down for it"
        )
    if g.policy.failback == groups_pb2.FAILBACK_AUTO and g.pause is not None:
        notes.append("failback: not planned while paused")
    for i in sorted(g.scheduled):
        s = g.scheduled[i]
        to = s.to_member or "the best eligible candidate then"
        target = g.members.get(s.to_member)
        now = ""
        if target is not None and p.ineligible(g, target):
            why = reason_text(g, target, p.ineligible(g, target))
            now = f"; if it were due now it would be refused: {why}"
        notes.append(
            f"scheduled switchover {s.id}: to {to} at {iso(s.at_ms)} (the leader's wall clock){now}"
        )
    return notes


def _freshness_notes(g: GroupState) -> list[str]:
    """The policy's synchronous set and max_lag_on_failover, as they stand now."""
    notes = []
    policy = g.policy
    if policy.synchronous:
        names = ", ".join(policy.synchronous)
        missing = [n for n in policy.synchronous if n not in g.members]
        note = f"synchronous set: {names}: only they may be granted a slot"
        if len(missing) == len(policy.synchronous):
            note += "; none of them is registered: nothing is granted until one is"
        elif missing:
            note += f"; not registered: {', '.join(missing)}"
        notes.append(note)
    if policy.max_lag_on_failover > 0 or policy.prefer_most_advanced:
        best = best_position(g)
        leaders = [m.id for m in g.members.values() if m.HasField("position")
                   and m.position == best]  # fmt: skip
        where = (
            f"the best reported position is {best} ({', '.join(leaders)})"
            if best is not None else "no member has reported a position"
        )  # fmt: skip
        rules = []
        if policy.max_lag_on_failover > 0:
            rules.append(
                f"a member more than {policy.max_lag_on_failover} behind it, or with no "
                "position, is not granted"
            )
        if policy.prefer_most_advanced:
            rules.append("the most advanced eligible member wins before priority")
        notes.append(f"{where}: {'; '.join(rules)}")
    return notes


def _spread_notes(g: GroupState, rule: groups_pb2.SpreadExplanation) -> list[str]:
    """The spread rule in the notes: whether it holds, and what rebalance would do."""
    tag = rule.tag
    where = ", ".join(f"{spread.shown(tag, v.value)}: {v.masters}" for v in rule.values)
    state = f"violated ({rule.excess} beyond the limit)" if rule.violated else "holds"
    notes = [f"spread {state}: {spread.describe(g.policy)} ({where or 'no masters'})"]
    notes.extend(rule.notes)
    for i, move in enumerate(rule.plan, 1):
        notes.append(f"rebalance {i}: switchover {move.group} --to {move.to_member}: {move.why}")
    if rule.plan:
        notes.append(f"coordctl rebalance {g.name} runs these switchovers, one at a time")
    notes.extend(rule.stuck)
    return notes
