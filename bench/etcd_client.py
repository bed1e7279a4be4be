"""Minimal etcd v3 gRPC client (sync and asyncio) for the benchmarks.

Only what the benchmarks need: put/get, member status and leader moves, leases
and the v3election API. Endpoints are ``host:port`` strings (plaintext gRPC).

* :class:`EtcdClient`       - blocking client bound to one endpoint.
* :class:`AsyncEtcdClient`  - the same over ``grpc.aio``.
* :class:`EtcdKV`           - the benchmark :class:`_harness.KVClient`: all
  endpoints, short per-call deadline, rotate-on-failure (``EndpointRotator``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
from grpc import aio

from _harness import FailoverKV
from etcdpb import kv_pb2, rpc_pb2, rpc_pb2_grpc, v3election_pb2, v3election_pb2_grpc

__all__ = [
    "CHANNEL_OPTIONS",
    "AsyncEtcdClient",
    "EtcdClient",
    "EtcdKV",
    "kv_pb2",
    "rpc_pb2",
    "v3election_pb2",
]

# Reconnect quickly after a member restarts (gRPC's default backoff starts at
# 1 s and grows to 120 s, which would distort failover measurements).
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.enable_retries", 0),
]


def _b(x: str | bytes) -> bytes:
    return x.encode() if isinstance(x, str) else x


def put_request(key: str | bytes, value: str | bytes, lease: int = 0) -> rpc_pb2.PutRequest:
    """Build a PutRequest."""
    return rpc_pb2.PutRequest(key=_b(key), value=_b(value), lease=lease)


def range_request(key: str | bytes, serializable: bool = False) -> rpc_pb2.RangeRequest:
    """Build a single-key RangeRequest (linearizable unless ``serializable``)."""
    return rpc_pb2.RangeRequest(key=_b(key), serializable=serializable)


def is_self_leader(status: rpc_pb2.StatusResponse) -> bool:
    """True if the member that answered ``status`` is the raft leader."""
    return status.leader != 0 and status.header.member_id == status.leader


class _SyncStubs:
    """All service stubs on one blocking channel."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.kv = rpc_pb2_grpc.KVStub(channel)
        self.lease = rpc_pb2_grpc.LeaseStub(channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(channel)
        self.election = v3election_pb2_grpc.ElectionStub(channel)


class _AsyncStubs:
    """All service stubs on one grpc.aio channel."""

    def __init__(self, channel: aio.Channel) -> None:
        self.kv = rpc_pb2_grpc.KVStub(channel)
        self.lease = rpc_pb2_grpc.LeaseStub(channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(channel)
        self.election = v3election_pb2_grpc.ElectionStub(channel)


class EtcdClient:
    """Blocking etcd client bound to a single endpoint."""

    def __init__(self, endpoint: str, timeout: float = 5.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._channel = grpc.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
        self._s = _SyncStubs(self._channel)

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _t(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def put(
        self, key: str | bytes, value: str | bytes, lease: int = 0, timeout: float | None = None
    ) -> int:
        """Put ``key = value``; returns the store revision of the write."""
        resp = self._s.kv.Put(put_request(key, value, lease), timeout=self._t(timeout))
        return resp.header.revision

    def get_kv(
        self, key: str | bytes, serializable: bool = False, timeout: float | None = None
    ) -> kv_pb2.KeyValue | None:
        """Fetch the KeyValue record for ``key`` (None if absent)."""
        resp = self._s.kv.Range(range_request(key, serializable), timeout=self._t(timeout))
        return resp.kvs[0] if resp.kvs else None

    def get(
        self, key: str | bytes, serializable: bool = False, timeout: float | None = None
    ) -> bytes | None:
        """Value of ``key`` or None."""
        kv = self.get_kv(key, serializable, timeout)
        return None if kv is None else kv.value

    def status(self, timeout: float | None = None) -> rpc_pb2.StatusResponse:
        """Maintenance.Status of this member."""
        return self._s.maintenance.Status(rpc_pb2.StatusRequest(), timeout=self._t(timeout))

    def move_leader(self, target_id: int, timeout: float | None = None) -> None:
        """Maintenance.MoveLeader: ask this member (the leader) to hand leadership to
        member ``target_id`` (a ``header.member_id``); returns once it has moved."""
        self._s.maintenance.MoveLeader(
            rpc_pb2.MoveLeaderRequest(targetID=target_id), timeout=self._t(timeout)
        )

    def status_future(self, timeout: float) -> grpc.Future[rpc_pb2.StatusResponse]:
        """Non-blocking Maintenance.Status (to query several members at once)."""
        return self._s.maintenance.Status.future(rpc_pb2.StatusRequest(), timeout=timeout)

    def lease_grant(self, ttl: int, timeout: float | None = None) -> int:
        """Grant a lease of ``ttl`` seconds; returns its ID."""
        resp = self._s.lease.LeaseGrant(
            rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=self._t(timeout)
        )
        if resp.error:
            raise RuntimeError(f"lease grant failed: {resp.error}")
        return resp.ID

    def lease_keepalive_once(self, lease_id: int, timeout: float | None = None) -> int:
        """Refresh a lease once; returns the new TTL (<= 0: lease expired)."""
        responses = self._s.lease.LeaseKeepAlive(
            iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)]), timeout=self._t(timeout)
        )
        for resp in responses:
            return resp.TTL
        return 0

    def campaign(
        self, name: str | bytes, lease_id: int, value: str | bytes, timeout: float | None = None
    ) -> v3election_pb2.LeaderKey:
        """Block until elected leader of ``name`` (or the timeout); returns the LeaderKey."""
        req = v3election_pb2.CampaignRequest(name=_b(name), lease=lease_id, value=_b(value))
        return self._s.election.Campaign(req, timeout=self._t(timeout)).leader

    def resign(self, leader: v3election_pb2.LeaderKey, timeout: float | None = None) -> None:
        """Give up leadership held through ``leader``."""
        self._s.election.Resign(
            v3election_pb2.ResignRequest(leader=leader), timeout=self._t(timeout)
        )

    def leader(self, name: str | bytes, timeout: float | None = None) -> bytes | None:
        """The current leader's value for election ``name`` (None: no leader)."""
        try:
            resp = self._s.election.Leader(
                v3election_pb2.LeaderRequest(name=_b(name)), timeout=self._t(timeout)
            )
        except grpc.RpcError as exc:
            if "no leader" in (exc.details() or ""):
                return None
            raise
        return resp.kv.value

    def observe(self, name: str | bytes, timeout: float | None = None) -> Iterator[bytes]:
        """Iterate over successive leader values of election ``name``.

        Ends with a ``grpc.RpcError`` (DEADLINE_EXCEEDED) after ``timeout``.
        """
        stream = self._s.election.Observe(
            v3election_pb2.LeaderRequest(name=_b(name)), timeout=self._t(timeout)
        )
        for resp in stream:
            yield resp.kv.value


class AsyncEtcdClient:
    """asyncio (grpc.aio) etcd client bound to a single endpoint.

    Create it inside a running event loop.
    """

    def __init__(self, endpoint: str, timeout: float = 5.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._channel = aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
        self._s = _AsyncStubs(self._channel)

    async def __aenter__(self) -> AsyncEtcdClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel (cancels in-flight calls)."""
        await self._channel.close()

    def lease_stub(self) -> rpc_pb2_grpc.LeaseStub:
        """The Lease service stub on this client's channel (for custom keepalive loops)."""
        return self._s.lease

    def _t(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    async def put(
        self, key: str | bytes, value: str | bytes, lease: int = 0, timeout: float | None = None
    ) -> int:
        """Put ``key = value``; returns the store revision of the write."""
        resp = await self._s.kv.Put(put_request(key, value, lease), timeout=self._t(timeout))
        return resp.header.revision

    async def get(
        self, key: str | bytes, serializable: bool = False, timeout: float | None = None
    ) -> bytes | None:
        """Value of ``key`` or None."""
        resp = await self._s.kv.Range(range_request(key, serializable), timeout=self._t(timeout))
        return resp.kvs[0].value if resp.kvs else None

    async def status(self, timeout: float | None = None) -> rpc_pb2.StatusResponse:
        """Maintenance.Status of this member."""
        return await self._s.maintenance.Status(rpc_pb2.StatusRequest(), timeout=self._t(timeout))

    async def lease_grant(self, ttl: int, timeout: float | None = None) -> int:
        """Grant a lease of ``ttl`` seconds; returns its ID."""
        resp = await self._s.lease.LeaseGrant(
            rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=self._t(timeout)
        )
        if resp.error:
            raise RuntimeError(f"lease grant failed: {resp.error}")
        return resp.ID

    async def keepalive(
        self, lease_id: int, interval: float, duration: float
    ) -> AsyncIterator[int]:
        """Keep ``lease_id`` alive over one bidi stream for at most ``duration`` s.

        Sends a request every ``interval`` seconds and yields each returned TTL.
        Stops (returns) when the lease has expired (TTL <= 0) or time is up.
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + duration
        call = self._s.lease.LeaseKeepAlive(timeout=duration + 5.0)
        try:
            for _ in range(int(duration / interval) + 1):  # bounded
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
                resp = await call.read()
                if not isinstance(resp, rpc_pb2.LeaseKeepAliveResponse) or resp.TTL <= 0:
                    return
                yield resp.TTL
                remaining = end - loop.time()
                if remaining <= 0:
                    return
                await asyncio.sleep(min(interval, remaining))
        finally:
            call.cancel()

    def start_keepalive(
        self, lease_id: int, interval: float, duration: float = 3600.0
    ) -> asyncio.Task[None]:
        """Run :meth:`keepalive` in a background task; cancel the task to stop."""

        async def run() -> None:
            async for _ttl in self.keepalive(lease_id, interval, duration):
                pass

        return asyncio.get_running_loop().create_task(run())

    async def campaign(
        self, name: str | bytes, lease_id: int, value: str | bytes, timeout: float | None = None
    ) -> v3election_pb2.LeaderKey:
        """Wait until elected leader of ``name`` (or the timeout); returns the LeaderKey."""
        req = v3election_pb2.CampaignRequest(name=_b(name), lease=lease_id, value=_b(value))
        resp = await self._s.election.Campaign(req, timeout=self._t(timeout))
        return resp.leader

    async def resign(self, leader: v3election_pb2.LeaderKey, timeout: float | None = None) -> None:
        """Give up leadership held through ``leader``."""
        await self._s.election.Resign(
            v3election_pb2.ResignRequest(leader=leader), timeout=self._t(timeout)
        )

    async def leader(self, name: str | bytes, timeout: float | None = None) -> bytes | None:
        """The current leader's value for election ``name`` (None: no leader)."""
        try:
            resp = await self._s.election.Leader(
                v3election_pb2.LeaderRequest(name=_b(name)), timeout=self._t(timeout)
            )
        except aio.AioRpcError as exc:
            if "no leader" in (exc.details() or ""):
                return None
            raise
        return resp.kv.value

    async def observe(
        self, name: str | bytes, timeout: float | None = None
    ) -> AsyncIterator[bytes]:
        """Yield successive leader values of election ``name`` until ``timeout``."""
        call = self._s.election.Observe(
            v3election_pb2.LeaderRequest(name=_b(name)), timeout=self._t(timeout)
        )
        try:
            async for resp in call:
                yield resp.kv.value
        finally:
            call.cancel()


class EtcdKV(FailoverKV):
    """Benchmark KV client over all endpoints with rotate-on-failure.

    Implements ``_harness.KVClient``. Each put goes to the current endpoint
    with a ``call_timeout`` deadline; on any gRPC error it moves to the next
    endpoint and retries until ``total_timeout`` (see ``EndpointRotator``).
    Must be constructed inside a running event loop.
    """

    def _open(self) -> None:
        self._clients = [AsyncEtcdClient(ep) for ep in self.endpoints]

    async def put(self, key: str, value: bytes) -> None:
        """Put with failover; returns once committed by some member's cluster."""

        async def attempt(i: int, timeout: float) -> int:
            return await self._clients[i].put(key, value, timeout=timeout)

        await self.rotator.call(attempt, retry_on=(aio.AioRpcError, asyncio.TimeoutError))

    async def close(self) -> None:
        """Close all channels."""
        await asyncio.gather(*(c.close() for c in self._clients), return_exceptions=True)
