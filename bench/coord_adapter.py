"""coord's side of the benchmarks: the same interfaces as the etcd side.

* :class:`CoordBenchCluster` - ``_harness.ClusterUnderTest`` over
  ``coord.testing.LocalCluster`` (real ``coord serve`` processes, fsync on).
* :class:`CoordKV` - ``_harness.KVClient``: grpc.aio, the same rotate-on-failure
  strategy as ``EtcdKV`` (``EndpointRotator``), and one request id per logical
  put so a retry after an ambiguous failure applies once.
* :class:`LibraryKV` - ``_harness.KVClient`` over coord's own client library
  (``coord.client.Client``: leader first, a failed endpoint suspected for 2 s,
  ``attempt_timeout_s`` per try), to compare its retry path with the rotator's.
* :class:`RaftTimingChoice` / :func:`parse_raft_timings` - candidate Raft timings
  passed to ``coord serve`` as flags (``--heartbeat-s`` ...), for ``--raft-timings``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from grpc import aio

from _harness import FailoverKV, wait_until
from coord.client import Client
from coord.config import RaftTimings
from coord.testing import LocalCluster
from coord.v1 import kv_pb2, kv_pb2_grpc

_TIMING_FIELDS = {f.name for f in dataclasses.fields(RaftTimings)}


@dataclass(frozen=True)
class RaftTimingChoice:
    """Raft timings for ``coord serve``: ``flags`` overrides ``RaftTimings``' defaults
    (field name -> seconds); empty = coord's defaults."""

    label: str = "default"
    flags: dict[str, float] = field(default_factory=dict)

    def timings(self) -> RaftTimings:
        """The resulting ``RaftTimings`` (validated as ``coord serve`` would)."""
        t = dataclasses.replace(RaftTimings(), **self.flags)
        t.validate()
        return t

    def args(self) -> list[str]:
        """``coord serve`` flags, e.g. ``["--heartbeat-s", "0.03", ...]``."""
        out: list[str] = []
        for name, value in self.flags.items():
            out += ["--" + name.replace("_", "-"), repr(value)]
        return out

    def describe(self) -> str:
        """``heartbeat 50 ms, election 300-600 ms`` (whatever the flags say)."""
        t = self.timings()
        return (
            f"heartbeat {t.heartbeat_s * 1e3:g} ms, election "
            f"{t.election_timeout_min_s * 1e3:g}-{t.election_timeout_max_s * 1e3:g} ms"
        )


def parse_raft_timings(spec: str) -> RaftTimingChoice:
    """``default``, or ``HB:MIN-MAX`` in milliseconds (heartbeat, election timeout range),
    e.g. ``30:150-300``, optionally followed by ``+field=seconds`` for any other
    ``coord.config.RaftTimings`` field (``30:150-300+leader_fallback_timeout_s=0.5``)."""
    spec = spec.strip()
    if spec in ("", "default"):
        return RaftTimingChoice()
    head, *extra = spec.split("+")
    flags: dict[str, float] = {}
    if head:
        hb, _, rng = head.partition(":")
        lo, _, hi = rng.partition("-")
        if not (hb and lo and hi):
            raise ValueError(f"raft timings {spec!r}: want HB:MIN-MAX in ms, e.g. 30:150-300")
        flags["heartbeat_s"] = float(hb) / 1e3
        flags["election_timeout_min_s"] = float(lo) / 1e3
        flags["election_timeout_max_s"] = float(hi) / 1e3
    for item in extra:
        name, _, value = item.partition("=")
        if name not in _TIMING_FIELDS or not value:
            raise ValueError(f"raft timings {spec!r}: {item!r} is not FIELD=SECONDS")
        flags[name] = float(value)
    choice = RaftTimingChoice(spec, flags)
    choice.timings()  # raises InvalidArgument when coord serve would refuse them
    return choice


def parse_raft_timings_list(specs: str) -> list[RaftTimingChoice]:
    """Comma-separated :func:`parse_raft_timings` specs."""
    return [parse_raft_timings(s) for s in specs.split(",") if s.strip()]


class CoordKV(FailoverKV):
    """Benchmark KV client for coord (construct inside a running event loop)."""

    def _open(self) -> None:
        self._channels = [aio.insecure_channel(ep) for ep in self.endpoints]
        self._stubs = [kv_pb2_grpc.KVStub(ch) for ch in self._channels]

    async def put(self, key: str, value: bytes) -> None:
        req = kv_pb2.PutRequest(key=key.encode(), value=value, request_id=uuid.uuid4().hex)

        async def attempt(i: int, timeout: float) -> kv_pb2.PutResponse:
            return await self._stubs[i].Put(req, timeout=timeout)

        await self.rotator.call(attempt, retry_on=(aio.AioRpcError, asyncio.TimeoutError))

    async def close(self) -> None:
        await asyncio.gather(*(ch.close() for ch in self._channels), return_exceptions=True)


class PipelineFailed(Exception):
    """A request answered with an error on a KV.Pipeline stream (retried elsewhere)."""


class _AioPipe:
    """One KV.Pipeline stream: puts queued while a batch is on its way go out together
    in the next message; results find their caller by tag. Broken (``dead``) once the
    stream fails: every request waiting on it fails with the stream's error."""

    def __init__(self, stub: kv_pb2_grpc.KVStub) -> None:
        self._call = stub.Pipeline()
        self._queue: list[kv_pb2.PipelineOp] = []
        self._wake = asyncio.Event()
        self._waiting: dict[int, asyncio.Future[kv_pb2.PipelineResult]] = {}
        self._tags = itertools.count(1)
        self.dead = False
        self._tasks = [asyncio.create_task(self._write()), asyncio.create_task(self._read())]

    async def put(self, req: kv_pb2.PutRequest, timeout: float) -> kv_pb2.PutResponse:
        tag = next(self._tags)
        fut: asyncio.Future[kv_pb2.PipelineResult] = asyncio.get_running_loop().create_future()
        self._waiting[tag] = fut
        op = kv_pb2.PipelineOp(tag=tag, timeout_ms=max(1, int(timeout * 1e3)), put=req)
        self._queue.append(op)
        self._wake.set()
        # A timer, not asyncio.wait_for (a task per call in the load generator).
        timer = asyncio.get_running_loop().call_later(timeout, _time_out, fut)
        try:
            result = await fut
        finally:
            timer.cancel()
            self._waiting.pop(tag, None)
        if result.HasField("error"):
            raise PipelineFailed(f"{result.error.code}: {result.error.message}")
        return result.put

    async def _write(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                batch, self._queue = self._queue, []
                if batch:
                    await self._call.write(kv_pb2.PipelineRequest(ops=batch))
        except Exception as e:  # the stream broke: the reader fails the waiters
            self._fail(e)

    async def _read(self) -> None:
        try:
            async for response in self._call:
                for result in response.results:
                    fut = self._waiting.pop(result.tag, None)
                    if fut is not None and not fut.done():
                        fut.set_result(result)
            self._fail(PipelineFailed("the server ended the stream"))
        except Exception as e:
            self._fail(e)

    def _fail(self, exc: BaseException) -> None:
        self.dead = True
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(exc)
        self._waiting.clear()

    async def close(self) -> None:
        self._call.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _time_out(fut: asyncio.Future[kv_pb2.PipelineResult]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class CoordPipelineKV(CoordKV):
    """:class:`CoordKV` with puts over one KV.Pipeline stream per endpoint (the server's
    batched path, as coord's client library uses it for concurrent requests) instead of
    one unary call each; failover as CoordKV's (the rotator, one request id per put)."""

    def _open(self) -> None:
        super()._open()
        self._pipes: dict[int, _AioPipe] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def _pipe(self, i: int) -> _AioPipe:
        pipe = self._pipes.get(i)
        if pipe is None or pipe.dead:
            if pipe is not None:  # its writer task may still wait: end it
                self._closing.add(asyncio.create_task(pipe.close()))
            pipe = self._pipes[i] = _AioPipe(self._stubs[i])
        return pipe

    async def put(self, key: str, value: bytes) -> None:
        req = kv_pb2.PutRequest(key=key.encode(), value=value, request_id=uuid.uuid4().hex)

        async def attempt(i: int, timeout: float) -> kv_pb2.PutResponse:
            return await self._pipe(i).put(req, timeout)

        await self.rotator.call(
            attempt, retry_on=(aio.AioRpcError, asyncio.TimeoutError, PipelineFailed)
        )

    async def close(self) -> None:
        await asyncio.gather(
            *(p.close() for p in self._pipes.values()), *self._closing, return_exceptions=True
        )
        await super().close()


class LibraryKV:
    """coord's client library as a ``KVClient`` (blocking calls run in a thread).

    Its own failover path: writes go to the leader it knows (found with
    ``find_leader`` on the first call), each attempt bounded by ``attempt_timeout_s``
    (the library's default: 2 s); an endpoint that failed is skipped for
    ``coord.client.client.SUSPECT_S`` (2 s) unless every endpoint did."""

    def __init__(self, endpoints: Sequence[str], attempt_timeout_s: float | None = None) -> None:
        kw = {} if attempt_timeout_s is None else {"attempt_timeout_s": attempt_timeout_s}
        self.client = Client(list(endpoints), timeout_s=30.0, **kw)

    async def put(self, key: str, value: bytes) -> None:
        await asyncio.to_thread(self.client.put, key, value)

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)


def make_coord_kv(endpoints: Sequence[str], call_timeout: float = 0.1) -> CoordKV:
    """Factory for ``_loadgen.py --factory coord_adapter:make_coord_kv``."""
    return CoordKV(endpoints, call_timeout=call_timeout)


def make_coord_pipeline_kv(endpoints: Sequence[str], call_timeout: float = 0.1) -> CoordKV:
    """Factory for ``_loadgen.py --factory coord_adapter:make_coord_pipeline_kv``."""
    return CoordPipelineKV(endpoints, call_timeout=call_timeout)


# coord's put-load clients by name (``--coord-client`` of run_all.py, profile_leader.py).
COORD_FACTORIES = {
    "pipeline": "coord_adapter:make_coord_pipeline_kv",
    "unary": "coord_adapter:make_coord_kv",
}


class CoordBenchCluster:
    """A local coord cluster as a ``ClusterUnderTest``."""

    def __init__(
        self,
        n: int = 3,
        extra_args: Sequence[str] = (),
        timings: RaftTimingChoice | None = None,
    ) -> None:
        self.name = f"coord-{n}"
        args = list(extra_args)
        if timings is not None and timings.flags:
            self.name += f"[{timings.label}]"
            args += timings.args()
        self.timing = timings or RaftTimingChoice()
        # Set to use coord's client library in make_client (0: its default attempt
        # timeout); None: CoordKV with the rotator, as the etcd side.
        self.library_attempt_s: float | None = None
        self.cluster = LocalCluster(n, extra_args=args)

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

    def pause(self, i: int) -> None:
        """SIGSTOP member ``i`` (a hung process: its sockets stay open)."""
        self.cluster.pause(i)

    def resume(self, i: int) -> None:
        """SIGCONT member ``i``."""
        self.cluster.resume(i)

    def term(self) -> int:
        """The highest Raft term any live node reports (leader changes bump it)."""
        return max((s.term for s in self.cluster.statuses() if s is not None), default=0)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        leader = self.cluster.wait_for_leader(timeout=timeout)
        st = wait_until(lambda: self.cluster.status(leader), timeout, "leader status")
        self.cluster.wait_applied(st.applied_index, timeout=timeout)

    def make_client(self, first: int = 0, call_timeout: float = 0.1) -> CoordKV | LibraryKV:
        if self.library_attempt_s is not None:  # coord's client library instead
            return LibraryKV(self.endpoints(), self.library_attempt_s or None)
        return CoordKV(self.endpoints(), call_timeout=call_timeout, first=first)
