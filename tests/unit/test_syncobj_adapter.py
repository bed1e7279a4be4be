"""coord.raft.syncobj_adapter: the names it reaches into exist in pysyncobj, and its
typed surface reads and moves the state they hold (no sockets, no threads: the
SyncObj is never constructed, its private attributes are set by hand)."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any

import pysyncobj.syncobj as pso
import pytest
from pysyncobj import FAIL_REASON, SyncObj
from pysyncobj.journal import MemoryJournal

from coord import errors
from coord.raft import syncobj_adapter
from coord.raft.syncobj_adapter import NEVER, ROLE_LEADER, SyncObjAdapter


@dataclass(frozen=True)
class Node:
    id: str


@dataclass
class FakeTransport:
    added: list[Node] = field(default_factory=list)
    dropped: list[Node] = field(default_factory=list)
    forgotten: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.progress = self  # LeaderProgress.forget

    def forget(self, node: Node) -> None:
        self.forgotten.append(node)

    def addNode(self, node: Node) -> None:
        self.added.append(node)

    def dropNode(self, node: Node) -> None:
        self.dropped.append(node)


def bare_syncobj(peers: list[Node]) -> Any:
    so: Any = object.__new__(SyncObj)
    so._SyncObj__otherNodes = set(peers)
    so._SyncObj__raftNextIndex = {n: 5 for n in peers}
    so._SyncObj__raftMatchIndex = {n: 4 for n in peers}
    so._SyncObj__lastResponseTime = {n: 0.0 for n in peers}
    so._SyncObj__transport = FakeTransport()
    so._SyncObj__raftElectionDeadline = NEVER
    so._SyncObj__raftState = ROLE_LEADER
    so._SyncObj__raftCurrentTerm = 3
    return so


def test_every_private_name_it_uses_exists_in_pysyncobj() -> None:
    ours = set(re.findall(r"_SyncObj__(\w+)", inspect.getsource(syncobj_adapter)))
    theirs = inspect.getsource(pso.SyncObj)
    missing = sorted(n for n in ours if f"self.__{n}" not in theirs and f"def __{n}(" not in theirs)
    assert missing == [], f"pysyncobj no longer has {missing}: re-check the adapter"


def test_the_journal_hook_is_explicit_idempotent_and_falls_back() -> None:
    syncobj_adapter.install_journal_hook()
    hook = pso.createJournal
    syncobj_adapter.install_journal_hook()
    assert pso.createJournal is hook
    assert isinstance(pso.createJournal(None), MemoryJournal)  # no journal handed over


def test_every_failure_reason_maps_to_a_coord_error() -> None:
    for name, value in vars(FAIL_REASON).items():
        if name.isupper() and value != FAIL_REASON.SUCCESS:
            assert isinstance(syncobj_adapter.error_for(value), errors.CoordError)
    assert isinstance(syncobj_adapter.error_for(999), errors.OutcomeUnknown)


def test_it_reads_role_term_and_match_indexes() -> None:
    a, b = Node("a"), Node("b")
    raft = SyncObjAdapter(bare_syncobj([a, b]))
    assert raft.raft_state == ROLE_LEADER
    assert raft.current_term == 3
    assert raft.match_index("a") == 4
    assert raft.match_index("zz") is None
    assert sorted((n.id, i) for n, i in raft.match_indexes()) == [("a", 4), ("b", 4)]


def test_replication_moves_next_and_match_and_notes_the_answer() -> None:
    a = Node("a")
    so = bare_syncobj([a])
    raft = SyncObjAdapter(so)
    assert raft.replication(a) == (5, 4)
    assert raft.replication(Node("x")) is None
    raft.set_replication(a, 9, 8)
    assert raft.replication(a) == (9, 8)
    assert so._SyncObj__lastResponseTime[a] > 0.0


def test_peers_join_and_leave_every_table() -> None:
    a, c = Node("a"), Node("c")
    so = bare_syncobj([a])
    raft = SyncObjAdapter(so)
    raft.add_peer(c, 11)
    assert raft.replication(c) == (11, 0)
    assert c in raft.other_nodes and so._SyncObj__transport.added == [c]
    raft.remove_peer(a)
    assert raft.replication(a) is None and a not in raft.other_nodes
    assert a not in so._SyncObj__lastResponseTime
    assert so._SyncObj__transport.dropped == [a] == so._SyncObj__transport.forgotten


@pytest.mark.parametrize("deadline", [0.0, 12.5])
def test_the_election_deadline_is_pysyncobjs_own(deadline: float) -> None:
    so = bare_syncobj([])
    raft = SyncObjAdapter(so)
    assert raft.election_deadline == NEVER
    raft.set_election_deadline(deadline)
    assert so._SyncObj__raftElectionDeadline == deadline == raft.election_deadline


# -- the leader counts its own log only as far as it is durable ------------------------

TERM = 3
LOG = {i: [(b"", i, 2 if i <= 10 else TERM)] for i in range(1, 21)}  # term 2 up to 10


@pytest.mark.parametrize(
    ("proposed", "before", "own", "others", "expected"),
    [
        (15, 12, 15, [15, 0], 15),  # everything durable: pysyncobj's answer stands
        (15, 12, 12, [15, 0], 12),  # own copy not synced, one follower: not a majority
        (15, 12, 13, [15, 0], 13),  # own synced to 13: commit 13, not 15
        (15, 12, 12, [15, 14], 14),  # both followers hold 14: a majority without the leader
        (15, 12, 20, [13, 13], 13),  # never beyond what followers hold with it
        (15, 12, 20, [20, 20], 15),  # never beyond what pysyncobj proposed
        (15, 5, 8, [9, 9], 5),  # 9 is of an older term: it commits only with a newer one
        (15, 12, 0, [0, 0], 12),  # never below the commit at the start of the tick
        (15, 12, 15, [15, 15, 0, 0], 15),  # five nodes: 3 of 5
        (15, 12, 0, [15, 15, 0, 0], 12),  # two followers only: 2 of 5
        (15, 12, 0, [15, 15, 15, 0], 15),  # three followers: a majority of 5
        (15, 12, 15, [15, 0, 0], 12),  # four nodes: 2 of 4 is no majority
    ],
)
def test_durable_commit_counts_the_leader_only_up_to_its_durable_index(
    proposed: int, before: int, own: int, others: list[int], expected: int
) -> None:
    got = syncobj_adapter.durable_commit(
        proposed, before, own, others, TERM, lambda idx: LOG.get(idx, [])
    )
    assert got == expected


def test_the_commit_is_corrected_between_pysyncobjs_count_and_the_apply() -> None:
    """pysyncobj counts the leader for its whole log in ``_onTick`` and applies right
    after; the adapter's ``__applyLogEntries`` corrects the commit index first."""
    source = inspect.getsource(pso.SyncObj._onTick)
    count = source.index("nextCommitIdx = commitIdx")
    apply = source.index("self.__applyLogEntries()", count)
    between = source[count:apply]
    assert "self.__transport.send" not in between, "pysyncobj sends between count and apply"
    assert "_SyncObj__applyLogEntries" in vars(syncobj_adapter._SyncObj)


class _Hooks:
    """The adapter's hooks a bare _SyncObj's apply reaches (no node behind them)."""

    def __init__(self, durable: int) -> None:
        self.applied_calls = 0
        self.durable = durable

    def applied(self) -> None:
        self.applied_calls += 1

    def durable_index(self) -> int:
        return self.durable


def leader_about_to_apply(
    monkeypatch: pytest.MonkeyPatch, queued: int, durable: int = 10, follower: int = 10
) -> tuple[Any, list[str]]:
    """A bare leader whose commit index pysyncobj moved from 8 to 10 this tick (entries
    of its term), its log durable up to ``durable``, its follower's up to ``follower``,
    with ``queued`` commands waiting; pysyncobj's own apply and send record themselves
    in the returned list."""
    from collections import deque

    from pysyncobj.fast_queue import FastQueue

    peer = Node("b")
    so: Any = object.__new__(syncobj_adapter._SyncObj)
    so._coord = _Hooks(durable)
    so._coord_commit_before = 8
    so._coord_commit_to_send = False
    so._SyncObj__raftState = ROLE_LEADER
    so._SyncObj__raftCurrentTerm = 3
    so._SyncObj__raftCommitIndex = 10
    so._SyncObj__raftLastApplied = 8
    so._SyncObj__otherNodes = {peer}
    so._SyncObj__raftMatchIndex = {peer: follower}
    so._SyncObj__leaderCommitIndex = 10
    so._SyncObj__raftLog = MemoryJournal()
    so._SyncObj__getEntries = lambda idx, count: [(b"", idx, 3)]
    so._SyncObj__newAppendEntriesTime = syncobj_adapter.raft_clock() + 60.0
    so._SyncObj__commandsQueue = FastQueue(0)
    so._SyncObj__commandsQueue._FastQueue__queue = deque(range(queued))
    calls: list[str] = []

    def apply(self: Any) -> bool:
        calls.append(f"apply {self._SyncObj__raftCommitIndex}")
        self._SyncObj__raftLastApplied = self._SyncObj__raftCommitIndex
        return True

    monkeypatch.setattr(pso.SyncObj, "_SyncObj__applyLogEntries", apply)
    so._SyncObj__sendAppendEntries = lambda: calls.append(f"send {so._SyncObj__raftCommitIndex}")
    return so, calls


def test_with_nothing_queued_a_leader_sends_the_commit_index_before_applying(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Followers apply (and their watchers hear) while the leader applies; pysyncobj is
    told nothing is left to send, so it sends no second message this tick."""
    so, calls = leader_about_to_apply(monkeypatch, queued=0)
    assert so._SyncObj__applyLogEntries() is False
    assert calls == ["send 10", "apply 10"]
    assert so._coord_commit_to_send is False
    assert so._coord.applied_calls == 1


def test_with_commands_queued_the_commit_index_goes_with_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under load the drain later in the tick sends one message with the new commands
    and the commit index: none is sent before the apply."""
    so, calls = leader_about_to_apply(monkeypatch, queued=2)
    assert so._SyncObj__applyLogEntries() is False
    assert calls == ["apply 10"]
    assert so._coord_commit_to_send is True


def test_a_due_heartbeat_carries_the_commit_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """A heartbeat due now goes out after the apply (pysyncobj's own), with it."""
    so, calls = leader_about_to_apply(monkeypatch, queued=0)
    so._SyncObj__newAppendEntriesTime = 0.0
    assert so._SyncObj__applyLogEntries() is True
    assert calls == ["apply 10"]
    assert so._coord_commit_to_send is False


def test_the_commit_index_sent_first_is_the_one_corrected_to_what_is_durable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pysyncobj counted the leader's whole log (10); the leader's own log is durable to
    9 only and its follower holds 9: 9 is committed, sent, then applied."""
    so, calls = leader_about_to_apply(monkeypatch, queued=0, durable=9, follower=9)
    so._SyncObj__applyLogEntries()
    assert calls == ["send 9", "apply 9"]


def test_nothing_is_sent_first_when_the_correction_leaves_nothing_to_apply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    so, calls = leader_about_to_apply(monkeypatch, queued=0, durable=8, follower=8)
    so._SyncObj__applyLogEntries()
    assert calls == ["apply 8"]
