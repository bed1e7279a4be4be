"""Routed, cluster-checked, fsync-gated peer transport on top of pysyncobj's TCP.

- Node identity is separate from the dial address: a :class:`RoutedNode` has a
  stable id (``n1``) while the address it is dialled at comes from a route
  table. Chaos tests point each directed link at its own proxy. pysyncobj lets
  only the node whose id sorts higher dial a pair, so the connection for pair
  (a, b) with a > b is the one ``a`` opens towards ``b``'s route.
- The handshake carries ``cluster_id/node_id``: a node of another cluster (a
  foreign data dir) is disconnected and logged, never joined.
- Acknowledgements (``next_node_idx``) are held back until the journal is
  synced; the node flushes them once per tick after one fsync (group commit).
- A blank node votes and campaigns only as ``coord.raft.gate`` allows.
- PreVote messages (``coord.raft.prevote``) are handled here, beside
  pysyncobj's own.

Thread: everything runs on the Raft tick thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pysyncobj.dns_resolver import globalDnsResolver
from pysyncobj.node import TCPNode
from pysyncobj.transport import TCPTransport

from coord.raft import appendfix
from coord.raft.gate import VotingGate
from coord.raft.prevote import PreVote

logger = logging.getLogger(__name__)


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


class CoordTransport(TCPTransport):
    """TCPTransport + cluster-id handshake, ack gating and catch-up vote filtering.

    pysyncobj constructs the transport itself, so its settings are class
    attributes: the node binds them in a subclass made for it.
    """

    cluster_id: str = ""
    is_durable: Callable[[], bool] = staticmethod(lambda: True)
    on_peer_disconnected: Callable[[Any], None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._held: list[tuple[Any, Any]] = []
        self.prevote: PreVote | None = None  # set by the node once built
        self.gate = VotingGate()  # replaced by the node's own
        # While an append-entries is handled: the one index pysyncobj may truncate from.
        self.truncate_from: int | None = None
        super().__init__(*args, **kwargs)

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
        elif not isinstance(message, list):  # utility messages are lists
            logger.warning("refused a raft connection that did not identify its cluster")
            conn.disconnect()
            self._unknownConnections.discard(conn)
            return
        super()._onIncomingMessageReceived(conn, message)

    # -- acks after fsync ------------------------------------------------------

    def send(self, node: Any, message: Any) -> bool:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "next_node_idx" and (self._held or not self.is_durable()):
            self._held.append((node, message))
            return True
        if kind == "request_vote" and not self.gate.may_campaign():
            return False
        return bool(super().send(node, message))

    def send_now(self, node: Any, message: dict[str, Any]) -> bool:
        """Send without holding back (PreVote traffic)."""
        return bool(super().send(node, message))

    def flush_held(self) -> None:
        """Send the acknowledgements held back until the journal was synced."""
        held, self._held = self._held, []
        for node, message in held:
            super().send(node, message)

    # -- inbound filtering -----------------------------------------------------

    def _onMessageReceived(self, node: Any, message: Any) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        prevote = self.prevote
        if kind in ("append_entries", "next_node_idx"):
            if prevote is not None:
                prevote.heard_from(node.id)
        elif kind == "pre_vote":
            if prevote is not None:
                prevote.answer(node, message)
            return
        elif kind == "pre_vote_resp":
            if prevote is not None:
                prevote.on_response(node, message)
            return
        elif kind == "request_vote" and not self.gate.may_vote_for(message.get("last_log_term", 1)):
            return  # a blank node must not help a non-blank candidate (coord.raft.gate)
        if kind == "append_entries":
            self.gate.leader_commit(int(message.get("commit_index") or 0))
            message, self.truncate_from = appendfix.rewrite(
                self._syncObj._SyncObj__raftLog, message
            )
            try:
                super()._onMessageReceived(node, message)
            finally:
                self.truncate_from = None
            return
        super()._onMessageReceived(node, message)

    def _onNodeDisconnected(self, node: Any) -> None:
        super()._onNodeDisconnected(node)
        if self.on_peer_disconnected is not None:
            self.on_peer_disconnected(node)
