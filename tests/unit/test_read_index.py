"""A leader's read index round (coord.raft.read_index), against a stand-in of its Raft.

A round confirms reads only with replies, from a majority of the voters it started
with, to append-entries sent after it started, in its own term; a read asked for while
a round is under way waits for the next; it waits for the apply of its read index; a
leader that has not committed an entry of its term, or whose peers do not echo, does
not use it, and reads a round can no longer confirm go to the no-op (the fallback).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coord import errors
from coord.raft.read_index import ReadIndex


@dataclass(frozen=True)
class Peer:
    id: str


@dataclass
class FakeLeader:
    """The node's Raft as the round reads it (plain attributes serve the protocol)."""

    is_leader: bool = True
    current_term: int = 4
    commit_index: int = 10
    last_applied: int = 10
    other_nodes: set[Any] = field(default_factory=lambda: {Peer("n2"), Peer("n3")})
    terms: dict[int, int] = field(default_factory=lambda: {10: 4})
    heartbeats: int = 0

    def term_at(self, index: int) -> int | None:
        return self.terms.get(index)

    def send_heartbeat_soon(self) -> None:
        self.heartbeats += 1


class NoOps:
    """The fallback: the reads handed to a no-op barrier."""

    def __init__(self) -> None:
        self.given: list[Any] = []

    def __call__(self, done: Any) -> None:
        self.given.append(done)


class Outcomes:
    def __init__(self) -> None:
        self.done: list[errors.CoordError | None] = []

    def __call__(self, err: errors.CoordError | None) -> None:
        self.done.append(err)


def reply(seq: int, term: int = 4) -> dict[str, Any]:
    return {"type": "next_node_idx", "next_node_idx": 11, "success": True, "term": term,
            "coord_seq": seq}  # fmt: skip


def echoing(raft: FakeLeader, noops: NoOps | None = None) -> ReadIndex:
    """A read index whose peers have each answered one append-entries (seq 1)."""
    ri = ReadIndex(raft, timeout_s=5.0, fallback=noops if noops is not None else NoOps())
    for peer in sorted(p.id for p in raft.other_nodes):
        ri.on_reply(peer, reply(ri.stamp(peer)))
    return ri


def round_started(raft: FakeLeader, noops: NoOps | None = None) -> tuple[ReadIndex, Outcomes]:
    """An echoing read index with one read asked for and its round started."""
    ri = echoing(raft, noops)
    out = Outcomes()
    ri.request(out)
    ri.on_tick()
    return ri, out


def test_a_round_confirms_with_a_majority_of_replies_to_heartbeats_sent_after_it() -> None:
    raft = FakeLeader()
    ri = echoing(raft)
    assert ri.usable()
    out = Outcomes()
    ri.request(out)
    ri.on_tick()  # the round starts: read index 10, a heartbeat asked for
    assert raft.heartbeats == 1
    ri.on_reply("n2", reply(1))  # an answer to an append-entries sent before the round
    ri.on_tick()
    assert out.done == []
    assert ri.stamp("n2") == 2  # the heartbeat the round asked for
    ri.on_reply("n2", reply(2))
    ri.on_tick()  # n2 and this leader: 2 of 3
    assert out.done == [None]


def test_replies_of_another_term_never_confirm() -> None:
    raft = FakeLeader()
    ri, out = round_started(raft)
    for peer in ("n2", "n3"):
        ri.on_reply(peer, reply(ri.stamp(peer), term=5))  # they moved on to a later term
    ri.on_tick()
    assert out.done == []


def test_a_confirmed_read_waits_for_the_apply_of_its_read_index() -> None:
    raft = FakeLeader(commit_index=12, last_applied=10, terms={12: 4})
    ri, out = round_started(raft)
    ri.on_reply("n3", reply(ri.stamp("n3")))
    raft.commit_index = 13  # committed after the round started: not waited for
    ri.on_tick()
    assert out.done == []
    raft.last_applied = 12
    ri.on_tick()
    assert out.done == [None]


def test_a_leader_that_steps_down_hands_its_round_to_the_no_op() -> None:
    raft = FakeLeader()
    noops = NoOps()
    ri, out = round_started(raft, noops)
    raft.is_leader = False
    ri.on_tick()
    assert out.done == [] and noops.given == [out]  # a follower's no-op still works


def test_a_round_too_few_echoing_peers_can_confirm_goes_to_the_no_op_at_once() -> None:
    raft = FakeLeader()
    noops = NoOps()
    ri, out = round_started(raft, noops)
    ri.forget("n2")  # its link dropped: n3 alone could still confirm
    ri.on_tick()
    assert noops.given == []
    ri.on_reply("n3", {**reply(1), "coord_seq": None})  # n3 came back an older coord
    ri.on_tick()
    assert noops.given == [out]  # not after the round's timeout
    assert not ri.usable()


def test_a_round_a_majority_does_not_answer_fails_after_the_timeout(monkeypatch: Any) -> None:
    raft = FakeLeader()
    ri = echoing(raft)
    out = Outcomes()
    ri.request(out)
    now = [1000.0]
    monkeypatch.setattr("coord.raft.read_index.time.monotonic", lambda: now[0])
    ri.on_tick()
    now[0] += 4.9
    ri.on_tick()
    assert out.done == []
    now[0] += 0.2
    ri.on_tick()
    assert len(out.done) == 1 and isinstance(out.done[0], errors.Unavailable)
    later = Outcomes()  # the next read starts a new round
    ri.request(later)
    ri.on_tick()
    ri.on_reply("n2", reply(ri.stamp("n2")))
    ri.on_tick()
    assert later.done == [None]


def test_not_usable_before_an_entry_of_its_term_is_committed() -> None:
    raft = FakeLeader(terms={10: 3})  # elected in term 4, its first entry not committed
    assert not echoing(raft).usable()


def test_not_usable_while_fewer_than_a_majority_echo() -> None:
    raft = FakeLeader(other_nodes={Peer("n2"), Peer("n3"), Peer("n4"), Peer("n5")})
    ri = echoing(raft)
    for older in ("n4", "n5"):  # they run an older coord: an answer in this term, unnumbered
        ri.on_reply(older, {**reply(1), "coord_seq": None})
    assert ri.usable()  # 3 of 5
    ri.forget("n3")  # its link dropped: it may come back older
    assert not ri.usable()
    ri.on_reply("n9", reply(ri.stamp("n9")))  # a learner's echo: not a voter's
    assert not ri.usable()


def test_a_read_asked_for_during_a_round_waits_for_the_next() -> None:
    raft = FakeLeader()
    ri = echoing(raft)
    first, second = Outcomes(), Outcomes()
    ri.request(first)
    ri.on_tick()  # round 1
    raft.commit_index = 11  # a write commits ...
    raft.terms[11] = 4
    ri.request(second)  # ... before the second read arrives: it must see it
    ri.on_reply("n2", reply(ri.stamp("n2")))  # answers round 1's heartbeat
    ri.on_tick()  # round 1 confirmed (first), round 2 starts for second
    assert first.done == [None] and second.done == []
    raft.last_applied = 11
    ri.on_tick()
    assert second.done == []  # round 1's answer does not confirm round 2
    ri.on_reply("n3", reply(ri.stamp("n3")))
    ri.on_tick()
    assert second.done == [None]


def test_with_four_voters_the_leader_and_one_reply_are_not_a_majority() -> None:
    raft = FakeLeader(other_nodes={Peer("n2"), Peer("n3"), Peer("n4")})
    ri, out = round_started(raft)
    ri.on_reply("n2", reply(ri.stamp("n2")))
    ri.on_tick()
    assert out.done == []  # 2 of 4
    ri.on_reply("n4", reply(ri.stamp("n4")))
    ri.on_tick()
    assert out.done == [None]  # 3 of 4


def test_a_voter_added_during_a_round_does_not_confirm_it() -> None:
    raft = FakeLeader()
    ri, out = round_started(raft)
    raft.other_nodes.add(Peer("n4"))
    ri.on_reply("n4", reply(ri.stamp("n4")))
    ri.on_tick()
    assert out.done == []


def test_a_single_voter_confirms_itself() -> None:
    raft = FakeLeader(other_nodes=set())
    ri = ReadIndex(raft, timeout_s=5.0, fallback=NoOps())
    assert ri.usable()
    out = Outcomes()
    ri.request(out)
    ri.on_tick()
    assert out.done == [None]
    assert raft.heartbeats == 0
