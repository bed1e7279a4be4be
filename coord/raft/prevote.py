"""PreVote for pysyncobj (Raft thesis 9.6), done beside it rather than inside it.

pysyncobj campaigns the moment its election deadline passes: it bumps its term
and asks for votes. A node that merely stalled (CPU starvation, a GC pause) or
that restarts with a stale view then deposes a healthy leader. With PreVote a
node first asks "would you vote for me?" without touching any term; only when a
majority says yes does it let pysyncobj campaign.

How it is wired, all on the tick thread:
- PreVote owns the election timer. pysyncobj restarts its own timer (a leader's
  append-entries, a vote granted, a campaign) by asking for a timeout: coord's
  ``_SyncObj`` (coord.raft.syncobj_adapter) answers :data:`NEVER` and calls
  :meth:`PreVote.restart_timer`,
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
- A split vote (:meth:`PreVote.rival_candidate`): a candidate asked for its vote by
  another candidate of the same term (each voted for itself: in three nodes with one
  down, neither can win). The better placed of the two (the more up-to-date log, then
  the lower id) asks again after ``split_retry_s``; the other keeps the full randomised
  timeout it drew when it campaigned, so the next term has one candidate and the
  election costs one short wait, not a second election timeout (a hung leader gives no
  link drop to hurry the first one).

Dropping or losing these messages only delays an election; safety is Raft's.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from coord.raft.gate import VotingGate
from coord.raft.syncobj_adapter import NEVER, ROLE_CANDIDATE, SyncObjAdapter, raft_clock

logger = logging.getLogger(__name__)

__all__ = ["NEVER", "PreVote"]

Send = Callable[[Any, dict[str, Any]], object]


class PreVote:
    def __init__(
        self,
        raft: SyncObjAdapter,
        send: Send,
        election_timeout: tuple[float, float],
        gate: VotingGate,
        may_campaign: Callable[[], bool] | None = None,
        split_retry_s: float | None = None,
    ) -> None:
        """``may_campaign``: whether this node may stand at all (default: the gate's
        answer); a node that may not never starts a round. ``split_retry_s``: after a
        split vote, how soon the better placed candidate asks again (default: a
        quarter of the minimum election timeout)."""
        self._raft = raft
        self._split_retry_s = election_timeout[0] / 4 if split_retry_s is None else split_retry_s
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
        raft = self._raft
        fresh = raft_clock() - self._timeout[0]
        if raft.is_leader:
            peers = raft.other_nodes
            heard = sum(1 for n in peers if self._last_contact.get(n.id, 0.0) > fresh)
            return (heard + 1) * 2 > len(peers) + 1
        leader = raft.leader
        return (
            leader is not None
            and raft.is_connected(leader)
            and self._last_contact.get(leader.id, 0.0) > fresh
        )

    # -- candidate side --------------------------------------------------------

    def on_tick(self) -> None:
        raft = self._raft
        if raft.is_leader or not self._may_campaign() or raft.transfer_in_progress:
            return
        term = raft.current_term
        if self._granted_term is not None:
            if term == self._granted_term and raft.election_deadline == 0.0:
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
        self._grants = {raft.self_node.id}
        request = {
            "type": "pre_vote",
            "round": self._round,
            "term": term + 1,
            "last_log_index": raft.last_log_index,
            "last_log_term": raft.last_log_term,
        }
        for node in raft.other_nodes:
            self._send(node, request)
        self._maybe_won()

    def on_response(self, node: Any, message: dict[str, Any]) -> None:
        if message.get("round") != self._round or not message.get("granted"):
            return
        if self._round_term is None or self._raft.current_term != self._round_term:
            return  # the round belongs to an older term: a leader appeared meanwhile
        self._grants.add(node.id)
        self._maybe_won()

    def _maybe_won(self) -> None:
        raft = self._raft
        if not self._may_campaign():
            return  # it may have stopped being a voter since the round began (truncated)
        if self._granted_term is None and len(self._grants) * 2 > len(raft.other_nodes) + 1:
            self._granted_term = raft.current_term
            self._round += 1  # late grants of this round must not start a second election
            raft.set_election_deadline(0.0)
            logger.debug("pre-vote granted by %s: campaigning", sorted(self._grants))

    def rival_candidate(self, node_id: str, message: dict[str, Any]) -> bool:
        """A ``request_vote`` from voter ``node_id``, before pysyncobj handles it. When
        this node is a candidate of the same term, the vote is split; if this node is
        the better placed, it asks again soon. True when it hurried."""
        raft = self._raft
        if raft.raft_state != ROLE_CANDIDATE or message.get("term") != raft.current_term:
            return False
        mine = (raft.last_log_term, raft.last_log_index)
        theirs = (message.get("last_log_term", -1), message.get("last_log_index", -1))
        if not isinstance(theirs[0], int) or not isinstance(theirs[1], int):
            return False
        if mine < theirs or (mine == theirs and raft.self_node.id > node_id):
            return False  # theirs is the better placed: keep the full timeout
        # Jitter: of three or more rival candidates, more than one may rank above some
        # rival and hurry.
        delay = self._split_retry_s * random.uniform(1.0, 1.25)
        hurried = self.hurry(raft_clock() + delay)
        if hurried:
            logger.info(
                "split vote in term %d with %s: asking again in %.0f ms",
                raft.current_term, node_id, 1000 * delay,
            )  # fmt: skip
        return hurried

    # -- voter side ------------------------------------------------------------

    def answer(self, node: Any, message: dict[str, Any]) -> None:
        raft = self._raft
        my_term = raft.last_log_term
        my_index = raft.last_log_index
        their = (message.get("last_log_term", -1), message.get("last_log_index", -1))
        granted = (
            self._gate.may_vote_for(their[0])
            and not self.leader_is_alive()
            and their >= (my_term, my_index)
        )
        self._send(
            node, {"type": "pre_vote_resp", "round": message.get("round"), "granted": granted}
        )
