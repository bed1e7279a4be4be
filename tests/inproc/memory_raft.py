"""Real RaftNodes in one process over an in-memory network: replication tests in seconds.

The layer between the fake Raft node (tests/inproc/fakes.py) and subprocess clusters
(tests/integration): every :class:`~coord.raft.node.RaftNode` here is the production
one (pysyncobj hardened: journal, PreVote, voting gate, ack gating, membership) with its
production transport, :class:`~coord.raft.transport.CoordTransport`, except that the
sockets underneath are replaced by an :class:`InMemoryNetwork`. The models are
hashicorp/raft's ``InmemTransport`` and etcd-raft's in-process network.

How it is cut: pysyncobj's ``TCPTransport`` drives ``TcpConnection`` objects (connect,
send, disconnect, three callbacks) and a ``TcpServer``. :class:`InMemoryTransport` is
``CoordTransport`` over :class:`_MemoryWire`, a ``TCPTransport`` whose connections are
:class:`MemoryConnection` objects and whose server is a registration with the network.
So everything above the socket runs for real: who dials whom, the cluster-id handshake,
redials every ``reconnect_s``, the connection timeout, held acknowledgements, PreVote
and term-probe traffic. Not covered: the cluster secret (encryption; refused here), the
frame-size guard (no frames), and the kernel (socket buffers, keepalives). One process
also differs from one node per process in two known ways: every node adds its
``_VetoedTruncationFilter`` (coord.raft.syncobj_adapter) to the one shared pysyncobj
logger, so a node's filter also judges the others' records (logging only). Most tests
stay far below ``log_compaction_entries``; :attr:`MemoryCluster.compaction_entries`
lowers it for the ones about compaction.

Threads: each node's transport is only touched on that node's tick thread. A message
is pickled on the sender's tick thread, queued in the receiver's inbox, and unpickled
and handled on the receiver's tick thread, inside its poll (a pipe wakes it), exactly
where pysyncobj handles a socket read. The network's controls (:meth:`partition`,
:meth:`isolate`, :meth:`heal`, :meth:`set_faults`) may be called from any thread.

Faults, deterministic given the seed: each directed link (``n1 -> n2``) draws the
fate of its k-th message from its own ``random.Random(f"{seed}:n1->n2")``, so with
the same seed and rates the k-th message of a link meets the same fate in every run
(what a message contains still depends on thread timing; :meth:`fates` shows the
schedule). A cut link behaves as under an iptables REJECT: its
connections are reset at once (in-flight messages lost, both ends see the disconnect)
and redials are refused until :meth:`heal`. A dropped message resets its connection
too, as a lost TCP segment can only show up as a broken connection; a delayed one
holds back the messages after it on its link (TCP is FIFO).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import pickle
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.transport import TCPTransport

from coord.config import NodeConfig, Peer, RaftTimings
from coord.raft.gate import CATCH_UP, NEW_BLANK
from coord.raft.membership import ADD, Change, NodeAddress
from coord.raft.node import ROLE_LEADER, RaftNode
from coord.raft.transport import CoordTransport
from coord.state.machine import StateMachine
from coord.testing import wait_until
from coord.v1 import kv_pb2, raft_pb2

logger = logging.getLogger(__name__)

CLUSTER_ID = "00c0ffee00c0ffee"

# pysyncobj's TcpConnection states (pysyncobj.tcp_connection.CONNECTION_STATE).
DISCONNECTED, CONNECTING, CONNECTED = 0, 1, 2


@dataclass(eq=False)
class _Pair:
    """One connection: its two ends, and whether it was reset (then both ends are)."""

    ends: tuple[MemoryConnection, MemoryConnection]
    broken: bool = False


@dataclass(eq=False)
class _Inbox:
    """What is on its way to one node, and the pipe that wakes its poll."""

    transport: _MemoryWire
    read_fd: int
    write_fd: int
    # (kind, end, pair, pickled message or b"", when it may be handled)
    events: list[tuple[str, MemoryConnection, _Pair, bytes, float]] = field(default_factory=list)
    woken: bool = False


class InMemoryNetwork:
    """The hub the nodes' transports connect through, with faults a test controls.

    ``transport_factory`` is what to pass as ``RaftNode(..., transport_factory=...)``.
    :attr:`stats` counts what happened (``sent``, ``delivered``, ``dropped``,
    ``delayed``, ``refused``, ``reset``, ``lost``): a fault test asserts its faults occurred.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._inboxes: dict[str, _Inbox] = {}
        self._cut: set[frozenset[str]] = set()
        self._silent: set[tuple[str, str]] = set()  # directed links that lose everything
        self._slow: dict[tuple[str, str], float] = {}  # directed link -> delay (s)
        self._pairs: set[_Pair] = set()
        self._rngs: dict[tuple[str, str], random.Random] = {}
        self._last_due: dict[tuple[str, str], float] = {}
        self._drop_rate = 0.0
        self._delay_rate = 0.0
        self._delay_s = 0.0

    @property
    def transport_factory(self) -> Callable[..., CoordTransport]:
        return functools.partial(InMemoryTransport, network=self)

    # -- controls (any thread) -----------------------------------------------------

    def partition(self, a: str, b: str) -> None:
        """Cut the link between ``a`` and ``b`` (both ways) until :meth:`heal`."""
        with self._lock:
            self._cut.add(frozenset((a, b)))
            for pair in list(self._pairs):
                if {e.owner for e in pair.ends} == {a, b}:
                    self._break(pair)

    def isolate(self, node: str, others: Iterable[str]) -> None:
        """Cut every link between ``node`` and ``others``."""
        for other in others:
            if other != node:
                self.partition(node, other)

    def silence(self, src: str, dst: str) -> None:
        """Lose every message from ``src`` to ``dst`` without a word, as under an
        iptables DROP: the connection stays up until a transport's own timeout closes it
        (a cut resets it at once), and redials between the two are refused."""
        with self._lock:
            self._silent.add((src, dst))

    def slow_down(self, src: str, dst: str, delay_s: float) -> None:
        """Deliver every message from ``src`` to ``dst`` ``delay_s`` late (in order)."""
        with self._lock:
            self._slow[(src, dst)] = delay_s

    def heal(self) -> None:
        """Reconnect every cut or silenced link (the nodes redial within ``reconnect_s``);
        slowed links go back to full speed."""
        with self._lock:
            self._cut.clear()
            self._silent.clear()
            self._slow.clear()

    def set_faults(self, drop: float = 0.0, delay: float = 0.0, delay_s: float = 0.0) -> None:
        """From now on, each message is dropped with probability ``drop`` (its connection
        resets) and, if not, delayed by ``delay_s`` with probability ``delay``."""
        with self._lock:
            self._drop_rate, self._delay_rate, self._delay_s = drop, delay, delay_s

    def fates(self, src: str, dst: str, count: int) -> list[str]:
        """What the next ``count`` messages ``src -> dst`` would meet (``drop``,
        ``delay``, ``pass``), drawn from a fresh generator of that link: the seed's
        schedule, without touching the live one."""
        rng = random.Random(f"{self.seed}:{src}->{dst}")
        return [self._fate(rng) for _ in range(count)]

    def is_cut(self, a: str, b: str) -> bool:
        with self._lock:
            return frozenset((a, b)) in self._cut

    # -- the transports' side (their tick threads) ---------------------------------

    def _attach(self, node_id: str, transport: _MemoryWire) -> None:
        read_fd, write_fd = os.pipe()
        for fd in (read_fd, write_fd):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        inbox = _Inbox(transport, read_fd, write_fd)
        with self._lock:
            if node_id in self._inboxes:
                os.close(read_fd)
                os.close(write_fd)
                raise RuntimeError(f"node {node_id} is already on the network")
            self._inboxes[node_id] = inbox
        transport._syncObj._poller.subscribe(
            read_fd, lambda _fd, _ev: self._deliver(node_id, inbox), POLL_EVENT_TYPE.READ
        )

    def _detach(self, node_id: str) -> None:
        with self._lock:
            inbox = self._inboxes.pop(node_id, None)
            for pair in list(self._pairs):
                if any(e.owner == node_id for e in pair.ends):
                    self._break(pair)
        if inbox is not None:
            inbox.transport._syncObj._poller.unsubscribe(inbox.read_fd)
            os.close(inbox.read_fd)
            os.close(inbox.write_fd)

    def _dial(self, end: MemoryConnection) -> bool:
        """``end`` connects to its remote node: False if refused (not on the network, or
        the link is cut), else the connection is under way (callbacks follow)."""
        with self._lock:
            target = self._inboxes.get(end.remote)
            silent = {(end.owner, end.remote), (end.remote, end.owner)} & self._silent
            if target is None or frozenset((end.owner, end.remote)) in self._cut or silent:
                self.stats["refused"] += 1
                return False
            timeout = target.transport._syncObj.conf.connectionTimeout
            peer = MemoryConnection(self, end.remote, end.owner, timeout, CONNECTED)
            pair = _Pair((end, peer))
            self._pairs.add(pair)
            end.pair = peer.pair = pair
            end.begin_connect()
            now = time.monotonic()
            self._enqueue(end.owner, ("connected", end, pair, b"", now))
            self._enqueue(end.remote, ("accept", peer, pair, b"", self._due(end, peer, now)))
        return True

    def _transmit(self, end: MemoryConnection, data: bytes) -> None:
        with self._lock:
            pair = end.pair
            if pair is None or pair.broken:
                return
            self.stats["sent"] += 1
            if frozenset((end.owner, end.remote)) in self._cut:
                self._break(pair)
                return
            link = (end.owner, end.remote)
            if link in self._silent:
                self.stats["lost"] += 1
                return
            rng = self._rngs.setdefault(link, random.Random(f"{self.seed}:{link[0]}->{link[1]}"))
            fate = self._fate(rng)
            if fate == "drop":
                self.stats["dropped"] += 1
                self._break(pair)
                return
            now = time.monotonic() + self._slow.get(link, 0.0)
            if fate == "delay":
                self.stats["delayed"] += 1
                now += self._delay_s
            peer = pair.ends[1] if pair.ends[0] is end else pair.ends[0]
            self._enqueue(end.remote, ("msg", peer, pair, data, self._due(end, peer, now)))

    def _disconnected(self, end: MemoryConnection) -> None:
        with self._lock:
            if end.pair is not None:
                self._break(end.pair)

    def _wake_if_due(self, node_id: str) -> None:
        now = time.monotonic()
        with self._lock:
            inbox = self._inboxes.get(node_id)
            if inbox is not None and any(ev[4] <= now for ev in inbox.events):
                self._wake(inbox)

    # -- internals (under the lock, but _deliver) ------------------------------------

    def _fate(self, rng: random.Random) -> str:
        drop, delay = rng.random(), rng.random()  # two draws always: a stable schedule
        if drop < self._drop_rate:
            return "drop"
        return "delay" if delay < self._delay_rate else "pass"

    def _due(self, src: MemoryConnection, dst: MemoryConnection, at: float) -> float:
        """Not before anything sent earlier on the same directed link (FIFO)."""
        link = (src.owner, dst.owner)
        due = max(at, self._last_due.get(link, 0.0))
        self._last_due[link] = due
        return due

    def _break(self, pair: _Pair) -> None:
        if pair.broken:
            return
        pair.broken = True
        self._pairs.discard(pair)
        self.stats["reset"] += 1
        now = time.monotonic()
        for end in pair.ends:
            self._enqueue(end.owner, ("reset", end, pair, b"", now))

    def _enqueue(
        self, node_id: str, event: tuple[str, MemoryConnection, _Pair, bytes, float]
    ) -> None:
        inbox = self._inboxes.get(node_id)
        if inbox is None:
            return
        inbox.events.append(event)
        if event[4] <= time.monotonic():
            self._wake(inbox)

    def _wake(self, inbox: _Inbox) -> None:
        if inbox.woken:
            return
        inbox.woken = True
        with contextlib.suppress(BlockingIOError):  # full: it will be read anyway
            os.write(inbox.write_fd, b"o")

    def _deliver(self, node_id: str, inbox: _Inbox) -> None:
        """The receiver's poll saw the pipe: handle what is due, in order (tick thread)."""
        with contextlib.suppress(BlockingIOError):
            while os.read(inbox.read_fd, 4096):
                pass
        now = time.monotonic()
        with self._lock:
            inbox.woken = False
            due = [ev for ev in inbox.events if ev[4] <= now]
            inbox.events = [ev for ev in inbox.events if ev[4] > now]
        for kind, end, pair, data, _at in due:
            if self._inboxes.get(node_id) is not inbox:
                return  # detached while handling (destroyed)
            if end.pair is not pair:
                continue  # an older connection of the same end
            if kind == "reset":
                end.disconnect()
            elif pair.broken:
                continue  # in flight when the connection was reset: lost
            elif kind == "accept":
                inbox.transport._onNewIncomingConnection(end)
            elif kind == "connected":
                end.connected()
            else:
                self.stats["delivered"] += 1
                end.received(pickle.loads(data))


class MemoryConnection:
    """One end of an in-memory connection, with what ``TCPTransport`` uses of a
    ``TcpConnection``: ``connect``/``send``/``disconnect``, ``state``, three callbacks,
    the connection timeout (no read for ``timeout``: the next send or read closes it)."""

    def __init__(
        self,
        network: InMemoryNetwork,
        owner: str,
        remote: str,
        timeout: float,
        state: int = DISCONNECTED,
    ) -> None:
        self.network, self.owner, self.remote, self.timeout = network, owner, remote, timeout
        self.pair: _Pair | None = None
        self.encryptor: Any = None
        self.sendRandKey: Any = None
        self.recvRandKey: Any = None
        self._state = state
        self._last_read = time.monotonic()
        self._on_connected: Callable[[], None] | None = None
        self._on_message: Callable[[Any], None] | None = None
        self._on_disconnected: Callable[[], None] | None = None

    @property
    def state(self) -> int:
        return self._state

    def setOnConnectedCallback(self, fn: Callable[[], None] | None) -> None:
        self._on_connected = fn

    def setOnMessageReceivedCallback(self, fn: Callable[[Any], None] | None) -> None:
        self._on_message = fn

    def setOnDisconnectedCallback(self, fn: Callable[[], None] | None) -> None:
        self._on_disconnected = fn

    def connect(self, host: str | None, port: int) -> bool:
        # The dialled node is this end's ``remote`` (host and port are its fake route).
        return self.network._dial(self)

    def begin_connect(self) -> None:
        self._state = CONNECTING
        self._last_read = time.monotonic()

    def connected(self) -> None:
        if self._state != CONNECTING:
            return
        if self._on_connected is not None:
            self._on_connected()
        if self._state != DISCONNECTED:
            self._state = CONNECTED
            self._last_read = time.monotonic()

    def send(self, message: Any) -> None:
        if self._state == DISCONNECTED or self._timed_out():
            return
        self.network._transmit(self, pickle.dumps(message))

    def received(self, message: Any) -> None:
        if self._state == DISCONNECTED or self._timed_out():
            return
        self._last_read = time.monotonic()
        if self._on_message is not None:
            self._on_message(message)

    def disconnect(self) -> None:
        notify = self._on_disconnected is not None and self._state != DISCONNECTED
        self._state = DISCONNECTED
        self.sendRandKey = self.recvRandKey = None
        self.network._disconnected(self)
        if notify and self._on_disconnected is not None:
            self._on_disconnected()

    def _timed_out(self) -> bool:
        if time.monotonic() - self._last_read > self.timeout:
            self.disconnect()
            return True
        return False


class _MemoryWire(TCPTransport):
    """pysyncobj's TCPTransport with MemoryConnections and no server socket."""

    _network: InMemoryNetwork

    def _createServer(self) -> None:
        if self._syncObj.encryptor:
            raise RuntimeError("the in-memory network carries no cluster secret")
        self._network._attach(self._selfNode.id, self)

    def _maybeBind(self) -> None:
        if not self._ready:
            self._ready = True
            self._bindOverEvent.set()

    def addNode(self, node: Any) -> None:
        self._nodes.add(node)
        self._nodeAddrToNode[node.address] = node
        if self._shouldConnect(node):
            conn = MemoryConnection(
                self._network, self._selfNode.id, node.id, self._syncObj.conf.connectionTimeout
            )
            conn.setOnConnectedCallback(functools.partial(self._onOutgoingConnected, conn))
            conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
            conn.setOnDisconnectedCallback(functools.partial(self._onDisconnected, conn))
            self._connections[node] = conn

    def _onTick(self) -> None:
        super()._onTick()  # binds (at once) and redials
        self._network._wake_if_due(self._selfNode.id)  # delayed messages now due

    def destroy(self) -> None:
        super().destroy()
        self._network._detach(self._selfNode.id)


class InMemoryTransport(CoordTransport, _MemoryWire):
    """CoordTransport (handshake, ack gating, PreVote, gate) over the in-memory wire."""

    def __init__(
        self, syncObj: Any, selfNode: Any, otherNodes: Any, *, network: InMemoryNetwork, **kw: Any
    ) -> None:
        self._network = network
        super().__init__(syncObj, selfNode, otherNodes, **kw)

    def _limit_frames(self, conn: Any) -> None:
        # No frames to limit in memory; keep the accept time close_idle_unidentified reads.
        conn._coord_accepted = time.monotonic()


# -- a cluster of RaftNodes over one network ------------------------------------------


class MemoryCluster:
    """``size`` RaftNodes (``n1``...) replicating real StateMachines over one network.

    The workload is the real state machine's: RaftNode needs its surface (bootstrap,
    snapshots, the apply lock), so the "toy" state machine is a
    :class:`~coord.state.machine.StateMachine` driven with KV puts. Each node's
    journal and dump live in ``base_dir/<id>``; nodes start blank (``new_blank``, as
    ``coord serve`` starts a new cluster) with fsync off unless :attr:`fsync` is set.
    """

    def __init__(self, base_dir: Path, size: int = 3, seed: int = 0) -> None:
        self.base_dir = base_dir
        self.network = InMemoryNetwork(seed)
        self.ids = [f"n{i + 1}" for i in range(size)]
        # Routes are never dialled: the network connects by node id.
        self.peers = tuple(
            Peer(n, f"127.0.0.1:{20000 + 2 * i}", f"127.0.0.1:{20001 + 2 * i}")
            for i, n in enumerate(self.ids)
        )
        self.nodes: dict[str, RaftNode] = {}
        # A joiner's --peer flags (what `coordctl node add` printed for it).
        self.flags: dict[str, tuple[Peer, ...]] = {}
        # Entries before a node compacts its log (None: NodeConfig's default, never
        # reached by most tests).
        self.compaction_entries: int | None = None
        # fsync on: a leader's journal syncs on its own thread (coord.raft.journal_sync).
        self.fsync = False
        # Raft timings (None: NodeConfig's defaults).
        self.timings: RaftTimings | None = None

    def config(self, node_id: str) -> NodeConfig:
        data_dir = self.base_dir / node_id
        data_dir.mkdir(parents=True, exist_ok=True)
        joiner = node_id in self.flags
        return NodeConfig(
            node_id=node_id,
            data_dir=str(data_dir),
            peers=self.flags.get(node_id, self.peers),
            initial_cluster_state="existing" if joiner else "new",
            explicit_cluster_id=CLUSTER_ID,
            fsync=self.fsync,
            **({} if self.timings is None else {"timings": self.timings}),
            **(
                {}
                if self.compaction_entries is None
                else {"log_compaction_entries": self.compaction_entries}
            ),
        )

    def start(self, node_id: str, voting: str = NEW_BLANK) -> RaftNode:
        node = RaftNode(
            self.config(node_id),
            StateMachine(),
            voting=voting,
            transport_factory=self.network.transport_factory,
        )
        self.nodes[node_id] = node
        return node

    def add_learner(self, leader: str) -> str:
        """``node add`` of the next id as a learner on ``leader``, then start it with the
        flags `node add` prints (every member, learners marked); returns its id."""
        i = len(self.ids)
        me = Peer(f"n{i + 1}", f"127.0.0.1:{20000 + 2 * i}", f"127.0.0.1:{20001 + 2 * i}")
        address = NodeAddress(me.raft_address, me.api_address, learner=True)
        self.nodes[leader].change_membership(Change(ADD, me.id, address)).result(10)
        members = self.nodes[leader].membership.members()
        self.flags[me.id] = tuple(
            Peer(n, a.raft, a.api, learner=a.learner) for n, a in sorted(members.items())
        )
        self.ids.append(me.id)
        self.start(me.id, voting=CATCH_UP)
        return me.id

    def start_all(self) -> None:
        for node_id in self.ids:
            self.start(node_id)

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()
        self.nodes.clear()

    # -- the partition controls, by node id ---------------------------------------

    def isolate(self, node_id: str) -> None:
        self.network.isolate(node_id, self.ids)

    def heal(self) -> None:
        self.network.heal()

    # -- what the nodes say ---------------------------------------------------------

    def leaders(self) -> list[str]:
        """The nodes that believe they lead (a deposed one may, for a while)."""
        return [n for n, node in self.nodes.items() if node.view.role == ROLE_LEADER]

    def agreed_leader(self, among: Iterable[str] | None = None) -> str | None:
        """The leader every node of ``among`` (default: all) follows in the same term,
        that leads itself and has applied the cluster's bootstrap; else None."""
        ids = list(self.nodes if among is None else among)
        views = [self.nodes[n].view for n in ids]
        leader_id, term = views[0].leader_id, views[0].term
        if not leader_id or leader_id not in ids:
            return None
        if any((v.leader_id, v.term) != (leader_id, term) for v in views):
            return None
        if self.nodes[leader_id].view.role != ROLE_LEADER:
            return None
        if not all(self.nodes[n].read(lambda s: s.cluster_id) == CLUSTER_ID for n in ids):
            return None
        return leader_id

    def wait_leader(self, timeout: float = 10.0, among: Iterable[str] | None = None) -> str:
        ids = list(self.nodes if among is None else among)
        try:
            return wait_until(
                lambda: self.agreed_leader(ids), timeout, f"one leader agreed on by {ids}"
            )
        except TimeoutError as e:
            views = {n: self.nodes[n].view for n in ids}
            raise TimeoutError(f"{e}; views: {views}; network: {self.network.stats}") from None

    def put(self, node_id: str, key: bytes, value: bytes) -> Future[raft_pb2.CommandResult]:
        cmd = raft_pb2.Command(put=kv_pb2.PutRequest(key=key, value=value))
        return self.nodes[node_id].propose(cmd)

    def get(self, node_id: str, key: bytes) -> bytes | None:
        kv = self.nodes[node_id].read(lambda s: s.kv.get(key))
        return None if kv is None else bytes(kv.value)

    def snapshot(self, node_id: str) -> bytes:
        """The node's whole replicated state (equal bytes: equal replicas)."""
        return bytes(self.nodes[node_id].read(lambda s: s.snapshot()))

    def wait_converged(self, timeout: float = 10.0, among: Iterable[str] | None = None) -> bytes:
        """Wait until the nodes hold byte-identical states; returns that state."""
        ids = list(self.nodes if among is None else among)

        def same() -> bytes | None:
            states = {self.snapshot(n) for n in ids}
            return states.pop() if len(states) == 1 else None

        return wait_until(same, timeout, f"{ids} to hold the same state")
