"""The public client: endpoint list, leader discovery, retries with jitter, typed errors.

The way into the library: ``client.session(ttl_s)`` (a Session, opened by ``start()`` or
``with``), ``client.group(name)`` (a Group: create, get, masters, observe, watch, member,
campaign, balancer) and ``client.watch(...)``. Leader discovery is one helper,
:meth:`Client.find_leader`, used by calls, session keepalives, campaigns and streams.

Every write carries a request id, so a retry after an ambiguous failure (the
leader died mid-write, a timeout) applies at most once and returns the first
result. Writes and linearizable reads go to the leader when it is known (no
forwarding hop); any node would answer them, forwarding to the leader.

Thread-safety: a Client may be shared between threads.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import grpc

from coord import errors
from coord.client import txn as txn_builders
from coord.client.credentials import Credentials
from coord.client.errors import hint_for, translate
from coord.client.pipeline import Closed, Pipe, Unsupported
from coord.v1 import cluster_pb2, cluster_pb2_grpc, kv_pb2, kv_pb2_grpc

# The other generated modules are imported where they are used: `coordctl kv get` and
# `status` call the cluster and KV services only (start-up time, issue 18; kept so by
# tests/unit/test_cli_lazy.py). Group and Session: their modules import this one.
if TYPE_CHECKING:
    from coord.client.group import Group
    from coord.client.session import Session
    from coord.v1 import (
        availability_pb2,
        common_pb2,
        groups_pb2,
        maintenance_pb2,
        maintenance_pb2_grpc,
    )

T = TypeVar("T")

# After an endpoint fails, other endpoints are preferred for this long.
SUSPECT_S = 2.0
# How long find_leader() waits for one node's answer (a hung node must not stall it).
LEADER_ASK_S = 0.3

_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
    # HTTP/2 pings every second, dead after one unanswered: a hung node (SIGSTOP keeps
    # its sockets open) fails the streams on it within ~2 s, and they move elsewhere.
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_time_between_pings_ms", 1000),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
]


# gRPC target schemes an endpoint may name explicitly (then taken as it is).
_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


def parse_endpoints(endpoints: str | Sequence[str]) -> list[str]:
    """``"a:1,b:2"`` or a list -> ``["a:1", "b:2"]``; rejects an empty list, and an
    endpoint without a port (gRPC would dial port 443 there: never coord's)."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    out = [e.strip().removeprefix("http://") for e in items if e.strip()]
    if not out:
        raise errors.InvalidArgument("no endpoints: give at least one host:port")
    for ep in out:
        _check_port(ep)
    return out


def _check_port(ep: str) -> None:
    if ep.startswith(_SCHEMES):
        return
    host, sep, port = ep.rpartition(":")
    if ep.startswith("[") and not host.endswith("]"):  # "[::1]": a bracketed IPv6 address
        host, sep, port = ep, "", ""
    if not sep or not host:
        raise errors.InvalidArgument(
            f"endpoint {ep!r} has no port: give HOST:PORT, a node's client API address "
            f"(e.g. {ep}:2379); it is refused rather than dialled on a default port"
        )
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise errors.InvalidArgument(
            f"endpoint {ep!r}: port {port!r} is not a number in 1..65535: give HOST:PORT"
        )


class Client:
    """A coord cluster client.

    ``timeout_s`` bounds a whole call including retries; ``attempt_timeout_s``
    bounds one attempt on one endpoint.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        timeout_s: float = 10.0,
        attempt_timeout_s: float = 2.0,
        credentials: Credentials | None = None,
        fail_fast_refused: bool = False,
        pipeline: bool = True,
    ) -> None:
        """``credentials``: TLS and a bearer token (coord.client.credentials).

        ``pipeline``: a KV request (put, get, range, delete, txn) issued while another
        of this client's is in flight goes over one KV.Pipeline stream per endpoint,
        batched with the others, instead of a unary call of its own (coord.client.
        pipeline); a lone request is a unary call either way. False: always unary.

        ``fail_fast_refused``: raise Unavailable as soon as every endpoint has refused
        the connection (nothing listens there), instead of retrying until
        ``timeout_s``: for interactive tools (coordctl). A program that should ride
        out a restart of the whole cluster keeps the default."""
        self.fail_fast_refused = fail_fast_refused
        self.endpoints = parse_endpoints(endpoints)
        self.credentials = credentials or Credentials()
        for ep in self.endpoints:  # fail at once, not as "no endpoint answered"
            self.credentials.check_endpoint(ep)
        self.timeout_s = timeout_s
        self.attempt_timeout_s = attempt_timeout_s
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._preferred: str | None = None  # the leader's API address, when known
        self._next = random.randrange(len(self.endpoints))
        self._suspect: dict[str, float] = {}  # endpoint -> monotonic time it may be tried again
        self.pipeline = pipeline
        self._kv_in_flight = 0
        self._pipes: dict[str, Pipe] = {}  # endpoint -> its KV.Pipeline stream

    # -- plumbing --------------------------------------------------------------

    def channel(self, endpoint: str) -> grpc.Channel:
        with self._lock:
            ch = self._channels.get(endpoint)
            if ch is None:
                ch = self.credentials.channel(endpoint, _CHANNEL_OPTIONS)
                self._channels[endpoint] = ch
            return ch

    def close(self) -> None:
        with self._lock:
            pipes, self._pipes = list(self._pipes.values()), {}
        for pipe in pipes:  # before the channels: the streams end cleanly
            pipe.close()
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _candidates(self, prefer_leader: bool) -> Iterator[str]:
        """Endpoints to try, leader first when known, then round-robin, forever.

        An endpoint that just failed is skipped for a while (unless every
        endpoint did), so a hung node costs one attempt timeout, not one per pass.
        """
        while True:
            now = time.monotonic()
            preferred = self._preferred
            if prefer_leader and preferred and self._suspect.get(preferred, 0.0) <= now:
                yield preferred
            with self._lock:
                order = [
                    self.endpoints[(self._next + i) % len(self.endpoints)]
                    for i in range(len(self.endpoints))
                ]
                self._next += 1
            healthy = [ep for ep in order if self._suspect.get(ep, 0.0) <= now]
            yield (healthy or order)[0]

    def _suspect_endpoint(self, ep: str) -> None:
        self._suspect[ep] = time.monotonic() + SUSPECT_S

    def call(
        self,
        fn: Callable[[grpc.Channel, float], T],
        prefer_leader: bool = True,
        endpoint: str | None = None,
    ) -> T:
        """Run ``fn(channel, attempt_timeout)`` with retries of retryable errors.

        With ``endpoint``, talk to that node only (no retries elsewhere).
        """
        return self._call_on(lambda ep, ch, t: fn(ch, t), prefer_leader, endpoint)

    def _call_on(
        self,
        fn: Callable[[str, grpc.Channel, float], T],
        prefer_leader: bool = True,
        endpoint: str | None = None,
    ) -> T:
        """:meth:`call` with ``fn`` told the endpoint too: ``fn(endpoint, channel, t)``."""
        deadline = time.monotonic() + self.timeout_s
        if prefer_leader and not endpoint and self._preferred is None:
            self.find_leader()  # best effort: otherwise any node forwards
        delay = 0.01
        last: errors.CoordError | None = None
        refused: set[str] = set()  # endpoints whose last answer was a refused connection
        candidates = iter([endpoint]) if endpoint else self._candidates(prefer_leader)
        for ep in candidates:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                result = fn(ep, self.channel(ep), min(self.attempt_timeout_s, remaining))
            except grpc.RpcError as rpc_err:
                err = rpc_err.err if isinstance(rpc_err, _RetryableRpc) else translate(rpc_err, ep)
                if not err.retryable or endpoint:
                    raise err from None
                last = err
                if self.fail_fast_refused:
                    self._note_refusal(refused, ep, rpc_err, err)
                self._learn_leader(err, ep)
                if not isinstance(rpc_err, _RetryableRpc):
                    self._suspect_endpoint(ep)
                time.sleep(min(random.uniform(0, delay), max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 0.25)
                continue
            return result
        raise errors.Unavailable(
            f"no endpoint of {self.endpoints} answered within {self.timeout_s:.1f} s"
            + (f"; last error: {last.message}" if last else "")
            + hint_for(last)
        )

    def _note_refusal(
        self, refused: set[str], ep: str, rpc_err: grpc.RpcError, err: errors.CoordError
    ) -> None:
        """Track refused connections; raise once every endpoint refused (fail_fast_refused)."""
        if isinstance(rpc_err, _RetryableRpc) or not _is_refusal(err):
            refused.discard(ep)
            return
        refused.add(ep)
        if not set(self.endpoints) <= refused:
            return
        raise errors.Unavailable(
            f"connection refused by every endpoint ({', '.join(self.endpoints)}): nothing "
            "listens there; check that coord runs on those hosts and that these are its "
            "client API addresses (HOST:PORT)"
        )

    def find_leader(
        self, skip: str | None = None, wait: bool = False, ask_timeout_s: float = LEADER_ASK_S
    ) -> str | None:
        """The leader's client API address, remembered for later calls: the one place
        the client, a session's keepalive loop and the group recipes look for the leader.

        Without ``wait``: one quick pass asking each endpoint in turn (``ask_timeout_s``
        each, so a hung node costs little), ignoring ``skip`` (a leader that just stalled)
        as endpoint and as answer; None when no node named a leader. With ``wait``: as
        :meth:`leader`, retrying until a node knows one (within ``timeout_s``)."""
        if wait:
            return self.leader().leader_api_address or None
        for ep in self.endpoints:
            if ep == skip:
                continue
            try:
                resp = _ask_leader(self.channel(ep), ask_timeout_s)
            except grpc.RpcError:
                continue
            address = str(resp.leader_api_address)
            if address and address != skip:
                self._preferred = address
                return address
        return None

    def _learn_leader(self, err: errors.CoordError, ep: str) -> None:
        hint = err.leader_address
        if hint and hint != ep and self._suspect.get(hint, 0.0) <= time.monotonic():
            self._preferred = hint
        elif ep == self._preferred:
            self._preferred = None  # the leader we knew failed: rediscover

    def _note_leader(self, address: str) -> None:
        if address:
            self._preferred = address

    # -- sessions, groups, events ----------------------------------------------

    def session(self, ttl_s: float = 5.0, **options: Any) -> Session:
        """A session with this TTL, not opened yet: ``start()`` it, or use it as a
        context manager (``with client.session(5) as s:``), which also closes it.
        ``options`` are :class:`coord.client.session.Session`'s keywords: ``name``,
        ``drift``, ``on_state``, ``on_stepdown``, ``stepdown_grace_s``."""
        from coord.client.session import Session

        return Session(self, ttl_s, **options)

    def group(self, name: str) -> Group:
        """A handle on the group ``name`` (no I/O): create, read, observe, watch it, and
        register members and campaign in it (:class:`coord.client.group.Group`)."""
        from coord.client.group import Group

        return Group(self, name)

    def watch(
        self,
        from_revision: int = 0,
        groups: Iterable[str] = (),
        types: Iterable[str] = (),
        prefix: bytes | str = b"",
    ) -> Iterator[groups_pb2.Event]:
        """Events of every group (or of ``groups``), of every type (or of ``types``),
        from ``from_revision`` (0: from now), resuming after failures without gaps.
        With ``prefix``: only key-value events (kv_put, kv_delete, kv_txn) touching keys
        that start with it, each trimmed to those keys.
        Raises OutOfRange when the events needed were compacted: re-read the state and
        watch from its revision + 1. For one group: ``client.group(name).watch()``."""
        from coord.client.election import watch_events

        return watch_events(self, from_revision, groups, types, _b(prefix))

    # -- cluster ---------------------------------------------------------------

    def status(self, endpoint: str | None = None) -> cluster_pb2.StatusResponse:
        """Status of one node (``endpoint``), or of whichever node answers first."""
        return self.call(
            lambda ch, t: cluster_pb2_grpc.ClusterStub(ch).Status(
                cluster_pb2.StatusRequest(), timeout=t
            ),
            prefer_leader=False,
            endpoint=endpoint,
        )

    def leader(self) -> cluster_pb2.GetLeaderResponse:
        """The current leader, as seen by a node that knows one (retries while electing)."""

        def ask(ch: grpc.Channel, t: float) -> cluster_pb2.GetLeaderResponse:
            resp = _ask_leader(ch, t)
            if not resp.leader_id:
                raise _RetryableRpc(errors.NoLeader("no leader elected yet"))
            return resp

        resp = self.call(ask, prefer_leader=False)
        self._note_leader(resp.leader_api_address)
        return resp

    def availability(
        self, group: str = "", windows_s: Sequence[int] = (), serializable: bool = False
    ) -> availability_pb2.AvailabilityResponse:
        """The availability ledger's figures per group (all groups when ``group`` is "")."""
        from coord.v1 import availability_pb2, availability_pb2_grpc

        req = availability_pb2.AvailabilityRequest(
            group=group, windows_s=list(windows_s), serializable=serializable
        )
        return self.call(
            lambda ch, t: availability_pb2_grpc.AvailabilityStub(ch).Report(req, timeout=t),
            prefer_leader=not serializable,
        )

    def nodes(self) -> cluster_pb2.ListNodesResponse:
        return self.call(
            lambda ch, t: cluster_pb2_grpc.ClusterStub(ch).ListNodes(
                cluster_pb2.ListNodesRequest(), timeout=t
            ),
            prefer_leader=True,
        )

    def add_node(
        self,
        node_id: str,
        raft_address: str,
        api_address: str,
        *,
        learner: bool = False,
        promote_when_caught_up: bool = False,
    ) -> cluster_pb2.AddNodeResponse:
        """Add a member (run on the leader; idempotent for the same addresses). Start the
        new node afterwards with ``--initial-cluster-state existing`` and the cluster id
        and members this returns.

        ``learner``: it receives the log but neither votes nor counts towards commits
        (the quorum stays as it is) until :meth:`promote_node`, or, with
        ``promote_when_caught_up``, until the leader sees it caught up. Without it, as
        etcd's ``MemberAdd``, the node is a voter at once and raises the quorum."""
        req = cluster_pb2.AddNodeRequest(
            id=node_id,
            raft_address=raft_address,
            api_address=api_address,
            learner=learner,
            promote_when_caught_up=promote_when_caught_up,
        )
        return self.call(
            lambda ch, t: cluster_pb2_grpc.ClusterStub(ch).AddNode(req, timeout=t),
            prefer_leader=True,
        )

    def promote_node(self, node_id: str) -> cluster_pb2.AddNodeResponse:
        """Make learner ``node_id`` a voter (idempotent). Refused
        (:class:`coord.errors.FailedPrecondition`, saying how far behind it is) while
        its log is further behind the leader's than the cluster's bound."""
        req = cluster_pb2.AddNodeRequest(id=node_id, promote=True)
        return self.call(
            lambda ch, t: cluster_pb2_grpc.ClusterStub(ch).AddNode(req, timeout=t),
            prefer_leader=True,
        )

    def remove_node(self, node_id: str) -> cluster_pb2.RemoveNodeResponse:
        """Remove a member (not the leader: transfer leadership first)."""
        req = cluster_pb2.RemoveNodeRequest(id=node_id)
        return self.call(
            lambda ch, t: cluster_pb2_grpc.ClusterStub(ch).RemoveNode(req, timeout=t),
            prefer_leader=True,
        )

    def transfer_leader(self, to: str = "") -> cluster_pb2.TransferLeaderResponse:
        """Move leadership to ``to`` (or the most caught-up member); returns the new leader."""
        req = cluster_pb2.TransferLeaderRequest(to=to)
        resp: cluster_pb2.TransferLeaderResponse = self.call(
            lambda ch, t: cluster_pb2_grpc.ClusterStub(ch).TransferLeader(req, timeout=t),
            prefer_leader=True,
        )
        self._note_leader(resp.leader_api_address)
        return resp

    def watch_leader(self, endpoint: str | None = None) -> Iterator[cluster_pb2.LeaderEvent]:
        """Stream leader changes as seen by one node (no retries: re-call to resume)."""
        ep = endpoint or self.endpoints[0]
        stream = cluster_pb2_grpc.ClusterStub(self.channel(ep)).WatchLeader(
            cluster_pb2.WatchLeaderRequest()
        )
        try:
            yield from stream
        except grpc.RpcError as e:
            raise translate(e, ep) from None

    # -- KV --------------------------------------------------------------------

    def put(
        self,
        key: bytes | str,
        value: bytes | str,
        expected_mod_revision: int | None = None,
        prev_kv: bool = False,
        request_id: str | None = None,
        session: Session | str | None = None,
    ) -> kv_pb2.PutResponse:
        """Put ``key``; with ``expected_mod_revision``, only if it matches (0: absent).

        With ``session`` (a started Session, or its id) the key is bound to it: deleted
        in the same apply that ends the session (expiry or close), like an etcd lease
        key or a ZooKeeper ephemeral. The latest put decides: a put without a session
        unbinds the key. A session that has ended is refused (NotFound)."""
        req = kv_pb2.PutRequest(
            key=_b(key),
            value=_b(value),
            prev_kv=prev_kv,
            request_id=request_id or new_request_id(),
            session_id=txn_builders.session_id(session),
        )
        if expected_mod_revision is not None:
            req.expected_mod_revision = expected_mod_revision
        resp: kv_pb2.PutResponse = self._kv("put", req)
        return resp

    def get(self, key: bytes | str, serializable: bool = False) -> kv_pb2.KeyValue | None:
        """One key's record, or None."""
        resp = self.range(key, serializable=serializable)
        return resp.kvs[0] if resp.kvs else None

    def range(
        self,
        key: bytes | str,
        prefix: bool = False,
        limit: int = 0,
        serializable: bool = False,
        keys_only: bool = False,
    ) -> kv_pb2.RangeResponse:
        req = kv_pb2.RangeRequest(
            key=_b(key), prefix=prefix, limit=limit, serializable=serializable, keys_only=keys_only
        )
        resp: kv_pb2.RangeResponse = self._kv("range", req, prefer_leader=not serializable)
        return resp

    def delete(
        self,
        key: bytes | str,
        prefix: bool = False,
        expected_mod_revision: int | None = None,
        prev_kv: bool = False,
        request_id: str | None = None,
    ) -> kv_pb2.DeleteResponse:
        req = kv_pb2.DeleteRequest(
            key=_b(key), prefix=prefix, prev_kv=prev_kv, request_id=request_id or new_request_id()
        )
        if expected_mod_revision is not None:
            req.expected_mod_revision = expected_mod_revision
        resp: kv_pb2.DeleteResponse = self._kv("delete", req)
        return resp

    def txn(
        self,
        compares: Iterable[kv_pb2.Compare] = (),
        success: Iterable[kv_pb2.TxnOp | kv_pb2.PutRequest | kv_pb2.DeleteRequest] = (),
        failure: Iterable[kv_pb2.TxnOp | kv_pb2.PutRequest | kv_pb2.DeleteRequest] = (),
        request_id: str | None = None,
    ) -> kv_pb2.TxnResponse:
        """If every compare holds apply ``success``, else ``failure``: atomically, in one
        revision, applied once however often it is retried. Build the parts with
        :mod:`coord.client.txn`::

            from coord.client import txn as t
            c.txn(compares=[t.mod_revision("k") == rev], success=[t.put("k", "v")])

        ``succeeded`` says which branch ran; ``responses`` has one answer per operation
        of that branch. InvalidArgument (nothing applied) for a malformed or oversized
        transaction (``coord.state.limits``: MAX_TXN_OPS, MAX_TXN_BYTES)."""
        req = kv_pb2.TxnRequest(
            compares=[txn_builders.as_compare(c) for c in compares],
            success=[txn_builders.as_op(op) for op in success],
            failure=[txn_builders.as_op(op) for op in failure],
            request_id=request_id or new_request_id(),
        )
        resp: kv_pb2.TxnResponse = self._kv("txn", req)
        return resp

    def _kv(self, kind: str, request: Any, prefer_leader: bool = True) -> Any:
        """Serve a KV request (``kind``: put, range, delete, txn) with retries: a unary
        call, or over the endpoint's pipeline when another is in flight."""
        with self._lock:
            self._kv_in_flight += 1
        try:
            return self._call_on(
                lambda ep, ch, t: self._kv_attempt(ep, ch, kind, request, t), prefer_leader
            )
        finally:
            with self._lock:
                self._kv_in_flight -= 1

    def _kv_attempt(
        self, ep: str, ch: grpc.Channel, kind: str, request: Any, timeout_s: float
    ) -> Any:
        pipe = self._pipe(ep, ch) if self.pipeline and self._kv_in_flight > 1 else None
        if pipe is not None:
            started = time.monotonic()
            try:
                return pipe.call(kind, request, timeout_s)
            except (Unsupported, Closed):  # not sent: as a unary call, in the time left
                timeout_s = max(0.001, timeout_s - (time.monotonic() - started))
        return getattr(kv_pb2_grpc.KVStub(ch), _KV_METHODS[kind])(request, timeout=timeout_s)

    def _pipe(self, ep: str, ch: grpc.Channel) -> Pipe | None:
        """The endpoint's pipeline (opened on first use, again once it has ended); None
        when the endpoint has no KV.Pipeline (remembered for this client's life)."""
        with self._lock:
            pipe = self._pipes.get(ep)
            if pipe is not None and pipe.unsupported:
                return None
            if pipe is None or pipe.dead:
                pipe = self._pipes[ep] = Pipe(ch)
            return pipe

    # -- backups ---------------------------------------------------------------

    def snapshot(
        self,
        serializable: bool = False,
        endpoint: str | None = None,
        copy_to: BinaryIO | None = None,
    ) -> tuple[common_pb2.ResponseHeader, bytes]:
        """A full backup file of the cluster's state, taken at a linearizable point (or,
        with ``serializable``, of the answering node's own state: give ``endpoint``).
        The bytes are the file as written (see ``coord.state.backupfile``); with
        ``copy_to`` (a seekable file open for writing) they are also written there as
        they arrive (an attempt that fails starts the file over)."""
        from coord.v1 import maintenance_pb2

        req = maintenance_pb2.SnapshotRequest(serializable=serializable)
        return self._download(lambda stub, t: stub.Snapshot(req, timeout=t), endpoint, copy_to)

    def diff(
        self,
        since_revision: int,
        cluster_id: str = "",
        serializable: bool = False,
        endpoint: str | None = None,
        copy_to: BinaryIO | None = None,
    ) -> tuple[common_pb2.ResponseHeader, bytes]:
        """A diff backup file: the changes after ``since_revision`` of cluster
        ``cluster_id`` (checked when given). OutOfRange when they were compacted.
        ``copy_to`` as for :meth:`snapshot`."""
        from coord.v1 import maintenance_pb2

        req = maintenance_pb2.DiffRequest(
            since_revision=since_revision, cluster_id=cluster_id, serializable=serializable
        )
        return self._download(lambda stub, t: stub.Diff(req, timeout=t), endpoint, copy_to)

    def check_consistency(self) -> maintenance_pb2.CheckConsistencyResponse:
        """Commit a check point and compare every member's hash of its state there
        (admin). ``consistent`` is true when all answered with the majority's hash."""
        from coord.v1 import maintenance_pb2, maintenance_pb2_grpc

        req = maintenance_pb2.CheckConsistencyRequest()
        deadline = time.monotonic() + self.timeout_s
        return self.call(
            lambda ch, t: maintenance_pb2_grpc.MaintenanceStub(ch).CheckConsistency(
                req,
                timeout=max(t, deadline - time.monotonic()),  # members hash their state
            )
        )

    def _download(
        self,
        start: Callable[[maintenance_pb2_grpc.MaintenanceStub, float], Iterator[Any]],
        endpoint: str | None,
        copy_to: BinaryIO | None = None,
    ) -> tuple[common_pb2.ResponseHeader, bytes]:
        """Stream a backup file, retrying from the start on another node if the stream
        breaks. An attempt may take the whole ``timeout_s`` (a big state streams a while)."""
        from coord.v1 import maintenance_pb2_grpc

        deadline = time.monotonic() + self.timeout_s

        def fetch(ch: grpc.Channel, t: float) -> tuple[common_pb2.ResponseHeader, bytes]:
            stream = start(
                maintenance_pb2_grpc.MaintenanceStub(ch), max(t, deadline - time.monotonic())
            )
            if copy_to is not None:
                copy_to.seek(0)
                copy_to.truncate()
            parts: list[bytes] = []
            header, total = None, -1
            for chunk in stream:
                header = header or chunk.header
                total = chunk.total_bytes
                data = chunk.data  # (each access is a copy)
                parts.append(data)
                if copy_to is not None:
                    copy_to.write(data)  # while the next chunk is on its way
            data = b"".join(parts)
            if header is None or len(data) != total:
                raise _RetryableRpc(errors.Unavailable("the backup stream ended early: retry"))
            return header, data

        return self.call(fetch, prefer_leader=endpoint is None, endpoint=endpoint)


class StoppableClient(Client):
    """A client that refuses new work for good once ``stopped`` is set: a resume loop
    (watch, observe) running on it ends instead of reconnecting. For a thread that
    follows a stream on its own connections: set ``stopped``, then ``close()``."""

    stopped = False

    def leader(self) -> cluster_pb2.GetLeaderResponse:
        if self.stopped:
            raise errors.Internal("client stopped")
        return super().leader()

    def channel(self, endpoint: str) -> grpc.Channel:
        if self.stopped:  # no new channel after close(): a reconnect in flight ends here
            raise errors.Internal("client stopped")
        return super().channel(endpoint)


class _RetryableRpc(grpc.RpcError):
    """A failure found in a successful RPC's answer that is worth another try."""

    def __init__(self, err: errors.CoordError) -> None:
        self.err = err


def _ask_leader(ch: grpc.Channel, timeout_s: float) -> cluster_pb2.GetLeaderResponse:
    """One node's answer to "who leads?" (GetLeader)."""
    resp: cluster_pb2.GetLeaderResponse = cluster_pb2_grpc.ClusterStub(ch).GetLeader(
        cluster_pb2.GetLeaderRequest(), timeout=timeout_s
    )
    return resp


def _is_refusal(err: errors.CoordError) -> bool:
    """A connection the endpoint's host refused (no coord behind it), as gRPC reports it."""
    return isinstance(err, errors.Unavailable) and "connection refused" in err.message.lower()


_KV_METHODS = {"put": "Put", "range": "Range", "delete": "Delete", "txn": "Txn"}


def new_request_id() -> str:
    """A fresh request id for one logical write: send the same one on every retry of
    that write (the cluster applies it once and answers the first result)."""
    return uuid.uuid4().hex


def _b(v: bytes | str) -> bytes:
    return v.encode() if isinstance(v, str) else v
