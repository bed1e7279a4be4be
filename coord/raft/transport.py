"""Routed, cluster-checked, fsync-gated peer transport on top of pysyncobj's TCP.

- Node identity is separate from the dial address: a :class:`RoutedNode` has a
  stable id (``n1``) while the address it is dialled at comes from a route
  table. Chaos tests point each directed link at its own proxy. pysyncobj lets
  only the node whose id sorts higher dial a pair, so the connection for pair
  (a, b) with a > b is the one ``a`` opens towards ``b``'s route.
- The handshake carries ``cluster_id/node_id``: a node of another cluster (a
  foreign data dir) is disconnected and logged, never joined.
- Acknowledgements (``next_node_idx``) carry the follower's term (and, for a
  conflict, how far back it goes) and are held back until the journal writes
  made before them are synced (``coord.raft.journal_sync``): the node flushes
  what is durable once per tick, and the sync thread wakes the tick when more is.
  The leader moves its nextIndex/matchIndex with them as ``coord.raft.progress``
  says, not as pysyncobj would.
- A blank node votes, campaigns and acknowledges only as ``coord.raft.gate``
  allows: until it has learned the current term it sends no successful
  ``next_node_idx`` (a "reset", which only moves a leader's nextIndex down, still
  goes). Every node answers ``coord_term_probe`` with its term (``coord_term``).
- PreVote messages (``coord.raft.prevote``) are handled here, beside
  pysyncobj's own.
- A leader numbers the append-entries it sends each peer (``coord_seq``) and a
  follower echoes the number of the one it answers in its acknowledgement: the
  leader's read index rounds count only answers to those sent after they began
  (``coord.raft.read_index``).
- Learners (``coord.raft.membership``) are in the transport's node set like any
  member: they dial and are dialled under their own ids. A learner never campaigns
  and ignores ``timeout_now`` (the gate), but answers votes and pre-votes once caught
  up; a candidate counts vote and pre-vote grants only from the voters of its
  configuration (pysyncobj counts any ``response_vote`` of its term).
- With a cluster secret, pysyncobj drops a connection whose messages do not
  authenticate without a word; here both ends say so in the log (rate limited).

Thread: everything runs on the Raft tick thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from cryptography.fernet import InvalidToken
from pysyncobj.dns_resolver import globalDnsResolver
from pysyncobj.node import TCPNode
from pysyncobj.transport import TCPTransport

from coord.raft import appendfix
from coord.raft.gate import VotingGate
from coord.raft.prevote import PreVote
from coord.raft.progress import LeaderProgress, conflict_of
from coord.raft.read_index import ReadIndex
from coord.raft.syncobj_adapter import SyncObjAdapter, guard_frames, listen_backlog, peer_host

logger = logging.getLogger(__name__)

# Frame size limits: before a peer identified itself (handshake messages are tens of
# bytes, an encrypted key exchange a few hundred), and afterwards (append-entries
# batches are at most 8 MiB of entries, see coord.raft.syncobj_adapter.build_conf).
UNIDENTIFIED_FRAME_MAX = 64 * 1024
FRAME_MAX = 256 * 1024 * 1024

# A refused secret is logged at most this often per peer (nodes redial every 0.1 s).
SECRET_WARN_EVERY_S = 10.0


class WriteSequence(Protocol):
    """What of the node's journal is durable (``coord.raft.journal.DurableJournal``)."""

    @property
    def written_seq(self) -> int: ...

    @property
    def synced_seq(self) -> int: ...


class RoutedNode(TCPNode):
    """A Raft peer whose id is stable and whose dial address comes from ``routes``."""

    def __init__(self, node_id: str, routes: dict[str, str]) -> None:
        # TCPNode parses ``host:port`` out of its id; give it the route, then
        # replace the identity with the node id.
        super().__init__(routes[node_id])
        self._id = node_id
        self._routes = routes

    @property
    def address(self) -> str:
        # pysyncobj uses ``address`` as the identity sent in the handshake and
        # for the "who dials" ordering; keep it the node id.
        return str(self._id)

    @property
    def host(self) -> str:
        return str(self._routes[self.id].rsplit(":", 1)[0])

    @property
    def port(self) -> int:
        return int(self._routes[self.id].rsplit(":", 1)[1])

    @property
    def ip(self) -> str:
        return str(globalDnsResolver().resolve(self.host))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RoutedNode) and self.id == other.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __str__(self) -> str:
        return str(self._id)

    def __repr__(self) -> str:
        return f"RoutedNode({self.id!r} via {self._routes.get(self.id)})"


# Pending connections the Raft port queues before accepting (pysyncobj: 5).
LISTEN_BACKLOG = 128


class CoordTransport(TCPTransport):
    """TCPTransport + cluster-id handshake, ack gating and catch-up vote filtering.

    pysyncobj constructs the transport itself, as ``transportClass(syncObj,
    selfNode, otherNodes)``: the node passes a ``functools.partial`` binding the
    keyword-only settings.
    """

    def __init__(
        self,
        syncObj: Any,
        selfNode: Any,
        otherNodes: Any,
        *,
        cluster_id: str,
        journal: WriteSequence,
        on_peer_disconnected: Callable[[Any], None] | None = None,
    ) -> None:
        self.cluster_id = cluster_id
        self.journal = journal
        self.on_peer_disconnected = on_peer_disconnected
        # Acknowledgements waiting for a sync: (the journal's written_seq when each was
        # made, node, message), in the order pysyncobj sent them.
        self._held: list[tuple[int, Any, Any]] = []
        self.prevote: PreVote | None = None  # set by the node once built
        self.read_index: ReadIndex | None = None  # set by the node once built
        # While an append-entries is handled: its number, echoed in the reply
        # (coord.raft.read_index).
        self._answering_seq: int | None = None
        self.gate = VotingGate()  # replaced by the node's own
        # While an append-entries is handled: the one index pysyncobj may truncate from.
        self.truncate_from: int | None = None
        self._handshaking: set[Any] = set()  # outgoing, encrypted, no answer yet
        self._warned: dict[str, float] = {}
        super().__init__(syncObj, selfNode, otherNodes)
        self.raft = SyncObjAdapter(self._syncObj)
        self.progress = LeaderProgress(self.raft)

    # -- the listening socket ----------------------------------------------------

    def _maybeBind(self) -> None:
        # pysyncobj listens with a backlog of 5: a burst of connections (every peer
        # redialling after a heal, a port scan) overflows it, and the kernel retries a
        # dropped SYN only after 1 s, then 3 s: a peer's connect delayed by seconds.
        was_ready = self._ready
        super()._maybeBind()
        if self._ready and not was_ready:
            listen_backlog(self._server, LISTEN_BACKLOG)

    # -- cluster secret: say why a peer is refused -------------------------------

    def _warn(self, peer: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._warned.get(peer, -SECRET_WARN_EVERY_S) >= SECRET_WARN_EVERY_S:
            self._warned[peer] = now
            logger.warning(message, *args)

    def _onNewIncomingConnection(self, conn: Any) -> None:
        cast(Any, super())._onNewIncomingConnection(conn)  # not in typings/pysyncobj
        self._limit_frames(conn)
        if conn.encryptor is not None:
            host = peer_host(conn)
            conn.encryptor = _SecretCheck(conn.encryptor, lambda: self._warn(
                host,
                "refused a raft connection from %s: its messages do not authenticate with "
                "this node's cluster secret (a node started with another --cluster-secret?)",
                host,
            ))  # fmt: skip

    def _onOutgoingConnected(self, conn: Any) -> None:
        if self._syncObj.encryptor:
            self._handshaking.add(conn)
        cast(Any, super())._onOutgoingConnected(conn)  # not in typings/pysyncobj

    def _onOutgoingMessageReceived(self, conn: Any, message: Any) -> None:
        self._handshaking.discard(conn)
        cast(Any, super())._onOutgoingMessageReceived(conn, message)  # not in typings/pysyncobj

    def _onDisconnected(self, conn: Any) -> None:
        if conn in self._handshaking:
            self._handshaking.discard(conn)
            node = cast(Any, self)._connToNode(conn)
            self._warn(
                str(node),
                "raft peer %s closed the connection before the encrypted handshake: it does "
                "not accept this node's cluster secret (check --cluster-secret on both), or "
                "it is restarting",
                node,
            )
        cast(Any, super())._onDisconnected(conn)  # not in typings/pysyncobj

    # -- unauthenticated connections: bounded in size and time -------------------

    def _limit_frames(self, conn: Any) -> None:
        """pysyncobj reads a frame's 4-byte length before authenticating anything and
        buffers up to 2 GiB for it (quadratically): 16 MiB from anyone who reaches the
        port deposed a leader. Refuse a frame larger than a handshake while the peer is
        unidentified, and larger than any real message afterwards."""
        conn._coord_accepted = time.monotonic()

        def allowed(size: int) -> bool:
            limit = UNIDENTIFIED_FRAME_MAX if conn in self._unknownConnections else FRAME_MAX
            if 0 <= size <= limit:
                return True
            self._warn(
                "frames",
                "refused a raft connection that announced a %d-byte frame (limit %d)",
                size,
                limit,
            )
            conn.disconnect()
            return False

        guard_frames(conn, allowed)

    def close_idle_unidentified(self, timeout_s: float) -> None:
        """Close incoming connections that have not identified themselves within
        ``timeout_s`` (pysyncobj checks a connection's timeout only when it has an
        event, so it would keep an idle one forever). Tick thread."""
        now = time.monotonic()
        for conn in list(self._unknownConnections):
            if now - getattr(conn, "_coord_accepted", now) > timeout_s:
                self._unknownConnections.discard(conn)
                conn.disconnect()

    # -- handshake -------------------------------------------------------------

    def _sendSelfAddress(self, conn: Any) -> None:
        conn.send(f"{self.cluster_id}/{self._selfNode.address}")

    def _onIncomingMessageReceived(self, conn: Any, message: Any) -> None:
        if self._syncObj.encryptor and not conn.sendRandKey:
            super()._onIncomingMessageReceived(conn, message)
            return
        if isinstance(message, str) and "/" in message:
            cluster, node_id = message.rsplit("/", 1)
            if cluster != self.cluster_id:
                logger.error(
                    "refused a raft connection from %r of cluster %r: this node is in cluster "
                    "%r (a node started on another cluster's data dir?)",
                    node_id,
                    cluster,
                    self.cluster_id,
                )
                conn.disconnect()
                self._unknownConnections.discard(conn)
                return
            message = node_id
        else:  # pysyncobj's utility messages (lists) included: coord uses none
            logger.warning("refused a raft connection that did not identify its cluster")
            conn.disconnect()
            self._unknownConnections.discard(conn)
            return
        super()._onIncomingMessageReceived(conn, message)

    # -- acks after fsync ------------------------------------------------------

    def send(self, node: Any, message: Any) -> bool:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "next_node_idx":
            # pysyncobj sends these only while handling a leader's append-entries,
            # after taking its term: the leader drops replies of other terms. A
            # conflict also says how far back it goes (coord.raft.progress).
            raft = self.raft
            if not message.get("reset"):
                if not self.gate.may_acknowledge():
                    return True  # a blank node acknowledges nothing yet (coord.raft.gate)
                if message.get("success"):
                    self.gate.counted()
                    refused = raft.take_refused_snapshot()
                    if refused is not None:  # pysyncobj would claim our whole log
                        message = {**message, "next_node_idx": refused + 1}
            message = {**message, "term": raft.current_term}
            if self._answering_seq is not None:
                message["coord_seq"] = self._answering_seq
            if message.get("reset"):
                message.update(conflict_of(raft.log, message["next_node_idx"]))
            seq = self.journal.written_seq
            if self._held or self.journal.synced_seq < seq:
                self._held.append((seq, node, message))
                return True
        if kind == "request_vote" and not self.gate.may_campaign():
            return False
        if kind == "append_entries" and self.read_index is not None:
            message = {**message, "coord_seq": self.read_index.stamp(node.id)}
        return bool(super().send(node, message))

    def send_now(self, node: Any, message: dict[str, Any]) -> bool:
        """Send without holding back (PreVote traffic)."""
        return bool(super().send(node, message))

    def flush_held(self) -> None:
        """Send the held acknowledgements whose writes are durable now, in order."""
        held, synced = self._held, self.journal.synced_seq
        ready = 0
        while ready < len(held) and held[ready][0] <= synced:
            ready += 1
        if not ready:
            return
        self._held = held[ready:]
        for _, node, message in held[:ready]:
            super().send(node, message)

    # -- inbound filtering -----------------------------------------------------

    def _onMessageReceived(self, node: Any, message: Any) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        prevote = self.prevote
        if kind == "next_node_idx":
            # pysyncobj's handler only moves a leader's indexes: coord's replaces it.
            if self.progress.on_reply(node, message) and prevote is not None:
                prevote.heard_from(node.id)
            if self.read_index is not None:
                self.read_index.on_reply(node.id, message)  # the round's voters confirm
            return
        if kind == "append_entries":
            if prevote is not None:
                prevote.heard_from(node.id)
        elif kind == "pre_vote":
            if prevote is not None:
                prevote.answer(node, message)
            return
        elif kind == "pre_vote_resp":
            if prevote is not None and node in self.raft.other_nodes:  # voters' grants only
                prevote.on_response(node, message)
            return
        elif kind == "coord_ping":
            return  # read: that keeps the link open (coord.raft.node._ping_peers)
        elif kind == "coord_term_probe":
            self.send_now(
                node,
                {
                    "type": "coord_term",
                    "term": self.raft.current_term,
                    "fresh": self.gate.fresh,
                    "learner": self.gate.learner,
                },
            )
            return
        elif kind == "coord_term":
            term = message.get("term")
            if message.get("learner") is True:
                return  # no majority that commits holds a learner: its term proves nothing
            if isinstance(term, int) and not isinstance(term, bool) and term >= 0:
                self.gate.answer(node.id, term, message.get("fresh") is True)
            return
        elif kind == "request_vote":
            if not self.gate.may_vote_for(message.get("last_log_term", 1)):
                return  # a blank node must not help a non-blank candidate (coord.raft.gate)
            if prevote is not None and node in self.raft.other_nodes:
                prevote.rival_candidate(node.id, message)  # a split vote? (coord.raft.prevote)
        elif kind == "response_vote" and node not in self.raft.other_nodes:
            return  # a learner's (or a stranger's) grant counts for nothing
        elif kind == "timeout_now" and self.gate.learner:
            return  # a learner never campaigns, even when a leader asks
        if kind == "append_entries":
            if int(message.get("term") or 0) >= self.raft.current_term:
                # Only a leader pysyncobj follows counts (a stale one's word does not).
                self.gate.leader_commit(int(message.get("commit_index") or 0))
            seq = message.get("coord_seq")
            self._answering_seq = seq if isinstance(seq, int) else None
            message, self.truncate_from = appendfix.rewrite(
                self.raft.log, message, self.raft.commit_index
            )
            try:
                super()._onMessageReceived(node, message)
            finally:
                self.truncate_from = None
                self._answering_seq = None
            return
        super()._onMessageReceived(node, message)

    def _onNodeDisconnected(self, node: Any) -> None:
        super()._onNodeDisconnected(node)
        if self.read_index is not None:
            self.read_index.forget(node.id)
        if self.on_peer_disconnected is not None:
            self.on_peer_disconnected(node)


class _SecretCheck:
    """pysyncobj's Fernet (the cluster secret) for one connection, calling ``refused``
    when a message does not authenticate (pysyncobj then closes the connection)."""

    def __init__(self, fernet: Any, refused: Callable[[], None]) -> None:
        self._fernet = fernet
        self._refused = refused

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        return bytes(self._fernet.encrypt_at_time(data, current_time))

    def extract_timestamp(self, token: bytes) -> int:
        try:
            return int(self._fernet.extract_timestamp(token))  # checks the signature
        except InvalidToken:
            self._refused()
            raise

    def decrypt(self, token: bytes) -> bytes:
        return bytes(self._fernet.decrypt(token))
