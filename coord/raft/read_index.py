"""A leader's reads confirmed by a round of heartbeats, not by a log entry (Raft §6.4).

A linearizable read, and a keepalive's acknowledgement, need "this node has applied
everything committed before the call" (coord.raft.read_barrier). A no-op entry gives
that, at the price of a commit: a journal append and an fsync on every node, an
append-entries to each follower and its reply, an apply; ~1.4 ms of a leader's CPU at
low rates (bench/README.md, issue 18). A leader gets the same without an entry, as
etcd's ReadIndex does:

1. It has committed an entry of its own term, so its commit index covers every entry
   committed before it led (else: the no-op).
2. The read index is its commit index when the round starts.
3. It sends every follower an append-entries at once and waits until a majority of
   the voters (itself included) answered one sent after the round started, in its term.
   Each of them then had not voted in a later term, and any later leader needs one of
   their votes: no later leader was elected, and nothing committed, before the round
   started that the read index misses.
4. It waits until it has applied the read index.

Which append-entries a reply answers: the leader numbers those it sends to each peer
(``coord_seq``, :meth:`ReadIndex.stamp`) and a follower echoes the number in its reply
(coord.raft.transport). A peer running an older coord echoes nothing and confirms no
round; while fewer than a majority of the voters echo, reads take the no-op (a rolling
upgrade). A peer's echo is forgotten when its link drops or it answers without one (it
may come back older). Whenever a round can no longer be confirmed that way (this node
stopped leading, too few peers echo), its reads are handed to ``fallback`` (the no-op)
rather than failed; only a round that no majority answered in time fails.

The keepalive's safety argument (docs/design.md, point 2) holds as it did: an
acknowledged keepalive arrived before the round started, so before any later leader
took over and restarted the session's deadline.

Thread: the tick thread, all of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from coord import errors

Done = Callable[[errors.CoordError | None], None]


class LeaderView(Protocol):
    """What the round reads of the node's Raft (coord.raft.syncobj_adapter.SyncObjAdapter)."""

    @property
    def is_leader(self) -> bool: ...

    @property
    def current_term(self) -> int: ...

    @property
    def commit_index(self) -> int: ...

    @property
    def last_applied(self) -> int: ...

    @property
    def other_nodes(self) -> set[Any]: ...

    def term_at(self, index: int) -> int | None: ...

    def send_heartbeat_soon(self) -> None: ...


@dataclass
class _Round:
    term: int
    read_index: int
    started: float  # monotonic
    needed: dict[str, int]  # voter id -> the first seq whose reply counts
    voters: int  # the configuration's voters, this node included
    waiting: list[Done]
    confirmed: set[str] = field(default_factory=set)

    def confirmed_by_majority(self) -> bool:
        return 2 * (1 + len(self.confirmed)) > self.voters


class ReadIndex:
    def __init__(
        self, raft: LeaderView, timeout_s: float, fallback: Callable[[Done], None]
    ) -> None:
        """A round that a majority has not confirmed within ``timeout_s`` fails; reads a
        round cannot confirm go to ``fallback`` (which makes a no-op barrier)."""
        self._raft = raft
        self._timeout_s = timeout_s
        self._fallback = fallback
        self._sent: dict[str, int] = {}  # peer id -> seq of the last append-entries sent
        self._echoing: set[str] = set()  # peers whose replies echo the seq
        self._queued: list[Done] = []
        self._round: _Round | None = None  # being confirmed
        self._applying: list[tuple[int, Done]] = []  # (read index, done), confirmed
        self.rounds = 0  # rounds started (a metric)

    # -- the transport's hooks -----------------------------------------------------

    def stamp(self, peer_id: str) -> int:
        """The number of an append-entries about to be sent to ``peer_id``."""
        seq = self._sent.get(peer_id, 0) + 1
        self._sent[peer_id] = seq
        return seq

    def on_reply(self, peer_id: str, message: dict[str, Any]) -> None:
        """A ``next_node_idx`` from ``peer_id``: it answers append-entries ``coord_seq``,
        handled in term ``term`` (both stamped by the follower's transport). Only the
        voters a round started with confirm it (a learner's echo counts for nothing:
        :meth:`usable` and the round count voters only)."""
        seq, term = message.get("coord_seq"), message.get("term")
        if not isinstance(seq, int) or isinstance(seq, bool):
            if term == self._raft.current_term:
                self._echoing.discard(peer_id)  # an answer in this term, unnumbered: older
            return
        self._echoing.add(peer_id)
        r = self._round
        if r is not None and term == r.term and seq >= r.needed.get(peer_id, seq + 1):
            r.confirmed.add(peer_id)

    def forget(self, peer_id: str) -> None:
        """``peer_id``'s link dropped: it may come back running another version."""
        self._echoing.discard(peer_id)

    # -- reads ------------------------------------------------------------------------

    def usable(self) -> bool:
        """Whether a round can confirm reads now: this node leads, has committed an
        entry of its term, and a majority of the voters (itself included) echo."""
        raft = self._raft
        if not raft.is_leader:
            return False
        commit = raft.commit_index
        if commit <= 0 or raft.term_at(commit) != raft.current_term:
            return False
        voters = [n.id for n in raft.other_nodes]
        echoing = sum(1 for v in voters if v in self._echoing)
        return 2 * (1 + echoing) > 1 + len(voters)

    def _may_still_confirm(self, r: _Round) -> bool:
        """Those who confirmed, and the voters of the round still echoing, make a majority."""
        could = r.confirmed | {v for v in r.needed if v in self._echoing}
        return 2 * (1 + len(could)) > r.voters

    def request(self, done: Done) -> None:
        """Call ``done(None)`` once everything committed before now is applied here, or
        ``done(error)``. Only when :meth:`usable`; rounds start on :meth:`on_tick`."""
        self._queued.append(done)

    def on_tick(self) -> None:
        raft = self._raft
        r = self._round
        if r is not None:
            if r.confirmed_by_majority() and raft.current_term == r.term:
                self._round = None
                self._applying.extend((r.read_index, done) for done in r.waiting)
            elif (
                not raft.is_leader or raft.current_term != r.term or not self._may_still_confirm(r)
            ):
                self._round = None
                for done in r.waiting:
                    self._fallback(done)
            elif time.monotonic() - r.started > self._timeout_s:
                self._round = None
                _fail(r.waiting, "a majority did not confirm this leader in time (no quorum?)")
        if self._round is None and self._queued:
            self._start()
        if self._applying:
            applied = raft.last_applied
            ready = [d for i, d in self._applying if i <= applied]
            if ready:
                self._applying = [(i, d) for i, d in self._applying if i > applied]
                for done in ready:
                    done(None)

    def _start(self) -> None:
        raft = self._raft
        waiting, self._queued = self._queued, []
        if not self.usable():  # it stepped down since, or a peer stopped echoing
            for done in waiting:
                self._fallback(done)
            return
        voters = [n.id for n in raft.other_nodes]
        self.rounds += 1
        self._round = _Round(
            term=raft.current_term,
            read_index=raft.commit_index,
            started=time.monotonic(),
            needed={v: self._sent.get(v, 0) + 1 for v in voters},
            voters=1 + len(voters),
            waiting=waiting,
        )
        if voters:
            raft.send_heartbeat_soon()
        else:
            self.on_tick()  # a single voter confirms itself


def _fail(waiting: list[Done], why: str) -> None:
    err = errors.Unavailable(why)
    for done in waiting:
        done(err)
