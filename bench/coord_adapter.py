"""coord's side of the benchmarks: the same interfaces as the etcd side.

* :class:`CoordBenchCluster` - ``_harness.ClusterUnderTest`` over
  ``coord.testing.LocalCluster`` (real ``coord serve`` processes, fsync on).
* :class:`CoordKV` - ``_harness.KVClient``: grpc.aio, the same rotate-on-failure
  strategy as ``EtcdKV`` (``EndpointRotator``), and one request id per logical
  put so a retry after an ambiguous failure applies once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from grpc import aio

from _harness import EndpointRotator, wait_until
from coord.testing import LocalCluster
from coord.v1 import kv_pb2, kv_pb2_grpc


class CoordKV:
    """Benchmark KV client for coord (construct inside a running event loop)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        call_timeout: float = 0.1,
        first: int = 0,
        total_timeout: float = 30.0,
    ) -> None:
        self.endpoints = list(endpoints)
        self._channels = [aio.insecure_channel(ep) for ep in self.endpoints]
        self._stubs = [kv_pb2_grpc.KVStub(ch) for ch in self._channels]
        self.rotator = EndpointRotator(len(self.endpoints), first, call_timeout, total_timeout)

    async def put(self, key: str, value: bytes) -> None:
        req = kv_pb2.PutRequest(key=key.encode(), value=value, request_id=uuid.uuid4().hex)

        async def attempt(i: int, timeout: float) -> kv_pb2.PutResponse:
            return await self._stubs[i].Put(req, timeout=timeout)

        await self.rotator.call(attempt, retry_on=(aio.AioRpcError, asyncio.TimeoutError))

    async def close(self) -> None:
        await asyncio.gather(*(ch.close() for ch in self._channels), return_exceptions=True)


def make_coord_kv(endpoints: Sequence[str], call_timeout: float = 0.1) -> CoordKV:
    """Factory for ``_loadgen.py --factory coord_adapter:make_coord_kv``."""
    return CoordKV(endpoints, call_timeout=call_timeout)


class CoordBenchCluster:
    """A local coord cluster as a ``ClusterUnderTest``."""

    def __init__(self, n: int = 3, extra_args: Sequence[str] = ()) -> None:
        self.name = f"coord-{n}"
        self.cluster = LocalCluster(n, extra_args=list(extra_args))

    def __enter__(self) -> CoordBenchCluster:
        self.cluster.start()
        self.cluster.wait_for_leader(timeout=60)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cluster.close()

    def endpoints(self) -> list[str]:
        return self.cluster.endpoints

    def leader_index(self) -> int | None:
        return self.cluster.leader_index()

    def kill(self, i: int) -> None:
        self.cluster.kill(i)

    def restart(self, i: int) -> None:
        self.cluster.start(i)

    def term(self) -> int:
        """The highest Raft term any live node reports (leader changes bump it)."""
        return max((s.term for s in self.cluster.statuses() if s is not None), default=0)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        leader = self.cluster.wait_for_leader(timeout=timeout)
        st = wait_until(lambda: self.cluster.status(leader), timeout, "leader status")
        self.cluster.wait_applied(st.applied_index, timeout=timeout)

    def make_client(self, first: int = 0, call_timeout: float = 0.1) -> CoordKV:
        return CoordKV(self.endpoints(), call_timeout=call_timeout, first=first)
