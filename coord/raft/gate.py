"""What a blank node may do: the guard that keeps a wiped node from electing a stale
leader, or from helping one commit.

Raft's safety needs every node that acknowledged an entry to keep it, and to keep
the highest term it has seen. A node whose data dir was wiped has forgotten both.

**Voting.** If it votes, a candidate missing committed entries can win: a wiped
node can elect a stale one, and acknowledged writes vanish
(``tests/integration/test_datadir.py``). Modes:

- ``voter``: a node with its Raft history: votes and campaigns normally.
- ``catch_up``: blank, and the cluster is known to have history
  (``--initial-cluster-state existing``, or a peer said so): neither votes nor
  campaigns.
- ``new_blank``: blank, and no peer reported history: the cluster may be new.
  Votes only for candidates that are blank too (``last_log_term == 0``: in a new
  cluster nobody has anything yet), so it can never help elect a candidate that
  lacks entries it forgot. It may campaign; non-blank nodes refuse it anyway.

A non-voter becomes a voter once its log reaches the highest commit index a
leader of its current term (or a later one) has told it about since it learned the
current term (below): by then it holds every entry that was committed, including
any it acknowledged before it was wiped.

**Acknowledging.** With its term back at 0, a wiped node would acknowledge a stale
leader's appends: an old leader L1 (term 1) cut off, a new leader L2 (term 2)
commits with node W, W is wiped and hears L1 first: L1 and W are a majority for
L1's term-1 entries at indexes term 2 already committed (two histories, both
"committed"; ``tests/chaos_short/test_wiped_follower.py``). So a blank node starts
with its **term unknown**: it acknowledges no append (it may store entries and
apply what a leader says is committed, which is true of any leader, stale or not:
only acknowledgements make commits), votes for no one and does not campaign until
it has learned the current term from the configuration (:func:`learned_term`), then
takes that term, durably, as already voted in (it may have voted in it before it
was wiped), and from then on refuses older leaders as Raft does.

**Learners.** A member the configuration names a learner (``coord.raft.membership``)
never campaigns, whatever its mode: the node sets :attr:`VotingGate.learner` from the
configuration in its log, so the role follows the log (a promotion, or its entry
truncated) at once. Once caught up it answers votes and pre-votes like a voter: only
a candidate whose configuration names it a voter counts the grant. A learner still learns the term
and acknowledges appends as any member does: the leader does not count its
acknowledgements, but they show how far it has caught up, and it is promoted only
once its log is close to the leader's. A blank node's catch-up is the implicit,
local form of the same stage.

Cost: in a cluster bootstrapped moments ago, if the first leader dies before
another node received anything, a ``new_blank`` node refuses to elect the one
that did, until the first leader returns. A wiped node needs more of its peers up
than a majority (see :func:`learned_term`). Safety first.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

logger = logging.getLogger(__name__)

VOTER, CATCH_UP, NEW_BLANK = "voter", "catch_up", "new_blank"


@dataclass(frozen=True)
class TermAnswer:
    """A peer's answer to "what is your term?" (``coord_term``)."""

    term: int
    # The peer started blank and none of its log has counted towards a commit since
    # (it acknowledged no append and never led): it holds nothing anyone relied on.
    fresh: bool


def learned_term(
    configs: Iterable[Collection[str]], me: str, answers: Mapping[str, TermAnswer]
) -> int | None:
    """The current term a blank node ``me`` may take from ``answers``, or None while they
    are not enough for every configuration in ``configs``.

    Why this is enough: an entry this node acknowledged before it was wiped, and that
    committed at term T, was stored by a majority M of a configuration C (this node one
    of them), each of which had a term of at least T, and terms never go down. For C
    of N members, the answers must come from at least ceil(N/2) other members: any
    majority of C then has one of them besides this node, so the highest term
    answered is at least T, and this node refuses every leader older than T. A fresh
    peer (started blank, nothing of its log counted since) is in no such M, so it
    counts as much as any answer, and a majority of C that is fresh, this node
    included, means that nothing can have been committed without a fresh member:
    nothing of C's history needs this node (a new cluster: two of three nodes
    bootstrap). Both assume one member at a time loses its data: two wiped members
    of one majority are beyond any repair. A node asks about every configuration it
    may be judged in: the one it started with and the one its log holds now (a stale
    leader may have sent it an uncommitted change).
    """
    need_all = True
    heard: list[int] = []
    for config in configs:
        members = set(config) | {me}
        others = members - {me}
        got = [answers[m] for m in others if m in answers]
        fresh = sum(1 for a in got if a.fresh)
        enough = 2 * len(got) >= len(members) or 2 * (fresh + 1) > len(members)
        need_all = need_all and enough
        heard += [a.term for a in got]
    if not need_all:
        return None
    return max(heard, default=0)


class VotingGate:
    def __init__(self, mode: str = VOTER) -> None:
        if mode not in (VOTER, CATCH_UP, NEW_BLANK):
            raise ValueError(f"unknown voting mode {mode!r}")
        self.mode = mode
        self.target: int | None = None  # leader commit index to reach before voting
        # A blank node knows no term until it learned one (see the module's docstring).
        self.term_known = mode == VOTER
        self._fresh = mode != VOTER
        self.answers: dict[str, TermAnswer] = {}
        # The configuration in this node's log names it a learner (set by the node).
        self.learner = False

    @property
    def is_voter(self) -> bool:
        return self.mode == VOTER

    @property
    def fresh(self) -> bool:
        """Started blank, and none of this node's log counted towards a commit since."""
        return self._fresh

    def counted(self) -> None:
        """This node's log counts towards commits from now on: it sent an
        acknowledgement, or it leads."""
        self._fresh = False

    def may_acknowledge(self) -> bool:
        return self.term_known

    def may_campaign(self) -> bool:
        return self.term_known and self.mode != CATCH_UP and not self.learner

    def may_vote_for(self, candidate_last_log_term: int) -> bool:
        # A learner votes when asked, as etcd's do (etcd-io/etcd#10998): a candidate
        # whose log holds the learner's promotion counts it, and the learner may not
        # have that entry yet (its link dropped): refusing would leave that candidate
        # short of a majority for good. Candidates count grants from their own voters
        # only (coord.raft.transport), so a learner's vote counts nowhere else.
        if not self.term_known:
            return False
        if self.mode == VOTER:
            return True
        if self.mode == CATCH_UP:
            return False
        return candidate_last_log_term == 0

    # -- learning the current term -------------------------------------------------

    def answer(self, node_id: str, term: int, fresh: bool) -> None:
        """Peer ``node_id`` says its term is ``term`` (the highest heard is kept)."""
        old = self.answers.get(node_id)
        if old is not None:
            term, fresh = max(term, old.term), fresh and old.fresh
        self.answers[node_id] = TermAnswer(term, fresh)

    def learn(self, configs: Iterable[Collection[str]], me: str) -> int | None:
        """Once the answers are enough (:func:`learned_term`): the term to take, and
        the term is known from then on. None otherwise (and once known)."""
        if self.term_known:
            return None
        term = learned_term(configs, me, self.answers)
        if term is None:
            return None
        self.term_known = True
        logger.info(
            "learned the current term %d from %s: this node acknowledges appends now",
            term,
            ", ".join(
                f"{n} (term {a.term}{', fresh' if a.fresh else ''})"
                for n, a in sorted(self.answers.items())
            )
            or "no one (the only member)",
        )
        return term

    # -- becoming a voter ----------------------------------------------------------

    def leader_commit(self, commit_index: int) -> None:
        """A leader of this node's current term (or a later one) said it has committed
        up to ``commit_index``. Ignored until the term is known: a stale leader's word
        does not count."""
        if self.mode != VOTER and self.term_known:
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
