"""RaftNode: pysyncobj hardened as DESIGN.md says, around the pure StateMachine.

Threads:
- the pysyncobj tick thread applies committed commands (under ``self.lock``),
  runs :meth:`_on_tick` once per tick (fsync, held acks, views, timers) and
  handles all peer I/O;
- any other thread may call :meth:`propose`, :meth:`barrier`, :meth:`read`,
  :attr:`view` and :meth:`add_listener`. Callbacks to listeners and future
  completions happen on the tick thread: keep them short.

Durability: an entry is acknowledged to the leader, and counted by the leader
itself, only after the journal holding it was fsynced (see
``coord.raft.transport`` and the tick-ordering note in :meth:`_on_tick`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pysyncobj.syncobj as _pso
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.monotonic import monotonic as raft_clock

from coord import errors
from coord.config import NodeConfig
from coord.raft import membership
from coord.raft.gate import VOTER, VotingGate
from coord.raft.journal import DurableJournal
from coord.raft.membership import Change, NodeAddress
from coord.raft.prevote import NEVER, PreVote
from coord.raft.snapshotfile import read_dump, write_dump
from coord.raft.transport import CoordTransport, RoutedNode
from coord.state.machine import StateMachine
from coord.v1 import raft_pb2

logger = logging.getLogger(__name__)

JOURNAL_FILE = "raft.journal"
DUMP_FILE = "raft.dump"

# pysyncobj builds its journal from a module-level factory. Journals are created
# by RaftNode and handed over through this registry, keyed by path.
_JOURNALS: dict[str, DurableJournal] = {}
_orig_create_journal = _pso.createJournal


def _create_journal(journalFile: str | None = None) -> Any:
    if journalFile is not None and journalFile in _JOURNALS:
        return _JOURNALS.pop(journalFile)
    return _orig_create_journal(journalFile)


_pso.createJournal = _create_journal

ROLE_FOLLOWER, ROLE_CANDIDATE, ROLE_LEADER = 0, 1, 2  # pysyncobj's _RAFT_STATE
# A transfer target at most this many entries behind: new proposals wait for it.
TRANSFER_HOLD_LAG = 64

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


ProposeCallback = Callable[[raft_pb2.CommandResult | None, errors.CoordError | None], None]


@dataclass(frozen=True)
class View:
    """What this node believes right now; replaced atomically once per tick."""

    role: int = ROLE_FOLLOWER
    term: int = 0
    leader_id: str = ""
    commit_index: int = 0
    applied_index: int = 0
    connected: frozenset[str] = frozenset()
    has_quorum: bool = False
    log_entries: int = 0
    # Not acknowledging or voting yet: a blank data dir that has not learned the current
    # term from enough members, or not caught up with a leader's log (coord.raft.gate).
    catching_up: bool = False
    # The ids in the latest configuration (coord.raft.membership), and whether this
    # node's own removal from it has committed.
    members: frozenset[str] = frozenset()
    removed: bool = False
    # Heard from the leader within an election timeout (a leader: from a majority).
    leader_alive: bool = False


class _SyncObj(SyncObj):
    """The one replicated entry point. pysyncobj numbers replicated methods by
    sorted name; there is exactly one, so journals never get renumbered."""

    def __init__(
        self,
        apply: Callable[[bytes], Any],
        check_change: Callable[[Any], bool],
        sync_config: Callable[[], None],
        timer_restarted: Callable[[], None],
        hold: Callable[[], bool],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self._coord_apply = apply
        self._coord_hold = hold
        self._coord_timer_restarted = timer_restarted
        self._coord_check_change = check_change
        self._coord_sync_config = sync_config
        self._coord_woken = False
        super().__init__(*args, **kwargs)

    # Membership (coord.raft.membership): the configuration follows the log, kept by
    # RaftNode. pysyncobj's own change/rollback/re-apply calls only ask whether a
    # change is allowed (its leader checks that before appending one).
    def _SyncObj__doChangeCluster(self, request: Any, reverse: bool = False) -> bool:
        return False if reverse else self._coord_check_change(request)

    # pysyncobj asks for an election timeout whenever it restarts its election timer
    # (a leader heard, a vote granted, a campaign): PreVote keeps the timer instead,
    # and pysyncobj's own never expires (coord.raft.prevote). It campaigns only when
    # PreVote, or a leadership transfer, sets its deadline to zero.
    def _SyncObj__generateRaftTimeout(self) -> float:
        self._coord_timer_restarted()
        return NEVER

    def _SyncObj__updateClusterConfiguration(self, newNodes: Any) -> None:
        self._coord_sync_config()  # a dump was loaded: its configuration is the base

    @replicated
    def apply_command(self, data: bytes) -> Any:
        return self._coord_apply(data)

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
        if self._coord_hold():
            # A leadership transfer waits for its target to match the leader's log;
            # under a steady load it never would. Commands wait in the queue and go to
            # the new leader once this node follows (Raft thesis 3.10).
            return
        conf = self.conf
        before = self._SyncObj__raftLog[-1][1]
        conf.appendEntriesUseBatch = True  # suppresses the per-command send
        try:
            super()._checkCommandsToApply()
        finally:
            conf.appendEntriesUseBatch = False
        if self._isLeader() and self._SyncObj__raftLog[-1][1] != before:
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


class RaftNode:
    """One Raft member: proposes commands, applies them to ``state``, reports its view."""

    def __init__(self, cfg: NodeConfig, voting: str = VOTER) -> None:
        self.cfg = cfg
        self.state = StateMachine()
        self.lock = threading.RLock()
        self.started = time.monotonic()
        self.last_tick = self.started  # the tick thread's last pass (healthz)
        self.gate = VotingGate(voting)
        self._view = View(catching_up=True)
        self._listeners: list[Callable[[View], None]] = []
        self._apply_listeners: list[Callable[[], None]] = []
        self._barrier_lock = threading.Lock()
        self._barrier_inflight: tuple[Future[None], float] | None = None
        self._barrier_next: Future[None] | None = None
        self._bootstrap_term = -1
        # Metrics hooks (coord.server.http.metrics), called on the tick thread.
        self.on_apply_latency: Callable[[float], None] | None = None
        self.on_proposal_failed: Callable[[str], None] | None = None

        journal_path = os.path.join(cfg.data_dir, JOURNAL_FILE)
        self._dump_path = os.path.join(cfg.data_dir, DUMP_FILE)
        # The configuration = base (at index base_idx) + the journal's config entries.
        self._initial = {p.id: NodeAddress(p.raft_address, p.api_address) for p in cfg.peers}
        self._base: dict[str, NodeAddress] = dict(self._initial)
        self._base_idx = 0
        if os.path.exists(self._dump_path):
            dump = read_dump(self._dump_path)  # refuse to start on a corrupt snapshot
            self._set_base(dump.members, dump.node_ids, dump.last[1])
        self.journal = DurableJournal(journal_path, fsync=cfg.fsync)
        _JOURNALS[journal_path] = self.journal
        self._config: dict[str, NodeAddress] = dict(
            membership.apply_changes(self._base, self.journal.config_entries(), self._base_idx)
        )
        self._transfer: _Transfer | None = None
        self._removed_by_peer = False
        self._next_ping = 0.0
        self._next_term_probe = 0.0

        # One route table for every node object: id -> dial address.
        self._routes: dict[str, str] = {}
        self._update_routes()
        others = [RoutedNode(nid, self._routes) for nid in self._config if nid != cfg.node_id]
        me = RoutedNode(cfg.node_id, self._routes)
        transport_cls = type(
            "BoundCoordTransport",
            (CoordTransport,),
            {
                "cluster_id": cfg.cluster_id,
                "is_durable": staticmethod(lambda: not self.journal.dirty),
                "on_peer_disconnected": staticmethod(self._on_peer_disconnected),
            },
        )
        t = cfg.timings
        conf = SyncObjConf(
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
            fullDumpFile=self._dump_path,
            dynamicMembershipChange=True,
            bindAddress=cfg.bind_raft,
            serializer=self._serialize,
            deserializer=self._deserialize,
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
        self._so = _SyncObj(
            self._apply,
            self._check_change_request,
            self._sync_config,
            self._election_timer_restarted,
            self._holding_for_transfer,
            me,
            others,
            conf,
            transportClass=transport_cls,
        )
        self.journal.on_config_change = self._sync_config
        self._transport: CoordTransport = self._so._SyncObj__transport
        try:
            self._so.waitBinded()  # retries every 0.1 s, 30 times (a port in TIME_WAIT, say)
        except Exception:
            self._so.destroy()
            raise errors.Unavailable(
                f"cannot listen on {cfg.bind_raft} for Raft traffic: is another process "
                "using the port?"
            ) from None
        self._prevote = PreVote(
            self._so,
            self._transport.send_now,
            (t.election_timeout_min_s, t.election_timeout_max_s),
            gate=self.gate,
            may_campaign=self._may_campaign,
        )
        self._transport.prevote = self._prevote
        self._transport.gate = self.gate
        logging.getLogger("pysyncobj.syncobj").addFilter(_VetoedTruncationFilter(self._transport))
        self._so.addOnTickCallback(self._on_tick)

    # -- apply (tick thread) ---------------------------------------------------

    def _apply(self, data: bytes) -> raft_pb2.CommandResult:
        t0 = time.perf_counter()
        with self.lock:
            result = self.state.apply(data)
        if self.on_apply_latency is not None:
            self.on_apply_latency(time.perf_counter() - t0)
        for fn in self._apply_listeners:
            fn()
        return result

    def add_apply_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` on the tick thread after every applied command: keep it tiny."""
        self._apply_listeners.append(fn)

    # -- proposals (any thread) ------------------------------------------------

    def propose_cb(self, cmd: raft_pb2.Command, callback: ProposeCallback) -> None:
        """Replicate ``cmd``; ``callback(result, None)`` once applied here, or
        ``callback(None, error)``. Called on the tick thread, at most once."""
        if not cmd.time_ms:
            cmd.time_ms = int(time.time() * 1000)

        def done(result: Any, err: int) -> None:
            if err == FAIL_REASON.SUCCESS:
                callback(result, None)
                return
            error = _FAIL_TO_ERROR.get(err, _unknown_failure)()
            if self.on_proposal_failed is not None:
                self.on_proposal_failed(error.reason)
            callback(None, error)

        self._so.apply_command(cmd.SerializeToString(), callback=done)

    def propose(self, cmd: raft_pb2.Command) -> Future[raft_pb2.CommandResult]:
        """Replicate ``cmd``; the future resolves with its CommandResult once applied here."""
        fut: Future[raft_pb2.CommandResult] = Future()

        def done(result: raft_pb2.CommandResult | None, err: errors.CoordError | None) -> None:
            if not fut.set_running_or_notify_cancel():
                return
            if err is None:
                fut.set_result(result)  # type: ignore[arg-type]
            else:
                fut.set_exception(err)

        self.propose_cb(cmd, done)
        return fut

    def barrier(self) -> Future[None]:
        """Resolves once a no-op proposed after this call has committed and applied here.

        Concurrent callers share barriers: at most one is in flight, and callers
        arriving meanwhile share the next one (proposed after they arrived).
        Each caller gets its own future, so cancelling it affects no one else.
        """
        with self._barrier_lock:
            if self._barrier_inflight is None:
                shared: Future[None] = Future()
                self._barrier_inflight = (shared, time.monotonic())
                start = True
            else:
                if self._barrier_next is None:
                    self._barrier_next = Future()
                shared, start = self._barrier_next, False
        mine: Future[None] = Future()

        def relay(src: Future[None]) -> None:
            if mine.set_running_or_notify_cancel():
                exc = src.exception()
                if exc is None:
                    mine.set_result(None)
                else:
                    mine.set_exception(exc)

        shared.add_done_callback(relay)
        if start:
            self._start_barrier(shared)
        return mine

    def _start_barrier(self, fut: Future[None]) -> None:
        def done(res: Future[raft_pb2.CommandResult]) -> None:
            exc = res.exception()
            self._finish_barrier(fut, exc if isinstance(exc, errors.CoordError) else None)

        self.propose(raft_pb2.Command(noop=raft_pb2.Noop())).add_done_callback(done)

    def _finish_barrier(self, fut: Future[None], exc: errors.CoordError | None) -> None:
        with self._barrier_lock:
            if self._barrier_inflight is None or self._barrier_inflight[0] is not fut:
                return
            nxt = self._barrier_next
            self._barrier_next = None
            self._barrier_inflight = (nxt, time.monotonic()) if nxt is not None else None
        if not fut.done():
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)
        if nxt is not None:
            self._start_barrier(nxt)

    # -- reads (any thread) ----------------------------------------------------

    def read(self, fn: Callable[[StateMachine], Any]) -> Any:
        """Run ``fn(state)`` under the apply lock: a consistent view of the state."""
        with self.lock:
            return fn(self.state)

    @property
    def view(self) -> View:
        return self._view

    def add_listener(self, fn: Callable[[View], None]) -> None:
        """Call ``fn(view)`` (on the tick thread) whenever leader, term or role changes."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[View], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(fn)

    def close(self) -> None:
        self._so.destroy_synchronous()

    # -- tick thread -----------------------------------------------------------

    def _on_tick(self) -> None:
        # Runs after this tick's elections, commits, applies and new proposals,
        # and before the poll that receives the next acknowledgements: entries
        # the leader appended are durable before any ack for them is counted.
        self.last_tick = time.monotonic()
        self.journal.sync()
        self._transport.flush_held()
        self._learn_term()
        self._update_catch_up()
        self._prevote.on_tick()
        self._update_view()
        self._maybe_bootstrap()
        self._check_barrier_timeout()
        self._drive_transfer()
        self._ping_peers()
        self._transport.close_idle_unidentified(self.cfg.timings.connection_timeout_s)

    def _ping_peers(self) -> None:
        """Keep follower-to-follower links alive. They carry nothing between elections,
        and pysyncobj closes a link that read nothing for a connection timeout the next
        time it sends on it: a candidate's first vote request to each other follower was
        dropped, so an election without PreVote (a leadership transfer) needed a second
        round, or never won in a 5-node cluster."""
        now = time.monotonic()
        if now < self._next_ping:
            return
        self._next_ping = now + self.cfg.timings.connection_timeout_s / 3
        if self._view.role == ROLE_LEADER:
            return  # its appends and their acks keep its links alive
        for node in list(self._so._SyncObj__otherNodes):
            self._transport.send_now(node, {"type": "coord_ping"})

    def _learn_term(self) -> None:
        """A blank node asks its peers for their terms until it may take one
        (coord.raft.gate); it acknowledges, votes and campaigns only then."""
        gate, so = self.gate, self._so
        if so._isLeader():
            gate.counted()  # its own log counts towards its commits
        if gate.term_known:
            return
        me = self.cfg.node_id
        term = gate.learn([self._initial.keys(), self._config.keys()], me)
        if term is None:
            now = time.monotonic()
            if not self._next_term_probe:
                logger.info(
                    "blank data dir: acknowledging no append, voting for no one, until the "
                    "current term is known from enough of %s",
                    sorted(set(self._initial) | set(self._config)),
                )
            if now >= self._next_term_probe:
                self._next_term_probe = now + self.cfg.timings.reconnect_s
                for node in list(so._SyncObj__otherNodes):
                    if node.id not in gate.answers:
                        self._transport.send_now(node, {"type": "coord_term_probe"})
            return
        current = so.raftCurrentTerm
        # Taken as already voted in: before the wipe this node may have voted in it.
        if term > current:
            so._SyncObj__setCurrentTerm(term, me)
            so._SyncObj__raftLeader = None  # whoever it followed leads an older term
        elif term == current and so._SyncObj__votedForNodeId is None:
            so._SyncObj__setCurrentTerm(term, me)

    def _update_catch_up(self) -> None:
        # (Not campaigning while catching up, or when not a member, is PreVote's part:
        # it asks _may_campaign.)
        if self.cfg.node_id not in self._config:
            return
        if self.gate.is_voter or self.gate.update(self.journal[-1][1]):
            return
        if self._so._isLeader():
            # A blank node elected (bootstrap): the majority that voted vouches for its
            # log. No leader will ever send it a commit index: it would never vote.
            self.gate.leader_commit(self.journal[-1][1])

    def _update_view(self) -> None:
        so = self._so
        leader = so._getLeader()
        connected = frozenset(n.id for n in so._SyncObj__connectedNodes)
        config = self._config
        peers = {nid for nid in config if nid != self.cfg.node_id}
        view = View(
            role=so._SyncObj__raftState,
            term=so.raftCurrentTerm,
            leader_id=leader.id if leader is not None else "",
            commit_index=so.raftCommitIndex,
            applied_index=so.raftLastApplied,
            connected=connected,
            has_quorum=(len(connected & peers) + 1) * 2 > len(peers) + 1,
            log_entries=len(self.journal),
            catching_up=not (self.gate.is_voter and self.gate.term_known),
            members=frozenset(config),
            removed=self._removal_committed(so.raftCommitIndex),
            leader_alive=self._prevote.leader_is_alive(),
        )
        old, self._view = self._view, view
        if view.removed and not old.removed:
            logger.warning("this node was removed from the cluster: it no longer votes or serves")
        if (old.leader_id, old.term, old.role, old.members, old.removed) != (
            view.leader_id,
            view.term,
            view.role,
            view.members,
            view.removed,
        ):
            if view.leader_id != old.leader_id:
                logger.info("leader is now %r (term %d)", view.leader_id or None, view.term)
            for fn in list(self._listeners):
                try:
                    fn(view)
                except Exception:
                    logger.exception("leader listener failed")

    def _maybe_bootstrap(self) -> None:
        view = self._view
        if view.role != ROLE_LEADER or self._bootstrap_term == view.term:
            return
        if view.applied_index < view.commit_index or self.state.cluster_id:
            return
        self._bootstrap_term = view.term
        ids = [p.id for p in self.cfg.peers]
        self.propose(
            raft_pb2.Command(
                bootstrap=raft_pb2.Bootstrap(cluster_id=self.cfg.cluster_id, node_ids=ids)
            )
        )

    def _check_barrier_timeout(self) -> None:
        inflight = self._barrier_inflight
        if inflight is not None and time.monotonic() - inflight[1] > self.cfg.request_timeout_s:
            self._finish_barrier(
                inflight[0], errors.Unavailable("read barrier timed out: no quorum? retry")
            )

    def _on_peer_disconnected(self, node: Any) -> None:
        """The link to the leader dropped: campaign soon instead of after a full timeout.

        Survivors go in the order of their ids, ``fast_election_s`` apart, so
        they rarely split the vote.
        """
        # Runs on the tick thread, inside pysyncobj's message handling: read its
        # live state (the View is a tick old) and move PreVote's deadline right
        # away, so that a vote granted later in this poll resets it as usual.
        so = self._so
        leader = so._getLeader()
        if not self.gate.may_campaign() or so._isLeader() or leader is None or node.id != leader.id:
            return
        if node.id not in self._view.connected:
            return  # a failed redial, not a link that dropped
        survivors = sorted(nid for nid in self._config if nid != node.id)
        if self.cfg.node_id not in survivors:
            return
        rank = survivors.index(self.cfg.node_id)
        delay = rank * self.cfg.timings.fast_election_s
        delay += random.uniform(0, self.cfg.timings.tick_s)
        # pysyncobj's deadlines use CLOCK_MONOTONIC_RAW, not time.monotonic().
        if self._prevote.hurry(raft_clock() + delay):
            logger.info("lost the link to leader %s: campaigning in %.0f ms", node.id, 1000 * delay)

    # -- membership ------------------------------------------------------------

    def _set_base(
        self, members: dict[str, dict[str, str]] | None, node_ids: tuple[str, ...], idx: int
    ) -> None:
        if members is not None:
            base = membership.from_json(members)
        else:  # a dump from before membership changes: the bootstrap members
            base = {nid: self._initial[nid] for nid in node_ids if nid in self._initial}
        if base:
            self._base, self._base_idx = base, idx

    def _update_routes(self) -> None:
        overrides = self.cfg.raft_routes
        for nid, addr in self._config.items():
            self._routes[nid] = overrides.get(nid, addr.raft)
        self._routes[self.cfg.node_id] = self.cfg.bind_raft

    def _sync_config(self) -> None:
        """Make pysyncobj's peer set the latest configuration in the log (tick thread)."""
        config = dict(
            membership.apply_changes(self._base, self.journal.config_entries(), self._base_idx)
        )
        if config != self._config:
            logger.info(
                "cluster configuration: %s", ", ".join(f"{k}={v.raft}" for k, v in config.items())
            )
        self._config = config
        self._update_routes()
        so = getattr(self, "_so", None)  # a dump may load before the constructor returned
        if so is None:
            return
        me = self.cfg.node_id
        others: set[Any] = so._SyncObj__otherNodes
        current = {n.id: n for n in others}
        progress = so._SyncObj__transport.progress
        for nid in current.keys() - config.keys():
            node = current[nid]
            progress.forget(node)
            others.discard(node)
            so._SyncObj__raftNextIndex.pop(node, None)
            so._SyncObj__raftMatchIndex.pop(node, None)
            so._SyncObj__lastResponseTime.pop(node, None)
            self._transport.dropNode(node)
        for nid in sorted(config.keys() - current.keys() - {me}):
            node = RoutedNode(nid, self._routes)
            others.add(node)
            # (The journal is empty while a snapshot from the leader is being installed.)
            last = self.journal[-1][1] if len(self.journal) else self._base_idx
            so._SyncObj__raftNextIndex[node] = last + 1
            so._SyncObj__raftMatchIndex[node] = 0
            so._SyncObj__lastResponseTime[node] = raft_clock()
            self._transport.addNode(node)

    def _holding_for_transfer(self) -> bool:
        t = self._transfer
        return (
            t is not None
            and t.hold
            and not t.fut.done()
            and time.monotonic() < t.deadline
            and self._view.role == ROLE_LEADER
        )

    def _may_campaign(self) -> bool:
        return self.gate.may_campaign() and self.cfg.node_id in self._config

    def _election_timer_restarted(self) -> None:
        # pysyncobj arms its timer in its constructor, before PreVote exists (PreVote
        # starts with a fresh timer of its own).
        prevote: PreVote | None = getattr(self, "_prevote", None)
        if prevote is not None:
            prevote.restart_timer()

    def _pending_change(self) -> int | None:
        """The index of a configuration entry not committed yet, if any."""
        entries = self.journal.config_entries()
        commit = self._so.raftCommitIndex
        return entries[-1][0] if entries and entries[-1][0] > commit else None

    def change_pending(self) -> bool:
        return self._pending_change() is not None

    def check_no_pending_change(self) -> None:
        pending = self._pending_change()
        if pending is not None:
            raise errors.FailedPrecondition(
                f"another membership change (log index {pending}) has not committed yet: "
                "one change at a time; wait for it (is a majority of the new configuration "
                "up?) and retry"
            )

    def mark_removed(self, why: str) -> None:
        """A leader's committed configuration no longer has this node (the leader stops
        replicating to a removed node at once, so it may never see its own removal)."""
        if not self._removed_by_peer:
            logger.warning("removed from the cluster: %s", why)
        self._removed_by_peer = True

    def _removal_committed(self, commit_index: int) -> bool:
        if self._removed_by_peer:
            return True
        # Only an explicit, committed removal counts: a node that joins gets a leader's
        # snapshot from before its addition first, and is not in that configuration.
        me = self.cfg.node_id
        if me in self._config:
            return False
        for idx, command in self.journal.config_entries():
            change = membership.decode_change(command)
            if change is not None and change.op == membership.REMOVE and change.node_id == me:
                return idx <= commit_index
        return False

    def _check_change_request(self, request: Any) -> bool:
        """pysyncobj's leader asks before appending a configuration entry (tick thread)."""
        try:
            change = membership.change_from_request(request)
        except (ValueError, KeyError, TypeError):
            return False
        if change is None or self._pending_change() is not None:
            return False
        return membership.check_change(self._config, change, self.cfg.node_id) is None

    def members(self) -> dict[str, NodeAddress]:
        """The latest configuration: node id -> addresses."""
        return dict(self._config)

    def api_address(self, node_id: str) -> str:
        addr = self._config.get(node_id) or self._initial.get(node_id)
        return addr.api if addr is not None else ""

    def match_index(self, node_id: str) -> int | None:
        """The leader's view of how far ``node_id``'s log matches (None off the leader)."""
        if self._view.role != ROLE_LEADER:
            return None
        if node_id == self.cfg.node_id:
            return int(self.journal[-1][1])
        for node, idx in list(self._so._SyncObj__raftMatchIndex.items()):
            if node.id == node_id:
                return int(idx)
        return None

    def change_membership(self, change: Change) -> Future[None]:
        """Append a configuration change (on the leader); resolves once it committed.

        One change at a time: a change while another is uncommitted is refused.
        """
        fut: Future[None] = Future()
        if self._view.role != ROLE_LEADER:
            fut.set_exception(errors.NotLeader("membership changes run on the leader"))
            return fut
        try:
            self.check_no_pending_change()
        except errors.FailedPrecondition as e:
            fut.set_exception(e)
            return fut
        reason = membership.check_change(self._config, change, self.cfg.node_id)
        if reason is not None:
            fut.set_exception(errors.FailedPrecondition(reason))
            return fut

        def done(result: Any, err: int) -> None:
            if not fut.set_running_or_notify_cancel():
                return
            if err == FAIL_REASON.SUCCESS:
                fut.set_result(None)
            elif err == FAIL_REASON.REQUEST_DENIED:
                why = membership.check_change(self._config, change, self.cfg.node_id)
                fut.set_exception(
                    errors.FailedPrecondition(
                        why
                        or "refused: another membership change is in progress, or the "
                        "leader has not committed an entry of its term yet; retry"
                    )
                )
            else:
                fut.set_exception(_FAIL_TO_ERROR.get(err, _unknown_failure)())

        self._so._applyCommand(
            membership.encode_change(change)[1:], done, membership.MEMBERSHIP_TYPE
        )
        return fut

    # -- leadership transfer ---------------------------------------------------

    def transfer_leadership(self, target: str | None, timeout_s: float) -> Future[str]:
        """Hand leadership to ``target`` (or the most caught-up member); resolves with
        the new leader's id once this node sees it lead."""
        fut: Future[str] = Future()
        if self._view.role != ROLE_LEADER:
            fut.set_exception(errors.NotLeader("leadership transfer runs on the leader"))
            return fut
        if target is not None:
            if target == self.cfg.node_id:
                fut.set_result(target)
                return fut
            if target not in self._config:
                fut.set_exception(
                    errors.NotFound(
                        f"node {target!r} is not a member (members: {sorted(self._config)})"
                    )
                )
                return fut
        with self._barrier_lock:
            if self._transfer is not None and not self._transfer.fut.done():
                fut.set_exception(
                    errors.FailedPrecondition("a leadership transfer is already in progress")
                )
                return fut
            self._transfer = _Transfer(target, time.monotonic() + timeout_s, fut)
        return fut

    def _drive_transfer(self) -> None:
        t = self._transfer
        if t is None or t.fut.done():
            return
        view = self._view
        if view.leader_id and view.leader_id != self.cfg.node_id:
            if t.target is None or view.leader_id == t.target:
                t.fut.set_result(view.leader_id)
            else:
                t.fut.set_exception(
                    errors.Unavailable(
                        f"leadership went to {view.leader_id}, not {t.target}: retry the transfer"
                    )
                )
            return
        now = time.monotonic()
        if now > t.deadline:
            t.fut.set_exception(
                errors.Unavailable(
                    "the leadership transfer did not complete in time (target down or "
                    "lagging?): the leader is unchanged, retry"
                )
            )
            return
        if view.role != ROLE_LEADER or now < t.next_try:
            return
        so = self._so
        last = self.journal[-1][1]
        connected = so._SyncObj__connectedNodes
        candidates = [
            (idx, node.id, node)
            for node, idx in so._SyncObj__raftMatchIndex.items()
            if node in connected and (t.target is None or node.id == t.target)
        ]
        # Close enough: hold new proposals so that the target can match (see
        # _checkCommandsToApply); a far-behind target catches up with writes flowing.
        t.hold = any(c[0] >= last - TRANSFER_HOLD_LAG for c in candidates)
        ready = [c for c in candidates if c[0] == last]
        if not ready:
            return  # wait for the target to catch up (appends go out every heartbeat)
        node = max(ready)[2]
        logger.info("transferring leadership to %s (term %d)", node.id, view.term)
        so.transferLeadership(node)
        # Not answered within an election timeout (a lost message, a dead target): again.
        t.next_try = now + self.cfg.timings.election_timeout_max_s * 2

    # -- snapshots (tick thread) -----------------------------------------------

    def _serialize(self, filename: str, raft_data: Any) -> None:
        last, prev, _cluster = raft_data
        with self.lock:
            state = self.state.snapshot()
        # The configuration at the snapshot's index (pysyncobj's ``_cluster`` is the
        # latest one, later uncommitted changes included).
        idx = int(last[1])
        at = membership.apply_changes(
            self._base, [e for e in self.journal.config_entries() if e[0] <= idx], self._base_idx
        )
        write_dump(
            filename,
            state,
            tuple(last),
            tuple(prev),
            sorted(at),
            fsync=self.cfg.fsync,
            members=membership.to_json(at),
        )
        if idx >= self._base_idx:
            # Entries up to idx may now be compacted away: fold them into the base.
            self._base, self._base_idx = dict(at), idx

    def _deserialize(self, filename: str) -> Any:
        try:
            dump = read_dump(filename, fsync=self.cfg.fsync)
            with self.lock:
                self.state.restore(dump.state)
            self._set_base(dump.members, dump.node_ids, dump.last[1])
        except Exception:
            # pysyncobj would log and go on with a stale state machine: a replica
            # that silently diverged. Stop instead; a restart reloads cleanly.
            logger.critical("cannot load the Raft snapshot %s: exiting", filename, exc_info=True)
            os._exit(70)
        return dump.last, dump.prev, set(dump.node_ids)


@dataclass
class _Transfer:
    target: str | None
    deadline: float
    fut: Future[str]
    next_try: float = 0.0
    hold: bool = False


class _VetoedTruncationFilter(logging.Filter):
    """Drop pysyncobj's CRITICAL about truncating applied entries when coord vetoes
    that truncation (no conflict: nothing is deleted, see coord.raft.appendfix)."""

    def __init__(self, transport: CoordTransport) -> None:
        super().__init__()
        self._transport = transport

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("truncating already-applied"):
            return True
        allowed = self._transport.truncate_from
        return allowed is not None and bool(record.args) and record.args[0] == allowed  # type: ignore[index]


def _unknown_failure() -> errors.CoordError:
    return errors.OutcomeUnknown("the write failed for an unknown reason: retry")
