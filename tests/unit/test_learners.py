"""Learners (coord.raft.membership, gate, syncobj_adapter): the role is part of the
replicated configuration, and a learner counts in no vote, commit or quorum."""

from __future__ import annotations

from typing import Any

from pysyncobj.node import Node

from coord.raft import membership as m
from coord.raft.gate import VOTER, VotingGate
from coord.raft.syncobj_adapter import SyncObjAdapter

A = {f"n{i}": m.NodeAddress(f"h:{i}", f"h:{100 + i}") for i in (1, 2, 3)}
N4 = m.NodeAddress("h:4", "h:104", learner=True)


def entries(*changes: m.Change) -> list[tuple[int, bytes]]:
    return [(i + 10, m.encode_change(ch)) for i, ch in enumerate(changes)]


def test_the_role_is_in_the_entry_and_a_promotion_is_a_change_of_its_own() -> None:
    auto = m.NodeAddress("h:4", "h:104", learner=True, auto_promote=True)
    added = m.apply_changes(A, entries(m.Change(m.ADD, "n4", auto)), 0)
    assert added["n4"] == auto and m.voters(added) == {"n1", "n2", "n3"}
    assert m.learners(added) == {"n4"}
    promoted = m.apply_changes(
        A, entries(m.Change(m.ADD, "n4", auto), m.Change(m.PROMOTE, "n4")), 0
    )
    assert promoted["n4"] == m.NodeAddress("h:4", "h:104")
    assert m.voters(promoted) == {"n1", "n2", "n3", "n4"}
    # A voter's entry is byte for byte what it was before learners existed.
    voter = m.encode_change(m.Change(m.ADD, "n4", m.NodeAddress("h:4", "h:104")))
    assert b"learner" not in voter


def test_promotion_checks() -> None:
    config = {**A, "n4": N4}
    assert m.check_change(config, m.Change(m.PROMOTE, "n4"), "n1") is None
    assert "already a voting member" in (m.check_change(A, m.Change(m.PROMOTE, "n2"), "n1") or "")
    assert "not a member" in (m.check_change(A, m.Change(m.PROMOTE, "n9"), "n1") or "")
    voter4 = m.Change(m.ADD, "n4", m.NodeAddress("h:4", "h:104"))
    assert "a learner: promote it" in (m.check_change(config, voter4, "n1") or "")
    why = m.check_promotion("n4", 12345, True, 1000)
    assert why == (
        "n4 is 12,345 entries behind the leader (bound: 1,000): wait, or watch `coordctl node ls`"
    )
    assert m.check_promotion("n4", 1000, True, 1000) is None
    assert "not connected" in (m.check_promotion("n4", 3, False, 1000) or "")


def test_learners_are_in_no_quorum() -> None:
    config = {**A, "n4": N4, "n5": m.NodeAddress("h:5", "h:105", learner=True)}
    # n2 and n3 down: adding or removing a learner changes no quorum.
    active = {"n1", "n4", "n5"}
    assert m.check_quorum_after(config, m.Change(m.ADD, "n6", N4), active) is None
    assert m.check_quorum_after(config, m.Change(m.REMOVE, "n5"), active) is None
    # ...but a voter added would need 3 of 4 voters, and only n1 is up: learners
    # do not make up the difference.
    voter6 = m.Change(m.ADD, "n6", m.NodeAddress("h:6", "h:106"))
    assert "only 1 would be" in (m.check_quorum_after(config, voter6, active) or "")
    # Promoting a live learner with 2 of 3 voters up: 3 of 4, with it: allowed.
    assert m.check_quorum_after(config, m.Change(m.PROMOTE, "n4"), {"n1", "n2", "n4"}) is None
    assert m.check_quorum_after(config, m.Change(m.PROMOTE, "n4"), {"n1", "n2"}) is not None


class _Journal:
    def __init__(self, items: list[tuple[int, bytes]]) -> None:
        self.items = items

    def config_entries(self) -> list[tuple[int, bytes]]:
        return self.items


def test_a_dump_keeps_the_role_as_its_voter_list() -> None:
    config = {**A, "n4": N4}
    assert m.dump_voters(config) == ["n1", "n2", "n3"]
    ms = m.Membership("n1", A, _Journal([]), "h:1", {})
    ms.set_base(m.to_json(config), tuple(m.dump_voters(config)), 50)
    assert ms.recompute()["n4"].learner and ms.voters() == {"n1", "n2", "n3"}
    assert not ms.is_voter("n4") and ms.is_voter("n2")
    # A dump from before learners lists every member: all voters.
    old = m.Membership("n1", A, _Journal([]), "h:1", {})
    before = {nid: {"raft": a.raft, "api": a.api} for nid, a in config.items()}
    old.set_base(dict(before), ("n1", "n2", "n3", "n4"), 50)
    assert old.recompute()["n4"] == m.NodeAddress("h:4", "h:104")


def test_a_learner_never_campaigns_but_votes_when_asked() -> None:
    """As etcd's (etcd-io/etcd#10998): a candidate whose log holds the learner's
    promotion counts its vote, and the learner may not hold that entry yet."""
    gate = VotingGate(VOTER)
    assert gate.may_campaign() and gate.may_vote_for(3)
    gate.learner = True
    assert not gate.may_campaign() and gate.may_vote_for(3)
    assert gate.may_acknowledge()  # it still acknowledges: its lag is measured
    gate.learner = False  # promoted
    assert gate.may_campaign() and gate.may_vote_for(3)


def test_a_dump_keeps_a_learners_auto_promotion() -> None:
    n5 = m.NodeAddress("h:5", "h:105", learner=True, auto_promote=True)
    config = {**A, "n4": N4, "n5": n5}
    ms = m.Membership("n1", A, _Journal([]), "h:1", {})
    ms.set_base(m.to_json(config), tuple(m.dump_voters(config)), 50)
    assert ms.recompute()["n5"] == n5 and ms.recompute()["n4"] == N4


class _Transport:
    def addNode(self, node: Any) -> None: ...


def test_a_learner_is_replicated_to_but_never_counted() -> None:
    so: Any = object.__new__(type("FakeSyncObj", (), {}))
    a, b = Node("a"), Node("b")
    so._SyncObj__otherNodes = {a}
    so._SyncObj__readonlyNodes = set()
    so._SyncObj__raftNextIndex = {a: 5}
    so._SyncObj__raftMatchIndex = {a: 4}
    so._SyncObj__lastResponseTime = {a: 0.0}
    so._SyncObj__transport = _Transport()
    raft = SyncObjAdapter(so)
    raft.add_peer(b, 7, learner=True)
    # pysyncobj's commit index, votes and lease count __otherNodes; its leader
    # replicates to __otherNodes | __readonlyNodes.
    assert so._SyncObj__otherNodes == {a} and so._SyncObj__readonlyNodes == {b}
    assert raft.replication(b) == (7, 0)
    assert [n for n, _ in raft.match_indexes()] == [a]  # no transfer to a learner
    so._SyncObj__raftMatchIndex[b] = 6
    raft.set_learner(b, False)  # promoted: progress kept
    assert so._SyncObj__otherNodes == {a, b} and not so._SyncObj__readonlyNodes
    assert raft.replication(b) == (7, 6)
    raft.set_learner(b, True)  # its promotion truncated
    assert so._SyncObj__otherNodes == {a} and so._SyncObj__readonlyNodes == {b}
