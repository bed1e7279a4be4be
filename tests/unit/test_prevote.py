"""coord.raft.prevote.PreVote against a fake SyncObj, a fake clock and a recording send.

The fake exposes exactly what PreVote reads from the node's ``SyncObjAdapter``:
the current term, peers, the leader, links, the transfer flag, the election
deadline and the last log index/term. Every test drives PreVote by hand:
:meth:`Harness.tick` stands for the tick thread's ``on_tick`` call,
:meth:`Harness.grant` / :meth:`Harness.deny` for ``pre_vote_resp`` messages, and
:meth:`Harness.timer_restarted` for pysyncobj restarting its election timer (with
coord's ``_SyncObj`` in coord.raft.syncobj_adapter, which asks PreVote and gets :data:`NEVER`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from coord.raft import prevote as prevote_mod
from coord.raft.gate import CATCH_UP, NEW_BLANK, VOTER, VotingGate
from coord.raft.prevote import NEVER, PreVote
from coord.raft.syncobj_adapter import ROLE_CANDIDATE, ROLE_FOLLOWER

TIMEOUT = (1.0, 2.0)  # election timeout (min, max), seconds
NOW = 1000.0


@dataclass(frozen=True)
class Node:
    id: str


class FakeClock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeSyncObj:
    """Stands for the node's SyncObjAdapter (coord.raft.syncobj_adapter)."""

    def __init__(self, peers: int, term: int, log_index: int, log_term: int) -> None:
        self.self_node = Node("self")
        self.otherNodes = [Node(f"p{i}") for i in range(1, peers + 1)]
        self.raftCurrentTerm = term
        self.is_leader = False
        self.leader: Node | None = None
        self.connected: set[str] = {n.id for n in self.otherNodes}
        self.last_log_index = log_index
        self.last_log_term = log_term
        self.transfer_in_progress = False
        self.deadline = NEVER  # as coord's _SyncObj sets it
        self.raft_state = ROLE_FOLLOWER

    @property
    def other_nodes(self) -> list[Node]:
        return self.otherNodes

    @property
    def current_term(self) -> int:
        return self.raftCurrentTerm

    def is_connected(self, node: Node) -> bool:
        return node.id in self.connected

    @property
    def election_deadline(self) -> float:
        return self.deadline

    def set_election_deadline(self, value: float) -> None:
        self.deadline = value


@dataclass
class Harness:
    so: FakeSyncObj
    clock: FakeClock
    pv: PreVote
    gate: VotingGate
    sent: list[tuple[Node, dict[str, Any]]] = field(default_factory=list)

    def tick(self) -> None:
        self.pv.on_tick()

    def requests(self) -> list[tuple[Node, dict[str, Any]]]:
        return [(n, m) for n, m in self.sent if m["type"] == "pre_vote"]

    def last_round(self) -> int:
        return self.requests()[-1][1]["round"]

    def grant(self, peer: int, round_: int | None = None) -> None:
        r = self.last_round() if round_ is None else round_
        msg = {"type": "pre_vote_resp", "round": r, "granted": True}
        self.pv.on_response(self.so.otherNodes[peer - 1], msg)

    def deny(self, peer: int) -> None:
        msg = {"type": "pre_vote_resp", "round": self.last_round(), "granted": False}
        self.pv.on_response(self.so.otherNodes[peer - 1], msg)

    def due(self, late: float = 0.0) -> None:
        """Make PreVote's election deadline ``late`` seconds past."""
        assert self.pv.hurry(self.clock.t - late)

    def timer_restarted(self) -> None:
        """pysyncobj restarts its election timer (a leader heard, a vote granted, a
        campaign): ``deadline = now + timeout``, the timeout from coord's override."""
        self.pv.restart_timer()
        self.so.deadline = self.clock.t + NEVER

    def pysyncobj_campaigns(self) -> bool:
        """pysyncobj's own election check, first thing in its tick."""
        return self.so.deadline < self.clock.t

    def ask(self, last_log_term: int, last_log_index: int, round_: int = 7) -> bool:
        """Deliver a pre_vote from p1; return the grant PreVote sent back to it."""
        before = len(self.sent)
        candidate = self.so.otherNodes[0]
        self.pv.answer(
            candidate,
            {
                "type": "pre_vote",
                "round": round_,
                "term": self.so.raftCurrentTerm + 1,
                "last_log_index": last_log_index,
                "last_log_term": last_log_term,
            },
        )
        assert len(self.sent) == before + 1
        node, resp = self.sent[-1]
        assert node == candidate
        assert resp == {"type": "pre_vote_resp", "round": round_, "granted": resp["granted"]}
        return resp["granted"]


@pytest.fixture
def make(monkeypatch: pytest.MonkeyPatch):
    def factory(
        peers: int = 4,
        term: int = 5,
        log_index: int = 10,
        log_term: int = 5,
        mode: str = VOTER,
        member: bool = True,
        term_known: bool = True,
    ) -> Harness:
        clock = FakeClock()
        monkeypatch.setattr(prevote_mod, "raft_clock", clock)
        so = FakeSyncObj(peers, term, log_index, log_term)
        gate = VotingGate(mode)
        # A blank node first learns the current term (coord.raft.gate, test_gate.py).
        gate.term_known = term_known
        sent: list[tuple[Node, dict[str, Any]]] = []
        pv = PreVote(
            so,
            lambda node, msg: sent.append((node, dict(msg))),
            TIMEOUT,
            gate,
            may_campaign=lambda: gate.may_campaign() and member,
        )
        return Harness(so, clock, pv, gate, sent)

    return factory


# -- candidate side: when to ask -------------------------------------------------------------


def test_no_pre_vote_before_the_deadline(make) -> None:
    h = make()
    h.timer_restarted()
    deadline = h.pv.deadline
    assert NOW + TIMEOUT[0] <= deadline <= NOW + TIMEOUT[1]
    for t in (NOW, deadline - 0.001):
        h.clock.t = t
        h.tick()
        assert h.sent == []
        assert h.pv.deadline == deadline


@pytest.mark.parametrize("late", [0.0, 0.01, 5.0])
def test_past_the_deadline_it_pushes_it_out_and_asks_every_peer(make, late: float) -> None:
    h = make(peers=4, term=5, log_index=10, log_term=4)
    h.due(late)
    h.tick()
    assert NOW + TIMEOUT[0] <= h.pv.deadline <= NOW + TIMEOUT[1]
    assert [n.id for n, _ in h.sent] == ["p1", "p2", "p3", "p4"]
    round_ = h.sent[0][1]["round"]
    for _, m in h.sent:
        assert m == {
            "type": "pre_vote",
            "round": round_,
            "term": 6,  # the term it would campaign at; its own term is untouched
            "last_log_index": 10,
            "last_log_term": 4,
        }
    assert h.so.raftCurrentTerm == 5
    assert h.so.deadline == NEVER


def test_pushed_deadline_means_no_second_round_until_it_passes_again(make) -> None:
    h = make()
    h.due()
    h.tick()
    first_round = h.last_round()
    h.clock.t += 0.5
    h.tick()
    assert len(h.requests()) == 4
    h.clock.t = h.pv.deadline
    h.tick()
    assert len(h.requests()) == 8
    assert h.last_round() > first_round


@pytest.mark.parametrize("stall", [0.05, 1.0, 3600.0])
def test_however_long_the_tick_thread_stalls_pysyncobj_never_campaigns_unasked(
    make, stall: float
) -> None:
    """pysyncobj checks its deadline before anything else in a tick: after a stall
    past the election timeout it would campaign before PreVote could ask."""
    h = make(peers=2)
    h.timer_restarted()  # the leader's last append-entries before the stall
    h.clock.t = h.pv.deadline - 0.01
    h.tick()
    assert h.sent == []
    h.clock.t += stall
    assert not h.pysyncobj_campaigns()
    h.tick()
    assert len(h.requests()) == 2  # it asks first
    assert not h.pysyncobj_campaigns()


def test_hurry_only_brings_the_deadline_forward(make) -> None:
    h = make()
    h.timer_restarted()
    deadline = h.pv.deadline
    assert not h.pv.hurry(deadline + 1.0)
    assert h.pv.deadline == deadline
    assert h.pv.hurry(NOW + 0.06)
    assert h.pv.deadline == NOW + 0.06


# -- candidate side: counting grants ---------------------------------------------------------


def test_majority_of_grants_zeroes_the_deadline(make) -> None:
    h = make(peers=4)  # 5 nodes: self + 2 grants
    h.due()
    h.tick()
    pushed = h.so.deadline
    h.grant(1)
    assert h.so.deadline == pushed
    h.deny(2)
    h.grant(1)  # the same peer twice is still one grant
    assert h.so.deadline == pushed
    h.grant(3)
    assert h.so.deadline == 0.0


def test_three_nodes_need_one_grant(make) -> None:
    h = make(peers=2)
    h.due()
    h.tick()
    assert h.so.deadline > 0
    h.grant(2)
    assert h.so.deadline == 0.0


def test_four_nodes_need_two_grants(make) -> None:
    h = make(peers=3)
    h.due()
    h.tick()
    pushed = h.so.deadline
    h.grant(1)  # half is not a majority
    assert h.so.deadline == pushed
    h.grant(2)
    assert h.so.deadline == 0.0


def test_single_node_wins_at_once(make) -> None:
    h = make(peers=0)
    h.due()
    h.tick()
    assert h.sent == []
    assert h.so.deadline == 0.0


def test_denials_never_win(make) -> None:
    h = make(peers=2)
    h.due()
    h.tick()
    pushed = h.so.deadline
    h.deny(1)
    h.deny(2)
    assert h.so.deadline == pushed


def test_a_win_zeroes_the_deadline_once(make) -> None:
    h = make(peers=4)
    h.due()
    h.tick()
    h.grant(1)
    h.grant(2)
    assert h.so.deadline == 0.0
    h.timer_restarted()  # whatever pysyncobj does next
    h.grant(3)
    h.grant(4)
    assert h.so.deadline == NEVER


def test_granted_waits_for_pysyncobj_to_campaign(make) -> None:
    h = make(peers=2)
    h.due()
    h.tick()
    h.grant(1)
    assert h.so.deadline == 0.0
    n = len(h.sent)
    h.tick()  # same term: pysyncobj has not campaigned yet
    h.tick()
    assert len(h.sent) == n
    assert h.so.deadline == 0.0


def test_late_grants_after_the_campaign_do_not_start_another(make) -> None:
    """The 5-node double election fixed by "raft: PreVote instead of vote stickiness"."""
    h = make(peers=4, term=5)
    h.due()
    h.tick()
    won = h.last_round()
    h.grant(1)
    h.grant(2)
    assert h.so.deadline == 0.0
    # pysyncobj campaigns: term 6, a fresh election timer
    h.so.raftCurrentTerm = 6
    h.timer_restarted()
    h.tick()
    h.grant(3, won)
    h.grant(4, won)
    assert h.so.deadline == NEVER
    h.tick()
    assert h.so.deadline == NEVER
    assert len(h.requests()) == 4
    # the next election asks again, for term 7, and the old round still does not count
    h.clock.t = h.pv.deadline
    h.tick()
    assert len(h.requests()) == 8
    assert h.requests()[-1][1]["term"] == 7
    assert h.last_round() != won
    pushed = h.so.deadline
    h.grant(1, won)
    h.grant(2, won)
    assert h.so.deadline == pushed
    h.grant(1)
    h.grant(2)
    assert h.so.deadline == 0.0


def test_stale_rounds_are_ignored(make) -> None:
    h = make(peers=4)
    h.due()
    h.tick()
    old = h.last_round()
    h.grant(1)  # one grant of the first round
    h.clock.t = h.pv.deadline  # no majority: a new round
    h.tick()
    new = h.last_round()
    assert new != old
    pushed = h.so.deadline
    h.grant(2, old)
    h.grant(3, old)
    assert h.so.deadline == pushed
    h.grant(2)  # the first round's grant from p1 does not carry over
    assert h.so.deadline == pushed
    h.grant(3)
    assert h.so.deadline == 0.0


@pytest.mark.parametrize(
    "message",
    [
        {"type": "pre_vote_resp", "granted": True},
        {"type": "pre_vote_resp", "round": None, "granted": True},
        {"type": "pre_vote_resp", "round": 1},
    ],
)
def test_malformed_responses_are_ignored(make, message: dict[str, Any]) -> None:
    h = make(peers=2)
    h.due()
    h.tick()
    pushed = h.so.deadline
    for node in h.so.otherNodes:
        h.pv.on_response(node, message)
    assert h.so.deadline == pushed


def test_responses_to_a_round_never_sent_are_ignored(make) -> None:
    h = make(peers=2)
    deadline = h.so.deadline
    for node in h.so.otherNodes:
        h.pv.on_response(node, {"type": "pre_vote_resp", "round": 1, "granted": True})
    assert h.so.deadline == deadline


# -- candidate side: who never asks ----------------------------------------------------------


def test_leaders_never_pre_vote(make) -> None:
    h = make()
    h.so.is_leader = True
    h.due(1.0)
    h.tick()
    assert h.sent == []
    assert h.pv.deadline == NOW - 1.0


def test_catch_up_nodes_never_pre_vote(make) -> None:
    h = make(mode=CATCH_UP)
    h.due(1.0)
    h.tick()
    assert h.sent == []
    assert h.pv.deadline == NOW - 1.0


def test_non_members_never_pre_vote(make) -> None:
    h = make(member=False)
    h.due(1.0)
    h.tick()
    assert h.sent == []
    assert not h.pysyncobj_campaigns()


def test_new_blank_nodes_pre_vote(make) -> None:
    h = make(mode=NEW_BLANK, log_index=1, log_term=0)
    h.due()
    h.tick()
    assert len(h.requests()) == 4
    assert h.requests()[0][1]["last_log_term"] == 0


def test_transfer_in_progress_skips_pre_vote(make) -> None:
    h = make()
    h.so.transfer_in_progress = True
    h.so.deadline = 0.0  # the leader asked for an election: pysyncobj campaigns directly
    h.due()
    h.tick()
    assert h.sent == []
    assert h.so.deadline == 0.0


# -- voter side ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("their_term", "their_index", "granted"),
    [
        (5, 10, True),  # equal
        (5, 11, True),  # longer
        (6, 1, True),  # higher last term wins whatever the length
        (5, 9, False),  # shorter
        (4, 99, False),  # lower last term loses whatever the length
        (0, 0, False),
    ],
)
def test_answer_compares_logs(make, their_term: int, their_index: int, granted: bool) -> None:
    h = make(log_index=10, log_term=5)
    assert h.ask(their_term, their_index) is granted


def test_answer_without_log_fields_is_denied(make) -> None:
    h = make(log_index=1, log_term=0)
    h.pv.answer(h.so.otherNodes[1], {"type": "pre_vote", "round": 3})
    assert h.sent == [(h.so.otherNodes[1], {"type": "pre_vote_resp", "round": 3, "granted": False})]


def test_answer_changes_nothing_else(make) -> None:
    h = make()
    h.due()
    h.ask(9, 99)
    assert h.pv.deadline == NOW
    assert h.so.deadline == NEVER
    assert h.so.raftCurrentTerm == 5
    h.tick()  # and it does not disturb this node's own rounds
    assert len(h.requests()) == 4


def test_a_live_leader_means_no_grant(make) -> None:
    h = make()
    leader = h.so.otherNodes[2]
    h.so.leader = leader
    h.pv.heard_from(leader.id)
    h.clock.t += TIMEOUT[0] - 0.01
    assert not h.ask(9, 99)


def test_a_leader_silent_for_the_minimum_timeout_is_dead(make) -> None:
    h = make()
    leader = h.so.otherNodes[2]
    h.so.leader = leader
    h.pv.heard_from(leader.id)
    h.clock.t += TIMEOUT[0]
    assert h.ask(9, 99)


def test_a_leader_never_heard_from_is_dead(make) -> None:
    h = make()
    h.so.leader = h.so.otherNodes[2]
    h.pv.heard_from("p1")  # contact with someone else does not count
    assert h.ask(9, 99)


def test_a_disconnected_leader_is_dead(make) -> None:
    h = make()
    leader = h.so.otherNodes[2]
    h.so.leader = leader
    h.pv.heard_from(leader.id)
    h.so.connected.discard(leader.id)
    assert h.ask(9, 99)


def test_new_blank_grants_only_blank_candidates(make) -> None:
    h = make(mode=NEW_BLANK, log_index=1, log_term=0)
    assert h.ask(0, 1)
    assert h.ask(0, 3)
    assert not h.ask(1, 1)
    assert not h.ask(7, 50)


@pytest.mark.parametrize("mode", [CATCH_UP, NEW_BLANK])
def test_a_blank_node_that_has_not_learned_the_term_neither_asks_nor_grants(
    make, mode: str
) -> None:
    h = make(mode=mode, log_index=1, log_term=0, term_known=False)
    h.due(1.0)
    h.tick()
    assert h.requests() == []
    assert not h.pysyncobj_campaigns()
    for term, index in ((0, 1), (0, 3), (1, 1), (7, 50)):
        assert not h.ask(term, index)


def test_catch_up_never_grants(make) -> None:
    h = make(mode=CATCH_UP, log_index=1, log_term=0)
    for term, index in ((0, 1), (1, 1), (7, 50)):
        assert not h.ask(term, index)


def test_a_blank_node_that_caught_up_grants_normally(make) -> None:
    h = make(mode=CATCH_UP, log_index=1, log_term=0)
    h.gate.leader_commit(1)
    assert h.gate.update(1)
    assert h.ask(3, 5)


@pytest.mark.parametrize(
    ("peers", "heard", "alive"),
    [
        (4, 2, True),  # 5 nodes: self + 2 is a majority
        (4, 1, False),
        (4, 0, False),
        (3, 2, True),  # 4 nodes: self + 2
        (3, 1, False),  # half is not a majority
        (2, 1, True),  # 3 nodes: self + 1
        (2, 0, False),
        (0, 0, True),  # alone, it is its own majority
    ],
)
def test_a_leader_counts_recent_contact_from_a_majority(
    make, peers: int, heard: int, alive: bool
) -> None:
    h = make(peers=peers)
    h.so.is_leader = True
    for node in h.so.otherNodes[:heard]:
        h.pv.heard_from(node.id)
    h.clock.t += 0.5
    assert h.pv.leader_is_alive() is alive
    if peers:
        assert h.ask(9, 99) is not alive


def test_a_leaders_contacts_expire(make) -> None:
    h = make(peers=4)
    h.so.is_leader = True
    for node in h.so.otherNodes:
        h.pv.heard_from(node.id)
    assert h.pv.leader_is_alive()
    h.clock.t += TIMEOUT[0]
    assert not h.pv.leader_is_alive()
    assert h.ask(9, 99)


# -- bugs ------------------------------------------------------------------------------------


def test_grants_of_a_round_from_an_older_term_do_not_start_an_election(make) -> None:
    h = make(peers=4, term=5)
    h.due()
    h.tick()  # round for term 6
    # p3 wins the election of term 6 first; its append-entries reach us
    leader = h.so.otherNodes[2]
    h.so.raftCurrentTerm = 6
    h.so.leader = leader
    h.pv.heard_from(leader.id)
    h.timer_restarted()
    # grants p1 and p2 sent before they voted for p3 arrive now
    h.grant(1)
    h.grant(2)
    assert h.so.deadline == NEVER


def test_an_unused_grant_does_not_let_a_later_election_skip_pre_vote(make) -> None:
    h = make(peers=2, term=5)
    h.due()
    h.tick()
    h.grant(1)
    assert h.so.deadline == 0.0
    # before pysyncobj's next election check, the term-5 leader's append-entries
    # arrives: pysyncobj restarts its timer and stays a follower at term 5
    leader = h.so.otherNodes[1]
    h.so.leader = leader
    h.pv.heard_from(leader.id)
    h.timer_restarted()
    h.tick()
    # much later the leader goes silent: the deadline has passed
    h.clock.t += 60.0
    n = len(h.requests())
    h.tick()
    assert len(h.requests()) == n + 2  # it asks again
    assert not h.pysyncobj_campaigns()  # rather than let pysyncobj campaign unasked


def test_a_node_that_stopped_being_a_voter_mid_round_does_not_campaign(make) -> None:
    """Its promotion's entry was truncated while its pre-vote round was out: the grants
    that arrive after must not start an election it may not stand in (a learner again)."""
    h = make(peers=2)
    h.due()
    h.tick()
    pushed = h.so.deadline
    h.gate.learner = True
    h.grant(1)
    assert h.so.deadline == pushed
    assert not h.pysyncobj_campaigns()


# -- a split vote: the better placed candidate asks again soon -------------------------------

SPLIT_RETRY = TIMEOUT[0] / 4  # PreVote's default


def campaigning(h: Harness, self_id: str = "self") -> None:
    """pysyncobj campaigned at NOW: a candidate of a new term, its timer restarted."""
    h.so.self_node = Node(self_id)
    h.so.raftCurrentTerm += 1
    h.so.raft_state = ROLE_CANDIDATE
    h.timer_restarted()


def rival(h: Harness, log_term: int, log_index: int, term: int | None = None) -> bool:
    """p1's request_vote, as the transport hands it over before pysyncobj."""
    message = {
        "type": "request_vote",
        "term": h.so.raftCurrentTerm if term is None else term,
        "last_log_index": log_index,
        "last_log_term": log_term,
    }
    return h.pv.rival_candidate("p1", message)


def test_after_a_split_vote_the_candidate_with_the_longer_log_asks_again_soon(make) -> None:
    """Without this, a split vote costs a second full election timeout (a hung leader
    with two survivors: each voted for itself, neither can win)."""
    h = make(peers=2, term=5, log_index=10, log_term=5)
    campaigning(h)
    assert h.pv.deadline >= NOW + TIMEOUT[0]
    h.clock.t = NOW + 0.01
    assert rival(h, log_term=5, log_index=9)
    assert NOW + 0.01 + SPLIT_RETRY <= h.pv.deadline <= NOW + 0.01 + 1.25 * SPLIT_RETRY
    h.clock.t = h.pv.deadline
    h.tick()
    assert [(n.id, m["term"]) for n, m in h.requests()] == [("p1", 7), ("p2", 7)]


@pytest.mark.parametrize(
    ("self_id", "log", "hurries"),
    [
        ("self", (5, 11), False),  # the rival's log is longer
        ("self", (6, 1), False),  # ... or of a later term
        ("self", (5, 10), False),  # the same log: the lower id ("p1") goes first
        ("a", (5, 10), True),  # the same log, and this node has the lower id
        ("self", (4, 99), True),  # this node's log is of a later term
    ],
)
def test_only_the_better_placed_of_two_rival_candidates_hurries(
    make, self_id: str, log: tuple[int, int], hurries: bool
) -> None:
    h = make(peers=2, term=5, log_index=10, log_term=5)
    campaigning(h, self_id)
    drawn = h.pv.deadline
    assert rival(h, *log) is hurries
    assert (h.pv.deadline < drawn) is hurries


def test_a_request_vote_is_no_rival_unless_both_are_candidates_of_one_term(make) -> None:
    h = make(peers=2, term=5, log_index=10, log_term=5)
    h.timer_restarted()
    drawn = h.pv.deadline
    assert not rival(h, log_term=5, log_index=1)  # a follower simply votes
    assert h.pv.deadline == drawn
    campaigning(h)
    drawn = h.pv.deadline
    assert not rival(h, log_term=5, log_index=1, term=7)  # a later term: it follows p1
    assert not rival(h, log_term=5, log_index=1, term=5)  # an older one: refused anyway
    assert h.pv.deadline == drawn
