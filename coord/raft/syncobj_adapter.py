"""pysyncobj behind one door: the only module that touches its private members.

coord runs pysyncobj 0.3.17 hardened (docs/design.md, docs/raft-hardening.md). The
hardening needs pysyncobj's internals: its name-mangled ``SyncObj.__*`` state
(nextIndex/matchIndex, the election deadline, the log), a few private methods it
overrides, the journal factory it builds its log with, and ``TcpConnection``
internals. All of that is here, behind a typed surface; the rest of ``coord.raft`` talks to
:class:`SyncObjAdapter` and never spells a mangled name (patroni keeps pysyncobj
inside ``patroni/dcs/raft.py`` the same way).

- :func:`install_journal_hook` replaces pysyncobj's journal factory so that the
  log is coord's :class:`~coord.raft.journal.DurableJournal`. It is an explicit
  step, idempotent, run by :func:`start` (not at import).
- :class:`_SyncObj` is the ``SyncObj`` subclass with coord's overrides, all
  calling back into the node through :class:`Hooks`.
- :class:`SyncObjAdapter` reads and moves pysyncobj's Raft state.
- :func:`build_conf` turns coord's settings into a ``SyncObjConf``.
- :func:`error_for` maps pysyncobj's fail reasons to coord errors (the one
  translation point on the Raft side, see coord.errors).
- :func:`peer_host` and :func:`guard_frames` reach into a ``TcpConnection``
  for coord.raft.transport.

Thread: everything but construction runs on pysyncobj's tick thread, except
the proposal entry points (:meth:`SyncObjAdapter.propose`,
:meth:`SyncObjAdapter.append_config_entry`), which any thread may call.
"""

from __future__ import annotations

import logging
import math
import queue
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import pysyncobj.syncobj as _pso
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.monotonic import monotonic as raft_clock

from coord import errors
from coord.raft.background_dump import BackgroundSerializer, DumpJob

if TYPE_CHECKING:
    from coord.config import NodeConfig
    from coord.raft.journal import DurableJournal

__all__ = [
    "NEVER",
    "REQUEST_DENIED",
    "ROLE_CANDIDATE",
    "ROLE_FOLLOWER",
    "ROLE_LEADER",
    "SUCCESS",
    "Done",
    "Hooks",
    "SyncObjAdapter",
    "build_conf",
    "error_for",
    "guard_frames",
    "install_journal_hook",
    "peer_host",
    "raft_clock",
    "start",
]

logger = logging.getLogger(__name__)

ROLE_FOLLOWER, ROLE_CANDIDATE, ROLE_LEADER = 0, 1, 2  # pysyncobj's _RAFT_STATE

# pysyncobj's election timeout, whenever it asks for one: its own deadline never
# passes; coord.raft.prevote keeps the election timer instead.
NEVER = math.inf

# Outcomes pysyncobj passes to a proposal's callback (besides the failures below).
SUCCESS: int = FAIL_REASON.SUCCESS
REQUEST_DENIED: int = FAIL_REASON.REQUEST_DENIED

# A proposal's callback: ``(result, fail_reason)``, on the tick thread.
Done = Callable[[Any, int], None]

_FAIL_TO_ERROR: dict[int, Callable[[], errors.CoordError]] = {
    FAIL_REASON.QUEUE_FULL: lambda: errors.Unavailable("too many pending writes: retry shortly"),
    FAIL_REASON.MISSING_LEADER: lambda: errors.NoLeader("no leader elected yet: retry shortly"),
    FAIL_REASON.DISCARDED: lambda: errors.Unavailable(
        "the write was discarded by a leader change and not applied: retry"
    ),
    FAIL_REASON.NOT_LEADER: lambda: errors.OutcomeUnknown(
        "leader changed while the write was in flight: retry with the same request id"
    ),
    FAIL_REASON.LEADER_CHANGED: lambda: errors.OutcomeUnknown(
        "leader changed while the write was in flight: retry with the same request id"
    ),
    FAIL_REASON.REQUEST_DENIED: lambda: errors.FailedPrecondition("the request was denied"),
    FAIL_REASON.UNKNOWN_OUTCOME: lambda: errors.OutcomeUnknown(
        "the write's outcome is unknown: retry with the same request id"
    ),
}


def error_for(fail_reason: int) -> errors.CoordError:
    """The coord error for a pysyncobj fail reason (not ``SUCCESS``)."""
    make = _FAIL_TO_ERROR.get(fail_reason)
    if make is None:
        return errors.OutcomeUnknown("the write failed for an unknown reason: retry")
    return make()


# -- the journal -----------------------------------------------------------------

# pysyncobj builds its journal from a module-level factory, given only the path.
# Journals are created by the node and handed over through this registry.
_JOURNALS: dict[str, DurableJournal] = {}
_orig_create_journal: Callable[[str | None], Any] | None = None


def _create_journal(journalFile: str | None = None) -> Any:
    if journalFile is not None and journalFile in _JOURNALS:
        return _JOURNALS.pop(journalFile)
    assert _orig_create_journal is not None
    return _orig_create_journal(journalFile)


def install_journal_hook() -> None:
    """Make pysyncobj take journals from :func:`start` (idempotent). Paths with no
    journal handed over still get pysyncobj's own."""
    global _orig_create_journal
    if _orig_create_journal is None:
        _orig_create_journal = _pso.createJournal
        _pso.createJournal = _create_journal


# -- the SyncObj subclass ----------------------------------------------------------


@dataclass(frozen=True)
class Hooks:
    """What pysyncobj asks the node, all on the tick thread."""

    # Apply one committed command to the state machine; returns its result.
    apply: Callable[[bytes], Any]
    # A tick applied one or more commands (called once, after the last of them).
    applied: Callable[[], None]
    # pysyncobj's leader asks before appending a configuration entry: allowed?
    check_change: Callable[[Any], bool]
    # Make pysyncobj's peer set the latest configuration (a dump was loaded).
    sync_config: Callable[[], None]
    # pysyncobj restarted its election timer (a leader heard, a vote granted, a campaign).
    timer_restarted: Callable[[], None]
    # Whether new proposals wait in the queue (a leadership transfer is finishing).
    hold: Callable[[], bool]
    # The last index of this node's log that is durable (its journal's sync thread).
    durable_index: Callable[[], int]
    # A snapshot received from the leader (the file's path): its last index if this
    # node's log already covers it (not installed: coord.raft.appendfix), None to
    # install it; raises if it does not verify.
    check_snapshot: Callable[[str], int | None]
    # The node's fsync setting: a snapshot received from the leader is synced (file,
    # then directory after the rename) before pysyncobj clears the log for it.
    fsync: bool = True


class _SyncObj(SyncObj):
    """The one replicated entry point. pysyncobj numbers replicated methods by
    sorted name; there is exactly one, so journals never get renumbered."""

    def __init__(self, hooks: Hooks, *args: Any, **kwargs: Any) -> None:
        self._coord = hooks
        self._coord_woken = False
        self._coord_commit_before = 0
        self._coord_refused_snapshot: int | None = None
        # This tick applied entries and left sending the commit index to its drain of
        # the queued commands (see _SyncObj__applyLogEntries).
        self._coord_commit_to_send = False
        super().__init__(*args, **kwargs)

    # A leader counts its own log towards a commit only as far as it is durable: its
    # journal is synced on another thread (coord.raft.journal_sync), so entries it
    # appended may not be yet. pysyncobj counts the leader for every entry it has, in
    # _onTick, and applies right after: the commit index is corrected in between.
    def _onTick(self, timeToWait: float = 0.0) -> None:
        self._coord_commit_before = self._SyncObj__raftCommitIndex
        super()._onTick(timeToWait)

    def _SyncObj__applyLogEntries(self) -> bool:
        # Not only while leading: pysyncobj's leader may step down (leader fallback)
        # between its count and this apply. Within a tick nothing else raises the
        # commit index (messages are handled in the poll, after the apply).
        if self._SyncObj__raftCommitIndex > self._coord_commit_before:
            self._coord_count_self_when_durable()
        last_applied = self._SyncObj__raftLastApplied
        told = self._coord_tell_commit_first(last_applied)
        applied = bool(SyncObj._SyncObj__applyLogEntries(self))
        if self._SyncObj__raftLastApplied != last_applied:
            self._coord.applied()
        if told:
            return False  # the followers have this commit index already
        if applied and self._isLeader() and raft_clock() <= self._SyncObj__newAppendEntriesTime:
            # pysyncobj sends an append-entries to every follower after an apply (the
            # new commit index), and under load this tick's drain of the queued
            # commands sends another right after (among them, those of the clients
            # this apply just answered): two messages, two replies, two follower ticks
            # per follower where one does. The drain, later in this tick, sends one
            # that carries both, or the commit index alone if nothing was queued. (A
            # heartbeat due now goes out anyway, with the commit index: no deferral.)
            self._coord_commit_to_send = True
            return False
        return applied

    def _coord_tell_commit_first(self, last_applied: int) -> bool:
        """Whether this leader sent its followers its new commit index before applying:
        it does when nothing is queued, so they apply (and their watchers hear of it)
        while it applies, not after its apply and its clients' answers. With commands
        queued the drain sends one message carrying both (see above); a heartbeat due
        now carries it anyway."""
        if (
            self._SyncObj__raftCommitIndex <= last_applied
            or not self._isLeader()
            or raft_clock() > self._SyncObj__newAppendEntriesTime
            or self._SyncObj__commandsQueue._FastQueue__queue  # read unlocked: a hint
        ):
            return False
        self._SyncObj__sendAppendEntries()
        return True

    def _coord_count_self_when_durable(self) -> None:
        others = self._SyncObj__otherNodes
        match = self._SyncObj__raftMatchIndex
        commit = durable_commit(
            self._SyncObj__raftCommitIndex,
            self._coord_commit_before,
            self._coord.durable_index(),
            [match.get(node, 0) for node in others],
            self._SyncObj__raftCurrentTerm,
            lambda idx: self._SyncObj__getEntries(idx, 1),
        )
        if commit != self._SyncObj__raftCommitIndex:
            self._SyncObj__raftCommitIndex = commit
            self._SyncObj__leaderCommitIndex = commit
            self._SyncObj__raftLog.setRaftCommitIndex(commit)

    # pysyncobj builds its file serializer as ``self.__serializer = Serializer(...)``:
    # this data descriptor (it wins over the instance attribute) puts the one that
    # writes the dump in a worker thread (coord.raft.background_dump) in its place.
    @property
    def _SyncObj__serializer(self) -> BackgroundSerializer:
        return self._coord_serializer

    @_SyncObj__serializer.setter
    def _SyncObj__serializer(self, _pysyncobjs: Any) -> None:
        conf = self._SyncObj__conf
        self._coord_serializer = BackgroundSerializer(
            conf.fullDumpFile,
            conf.logCompactionBatchSize,
            conf.serializer,
            conf.deserializer,
            self._coord.check_snapshot,
            # A follower being sent a snapshot holds compaction back this far at most.
            defer_entries=max(4 * conf.logCompactionMinEntries, 10_000),
            leading=lambda: bool(self._isLeader()),
            fsync=self._coord.fsync,
        )

    # pysyncobj installs every snapshot it receives completely: it loads the dump and
    # clears the log to its index. One the log already covers was refused (the dump
    # file is still ours): keep the state and the log. pysyncobj then acknowledges at
    # once; the transport makes that "up to the snapshot's last index", all the
    # snapshot vouches for (take_refused_snapshot).
    def _SyncObj__loadDumpFile(self, clearJournal: bool) -> None:
        refused = self._coord_serializer.take_refused() if clearJournal else None
        if refused is not None:
            self._coord_refused_snapshot = refused
            return
        SyncObj._SyncObj__loadDumpFile(self, clearJournal)

    # Membership (coord.raft.membership): the configuration follows the log, kept by
    # the node. pysyncobj's own change/rollback/re-apply calls only ask whether a
    # change is allowed (its leader checks that before appending one).
    def _SyncObj__doChangeCluster(self, request: Any, reverse: bool = False) -> bool:
        return False if reverse else self._coord.check_change(request)

    # pysyncobj asks for an election timeout whenever it restarts its election timer
    # (a leader heard, a vote granted, a campaign): PreVote keeps the timer instead,
    # and pysyncobj's own never expires (coord.raft.prevote). It campaigns only when
    # PreVote, or a leadership transfer, sets its deadline to zero.
    def _SyncObj__generateRaftTimeout(self) -> float:
        self._coord.timer_restarted()
        return NEVER

    def _SyncObj__updateClusterConfiguration(self, newNodes: Any) -> None:
        self._coord.sync_config()  # a dump was loaded: its configuration is the base

    @replicated
    def apply_command(self, data: bytes) -> Any:
        return self._coord.apply(data)

    # Overrides pysyncobj's private ``__deleteEntriesFrom`` (name-mangled): the
    # follower may only truncate at a conflict (see coord.raft.appendfix).
    def _SyncObj__deleteEntriesFrom(self, fromIDx: int) -> None:
        transport = self._SyncObj__transport
        if transport.truncate_from is None or fromIDx != transport.truncate_from:
            return
        SyncObj._SyncObj__deleteEntriesFrom(self, fromIDx)

    # pysyncobj without batching sends one append-entries message per command
    # (each pickled and compressed, per follower), and with batching waits for
    # the next heartbeat. Coalesce instead: take every queued command in one
    # pass, then send one append-entries carrying all of them. Followers then
    # fsync and acknowledge the batch once (group commit end to end).

    def _checkCommandsToApply(self) -> None:
        self._coord_woken = False  # before draining: a later put must wake us again
        commit_to_send, self._coord_commit_to_send = self._coord_commit_to_send, False
        if self._coord.hold():
            # A leadership transfer waits for its target to match the leader's log;
            # under a steady load it never would. Commands wait in the queue and go to
            # the new leader once this node follows (Raft thesis 3.10).
            if commit_to_send and self._isLeader():
                self._SyncObj__sendAppendEntries()
            return
        conf = self.conf
        before = self._SyncObj__raftLog[-1][1]
        conf.appendEntriesUseBatch = True  # suppresses the per-command send
        try:
            super()._checkCommandsToApply()
        finally:
            conf.appendEntriesUseBatch = False
        if self._isLeader() and (commit_to_send or self._SyncObj__raftLog[-1][1] != before):
            self._SyncObj__sendAppendEntries()

    def _applyCommand(self, command: Any, callback: Any, commandType: Any = None) -> None:
        # pysyncobj's own version, except for the wake-up: once per batch, not
        # once per command (a pipe write each). The flag is cleared before the
        # queue is drained, so a command enqueued after the drain wakes it again.
        if commandType is not None:
            command = struct.pack("B", commandType) + command
        try:
            self._SyncObj__commandsQueue.put_nowait((command, callback))
        except queue.Full:
            self._SyncObj__callErrCallback(FAIL_REASON.QUEUE_FULL, callback)
            return
        if not self._coord_woken:
            self._coord_woken = True
            self._SyncObj__pipeNotifier.notify()


# -- the typed surface -------------------------------------------------------------


class SyncObjAdapter:
    """Typed access to one pysyncobj ``SyncObj``: reads and moves its Raft state.

    Stateless: any number of adapters may wrap the same object (the transport
    makes its own while pysyncobj constructs it).
    """

    def __init__(self, so: SyncObj) -> None:
        self._so = so

    # -- role, term, leader ------------------------------------------------------

    @property
    def raft_state(self) -> int:
        """This node's role (``__raftState``): ROLE_FOLLOWER, ROLE_CANDIDATE or ROLE_LEADER."""
        return int(self._so._SyncObj__raftState)

    @property
    def is_leader(self) -> bool:
        """This node leads (possibly alongside a deposed leader that does not know yet)."""
        return self._so._isLeader()

    @property
    def leader(self) -> Any | None:
        """The node this node last knew as leader (``__raftLeader``), itself included."""
        return self._so._getLeader()

    @property
    def current_term(self) -> int:
        """The current term (``__raftCurrentTerm``)."""
        return self._so.raftCurrentTerm

    @property
    def voted_for(self) -> str | None:
        """Whom this node voted for in the current term (``__votedForNodeId``)."""
        voted: str | None = self._so._SyncObj__votedForNodeId
        return voted

    def set_current_term(self, term: int, voted_for: str | None) -> None:
        """Take ``term`` as voted in for ``voted_for``, durably (``__setCurrentTerm``
        writes the journal's term/vote file)."""
        self._so._SyncObj__setCurrentTerm(term, voted_for)

    def forget_leader(self) -> None:
        """Follow no one (``__raftLeader = None``): the known leader led an older term."""
        self._so._SyncObj__raftLeader = None

    # -- log and commit ----------------------------------------------------------

    @property
    def commit_index(self) -> int:
        """The highest index known committed (``__raftCommitIndex``)."""
        return self._so.raftCommitIndex

    @property
    def last_applied(self) -> int:
        """The highest index applied to the state machine (``__raftLastApplied``)."""
        return self._so.raftLastApplied

    @property
    def log(self) -> Sequence[Any]:
        """The Raft log (``__raftLog``, coord's journal): ``(command, index, term)``
        entries, starting at the entry a dump ends with."""
        log: Sequence[Any] = self._so._SyncObj__raftLog
        return log

    def term_at(self, index: int) -> int | None:
        """The term of the log's entry at ``index``; None when the log does not hold it
        (compacted into the dump, or beyond its end)."""
        entries = self._so._SyncObj__getEntries(index, 1)
        return int(entries[0][2]) if entries else None

    @property
    def last_log_index(self) -> int:
        """The index of the last entry in the log (``__getCurrentLogIndex``)."""
        return int(self._so._SyncObj__getCurrentLogIndex())

    @property
    def last_log_term(self) -> int:
        """The term of the last entry in the log (``__getCurrentLogTerm``)."""
        return int(self._so._SyncObj__getCurrentLogTerm())

    # -- peers -------------------------------------------------------------------

    @property
    def self_node(self) -> Any:
        """This node's node object."""
        return self._so.selfNode

    @property
    def other_nodes(self) -> set[Any]:
        """A copy of the voting peer set: pysyncobj replicates to it and counts its
        votes, acknowledgements (commits) and responses (its leader's lease)."""
        return self._so.otherNodes

    @property
    def learner_nodes(self) -> set[Any]:
        """A copy of the learners: pysyncobj's read-only set (``__readonlyNodes``),
        which its leader replicates to (``__sendAppendEntries``, ``__onBecomeLeader``)
        and never counts in a commit index, an election or its lease."""
        nodes: set[Any] = set(self._so._SyncObj__readonlyNodes)
        return nodes

    @property
    def connected_nodes(self) -> frozenset[Any]:
        """The peers with a live, identified link (``__connectedNodes``)."""
        return frozenset(self._so._SyncObj__connectedNodes)

    def is_connected(self, node: Any) -> bool:
        return self._so.isNodeConnected(node)

    def match_index(self, node_id: str) -> int | None:
        """The leader's matchIndex of peer ``node_id`` (``__raftMatchIndex``): how far
        its log is known to match; None for a non-peer. Meaningful on a leader only."""
        for node, idx in list(self._so._SyncObj__raftMatchIndex.items()):
            if node.id == node_id:
                return int(idx)
        return None

    def match_indexes(self) -> list[tuple[Any, int]]:
        """Every voting peer's matchIndex, ``(node, index)`` (a leader's view; learners
        are no leadership candidates)."""
        voters = self._so._SyncObj__otherNodes
        return [
            (n, int(i)) for n, i in list(self._so._SyncObj__raftMatchIndex.items()) if n in voters
        ]

    def replication(self, node: Any) -> tuple[int, int] | None:
        """A leader's ``(nextIndex, matchIndex)`` of ``node``; None for a non-peer."""
        next_index: dict[Any, int] = self._so._SyncObj__raftNextIndex
        if node not in next_index:
            return None
        return next_index[node], self._so._SyncObj__raftMatchIndex[node]

    def set_replication(self, node: Any, next_index: int, match_index: int) -> None:
        """Move a leader's nextIndex/matchIndex of ``node``, and note that it answered
        now (``__lastResponseTime``, which pysyncobj's leader-fallback timeout reads)."""
        self._so._SyncObj__raftNextIndex[node] = next_index
        self._so._SyncObj__raftMatchIndex[node] = match_index
        self._so._SyncObj__lastResponseTime[node] = raft_clock()

    def add_peer(self, node: Any, next_index: int, learner: bool = False) -> None:
        """Replicate to and dial ``node`` (it joined the configuration); count its votes
        and acknowledgements unless it is a ``learner``. A learner is in the transport's
        node set like any member: it connects with its own identity."""
        so = self._so
        (so._SyncObj__readonlyNodes if learner else so._SyncObj__otherNodes).add(node)
        so._SyncObj__raftNextIndex[node] = next_index
        so._SyncObj__raftMatchIndex[node] = 0
        so._SyncObj__lastResponseTime[node] = raft_clock()
        so._SyncObj__transport.addNode(node)

    def remove_peer(self, node: Any) -> None:
        """Stop replicating to, counting and dialling ``node`` (it left the configuration)."""
        so = self._so
        so._SyncObj__transport.progress.forget(node)
        if node in so._SyncObj__otherNodes:
            so._SyncObj__otherNodes.discard(node)
        else:  # a learner
            so._SyncObj__readonlyNodes.discard(node)
        so._SyncObj__raftNextIndex.pop(node, None)
        so._SyncObj__raftMatchIndex.pop(node, None)
        so._SyncObj__lastResponseTime.pop(node, None)
        so._SyncObj__transport.dropNode(node)

    def set_learner(self, node: Any, learner: bool) -> None:
        """Move peer ``node`` between the voters and the learners (a promotion, or its
        entry truncated), keeping its link and its replication progress."""
        so = self._so
        voters, readonly = so._SyncObj__otherNodes, so._SyncObj__readonlyNodes
        (voters.discard if learner else readonly.discard)(node)
        (readonly.add if learner else voters.add)(node)
        so._SyncObj__lastResponseTime.setdefault(node, raft_clock())

    # -- elections ---------------------------------------------------------------

    @property
    def election_deadline(self) -> float:
        """When pysyncobj campaigns (``__raftElectionDeadline``, on :data:`raft_clock`):
        :data:`NEVER` unless PreVote or a leadership transfer moved it."""
        return float(self._so._SyncObj__raftElectionDeadline)

    def set_election_deadline(self, deadline: float) -> None:
        """Move pysyncobj's election deadline; 0.0 makes it campaign at its next tick."""
        self._so._SyncObj__raftElectionDeadline = deadline

    @property
    def transfer_in_progress(self) -> bool:
        """A leader asked this node to campaign (``timeout_now``) and it has not yet
        (``__transferInProgress``)."""
        return bool(self._so._SyncObj__transferInProgress)

    def transfer_leadership(self, node: Any) -> None:
        """Ask ``node`` to campaign now (pysyncobj sends it ``timeout_now``)."""
        self._so.transferLeadership(node)

    # -- proposals (any thread) --------------------------------------------------

    def propose(self, data: bytes, callback: Done) -> None:
        """Queue a command for the state machine; ``callback(result, reason)`` later."""
        cast(Any, self._so).apply_command(data, callback=callback)

    def append_config_entry(self, entry: bytes, callback: Done) -> None:
        """Queue a configuration entry (``coord.raft.membership.encode_change``: type
        byte, then payload); pysyncobj's leader asks :attr:`Hooks.check_change` first."""
        self._so._applyCommand(entry[1:], callback, entry[0])

    # -- lifecycle ---------------------------------------------------------------

    @property
    def transport(self) -> Any:
        """The transport pysyncobj built (``__transport``)."""
        return self._so._SyncObj__transport

    def wait_bound(self) -> None:
        """Wait until the Raft port listens (raises when it cannot bind)."""
        self._so.waitBinded()

    def add_tick_callback(self, callback: Callable[[], None]) -> None:
        self._so.addOnTickCallback(callback)

    def take_refused_snapshot(self) -> int | None:
        """The last index of a snapshot from the leader just refused (the log covers
        it), once; the acknowledgement pysyncobj sends next says only that much."""
        so = cast(Any, self._so)
        refused: int | None = so._coord_refused_snapshot
        so._coord_refused_snapshot = None
        return refused

    def send_heartbeat_soon(self) -> None:
        """A leader sends every follower an append-entries at its next tick, which this
        wakes (``__newAppendEntriesTime``: the next heartbeat is due now)."""
        self._so._SyncObj__newAppendEntriesTime = 0
        self.wake()

    def wake(self) -> None:
        """Any thread: end the tick thread's current poll (a sync finished)."""
        self._so._SyncObj__pipeNotifier.notify()

    def destroy(self) -> None:
        """Stop the tick thread (asynchronously)."""
        self._so.destroy()

    def wait_dump_written(self, timeout: float) -> bool:
        """Wait for a snapshot being written in the background; whether none is now. If
        one still is, it is abandoned (never renamed into place)."""
        serializer = self._so._SyncObj__serializer
        serializer.stop_worker()
        if serializer.wait(timeout):
            return True
        serializer.abandon()
        return False

    def destroy_synchronous(self) -> None:
        """Stop the tick thread and wait for it; the journal is closed."""
        self._so.destroy_synchronous()


def start(
    hooks: Hooks,
    journal_path: str,
    journal: DurableJournal,
    me: Any,
    others: Iterable[Any],
    conf: SyncObjConf,
    transport: Callable[[Any, Any, Any], Any],
) -> SyncObjAdapter:
    """Build and start pysyncobj: its log is ``journal`` (``conf``'s journal file is
    ``journal_path``), its transport ``transport(syncobj, self_node, other_nodes)``."""
    install_journal_hook()
    _JOURNALS[journal_path] = journal
    try:
        # pysyncobj calls ``transportClass(self, selfNode, otherNodes)``: any factory does.
        so = _SyncObj(hooks, me, list(others), conf, transportClass=cast(type, transport))
    finally:
        _JOURNALS.pop(journal_path, None)
    adapter = SyncObjAdapter(so)
    logging.getLogger("pysyncobj.syncobj").addFilter(_VetoedTruncationFilter(adapter))
    return adapter


def build_conf(
    cfg: NodeConfig,
    journal_path: str,
    dump_path: str,
    capture_dump: Callable[[Any], DumpJob],
    deserialize: Callable[[str], Any],
) -> SyncObjConf:
    """pysyncobj's settings for node ``cfg``."""
    t = cfg.timings
    return SyncObjConf(
        password=cfg.cluster_secret or None,
        autoTick=True,
        autoTickPeriod=t.tick_s,
        raftMinTimeout=t.election_timeout_min_s,
        raftMaxTimeout=t.election_timeout_max_s,
        appendEntriesPeriod=t.heartbeat_s,
        connectionTimeout=t.connection_timeout_s,
        connectionRetryTime=t.reconnect_s,
        leaderFallbackTimeout=t.leader_fallback_timeout_s,
        appendEntriesUseBatch=False,
        # pysyncobj's chunked path for entries over this size is broken (it
        # marks the wrong chunk as the last); values are <= 1 MiB, pickled
        # entries ~1.5x that, so no entry ever takes it.
        appendEntriesBatchSizeBytes=8 * 1024 * 1024,
        journalFile=journal_path,
        fullDumpFile=dump_path,
        dynamicMembershipChange=True,
        bindAddress=cfg.bind_raft,
        # pysyncobj's serializer: coord.raft.background_dump's, which calls this.
        serializer=capture_dump,
        deserializer=deserialize,
        logCompactionMinEntries=cfg.log_compaction_entries,
        commandsWaitLeader=True,
        maxBindRetries=30,
        bindRetryTime=0.1,
        tcp_keepalive=(5, 1, 3),
        # Peers named by DNS (Kubernetes pods) come back at new addresses:
        # re-resolve within seconds, not after pysyncobj's 600 s cache.
        dnsCacheTime=5.0,
        dnsFailCacheTime=1.0,
    )


class _VetoedTruncationFilter(logging.Filter):
    """Drop pysyncobj's CRITICAL about truncating applied entries when coord vetoes
    that truncation (no conflict: nothing is deleted, see coord.raft.appendfix)."""

    def __init__(self, raft: SyncObjAdapter) -> None:
        super().__init__()
        self._raft = raft

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("truncating already-applied"):
            return True
        allowed = self._raft.transport.truncate_from
        return allowed is not None and bool(record.args) and record.args[0] == allowed  # type: ignore[index]


# -- TcpConnection internals (coord.raft.transport) ---------------------------------


def peer_host(conn: Any) -> str:
    """The remote IP of a pysyncobj ``TcpConnection`` (its private socket), or ``?``."""
    try:
        return str(conn._TcpConnection__socket.getpeername()[0])
    except (AttributeError, OSError):
        return "?"


def durable_commit(
    proposed: int,
    before: int,
    own_durable: int,
    others_match: Sequence[int],
    term: int,
    entry_at: Callable[[int], Sequence[Any]],
) -> int:
    """The commit index a leader may take this tick.

    pysyncobj ``proposed`` it counting the leader's whole log; here the leader counts
    only up to ``own_durable`` beside its followers' ``others_match``: the highest
    index a majority holds durably, if it is of the current ``term`` (Raft §5.4.2)
    and beyond ``before`` (the commit index at the start of the tick), and never
    beyond ``proposed``.
    """
    held = sorted([own_durable, *others_match], reverse=True)
    quorum = len(held) // 2 + 1
    candidate = min(held[quorum - 1], proposed)
    if candidate <= before:
        return before
    entries = entry_at(candidate)
    if not entries or entries[0][2] != term:
        return before
    return candidate


def listen_backlog(server: Any, backlog: int) -> None:
    """Listen again on a bound pysyncobj ``TcpServer``'s socket (its private
    ``__socket``) with ``backlog`` (Linux updates a listening socket's backlog). A
    server without one (tests' in-memory transport) is left alone."""
    sock = getattr(server, "_TcpServer__socket", None)
    if sock is not None:
        sock.listen(backlog)


def guard_frames(conn: Any, allowed: Callable[[int], bool]) -> None:
    """Before ``conn`` parses a frame, ask ``allowed(announced_size)``; a refused
    frame is not parsed (``allowed`` disconnects). pysyncobj's parser is the private
    ``__processParseMessage``, reading the private ``__readBuffer``."""
    parse = conn._TcpConnection__processParseMessage

    def limited() -> Any:
        buf = conn._TcpConnection__readBuffer
        if len(buf) >= 4:
            (size,) = _FRAME_LEN.unpack_from(buf)
            if not allowed(size):
                return None
        return parse()

    conn._TcpConnection__processParseMessage = limited  # the instance attribute wins


_FRAME_LEN = struct.Struct("i")  # pysyncobj's frame header: the payload length
