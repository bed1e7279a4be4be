"""The failover breaker: after K automatic failovers of a group within a window W,
automatic failover pauses itself until an operator resumes the group (policy
``breaker_failovers`` = K and ``breaker_window_ms`` = W; off when both are 0).

Pure, like the rest of ``coord.state``. The rules (docs/design.md, "The failover
breaker"):

- An **automatic failover** is a grant of a slot whose previous master was lost to a
  failure coord detected itself: its session expired, or its health check failed
  (cause ``session_expired`` or ``unhealthy``), made while the group is not paused. A
  master that resigns, closes its own session or leaves, every operator action
  (switchover, resign, revoke, edit), and the grants a resume makes are not counted.
- Failovers are counted on applied commands (a grant is an applied command's outcome),
  so every replica counts the same; the window is measured in the commands' wall-clock
  times (``Command.time_ms``, clamped to never decrease). That is safe although no
  wait that gates a grant may use a wall clock: the breaker only ever *stops*
  automatic action (pausing is the safe direction), so a stepped clock can open it
  early or late, never grant anything or shorten a wait.
- The K-th automatic failover within W still happens; then the group is paused
  (``GroupPause.breaker`` says why) and a ``breaker_opened`` event recorded. While
  open it is a pause like any other (coord.state.group_admin): nothing is failed over,
  failed back or revoked automatically; a switchover by hand still completes.
- An operator resumes the group (``coordctl group resume``): the breaker closes and
  the counted failovers are forgotten, so counting starts again from the resume.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coord.errors import InvalidArgument
from coord.v1 import groups_pb2

if TYPE_CHECKING:  # group_table checks policies with check() below
    from coord.state.group_table import GroupState

# Causes of a grant that count as an automatic failover (see the module docstring).
AUTOMATIC_CAUSES = frozenset({"session_expired", "unhealthy"})
MAX_FAILOVERS = 100
MAX_WINDOW_MS = 7 * 24 * 3600 * 1000


def check(p: groups_pb2.GroupPolicy) -> None:
    """Refuse a policy whose breaker fields do not make a breaker (or "off")."""
    k, w = p.breaker_failovers, p.breaker_window_ms
    if k == 0 and w == 0:
        return
    if not 1 <= k <= MAX_FAILOVERS:
        raise InvalidArgument(
            f"breaker_failovers {k} is out of bounds: give 1..{MAX_FAILOVERS} automatic "
            "failovers that open the breaker, or set breaker_failovers and "
            "breaker_window_ms both to 0 to turn the breaker off"
        )
    if not 1 <= w <= MAX_WINDOW_MS:
        raise InvalidArgument(
            f"breaker_window_ms {w} is out of bounds: give a window of 1..{MAX_WINDOW_MS} ms "
            f"(7 days) in which {k} automatic failovers open the breaker, or set both "
            "breaker fields to 0 to turn the breaker off"
        )


def enabled(p: groups_pb2.GroupPolicy) -> bool:
    return p.breaker_failovers > 0 and p.breaker_window_ms > 0


def is_open(g: GroupState) -> bool:
    return g.pause is not None and bool(g.pause.breaker)


def describe(p: groups_pb2.GroupPolicy) -> str:
    """``3 automatic failovers within 600s``: the breaker's rule, for messages."""
    n = p.breaker_failovers
    return f"{n} automatic failover{'s' if n != 1 else ''} within {p.breaker_window_ms / 1000:g}s"


def counted(g: GroupState, now: int) -> list[int]:
    """The counted failovers still within the window at ``now`` (display only)."""
    w = g.policy.breaker_window_ms
    return [t for t in g.breaker_failovers if t > now - w] if enabled(g.policy) else []


def note_grant(g: GroupState, cause: str, now: int) -> bool:
    """A slot of ``g`` was granted with ``cause`` at ``now`` (the command's time):
    count it if it is an automatic failover, and say whether the breaker opens now."""
    if cause not in AUTOMATIC_CAUSES or not enabled(g.policy) or g.pause is not None:
        return False
    # Window in command time (wall clock): it only decides to stop automatic action.
    w = g.policy.breaker_window_ms
    kept = [t for t in g.breaker_failovers if t > now - w]
    kept.append(now)
    g.breaker_failovers = kept[-g.policy.breaker_failovers :]
    return len(kept) >= g.policy.breaker_failovers
