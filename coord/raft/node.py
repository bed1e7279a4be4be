"""RaftNode: pysyncobj hardened as docs/design.md says, around the pure StateMachine.

The node wires the parts together; each lives in a module of its own:
pysyncobj itself behind ``coord.raft.syncobj_adapter``, the fsync journal
(``coord.raft.journal``), the routed transport (``coord.raft.transport``),
PreVote (``coord.raft.prevote``), the voting gate of a blank node
(``coord.raft.gate``), the configuration in use (``coord.raft.membership``),
leadership transfer (``coord.raft.transfer``) and read barriers
(``coord.raft.read_barrier``; a leader's confirmed by heartbeats,
``coord.raft.read_index``). Like hashicorp/raft's ``NewRaft(conf, fsm, ...)``
it is given the state machine it replicates.

Threads:
- the pysyncobj tick thread applies committed commands (under ``self.lock``),
  runs :meth:`_on_tick` once per tick (fsync, held acks, views, timers) and
  handles all peer I/O;
- any other thread may call :meth:`propose`, :meth:`barrier`, :meth:`read`,
  :attr:`view` and :meth:`add_listener`. Callbacks to listeners and future
  completions happen on the tick thread: keep them short.

Durability: an entry is acknowledged to the leader, and counted by the leader
itself, only after the journal holding it was fsynced. The fsync runs on a
thread of its own (``coord.raft.journal_sync``); acknowledgements wait for it
in the transport (``coord.raft.transport``) and the leader's commit count in
``coord.raft.syncobj_adapter.durable_commit``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from coord import errors
from coord.config import NodeConfig
from coord.raft import appendfix, syncobj_adapter
from coord.raft.gate import VOTER, VotingGate
from coord.raft.journal import DurableJournal
from coord.raft.journal_sync import JournalSyncer
from coord.raft.membership import (
    PROMOTE,
    PROMOTE_MAX_LAG,
    Change,
    Membership,
    NodeAddress,
    check_promotion,
    check_quorum_after,
    dump_voters,
    to_json,
    voters,
)
from coord.raft.prevote import PreVote
from coord.raft.read_barrier import ReadBarrier
from coord.raft.read_index import ReadIndex
from coord.raft.snapshotfile import Dump, Entry, read_dump, write_dump
from coord.raft.syncobj_adapter import SUCCESS, Hooks, SyncObjAdapter, raft_clock
from coord.raft.transfer import LeadershipTransfer
from coord.raft.transport import CoordTransport, RoutedNode
from coord.raft.view import ROLE_CANDIDATE, ROLE_FOLLOWER, ROLE_LEADER, View
from coord.state.machine import StateCapture, StateMachine
from coord.v1 import raft_pb2

__all__ = [
    "DUMP_FILE",
    "JOURNAL_FILE",
    "ROLE_CANDIDATE",
    "ROLE_FOLLOWER",
    "ROLE_LEADER",
    "ProposeCallback",
    "RaftNode",
    "View",
]

logger = logging.getLogger(__name__)

JOURNAL_FILE = "raft.journal"
DUMP_FILE = "raft.dump"

ProposeCallback = Callable[[raft_pb2.CommandResult | None, errors.CoordError | None], None]


class RaftNode:
    """One Raft member: proposes commands, applies them to ``state``, reports its view."""

    def __init__(
        self,
        cfg: NodeConfig,
        state: StateMachine,
        voting: str = VOTER,
        transport_factory: Callable[..., CoordTransport] | None = None,
    ) -> None:
        """Open the log in ``cfg.data_dir`` and start replicating ``state`` (a fresh
        StateMachine: a snapshot or the log fills it). ``voting``: the gate's mode.
        ``transport_factory``: builds the peer transport, called as :class:`CoordTransport`
        is (default: it, over TCP); tests pass an in-memory one (tests/inproc/memory_raft.py)."""
        self._transport_factory = transport_factory or CoordTransport
        self.cfg = cfg
        self.state = state
        self.lock = threading.RLock()
        self.started = time.monotonic()
        self.last_tick = self.started  # the tick thread's last pass (healthz)
        self.gate = VotingGate(voting)
        self._view = View(catching_up=True)
        self._listeners: list[Callable[[View], None]] = []
        self._apply_listeners: list[Callable[[], None]] = []
        self._bootstrap_term = -1
        self._next_ping = 0.0
        self._next_term_probe = 0.0
        self._next_auto_promote = 0.0
        # Metrics hooks (coord.server.http.metrics), called on the tick thread.
        self.on_apply_latency: Callable[[float], None] | None = None
        self.on_tick_gap: Callable[[float], None] | None = None
        self._late_ticks = 0  # a leader's late heartbeats not yet in a warning
        self._next_late_warning = 0.0
        self.on_proposal_failed: Callable[[str], None] | None = None
        self._barrier = ReadBarrier(self._start_barrier, cfg.request_timeout_s)
        # Barriers to begin on the tick thread (a read index round or a no-op).
        self._barrier_starts: queue.SimpleQueue[Callable[[errors.CoordError | None], None]] = (
            queue.SimpleQueue()
        )
        self._noop_barriers = 0  # no-op entries proposed as barriers (a metric)
        self._transfer = LeadershipTransfer(cfg.node_id, cfg.timings.election_timeout_max_s * 2)
        self._syncer: JournalSyncer | None = None  # with fsync: the journal's sync thread
        self._open_log()
        self._raft = self._start_raft()
        self._transport: CoordTransport = self._raft.transport
        self._read_index = ReadIndex(self._raft, cfg.request_timeout_s, self._noop_barrier)
        self._transport.read_index = self._read_index
        self._prevote = PreVote(
            self._raft,
            self._transport.send_now,
            (cfg.timings.election_timeout_min_s, cfg.timings.election_timeout_max_s),
            gate=self.gate,
            may_campaign=self._may_campaign,
            split_retry_s=cfg.timings.fast_election_s,
        )
        self._transport.prevote = self._prevote
        self._transport.gate = self.gate
        self._raft.add_tick_callback(self._on_tick)

    def _open_log(self) -> None:
        """The dump (if any), then the journal, then the configuration they hold."""
        cfg = self.cfg
        self._journal_path = os.path.join(cfg.data_dir, JOURNAL_FILE)
        self._dump_path = os.path.join(cfg.data_dir, DUMP_FILE)
        dump = None
        if os.path.exists(self._dump_path):
            # Refuse to start on a corrupt snapshot. fsync: pysyncobj renames a snapshot
            # received from the leader without one, and the journal prefix it covers is
            # about to go (_drop_entries_the_dump_covers).
            dump = read_dump(self._dump_path, fsync=cfg.fsync)
        self.journal = DurableJournal(self._journal_path, fsync=cfg.fsync)
        self.membership = Membership(
            cfg.node_id,
            {
                p.id: NodeAddress(p.raft_address, p.api_address, learner=p.learner)
                for p in cfg.peers
            },
            self.journal,
            cfg.bind_raft,
            cfg.raft_routes,
        )
        if dump is not None:
            self._drop_entries_the_dump_covers(dump)
            self.membership.set_base(dump.members, dump.node_ids, dump.last[1])
        self.membership.recompute(log_change=False)
        self.gate.learner = self.cfg.node_id in self.membership.config and not (
            self.membership.is_voter(self.cfg.node_id)
        )

    def _drop_entries_the_dump_covers(self, dump: Dump) -> None:
        """A node stopped between writing a dump and deleting the entries it covers (the
        worker renames, the next tick deletes) has a journal that begins before the
        dump. pysyncobj, loading the dump, keeps the journal only if it begins exactly
        with the dump's last two entries, and otherwise clears it: the entries after
        the dump too, acknowledged ones among them. Delete the covered prefix here, so
        that it begins there."""
        log = self.journal
        for pos in range(len(log) - 1):
            if log[pos][1] == dump.prev[1]:
                if pos > 0 and tuple(log[pos]) == dump.prev and tuple(log[pos + 1]) == dump.last:
                    log.deleteEntriesTo(pos)
                return

    def _start_raft(self) -> SyncObjAdapter:
        cfg, routes = self.cfg, self.membership.routes
        hooks = Hooks(
            apply=self._apply,
            applied=self._applied,
            check_change=self._check_change_request,
            sync_config=self._sync_config,
            timer_restarted=self._election_timer_restarted,
            hold=self._holding_for_transfer,
            durable_index=lambda: self.journal.durable_index,
            check_snapshot=self._check_snapshot,
            fsync=cfg.fsync,
        )
        transport = functools.partial(
            self._transport_factory,
            cluster_id=cfg.cluster_id,
            journal=self.journal,
            on_peer_disconnected=self._on_peer_disconnected,
        )
        conf = syncobj_adapter.build_conf(
            cfg, self._journal_path, self._dump_path, self._capture_dump, self._deserialize
        )
        others = [RoutedNode(n, routes) for n in self.membership.voters() if n != cfg.node_id]
        me = RoutedNode(cfg.node_id, routes)
        raft = syncobj_adapter.start(
            hooks, self._journal_path, self.journal, me, others, conf, transport
        )
        self._sync_learners(raft)
        self.journal.on_config_change = self._sync_config
        self.journal.on_write_failed = self._journal_write_failed
        if cfg.fsync:
            self._syncer = JournalSyncer(self.journal, raft.wake, self._journal_sync_failed)
            self.journal.on_destroy = self._syncer.close
        try:
            raft.wait_bound()  # retries every 0.1 s, 30 times (a port in TIME_WAIT, say)
        except Exception:
            raft.destroy()
            raise errors.Unavailable(
                f"cannot listen on {cfg.bind_raft} for Raft traffic: is another process "
                "using the port?"
            ) from None
        return raft

    # -- apply (tick thread) ---------------------------------------------------

    def _apply(self, data: bytes) -> raft_pb2.CommandResult:
        t0 = time.perf_counter()
        with self.lock:
            result = self.state.apply(data)
        if self.on_apply_latency is not None:
            self.on_apply_latency(time.perf_counter() - t0)
        return result

    def _applied(self) -> None:
        # After the tick's last apply, not after each: a listener wakes the event loop
        # (a write to its self-pipe), which then takes the GIL from the tick thread for
        # as long as it runs. Inside the apply that stalled the rest of the batch, the
        # callbacks that answer clients included (a put's apply took ~170 us in a trace
        # of one node under one client, ~60 after). A listener that raises is logged:
        # the rest of the tick (or of a snapshot install, whose log reset pysyncobj
        # would skip) goes on.
        for fn in self._apply_listeners:
            try:
                fn()
            except Exception:
                logger.exception("apply listener %r failed", fn)

    def add_apply_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` on the tick thread after each tick that applied commands (once
        for all of them, after the last one's callbacks): keep it tiny."""
        self._apply_listeners.append(fn)

    # -- proposals (any thread) ------------------------------------------------

    def propose_cb(self, cmd: raft_pb2.Command, callback: ProposeCallback) -> None:
        """Replicate ``cmd``; ``callback(result, None)`` once applied here, or
        ``callback(None, error)``. Called on the tick thread, at most once."""
        if not cmd.time_ms:
            cmd.time_ms = int(time.time() * 1000)

        def done(result: Any, err: int) -> None:
            if err == SUCCESS:
                callback(result, None)
                return
            error = syncobj_adapter.error_for(err)
            if self.on_proposal_failed is not None:
                self.on_proposal_failed(error.reason)
            callback(None, error)

        self._raft.propose(cmd.SerializeToString(), done)

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
        """Resolves once everything committed before this call is applied here
        (coord.raft.read_barrier: concurrent callers share barriers)."""
        return self._barrier.wait()

    @property
    def barriers(self) -> dict[str, int]:
        """Read barriers begun, by kind (a metric): "read_index" rounds, "noop" entries."""
        return {"read_index": self._read_index.rounds, "noop": self._noop_barriers}

    def _start_barrier(self, done: Callable[[errors.CoordError | None], None]) -> None:
        """Any thread: begin a barrier at the next tick (:meth:`_start_barriers`)."""
        self._barrier_starts.put(done)
        self._raft.wake()

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
        self._raft.destroy_synchronous()
        # A dump still being written would be renamed into the data dir later, under
        # whatever runs there next (a restart in this process): let it finish.
        if not self._raft.wait_dump_written(30.0):
            logger.warning("a Raft snapshot still being written after 30 s is abandoned")

    # -- membership ------------------------------------------------------------

    def members(self) -> dict[str, NodeAddress]:
        """The latest configuration: node id -> addresses."""
        return self.membership.members()

    def api_address(self, node_id: str) -> str:
        return self.membership.api_address(node_id)

    def change_pending(self) -> bool:
        return self.membership.pending_change(self._raft.commit_index) is not None

    def check_no_pending_change(self) -> None:
        self.membership.check_no_pending_change(self._raft.commit_index)

    def mark_removed(self, why: str) -> None:
        """A leader's committed configuration no longer has this node (the leader stops
        replicating to a removed node at once, so it may never see its own removal)."""
        self.membership.mark_removed(why)

    def match_index(self, node_id: str) -> int | None:
        """The leader's view of how far ``node_id``'s log matches (None off the leader)."""
        if self._view.role != ROLE_LEADER:
            return None
        if node_id == self.cfg.node_id:
            return int(self.journal[-1][1])
        return self._raft.match_index(node_id)

    def change_membership(self, change: Change) -> Future[None]:
        """Append a configuration change (on the leader); resolves once it committed.

        One change at a time: a change while another is uncommitted is refused. A
        promotion is refused until the learner is caught up (:meth:`promotion_refused`).
        """
        fut: Future[None] = Future()
        if self._view.role != ROLE_LEADER:
            fut.set_exception(errors.NotLeader("membership changes run on the leader"))
            return fut
        if change.op == PROMOTE:
            why = self.promotion_refused(change.node_id)
            if why is not None:
                fut.set_exception(errors.FailedPrecondition(why))
                return fut
        return self.membership.propose(change, self._raft)

    def lag(self, node_id: str) -> int | None:
        """How many entries ``node_id``'s log is behind the leader's (the leader's last
        index minus its match index); None off the leader, or for a non-member."""
        match = self.match_index(node_id)
        if match is None:
            return None
        return max(0, int(self._raft.last_log_index) - match)

    def promotion_refused(self, node_id: str) -> str | None:
        """Why learner ``node_id`` may not be promoted now (None if it may); on the
        leader. Any thread: the links are the view's (a tick old), matchIndex only
        grows within a term."""
        addr = self.membership.config.get(node_id)
        if addr is None or not addr.learner:
            return None  # membership.check_change says why
        connected = node_id in self._view.connected
        return check_promotion(node_id, self.lag(node_id), connected, PROMOTE_MAX_LAG)

    def _maybe_auto_promote(self) -> None:
        """On the leader: promote a learner added with ``auto_promote`` once it is
        caught up (one change at a time; tried every half second)."""
        now = time.monotonic()
        if self._view.role != ROLE_LEADER or now < self._next_auto_promote:
            return
        self._next_auto_promote = now + 0.5
        config = self.membership.config
        waiting = sorted(n for n, a in config.items() if a.learner and a.auto_promote)
        if not waiting or self.change_pending():
            return
        active = {self.cfg.node_id} | set(self._view.connected)
        for nid in waiting:
            change = Change(PROMOTE, nid)
            if self.promotion_refused(nid) or check_quorum_after(config, change, active):
                continue
            logger.info("learner %s caught up (%d behind): promoting it", nid, self.lag(nid))
            self.membership.propose(change, self._raft)
            return

    def _sync_config(self) -> None:
        """Make pysyncobj's peer sets the latest configuration in the log (tick thread):
        voters in its voter set, learners in its read-only set (coord.raft.membership)."""
        config = self.membership.recompute()
        me = self.cfg.node_id
        self.gate.learner = me in config and config[me].learner
        raft: SyncObjAdapter | None = getattr(self, "_raft", None)
        if raft is None:
            return  # a dump loaded while pysyncobj was being built: it starts with these peers
        current = {n.id: n for n in raft.other_nodes | raft.learner_nodes}
        if me in config:
            for nid in current.keys() - config.keys():
                raft.remove_peer(current[nid])
        # Else keep every peer: a configuration without this node is a snapshot older
        # than its joining (the leader's newest snapshot may even predate the leader's
        # own joining), and the log after it brings the newer configuration, from a
        # leader this node must keep hearing; or this node was removed, and a removed
        # node neither campaigns nor counts (it leaves once it sees the removal
        # committed).
        for nid in sorted(config.keys() - current.keys() - {me}):
            # (The journal is empty while a snapshot from the leader is being installed.)
            last = self.journal[-1][1] if len(self.journal) else self.membership.base_idx
            node = RoutedNode(nid, self.membership.routes)
            raft.add_peer(node, last + 1, learner=config[nid].learner)
        self._sync_learners(raft)

    def _sync_learners(self, raft: SyncObjAdapter) -> None:
        """Move peers between pysyncobj's voters and learners as the configuration says
        (a promotion; or a promotion's entry truncated). pysyncobj starts with voters
        only: learners are added here."""
        config = self.membership.config
        learners = {n.id for n in raft.learner_nodes}
        voters = {n.id for n in raft.other_nodes}
        for nid, addr in sorted(config.items()):
            if nid == self.cfg.node_id:
                continue
            if addr.learner and nid in voters:
                raft.set_learner(RoutedNode(nid, self.membership.routes), True)
            elif not addr.learner and nid in learners:
                raft.set_learner(RoutedNode(nid, self.membership.routes), False)
            elif addr.learner and nid not in learners:
                last = self.journal[-1][1] if len(self.journal) else self.membership.base_idx
                raft.add_peer(RoutedNode(nid, self.membership.routes), last + 1, learner=True)

    def _check_change_request(self, request: Any) -> bool:
        return self.membership.allows(request, self._raft.commit_index)

    # -- leadership transfer ---------------------------------------------------

    def transfer_leadership(self, target: str | None, timeout_s: float) -> Future[str]:
        """Hand leadership to ``target`` (or the most caught-up voter); resolves with
        the new leader's id once this node sees it lead (coord.raft.transfer)."""
        config = self.membership.config
        if target is not None and target in config and config[target].learner:
            fut: Future[str] = Future()
            fut.set_exception(
                errors.FailedPrecondition(
                    f"{target} is a learner: it cannot lead; promote it first "
                    f"(coordctl node promote {target})"
                )
            )
            return fut
        members = frozenset(self.membership.voters())
        return self._transfer.start(target, timeout_s, self._view, members)

    def _holding_for_transfer(self) -> bool:
        return self._transfer.holding(self._view)

    # -- elections -------------------------------------------------------------

    def _may_campaign(self) -> bool:
        return self.gate.may_campaign() and self.membership.is_voter(self.cfg.node_id)

    def _election_timer_restarted(self) -> None:
        # pysyncobj arms its timer in its constructor, before PreVote exists (PreVote
        # starts with a fresh timer of its own).
        prevote: PreVote | None = getattr(self, "_prevote", None)
        if prevote is not None:
            prevote.restart_timer()

    def _on_peer_disconnected(self, node: Any) -> None:
        """The link to the leader dropped: campaign soon instead of after a full timeout.

        Survivors go in the order of their ids, ``fast_election_s`` apart, so
        they rarely split the vote.
        """
        # Runs on the tick thread, inside pysyncobj's message handling: read its
        # live state (the View is a tick old) and move PreVote's deadline right
        # away, so that a vote granted later in this poll resets it as usual.
        raft = self._raft
        leader = raft.leader
        if not self.gate.may_campaign() or raft.is_leader or leader is None or node.id != leader.id:
            return
        if node.id not in self._view.connected:
            return  # a failed redial, not a link that dropped
        survivors = sorted(nid for nid in self.membership.voters() if nid != node.id)
        if self.cfg.node_id not in survivors:
            return
        rank = survivors.index(self.cfg.node_id)
        delay = rank * self.cfg.timings.fast_election_s
        delay += random.uniform(0, self.cfg.timings.tick_s)
        # pysyncobj's deadlines use CLOCK_MONOTONIC_RAW, not time.monotonic().
        if self._prevote.hurry(raft_clock() + delay):
            logger.info("lost the link to leader %s: campaigning in %.0f ms", node.id, 1000 * delay)

    # -- tick thread -----------------------------------------------------------

    def _on_tick(self) -> None:
        # Runs after this tick's elections, commits, applies and new proposals: one
        # sync covers all their writes (group commit). A leader syncs on its sync
        # thread, which wakes the poll when done: a slow disk must not stop its
        # heartbeats, and two followers commit without it meanwhile. A follower syncs
        # here, before its acknowledgements leave: a hand-off to another thread and
        # back costs two wake-ups on the commit path (half the throughput under load,
        # measured), and a follower's stall delays only its own acks (PreVote keeps
        # it from disrupting the leader afterwards).
        now = time.monotonic()
        self._tick_gap(now - self.last_tick)
        self.last_tick = now
        if self._syncer is not None and self._raft.is_leader:
            self._syncer.request()
        else:
            try:
                self.journal.sync()
            except OSError as e:
                self._journal_sync_failed(e)
        self._transport.flush_held()
        self._learn_term()
        self._update_catch_up()
        self._prevote.on_tick()
        self._update_view()
        self._maybe_bootstrap()
        self._start_barriers()
        self._read_index.on_tick()
        self._barrier.check_timeout()
        self._transfer.drive(self._view, self._raft)
        self._maybe_auto_promote()
        self._ping_peers()
        self._transport.close_idle_unidentified(self.cfg.timings.connection_timeout_s)

    def _start_barriers(self) -> None:
        """A leader confirms its barriers by a round of heartbeats (coord.raft.read_index)
        once it can; otherwise, and on other nodes, a barrier is a no-op entry."""
        while True:
            try:
                done = self._barrier_starts.get_nowait()
            except queue.Empty:
                return
            if self._read_index.usable():
                self._read_index.request(done)
            else:
                self._noop_barrier(done)

    def _noop_barrier(self, done: Callable[[errors.CoordError | None], None]) -> None:
        """A barrier as a no-op entry: once applied here, so is everything committed
        before it was proposed."""
        self._noop_barriers += 1

        def committed(res: Future[raft_pb2.CommandResult]) -> None:
            exc = res.exception()
            done(exc if isinstance(exc, errors.CoordError) else None)

        self.propose(raft_pb2.Command(noop=raft_pb2.Noop())).add_done_callback(committed)

    def _tick_gap(self, gap: float) -> None:
        """How long since the last pass of the tick thread (a metric). A leader sends
        heartbeats only from it: a gap of two heartbeat intervals means its followers
        heard nothing meanwhile, and past their election timeout they campaign. Warned
        about (at most every 10 s, with the count) like etcd's "leader failed to send out
        heartbeat on time": a slow disk, CPU starvation or a long apply."""
        if self.on_tick_gap is not None:
            self.on_tick_gap(gap)
        heartbeat = self.cfg.timings.heartbeat_s
        if gap <= 2 * heartbeat or not self._raft.is_leader:
            return
        self._late_ticks += 1
        now = time.monotonic()
        if now >= self._next_late_warning:
            self._next_late_warning = now + 10.0
            logger.warning(
                "the Raft tick thread was away for %.0f ms, heartbeats are due every %.0f ms "
                "(%d such gaps since the last warning): followers campaign after %.0f ms "
                "without one. Look for CPU starvation, a slow disk or a long apply",
                1000 * gap, 1000 * heartbeat, self._late_ticks,
                1000 * self.cfg.timings.election_timeout_min_s,
            )  # fmt: skip
            self._late_ticks = 0

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
        # Learners too: a promoted learner's first vote requests must not be dropped.
        for node in self._raft.other_nodes | self._raft.learner_nodes:
            self._transport.send_now(node, {"type": "coord_ping"})

    def _learn_term(self) -> None:
        """A blank node asks its peers for their terms until it may take one
        (coord.raft.gate); it acknowledges, votes and campaigns only then."""
        gate, raft = self.gate, self._raft
        if raft.is_leader:
            gate.counted()  # its own log counts towards its commits
        if gate.term_known:
            return
        # Only voters' majorities commit: they are the configurations to learn from (the
        # --peer flags `node add` printed mark the learners).
        me, initial, config = self.cfg.node_id, self.membership.initial, self.membership.voters()
        term = gate.learn([voters(initial), config], me)
        if term is None:
            self._probe_terms(sorted(set(initial) | set(config)))
            return
        current = raft.current_term
        # Taken as already voted in: before the wipe this node may have voted in it.
        if term > current:
            raft.set_current_term(term, me)
            raft.forget_leader()  # whoever it followed leads an older term
        elif term == current and raft.voted_for is None:
            raft.set_current_term(term, me)

    def _probe_terms(self, members: list[str]) -> None:
        """Ask every peer that has not answered yet for its term (every reconnect_s)."""
        now = time.monotonic()
        if not self._next_term_probe:
            logger.info(
                "blank data dir: acknowledging no append, voting for no one, until the "
                "current term is known from enough of %s",
                members,
            )
        if now >= self._next_term_probe:
            self._next_term_probe = now + self.cfg.timings.reconnect_s
            for node in self._raft.other_nodes:
                if node.id not in self.gate.answers:
                    self._transport.send_now(node, {"type": "coord_term_probe"})

    def _update_catch_up(self) -> None:
        # (Not campaigning while catching up, or when not a member, is PreVote's part:
        # it asks _may_campaign.)
        if self.cfg.node_id not in self.membership.config:
            return
        if self.gate.is_voter or self.gate.update(self.journal[-1][1]):
            return
        if self._raft.is_leader:
            # A blank node elected (bootstrap): the majority that voted vouches for its
            # log. No leader will ever send it a commit index: it would never vote.
            self.gate.leader_commit(self.journal[-1][1])

    def _update_view(self) -> None:
        raft = self._raft
        leader = raft.leader
        connected = frozenset(n.id for n in raft.connected_nodes)
        config = self.membership.config
        peers = {nid for nid in self.membership.voters() if nid != self.cfg.node_id}
        view = View(
            role=raft.raft_state,
            term=raft.current_term,
            leader_id=leader.id if leader is not None else "",
            commit_index=raft.commit_index,
            applied_index=raft.last_applied,
            connected=connected,
            has_quorum=(len(connected & peers) + 1) * 2 > len(peers) + 1,
            log_entries=len(self.journal),
            catching_up=not (self.gate.is_voter and self.gate.term_known),
            members=frozenset(config),
            removed=self.membership.removal_committed(raft.commit_index),
            leader_alive=self._prevote.leader_is_alive(),
        )
        old, self._view = self._view, view
        if view.removed and not old.removed:
            logger.warning("this node was removed from the cluster: it no longer votes or serves")
        self._notify(old, view)

    def _notify(self, old: View, view: View) -> None:
        """Tell the listeners when leader, term, role, members or removal changed."""
        if (old.leader_id, old.term, old.role, old.members, old.removed) == (
            view.leader_id,
            view.term,
            view.role,
            view.members,
            view.removed,
        ):
            return
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

    # -- snapshots (tick thread) -----------------------------------------------

    def _capture_dump(self, raft_data: Any) -> _StateDump:
        """pysyncobj compacts: copy the state now (under the apply lock, milliseconds);
        a worker thread writes it (coord.raft.background_dump)."""
        last, prev, _cluster = raft_data
        with self.lock:
            capture = self.state.capture()
        # The configuration at the snapshot's index (pysyncobj's ``_cluster`` is the
        # latest one, later uncommitted changes included).
        idx = int(last[1])
        at = self.membership.at(idx)
        return _StateDump(
            capture=capture,
            last=tuple(last),
            prev=tuple(prev),
            voters=dump_voters(at),
            members=to_json(at),
            fsync=self.cfg.fsync,
            # Entries up to idx are compacted away once the dump is on disk: fold them
            # into the configuration's base.
            installed=functools.partial(self.membership.fold, at, idx),
        )

    def _check_snapshot(self, path: str) -> int | None:
        """Tick thread: a snapshot received from the leader (complete, at ``path``). Its
        last index if this node's log already holds its entries (not installed:
        appendfix), None to install it; DumpError if it does not verify."""
        last = read_dump(path).last
        if appendfix.snapshot_is_covered(self._raft.log, last):
            logger.info(
                "a snapshot from the leader ends at %d, which this log already holds "
                "(it ends at %d): kept the log",
                last[1],
                self._raft.last_log_index,
            )
            return int(last[1])
        return None

    def _journal_sync_failed(self, error: OSError) -> None:
        # Nothing more can be acknowledged, and a retry may "succeed" over writes the
        # kernel dropped: stop, as on a snapshot that cannot be loaded. A restart reads
        # back (and syncs) what the journal really holds.
        logger.critical("cannot sync the Raft journal (%s): exiting", error)
        os._exit(70)

    def _journal_write_failed(self, error: OSError) -> None:
        # The entry pysyncobj just handed over is not in the file: acknowledging it from
        # memory would be a lie. A restart reads back what the journal really holds.
        logger.critical("cannot write the Raft journal (%s): exiting", error)
        os._exit(70)

    def _deserialize(self, filename: str) -> Any:
        try:
            dump = read_dump(filename, fsync=self.cfg.fsync)
            with self.lock:
                self.state.restore(dump.state)
            self.membership.set_base(dump.members, dump.node_ids, dump.last[1])
        except Exception:
            # pysyncobj would log and go on with a stale state machine: a replica
            # that silently diverged. Stop instead; a restart reloads cleanly.
            logger.critical("cannot load the Raft snapshot %s: exiting", filename, exc_info=True)
            os._exit(70)
        # The state changed without an apply (a follower installing the leader's
        # snapshot): tell the listeners as a tick's applies would, or watchers wait
        # for their idle wake-up.
        self._applied()
        return dump.last, dump.prev, set(dump.node_ids)


@dataclass(frozen=True)
class _StateDump:
    """One snapshot for coord.raft.background_dump: taken on the tick thread, written
    by a worker."""

    capture: StateCapture
    last: Entry
    prev: Entry
    voters: list[str]
    members: dict[str, dict[str, object]]
    fsync: bool
    installed: Callable[[], None]

    def write(self, path: str) -> None:
        write_dump(
            path,
            self.capture.encode_parts(),
            self.last,
            self.prev,
            self.voters,
            fsync=self.fsync,
            members=self.members,
        )
