"""The leader's record of each follower's log (nextIndex, matchIndex), moved by its replies.

pysyncobj 0.3.17's leader handles a follower's ``next_node_idx`` reply like this:
a ``reset`` sets nextIndex to the hint, a ``success`` raises matchIndex (and sets
nextIndex) if it is higher. coord replaces that with :func:`after_reply`, which adds:

- **Replies of another term are dropped.** pysyncobj's reply carries no term: one
  delayed across two elections (a leader deposed and re-elected) would raise the
  matchIndex of the new term with an acknowledgement of the old term's entries, which
  the follower may no longer hold, and a commit would count it. Followers stamp their
  term on every reply (``coord.raft.transport``); the leader takes only its own term's.
- **Within a term, failures only move nextIndex down until a success.** pysyncobj's
  leader advances nextIndex past every entry it sends, so under load two or more
  appends to a follower are in flight. A follower with a conflicting tail answers the
  probe at its tail with "my entry there conflicts" (hint: that index) and the next
  pipelined append with "I am short" (hint: its last index + 1), in the same poll:
  applied as they come, nextIndex swings between the two and the probe that would
  find the conflict is never sent. Each hint bounds from above where the two logs
  still match, and stays true until a success changes the follower's log, so the
  lowest hint since the last success is kept. (Never "the follower's commit index +
  1": below the leader's compaction point that sends a snapshot, whose install wipes
  entries the follower acknowledged.)
- **A conflict skips the follower's whole conflicting term** (Raft §5.3). pysyncobj's
  follower answers a conflict at ``prevLogIdx`` with "resend from ``prevLogIdx``":
  one entry further back per round trip, each probe carrying the leader's whole
  tail. The follower adds the term of its conflicting entry and the first index it
  holds of that term (:func:`conflict_of`); the leader resends from just past its own
  last entry of that term, or from that first index if it has none (:func:`hint_of`).
  Neither is below the first index where the two logs differ.

:class:`Progress` is one follower's record, :func:`after_reply` the pure update;
:class:`LeaderProgress` applies it to pysyncobj's dicts.

Thread: the tick thread (inside pysyncobj's message handling).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from coord.raft.syncobj_adapter import SyncObjAdapter


@dataclass(frozen=True)
class Reply:
    """A follower's ``next_node_idx`` message."""

    term: int | None  # the follower's term when it answered (None: not stamped)
    next_index: int  # success: its last verified index + 1; reset: where to resend from
    success: bool
    reset: bool
    # A conflict: the term of the follower's entry at ``next_index`` and the first
    # index it holds of that term (see conflict_of).
    conflict_term: int | None = None
    conflict_index: int | None = None

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Reply:
        term, c_term, c_index = (
            message.get(k) for k in ("term", "conflict_term", "conflict_index")
        )
        conflict = isinstance(c_term, int) and isinstance(c_index, int)
        return cls(
            term=term if isinstance(term, int) else None,
            next_index=int(message["next_node_idx"]),
            success=bool(message.get("success")),
            reset=bool(message.get("reset")),
            conflict_term=c_term if conflict else None,
            conflict_index=c_index if conflict else None,
        )


Log = Sequence[Any]  # pysyncobj's log: (command, index, term) entries, terms never decrease


def _term(entry: Any) -> int:
    return int(entry[2])


def conflict_of(log: Log, reset_hint: int) -> dict[str, int]:
    """The conflict fields a follower adds to a reset whose hint is an index it holds
    (pysyncobj's answer to a ``prevLogTerm`` mismatch there); none otherwise."""
    if not len(log):
        return {}
    first, last = log[0][1], log[-1][1]
    if not first <= reset_hint <= last:
        return {}  # "I am short": the hint is its last index + 1
    term = _term(log[reset_hint - first])
    start = bisect.bisect_left(log, term, hi=reset_hint - first, key=_term)
    return {"conflict_term": term, "conflict_index": log[start][1]}


def last_index_of_term(log: Log, term: int) -> int | None:
    """The index of the last entry of ``term`` in ``log``, None if it holds none."""
    pos = bisect.bisect_right(log, term, key=_term) - 1
    return int(log[pos][1]) if pos >= 0 and _term(log[pos]) == term else None


def hint_of(reply: Reply, last_of_conflict_term: int | None) -> int:
    """Where a reset says to resend from: past the leader's own last entry of the
    follower's conflicting term (``last_of_conflict_term``), else from the first
    index the follower holds of that term; without a conflict, the plain hint."""
    if reply.conflict_term is None or reply.conflict_index is None:
        return reply.next_index
    jump = reply.conflict_index if last_of_conflict_term is None else last_of_conflict_term + 1
    return min(reply.next_index, jump)


@dataclass(frozen=True)
class Progress:
    next_index: int
    match_index: int
    # The lowest reset hint since the follower's last success in this term (None:
    # no failure since).
    lowest_reset: int | None = None


def after_reply(progress: Progress, reply: Reply, term: int) -> Progress | None:
    """The follower's record after ``reply``; None when the reply is not of ``term``
    (the leader's current term) and must be ignored altogether."""
    if reply.term != term:
        return None
    if reply.success:
        if reply.next_index - 1 > progress.match_index:
            return Progress(reply.next_index, reply.next_index - 1)
        return replace(progress, lowest_reset=None)
    if reply.reset:
        lowest = reply.next_index  # the reset's hint, hint_of already applied
        if progress.lowest_reset is not None:
            lowest = min(lowest, progress.lowest_reset)
        return replace(progress, next_index=lowest, lowest_reset=lowest)
    return progress  # an acknowledged chunk of a large entry: no index moves


class LeaderProgress:
    """Applies :func:`after_reply` to pysyncobj's nextIndex/matchIndex of a leader."""

    def __init__(self, raft: SyncObjAdapter) -> None:
        self._raft = raft
        self._term = -1
        self._lowest: dict[Any, int] = {}  # node -> Progress.lowest_reset, this term

    def on_reply(self, node: Any, message: dict[str, Any]) -> bool:
        """Handle a ``next_node_idx`` from ``node``; False if it was ignored."""
        raft = self._raft
        indexes = raft.replication(node) if raft.is_leader else None
        if indexes is None:
            return False
        term = raft.current_term
        if term != self._term:  # a new leadership: pysyncobj reset both indexes too
            self._term = term
            self._lowest.clear()
        reply = Reply.from_message(message)
        if reply.reset and reply.conflict_term is not None:
            last = last_index_of_term(raft.log, reply.conflict_term)
            reply = replace(reply, next_index=hint_of(reply, last))
        before = Progress(indexes[0], indexes[1], self._lowest.get(node))
        after = after_reply(before, reply, term)
        if after is None:
            return False
        raft.set_replication(node, after.next_index, after.match_index)
        if after.lowest_reset is None:
            self._lowest.pop(node, None)
        else:
            self._lowest[node] = after.lowest_reset
        return True

    def forget(self, node: Any) -> None:
        """``node`` left the configuration (or joined it afresh)."""
        self._lowest.pop(node, None)
