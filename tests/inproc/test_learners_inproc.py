"""Learners among real RaftNodes in one process (tests/inproc/memory_raft.py): what a
learner must do for the voters' elections to stay live, and how it learns the term.

Each test failed before its fix (found by reading, see docs/raft-hardening.md):
a learner that refused to vote blocked every election of a configuration that had
promoted it; a learner that ignored other learners' answers, while its --peer flags
counted them as voters, never learned the term.
"""

from __future__ import annotations

import pytest

from coord.raft.membership import PROMOTE, Change
from coord.testing import wait_until
from tests.inproc.memory_raft import MemoryCluster

pytestmark = pytest.mark.timeout(90)

DEADLINE_S = 15.0


def test_a_learner_that_missed_its_promotion_still_votes(cluster: MemoryCluster) -> None:
    """n4's promotion commits on n1..n3 (3 of 4) while n4's link to the leader is cut;
    the leader dies: the two voters left need n4's vote, and n4 still believes it is a
    learner. etcd's learners vote when asked (etcd-io/etcd#10998); so do coord's."""
    leader = cluster.wait_leader(DEADLINE_S)
    n4 = cluster.add_learner(leader)
    lead = cluster.nodes[leader]
    wait_until(
        lambda: lead.lag(n4) == 0 and cluster.nodes[n4].gate.is_voter, DEADLINE_S, "n4 caught up"
    )
    cluster.network.partition(leader, n4)
    lead.membership.propose(Change(PROMOTE, n4), lead._raft).result(10)
    others = [n for n in ("n1", "n2", "n3") if n != leader]
    wait_until(
        lambda: all(cluster.nodes[n].membership.is_voter(n4) for n in others),
        DEADLINE_S,
        "the voters to hold the promotion",
    )
    assert not cluster.nodes[n4].membership.is_voter(n4)
    cluster.nodes.pop(leader).close()
    new = cluster.wait_leader(DEADLINE_S)
    assert new in others


def test_a_learner_learns_the_term_with_a_voter_down(cluster: MemoryCluster) -> None:
    """A second learner's flags list the first one: only voters' answers count, so the
    first learner must not count among the members it needs answers from."""
    leader = cluster.wait_leader(DEADLINE_S)
    n4 = cluster.add_learner(leader)
    wait_until(lambda: cluster.nodes[n4].gate.term_known, DEADLINE_S, "n4 to learn the term")
    down = next(n for n in ("n1", "n2", "n3") if n != leader)
    cluster.nodes.pop(down).close()
    n5 = cluster.add_learner(leader)
    wait_until(lambda: cluster.nodes[n5].gate.term_known, DEADLINE_S, "n5 to learn the term")
    wait_until(lambda: cluster.nodes[leader].lag(n5) == 0, DEADLINE_S, "n5 to acknowledge")


def test_learners_beyond_the_voters_count_learn_the_term(cluster: MemoryCluster) -> None:
    """Four learners beside three voters: the fourth's flags name six other members,
    of which only the three voters' answers count."""
    leader = cluster.wait_leader(DEADLINE_S)
    for _ in range(4):
        nid = cluster.add_learner(leader)
        wait_until(lambda: cluster.nodes[nid].gate.term_known, DEADLINE_S, f"{nid} knows the term")  # noqa: B023
