"""The in-process test layer: servicers over a fake Raft node, no sockets, no threads.

Between the pure state machine (tests/unit) and subprocess clusters (tests/integration)
sits the API: validation, error mapping, request ids, headers, leader hints, streams.
:class:`FakeRaft` is a one-replica "Raft" with the surface the servicers and the leader's
duties use (``coord.raft.node.RaftNode``'s): a proposal is applied to a real
:class:`~coord.state.machine.StateMachine` at once (or held, to test timeouts), reads run
under a lock, and the test sets the node's role, term and leader. :func:`handler` gives a
servicer method wrapped exactly as ``coord.server.api.handlers`` registers it, so a call
runs the real decoding, error mapping and metrics wrappers. Everything runs on the test's
event loop: deterministic, milliseconds per test.

The model is hashicorp/raft's in-memory transport and etcd's server tests over a fake
``raftNode``. The next layer down is tests/inproc/memory_raft.py: real RaftNodes in one
process over an in-memory network (tests/inproc/test_raft_inproc.py).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import grpc

from coord import errors
from coord.config import NodeConfig, Peer
from coord.raft.node import ROLE_FOLLOWER, ROLE_LEADER, View
from coord.server.api import handlers
from coord.server.api.context import NodeContext
from coord.state.machine import StateMachine
from coord.v1 import raft_pb2

CLUSTER_ID = "00c0ffee00c0ffee"
NODES = ("n1", "n2", "n3")


class FakeRaft:
    """A leader (by default) of a cluster of NODES whose every proposal commits at once.

    ``hold_proposals`` queues proposals instead (they never commit until ``release``):
    a partitioned leader. ``time_ms`` stamps commands (the wall clock of the proposer).
    """

    def __init__(self, node_id: str = "n1") -> None:
        self.node_id = node_id
        self.state = StateMachine()
        self.lock = threading.RLock()
        self.started = time.monotonic()
        self.time_ms = 1_700_000_000_000
        self.hold_proposals = False
        self.held: list[tuple[raft_pb2.Command, Callable[..., None]]] = []
        self.proposed: list[raft_pb2.Command] = []
        self._listeners: list[Callable[[View], None]] = []
        self._apply_listeners: list[Callable[[], None]] = []
        self._view = View(
            role=ROLE_LEADER, term=1, leader_id=node_id, members=frozenset(NODES),
            connected=frozenset(NODES) - {node_id}, has_quorum=True, leader_alive=True,
        )  # fmt: skip
        self._commit(raft_pb2.Command(bootstrap=raft_pb2.Bootstrap(cluster_id=CLUSTER_ID)))

    # -- what the test controls ---------------------------------------------------

    def become(self, role: int, term: int | None = None, leader_id: str | None = None) -> None:
        """Change role/term/leader as an election would, and tell the listeners."""
        term = self._view.term if term is None else term
        if leader_id is None:
            leader_id = self.node_id if role == ROLE_LEADER else ""
        self._view = dataclasses.replace(self._view, role=role, term=term, leader_id=leader_id)
        for fn in list(self._listeners):
            fn(self._view)

    def step_down(self, new_leader: str = "n2") -> None:
        self.become(ROLE_FOLLOWER, self._view.term + 1, new_leader)

    def release(self) -> None:
        """Commit every held proposal, in order."""
        held, self.held = self.held, []
        for cmd, callback in held:
            callback(self._commit(cmd), None)

    # -- RaftNode's surface ----------------------------------------------------------

    @property
    def view(self) -> View:
        return self._view

    def api_address(self, node_id: str) -> str:
        return f"127.0.0.1:{2379 + 2 * NODES.index(node_id)}" if node_id in NODES else ""

    def members(self) -> dict[str, Any]:
        return {n: self.api_address(n) for n in NODES}

    def read(self, fn: Callable[[StateMachine], Any]) -> Any:
        with self.lock:
            return fn(self.state)

    def propose_cb(self, cmd: raft_pb2.Command, callback: Callable[..., None]) -> None:
        if not cmd.time_ms:
            cmd.time_ms = self.time_ms
        self.proposed.append(cmd)
        if self._view.role != ROLE_LEADER:
            callback(None, errors.NotLeader("not the leader", self._view.leader_id, ""))
        elif self.hold_proposals:
            self.held.append((cmd, callback))
        else:
            callback(self._commit(cmd), None)

    def propose(self, cmd: raft_pb2.Command) -> Future[raft_pb2.CommandResult]:
        fut: Future[raft_pb2.CommandResult] = Future()

        def done(result: raft_pb2.CommandResult | None, err: BaseException | None) -> None:
            if err is None:
                fut.set_result(result)  # type: ignore[arg-type]
            else:
                fut.set_exception(err)

        self.propose_cb(cmd, done)
        return fut

    def barrier(self) -> Future[None]:
        fut: Future[None] = Future()
        noop = raft_pb2.Command(term=self._view.term)
        self.propose_cb(
            noop, lambda res, err: fut.set_exception(err) if err else fut.set_result(None)
        )
        return fut

    def add_listener(self, fn: Callable[[View], None]) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[View], None]) -> None:
        self._listeners.remove(fn)

    def add_apply_listener(self, fn: Callable[[], None]) -> None:
        self._apply_listeners.append(fn)

    def change_pending(self) -> bool:
        return False

    def check_no_pending_change(self) -> None:
        return None

    def _commit(self, cmd: raft_pb2.Command) -> raft_pb2.CommandResult:
        with self.lock:
            result = self.state.apply(cmd.SerializeToString())
        self._view = dataclasses.replace(
            self._view, commit_index=self._view.commit_index + 1,
            applied_index=self._view.applied_index + 1,
        )  # fmt: skip
        for fn in list(self._apply_listeners):
            fn()
        return result


def node_config(node_id: str = "n1") -> NodeConfig:
    peers = [
        Peer(n, f"127.0.0.1:{2380 + 2 * i}", f"127.0.0.1:{2379 + 2 * i}")
        for i, n in enumerate(NODES)
    ]
    return NodeConfig(
        node_id=node_id, data_dir="/nonexistent", peers=tuple(peers),
        explicit_cluster_id=CLUSTER_ID, request_timeout_s=2.0,
    )  # fmt: skip


class Aborted(Exception):
    """What ServicerContext.abort raises here: the status the client would see."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: dict[str, str]) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details, self.trailing = code, details, trailing


class FakeServicerContext:
    """The parts of grpc.aio.ServicerContext the handlers and servicers use."""

    def __init__(self, timeout_s: float | None = None) -> None:
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._trailing: dict[str, str] = {}
        self._code: grpc.StatusCode | None = None

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def set_trailing_metadata(self, md: tuple[tuple[str, str], ...]) -> None:
        self._trailing = dict(md)

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def code(self) -> grpc.StatusCode | None:
        return self._code

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code
        raise Aborted(code, details, self._trailing)


def node_context(raft: FakeRaft | None = None) -> tuple[FakeRaft, NodeContext]:
    raft = raft or FakeRaft()
    cfg = node_config(raft.node_id)
    return raft, NodeContext(cfg, raft)  # type: ignore[arg-type]


def handler(servicer: object, service: Any, method: str, ctx: NodeContext) -> Any:
    """``servicer.method`` wrapped as coord.server.api.handlers registers it (no guard),
    called as gRPC would: ``call(request, context)``, where ``request`` is a message or
    raw bytes (it goes through the handler's decoder either way, as off the wire)."""
    desc = service.methods_by_name[method]
    h = handlers._handler(desc, getattr(servicer, method), ctx.leader_hint)
    decode = h.request_deserializer

    def wire(request: Any) -> Any:
        return decode(request if isinstance(request, bytes) else request.SerializeToString())

    if desc.client_streaming:

        def bidi(requests: Any, context: Any) -> Any:
            async def decoded() -> Any:
                async for r in requests:
                    yield wire(r)

            return h.stream_stream(decoded(), context)

        return bidi
    inner = h.unary_stream if desc.server_streaming else h.unary_unary
    return lambda request, context: inner(wire(request), context)
