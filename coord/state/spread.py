"""Spreading masters across hosts or zones: the policy's spread rule, counted.

A group's policy may say "at most ``spread_max`` masters per value of the member tag
``spread_tag``" (a zone, a host), counted over its ``spread_family``: every group whose
policy names the same family counts its masters together (a sharded service with one
group per shard); without a family, the group alone. docs/design.md, "Spreading
masters across hosts and zones", has the rules; in short:

- The count is of masters that serve: holdings not revoked (a revoked holder is being
  waited out and its slot refilled), surplus slots included until they step down.
- A member without the tag, or with an empty value, counts under one unknown value
  (``""``, shown as "no zone tag"): members whose place is unknown may share one, so
  they share one limit too.
- The rule is a preference of the deterministic fill (``Placement.choose``): a vacant
  slot goes to the best eligible member whose value has room; when none has, to the
  best eligible member anyway (availability first), and the spread is violated.
  Failback never moves a master onto a full value; an operator's named switchover is
  honoured as asked. ``coord.state.rebalance`` plans the switchovers that restore it.

Pure functions of the replicated state: no clock, no randomness.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from coord.errors import InvalidArgument
from coord.state import limits
from coord.v1 import groups_pb2

if TYPE_CHECKING:  # group_table checks policies with check() below
    from coord.state.group_table import GroupState

# The largest spread_max accepted (a family may hold many masters).
MAX_SPREAD = 10_000
# A family is named like a group (coord.state.group_table.GROUP_NAME).
FAMILY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")


def enabled(policy: groups_pb2.GroupPolicy) -> bool:
    return bool(policy.spread_tag)


def check(p: groups_pb2.GroupPolicy) -> None:
    """The rule's fields, as a create or an edit gives them (InvalidArgument)."""
    if not p.spread_tag:
        extra = [f for f in ("spread_max", "spread_family") if getattr(p, f)]
        if extra:
            raise InvalidArgument(
                f"{' and '.join(extra)} need{'s' if len(extra) == 1 else ''} spread_tag: give "
                "the member tag to spread the "
                "masters over (e.g. spread_tag zone, coordctl --spread-tag zone), or leave "
                "them unset (no spread rule)"
            )
        return
    if len(p.spread_tag) > limits.MAX_TAG_CHARS:
        raise InvalidArgument(
            f"spread_tag is {len(p.spread_tag)} characters: a member tag name has "
            f"1-{limits.MAX_TAG_CHARS}"
        )
    if not 1 <= p.spread_max <= MAX_SPREAD:
        raise InvalidArgument(
            f"spread_max must be 1..{MAX_SPREAD} (at most that many masters per value of tag "
            f"{p.spread_tag!r}), got {p.spread_max}: give spread_max (coordctl --spread-max "
            "K), or clear spread_tag to have no spread rule (coordctl --no-spread)"
        )
    if p.spread_family and not FAMILY_NAME.fullmatch(p.spread_family):
        raise InvalidArgument(
            f"spread_family {p.spread_family!r} is invalid: 1-128 of letters, digits, '.', "
            "'_', '/', '-', starting with a letter or digit (groups with the same family "
            "count their masters together)"
        )


def value(m: groups_pb2.Member | None, tag: str) -> str:
    """``m``'s value of ``tag``: "" when it has none (the unknown value)."""
    return m.tags.get(tag, "") if m is not None else ""


def shown(tag: str, v: str) -> str:
    """A value for humans: ``zone=a``, or ``no zone tag`` for the unknown value."""
    return f"{tag}={v}" if v else f"no {tag} tag"


def family(groups: Mapping[str, GroupState], g: GroupState) -> list[GroupState]:
    """The groups whose masters count with ``g``'s (name order): its family, or ``g``."""
    return sorted(_family(groups, g), key=lambda f: f.name)


def _family(groups: Mapping[str, GroupState], g: GroupState) -> list[GroupState]:
    """:func:`family` in the table's order (counting needs no order: no sort per grant)."""
    name = g.policy.spread_family
    if not name:
        return [g]
    return [f for f in groups.values() if f.policy.spread_family == name]


def masters(
    groups: Iterable[GroupState], tag: str, skip: tuple[str, int] | None = None
) -> dict[str, list[tuple[str, int, str]]]:
    """value -> [(group, slot, member)] of every serving master of ``groups`` (not
    revoked), except the slot ``skip`` names (group, slot)."""
    out: dict[str, list[tuple[str, int, str]]] = {}
    for g in groups:
        for slot in sorted(g.holdings):
            h = g.holdings[slot]
            if h.revoked or (g.name, slot) == skip:
                continue
            v = value(g.members.get(h.member_id), tag)
            out.setdefault(v, []).append((g.name, slot, h.member_id))
    return out


def counts(
    groups: Mapping[str, GroupState], g: GroupState, skip_slot: int | None = None
) -> dict[str, int]:
    """value -> serving masters of ``g``'s family by ``g``'s tag, not counting ``g``'s
    slot ``skip_slot`` (the one being filled, or explained as if vacated)."""
    skip = (g.name, skip_slot) if skip_slot is not None else None
    return {
        v: len(held) for v, held in masters(_family(groups, g), g.policy.spread_tag, skip).items()
    }


def excess(per_value: Mapping[str, int], limit: int) -> int:
    """Masters beyond ``limit``, summed over the values (0: the spread holds)."""
    return sum(max(0, n - limit) for n in per_value.values())


def violations(groups: Mapping[str, GroupState], g: GroupState) -> int:
    """Masters beyond the limit in ``g``'s family by ``g``'s rule (0 without a rule)."""
    if not enabled(g.policy):
        return 0
    return excess(counts(groups, g), g.policy.spread_max)


def all_counts(groups: Mapping[str, GroupState]) -> dict[str, dict[str, int]]:
    """:func:`counts` of every group with a rule, by name, each family counted once (a
    scrape or a status page reads them all under the apply lock)."""
    out: dict[str, dict[str, int]] = {}
    done: dict[tuple[str, str, str], dict[str, int]] = {}
    for name, g in groups.items():
        p = g.policy
        if not enabled(p):
            continue
        key = ("family", p.spread_family, p.spread_tag) if p.spread_family else ("group", name, "")
        if key not in done:
            done[key] = counts(groups, g)
        out[name] = done[key]
    return out


def over_after(
    groups: Mapping[str, GroupState], g: GroupState, slot: int, m: groups_pb2.Member
) -> str:
    """If granting ``slot`` of ``g`` to ``m`` puts its value over the limit, the
    sentence that says so (recorded on the master_elected event), else ""."""
    if not enabled(g.policy):
        return ""
    tag, limit = g.policy.spread_tag, g.policy.spread_max
    v = value(m, tag)
    n = counts(groups, g, skip_slot=slot).get(v, 0) + 1
    if n <= limit:
        return ""
    return f"{shown(tag, v)} has {n} masters, at most {limit}"


def describe(policy: groups_pb2.GroupPolicy) -> str:
    """The rule in words: ``at most 1 master per zone (family shards)``."""
    k = policy.spread_max
    rule = f"at most {k} master{'s' if k != 1 else ''} per {policy.spread_tag}"
    if policy.spread_family:
        rule += f" over family {policy.spread_family}"
    return rule
