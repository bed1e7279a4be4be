"""Who may vote: the guard that keeps a blank node from electing a stale leader.

Raft's safety needs every node that acknowledged an entry to keep it. A node
whose data dir was wiped has forgotten what it acknowledged; if it votes, a
candidate missing committed entries can win (the integration tests show a wiped
node electing a stale one, and acknowledged writes vanishing). Modes:

- ``voter``: a node with its Raft history: votes and campaigns normally.
- ``catch_up``: blank, and the cluster is known to have history
  (``--initial-cluster-state existing``, or a peer said so): neither votes nor
  campaigns.
- ``new_blank``: blank, and no peer reported history: the cluster may be new.
  Votes only for candidates that are blank too (``last_log_term == 0``: in a new
  cluster nobody has anything yet), so it can never help elect a candidate that
  lacks entries it forgot. It may campaign; non-blank nodes refuse it anyway.

A non-voter becomes a voter once its log reaches the highest commit index a
leader has told it about since it started: by then it holds every entry that
was committed, including any it acknowledged before it was wiped.

Cost: in a cluster bootstrapped moments ago, if the first leader dies before
another node received anything, a ``new_blank`` node refuses to elect the one
that did, until the first leader returns. Safety first.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

VOTER, CATCH_UP, NEW_BLANK = "voter", "catch_up", "new_blank"


class VotingGate:
    def __init__(self, mode: str = VOTER) -> None:
        if mode not in (VOTER, CATCH_UP, NEW_BLANK):
            raise ValueError(f"unknown voting mode {mode!r}")
        self.mode = mode
        self.target: int | None = None  # leader commit index to reach before voting

    @property
    def is_voter(self) -> bool:
        return self.mode == VOTER

    def may_campaign(self) -> bool:
        return self.mode != CATCH_UP

    def may_vote_for(self, candidate_last_log_term: int) -> bool:
        if self.mode == VOTER:
            return True
        if self.mode == CATCH_UP:
            return False
        return candidate_last_log_term == 0

    def leader_commit(self, commit_index: int) -> None:
        """A leader's append-entries said it has committed up to ``commit_index``."""
        if self.mode != VOTER:
            self.target = max(self.target or 0, commit_index)

    def update(self, last_log_index: int) -> bool:
        """Become a voter once the log reaches the target. Returns True on the change."""
        if self.mode == VOTER or self.target is None or last_log_index < self.target:
            return False
        logger.info(
            "caught up with the leader's log (index %d >= commit %d): this node now votes",
            last_log_index,
            self.target,
        )
        self.mode = VOTER
        return True
