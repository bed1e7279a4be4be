"""The spread rule as it stands, and the switchovers that would restore it
(``coordctl rebalance``): read-only, from the functions the state machine grants with.

A **plan** is a list of switchovers, each meant to run once the one before it has
finished (the master resigned and its successor was granted). Greedy and
deterministic: while some value of the spread tag has more masters than the limit,
take the newest grant on such a value (highest token; the grant that most likely
broke the spread), and hand its slot to the best-ranked eligible member of its group
(``Placement.ranked``) whose value has room; a master with no such member is passed
over for the next. Every move lowers the excess by one, so a plan never has more
moves than the excess. Masters with a pending handover are left alone, and so are
members a handover already promised a slot to.

Each move is what ``Groups.Switchover`` with ``to_member`` then does: the switchover
asks the same master to step down (``Placement.stepdown_slot``: with a spread rule,
the newest grant on a value over the limit, other than the target's), and the named
successor is granted when it resigns.
"""

from __future__ import annotations

from coord.state import spread
from coord.state.group_table import GroupState
from coord.state.placement import Placement
from coord.v1 import groups_pb2


def explain_spread(p: Placement, g: GroupState) -> groups_pb2.SpreadExplanation | None:
    """``g``'s spread rule now, with the plan (None: ``g`` has no rule)."""
    policy = g.policy
    if not spread.enabled(policy):
        return None
    tag, limit = policy.spread_tag, policy.spread_max
    family = spread.family(p.groups, g)
    held = spread.masters(family, tag)
    counts = {v: len(h) for v, h in held.items()}
    excess = spread.excess(counts, limit)
    out = groups_pb2.SpreadExplanation(
        tag=tag, max=limit, family=policy.spread_family, groups=[f.name for f in family],
        excess=excess, violated=excess > 0,
    )  # fmt: skip
    for v in sorted(held):
        out.values.append(
            groups_pb2.SpreadValue(
                value=v, masters=len(held[v]), holders=[f"{n}/{m}" for n, _, m in held[v]]
            )
        )
    moves, left = plan(p, g)
    out.plan.extend(moves)
    out.stuck.extend(_stuck(p, g, left))
    out.notes.extend(_notes(g, family))
    return out


def plan(p: Placement, g: GroupState) -> tuple[list[groups_pb2.RebalanceMove], dict[str, int]]:
    """The switchovers that bring ``g``'s family within ``g``'s rule, and the masters
    per value once they ran (module docstring)."""
    tag, limit = g.policy.spread_tag, g.policy.spread_max
    family = spread.family(p.groups, g)
    counts = {v: len(h) for v, h in spread.masters(family, tag).items()}
    promised = {(f.name, ho.to_member) for f in family for ho in f.handovers.values()}
    taken: set[tuple[str, str]] = set()  # (group, member) granted by an earlier move
    moved: set[tuple[str, int]] = set()
    ranked = {f.name: p.ranked(f) for f in family}
    moves: list[groups_pb2.RebalanceMove] = []
    while spread.excess(counts, limit):
        over = sorted(
            (
                (h.token, f.name, slot)
                for f in family
                for slot, h in f.holdings.items()
                if not h.revoked
                and slot not in f.handovers
                and (f.name, slot) not in moved
                and counts.get(spread.value(f.members.get(h.member_id), tag), 0) > limit
            ),
            reverse=True,
        )
        move = None
        for _, name, slot in over:
            f = p.groups[name]
            h = f.holdings[slot]
            v = spread.value(f.members.get(h.member_id), tag)
            for c in ranked[name]:
                w = spread.value(c, tag)
                if (name, c.id) in promised or (name, c.id) in taken:
                    continue
                if w == v or counts.get(w, 0) + 1 > limit:
                    continue
                move = groups_pb2.RebalanceMove(
                    group=name, slot=slot, from_member=h.member_id, to_member=c.id,
                    from_value=v, to_value=w,
                    why=(
                        f"{spread.shown(tag, v)} has {counts[v]} masters, at most {limit}: "
                        f"{h.member_id} (slot {slot} of {name}) hands over to {c.id}, the "
                        f"best eligible member whose {spread.shown(tag, w)} has room "
                        f"({counts.get(w, 0)} of {limit})"
                    ),
                )  # fmt: skip
                break
            if move is not None:
                break
        if move is None:
            break
        moves.append(move)
        moved.add((move.group, move.slot))
        taken.add((move.group, move.to_member))
        counts[move.from_value] -= 1
        counts[move.to_value] = counts.get(move.to_value, 0) + 1
    return moves, counts


def _stuck(p: Placement, g: GroupState, counts: dict[str, int]) -> list[str]:
    """Why each value still over the limit after the plan keeps its masters."""
    tag, limit = g.policy.spread_tag, g.policy.spread_max
    full = [v for v in sorted(counts) if counts[v] > limit]
    if not full:
        return []
    family = spread.family(p.groups, g)
    room = sorted(
        {
            spread.value(c, tag)
            for f in family
            for c in p.ranked(f)
            if counts.get(spread.value(c, tag), 0) < limit
        }
    )
    where = (
        "no group with a master there has an eligible standby whose "
        f"{tag} has room (standbys must be healthy candidates with a live session)"
        if not room
        else "the groups with a master there have no eligible standby on a value with room "
        f"(room: {', '.join(spread.shown(tag, v) for v in room)})"
    )
    pending = [f.name for f in family if any(s in f.holdings for s in f.handovers)]
    if pending:
        where += f"; a handover is pending in {', '.join(pending)}: wait for it to finish"
    return [
        f"{spread.shown(tag, v)} keeps {counts[v]} masters, at most {limit}: {where}" for v in full
    ]


def _notes(g: GroupState, family: list[GroupState]) -> list[str]:
    policy = g.policy
    tag = policy.spread_tag
    notes = [
        f"{spread.describe(policy)}: a vacant slot goes to the best eligible member whose "
        f"{tag} has room, else to the best one anyway (availability first); members without "
        f"a {tag} tag count together under one unknown value"
    ]
    if policy.spread_family:
        others = [
            f.name
            for f in family
            if (f.policy.spread_tag, f.policy.spread_max) != (tag, policy.spread_max)
        ]
        if others:
            notes.append(
                f"groups of family {policy.spread_family} with another rule: "
                f"{', '.join(others)} (each group's fill applies its own rule to the "
                "family's masters; give them one rule)"
            )
    return notes
