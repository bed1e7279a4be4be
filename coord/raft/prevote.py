"""PreVote for pysyncobj (Raft thesis 9.6), done beside it rather than inside it.

pysyncobj campaigns the moment its election deadline passes: it bumps its term
and asks for votes. A node that merely stalled (CPU starvation, a GC pause) or
that restarts with a stale view then deposes a healthy leader. With PreVote a
node first asks "would you vote for me?" without touching any term; only when a
majority says yes does it let pysyncobj campaign.

How it is wired, all on the tick thread:
- PreVote owns the election timer. pysyncobj restarts its own timer (a leader's
  append-entries, a vote granted, a campaign) by asking for a timeout: coord's
  ``_SyncObj`` answers :data:`NEVER` and calls :meth:`PreVote.restart_timer`,
  which starts PreVote's timer on pysyncobj's monotonic clock. pysyncobj checks
  its own deadline first thing in every tick, before any of coord's code runs:
  were it finite, a stall of the tick thread past it (a slow snapshot load, a
  paused process) would let pysyncobj campaign without asking.
- :meth:`PreVote.on_tick` runs once per tick. Once PreVote's deadline has passed
  (by however much) and no majority has granted yet, it moves it a full election
  timeout out and sends ``pre_vote`` requests. When a majority grants, it sets
  pysyncobj's deadline to zero: pysyncobj campaigns on its next tick.
- :meth:`PreVote.answer` grants when this node has no live leader (no link to
  a leader heard from within the minimum election timeout) and the candidate's
  log is at least as up to date as its own. Nothing else changes.
- Elections a leader asks for (leadership transfer: pysyncobj zeroes its own
  deadline on ``timeout_now``) skip PreVote.

Dropping or losing these messages only delays an election; safety is Raft's.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from typing import Any

from pysyncobj.monotonic import monotonic as raft_clock

from coord.raft.gate import VotingGate

logger = logging.getLogger(__name__)

Send = Callable[[Any, dict[str, Any]], object]

# pysyncobj's election timeout, whenever it asks for one: its own deadline never passes.
NEVER = math.inf


class PreVote:
    def __init__(
        self,
        so: Any,
        send: Send,
        election_timeout: tuple[float, float],
        gate: VotingGate,
        may_campaign: Callable[[], bool] | None = None,
    ) -> None:
        """``may_campaign``: whether this node may stand at all (default: the gate's
        answer); a node that may not never starts a round."""
        self._so = so
        self._send = send
        self._timeout = election_timeout
        self._gate = gate
        self._may_campaign = may_campaign or gate.may_campaign
        self._deadline = raft_clock() + random.uniform(*election_timeout)
        self._last_contact: dict[str, float] = {}  # peer id -> raft_clock() of last AE/ack
        self._round = 0
        self._round_term: int | None = None  # our term when the current round started
        self._grants: set[str] = set()
        self._granted_term: int | None = None  # term at which a majority granted

    # -- the election timer ----------------------------------------------------

    @property
    def deadline(self) -> float:
        """When this node next asks for pre-votes (pysyncobj's clock)."""
        return self._deadline

    def restart_timer(self) -> None:
        """pysyncobj restarted its election timer: a leader was heard, a vote
        granted, or a campaign started."""
        self._deadline = raft_clock() + random.uniform(*self._timeout)

    def hurry(self, deadline: float) -> bool:
        """Ask for pre-votes by ``deadline`` at the latest; True if that is sooner."""
        if deadline >= self._deadline:
            return False
        self._deadline = deadline
        return True

    # -- bookkeeping -----------------------------------------------------------

    def heard_from(self, node_id: str) -> None:
        self._last_contact[node_id] = raft_clock()

    def leader_is_alive(self) -> bool:
        """A live link to a leader heard from recently (a leader: from a majority)."""
        so = self._so
        fresh = raft_clock() - self._timeout[0]
        if so._isLeader():
            peers = so.otherNodes
            heard = sum(1 for n in peers if self._last_contact.get(n.id, 0.0) > fresh)
            return (heard + 1) * 2 > len(peers) + 1
        leader = so._getLeader()
        return (
            leader is not None
            and so.isNodeConnected(leader)
            and self._last_contact.get(leader.id, 0.0) > fresh
        )

    # -- candidate side --------------------------------------------------------

    def on_tick(self) -> None:
        so = self._so
        if so._isLeader() or not self._may_campaign() or so._SyncObj__transferInProgress:
            return
        term = so.raftCurrentTerm
        if self._granted_term is not None:
            if term == self._granted_term and so._SyncObj__raftElectionDeadline == 0.0:
                return  # granted: pysyncobj campaigns at its next election check
            # It campaigned, learned a new term, or heard a leader (which moved the
            # deadline): the grant is spent. The next campaign asks again.
            self._granted_term = None
        now = raft_clock()
        if now < self._deadline:
            return
        self._deadline = now + random.uniform(*self._timeout)
        self._round += 1
        self._round_term = term
        self._grants = {so.selfNode.id}
        request = {
            "type": "pre_vote",
            "round": self._round,
            "term": term + 1,
            "last_log_index": so._SyncObj__getCurrentLogIndex(),
            "last_log_term": so._SyncObj__getCurrentLogTerm(),
        }
        for node in so.otherNodes:
            self._send(node, request)
        self._maybe_won()

    def on_response(self, node: Any, message: dict[str, Any]) -> None:
        if message.get("round") != self._round or not message.get("granted"):
            return
        if self._round_term is None or self._so.raftCurrentTerm != self._round_term:
            return  # the round belongs to an older term: a leader appeared meanwhile
        self._grants.add(node.id)
        self._maybe_won()

    def _maybe_won(self) -> None:
        so = self._so
        if self._granted_term is None and len(self._grants) * 2 > len(so.otherNodes) + 1:
            self._granted_term = so.raftCurrentTerm
            self._round += 1  # late grants of this round must not start a second election
            so._SyncObj__raftElectionDeadline = 0.0
            logger.debug("pre-vote granted by %s: campaigning", sorted(self._grants))

    # -- voter side ------------------------------------------------------------

    def answer(self, node: Any, message: dict[str, Any]) -> None:
        so = self._so
        my_term = so._SyncObj__getCurrentLogTerm()
        my_index = so._SyncObj__getCurrentLogIndex()
        their = (message.get("last_log_term", -1), message.get("last_log_index", -1))
        granted = (
            self._gate.may_vote_for(their[0])
            and not self.leader_is_alive()
            and their >= (my_term, my_index)
        )
        self._send(
            node, {"type": "pre_vote_resp", "round": message.get("round"), "granted": granted}
        )
