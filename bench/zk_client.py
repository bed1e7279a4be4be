"""ZooKeeper client side of the benchmarks: kazoo bridged to asyncio, and 4lw commands.

* :class:`ZkKV` - the benchmark :class:`_harness.KVClient` over one kazoo session
  (``KazooClient``, the threading handler) that knows every endpoint, leader first.
* :func:`make_zk_kv` - factory for ``_loadgen.py --factory zk_client:make_zk_kv``.
* :func:`four_letter` / :func:`srvr` - ZooKeeper's "four letter word" commands over a
  member's client port (``srvr``: mode, zxid, version), for leader discovery and health.

kazoo is not asyncio: a request is queued for kazoo's connection thread, which writes it
to the socket, reads the reply and completes an ``IAsyncResult``; the result's callback
(``rawlink``) runs on kazoo's completion thread, which hands it to the event loop with
``loop.call_soon_threadsafe``. The N coroutines of the load generator share one session
(one TCP connection, requests pipelined), as they share one gRPC channel with coord and
etcd. kazoo does its socket work and (de)serialization in Python threads: it costs the
load generator ~300 µs of CPU per put against ~120 µs for etcd's grpc.aio client, and at
64 clients it, not ZooKeeper, is the limit (``zk_wire.py`` is the cross-check; see
bench/README.md, "ZooKeeper").

Install: ``.venv/bin/pip install kazoo`` (or ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from _harness import FailoverKV

try:
    from kazoo.client import KazooClient
    from kazoo.exceptions import (
        ConnectionLoss,
        NodeExistsError,
        NoNodeError,
        OperationTimeoutError,
        SessionExpiredError,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "kazoo not installed: .venv/bin/pip install kazoo (or pip install -e '.[bench]')"
    ) from exc

# kazoo logs every dropped connection as a warning (on stderr, through logging's last
# resort handler): expected noise when the benchmarks kill members.
logging.getLogger("kazoo").setLevel(logging.ERROR)

__all__ = [
    "SrvrInfo",
    "ZkKV",
    "four_letter",
    "make_zk_kv",
    "new_kazoo",
    "srvr",
    "znode",
]

# Reconnect quickly after a member dies, like the gRPC channels of the other clients
# (etcd_client.CHANNEL_OPTIONS: 50 ms initial backoff, 500 ms max). kazoo tries every host
# of its list once, in order, before it sleeps; its default backoff starts at 100 ms and
# doubles up to an hour.
RECONNECT = {"max_tries": -1, "delay": 0.05, "backoff": 2, "max_delay": 0.5, "max_jitter": 0.0}

# Errors after which the same put is sent again (kazoo moves to the next host by itself).
RETRY_ON: tuple[type[BaseException], ...] = (
    ConnectionLoss,
    SessionExpiredError,
    OperationTimeoutError,
    TimeoutError,  # the per-call deadline (asyncio.timeout)
)


def znode(key: str) -> str:
    """The znode path of a benchmark key (``bench/load/0001`` -> ``/bench/load/0001``)."""
    return "/" + key.strip("/")


def new_kazoo(endpoints: Sequence[str], session_timeout: float = 10.0) -> Any:
    """A (not started) ``KazooClient`` that tries ``endpoints`` in the given order."""
    return KazooClient(
        hosts=",".join(endpoints),
        timeout=session_timeout,
        randomize_hosts=False,
        connection_retry=dict(RECONNECT),
    )


class ZkKV(FailoverKV):
    """Benchmark KV client over one kazoo session; implements ``_harness.KVClient``.

    ``put(key, value)`` is a ``setData`` of ``value`` on the znode ``/key``; the first put
    of a key creates the znode (with its parents) before the set, inside the same call.
    The session's host list starts at ``endpoints[first]`` (the leader, when the driver
    passes it) and is never shuffled, so the connection goes there first. Each attempt has
    a ``call_timeout`` deadline; on connection loss or timeout the put is sent again, at
    least 5 ms apart, until ``total_timeout`` (``EndpointRotator`` with one "endpoint":
    which server the session moves to is kazoo's choice, the next in its list).
    Must be constructed inside a running event loop.
    """

    one_session = True  # kazoo's own failover, in list order

    def __init__(
        self, endpoints: Sequence[str], *args: Any, session_timeout: float = 10.0, **kwargs: Any
    ) -> None:
        """``FailoverKV``'s arguments, and the session timeout (keyword only)."""
        self.session_timeout = session_timeout
        super().__init__(endpoints, *args, **kwargs)

    def _open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._zk = new_kazoo(self.endpoints, self.session_timeout)
        self._created: set[str] = set()
        self._start_lock = asyncio.Lock()
        self._started = False

    async def _start(self) -> None:
        async with self._start_lock:
            if not self._started:
                await asyncio.to_thread(self._zk.start, self.rotator.total_timeout)
                self._started = True

    def _bridge(self, result: Any) -> asyncio.Future[Any]:
        """An asyncio future completed from kazoo's ``IAsyncResult`` (another thread)."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        loop = self._loop

        def settle(value: Any, exc: BaseException | None) -> None:
            if fut.done():  # cancelled by the per-call deadline
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(value)

        def done(res: Any) -> None:  # runs on kazoo's completion thread
            try:
                value, exc = res.get_nowait(), None
            except BaseException as e:
                value, exc = None, e
            # RuntimeError: the loop is closed, nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, value, exc)

        result.rawlink(done)
        return fut

    async def put(self, key: str, value: bytes) -> None:
        """setData ``/key`` = ``value`` with retries; returns once the ensemble committed it."""
        if not self._started:
            await self._start()
        path = znode(key)

        async def attempt(_i: int, timeout: float) -> None:
            async with asyncio.timeout(timeout):
                if path not in self._created:
                    with contextlib.suppress(NodeExistsError):
                        await self._bridge(self._zk.create_async(path, value, makepath=True))
                    self._created.add(path)
                await self._bridge(self._zk.set_async(path, value))

        await self.rotator.call(attempt, retry_on=RETRY_ON)

    async def get(self, key: str) -> bytes | None:
        """Read ``/key`` from the server the session is on (ZooKeeper reads are local)."""
        if not self._started:
            await self._start()
        try:
            data, _stat = await self._bridge(self._zk.get_async(znode(key)))
        except NoNodeError:
            return None
        return bytes(data)

    async def close(self) -> None:
        """Close the session and stop kazoo's threads."""
        await asyncio.to_thread(self._zk.stop)
        await asyncio.to_thread(self._zk.close)


def make_zk_kv(endpoints: Sequence[str], call_timeout: float = 1.0) -> ZkKV:
    """Factory for ``_loadgen.py --factory zk_client:make_zk_kv`` (leader's endpoint first)."""
    return ZkKV(endpoints, call_timeout=call_timeout)


# --------------------------------------------------------------------------
# Four letter words (4lw.commands.whitelist in zoo.cfg)
# --------------------------------------------------------------------------


def four_letter(endpoint: str, cmd: str, timeout: float = 0.5) -> str:
    """Send a 4lw command (``srvr``, ``stat``, ``mntr``) to ``host:port``; the reply text."""
    host, _, port = endpoint.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(cmd.encode())
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


@dataclass(frozen=True)
class SrvrInfo:
    """What ``srvr`` says about a member that is serving."""

    mode: str  # "leader", "follower", "standalone", ...
    zxid: int  # last processed zxid (epoch << 32 | counter)
    version: str

    @property
    def epoch(self) -> int:
        """The leader epoch in the zxid's high 32 bits (one more per election won)."""
        return self.zxid >> 32


def srvr(endpoint: str, timeout: float = 0.5) -> SrvrInfo | None:
    """``srvr`` parsed; None when the member does not answer or is not serving
    (e.g. during an election: "This ZooKeeper instance is not currently serving requests")."""
    try:
        text = four_letter(endpoint, "srvr", timeout)
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, val = line.partition(":")
        if sep:
            fields[name.strip()] = val.strip()
    if "Mode" not in fields or "Zxid" not in fields:
        return None
    return SrvrInfo(fields["Mode"], int(fields["Zxid"], 16), fields.get("Zookeeper version", ""))
