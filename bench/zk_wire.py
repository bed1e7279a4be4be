"""A minimal asyncio ZooKeeper client for the put load only: a cross-check of kazoo's cost.

``zk_client.ZkKV`` (kazoo, threads) is the ZooKeeper client of the benchmarks. Beside the
server's own update latency it turned out to be the bottleneck of the put load at 64
clients (bench/README.md, "ZooKeeper"), so this client speaks the same protocol with no
threads: one session on one asyncio connection to ``endpoints[0]`` (the
leader, as the driver passes it), requests pipelined, each reply matched to its request
by xid on one reader task, encoded and decoded with kazoo's own serializers
(``kazoo.protocol.serialization``). ``put`` is ``setData`` on the znode ``/key``, created
(with its parents) by the key's first put, as in ``ZkKV``; a ping every third of the
session timeout. No failover: a lost connection fails the pending and later puts
(``ConnectionError``), which the load generator counts as errors.

``_loadgen.py --factory zk_wire:make_zk_wire``; ``run_all.py --zk-client wire``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from kazoo.exceptions import EXCEPTIONS, NodeExistsError
from kazoo.protocol.serialization import (
    Close,
    Connect,
    Create,
    Ping,
    ReplyHeader,
    SetData,
    int_struct,
)
from kazoo.security import OPEN_ACL_UNSAFE

from zk_client import znode

__all__ = ["ZkWireKV", "make_zk_wire"]

PING_XID = -2
OK = 0


def _frame(body: bytes | bytearray) -> bytes:
    size: bytes = int_struct.pack(len(body))
    return size + bytes(body)


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    size: int = int_struct.unpack(await reader.readexactly(4))[0]
    return await reader.readexactly(size)


class ZkWireKV:
    """Put-only ``_harness.KVClient`` over one asyncio ZooKeeper session (no failover)."""

    def __init__(
        self, endpoints: Sequence[str], call_timeout: float = 1.0, session_timeout: float = 10.0
    ) -> None:
        self.endpoint = endpoints[0]
        self.call_timeout = call_timeout
        self.session_timeout = session_timeout
        self._xid = 0
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self._created: set[str] = set()
        self._broken: BaseException | None = None

    async def _connect(self) -> None:
        host, _, port = self.endpoint.rpartition(":")
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port)), self.session_timeout
        )
        hello = Connect(0, 0, int(self.session_timeout * 1000), 0, b"\0" * 16, False)
        writer.write(_frame(hello.serialize()))
        answer, _ = Connect.deserialize(
            await asyncio.wait_for(_read_frame(reader), self.session_timeout), 0
        )
        if answer.time_out <= 0:
            writer.close()
            raise ConnectionError(f"{self.endpoint} refused the session")
        self._writer = writer
        self._tasks = [
            asyncio.create_task(self._read_loop(reader)),
            asyncio.create_task(self._ping_loop(answer.time_out / 1000 / 3)),
        ]

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header, _ = ReplyHeader.deserialize(await _read_frame(reader), 0)
                fut = self._pending.pop(header.xid, None)
                if fut is not None and not fut.done():
                    fut.set_result(header.err)
        except (asyncio.IncompleteReadError, OSError) as exc:
            self._broken = ConnectionError(f"connection to {self.endpoint} lost: {exc!r}")
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(self._broken)
            self._pending.clear()

    async def _ping_loop(self, interval: float) -> None:
        while self._writer is not None and self._broken is None:
            await asyncio.sleep(interval)  # the protocol's keepalive period, not a wait
            self._send(PING_XID, Ping())

    def _send(self, xid: int, request: Any) -> None:
        assert self._writer is not None
        body = bytearray(int_struct.pack(xid))
        body += int_struct.pack(request.type)
        body += request.serialize()
        self._writer.write(_frame(body))

    async def _call(self, request: Any) -> int:
        """Send ``request``; its reply's error code (0 = ok)."""
        if self._broken is not None:
            raise self._broken
        self._xid += 1
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[self._xid] = fut
        self._send(self._xid, request)
        return await fut

    async def _create(self, path: str, value: bytes) -> None:
        """Create ``path`` and any missing parent (existing ones are fine)."""
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            node = "/" + "/".join(parts[:depth])
            data = value if depth == len(parts) else b""
            err = await self._call(Create(node, data, OPEN_ACL_UNSAFE, 0))
            if err not in (OK, NodeExistsError.code):
                raise EXCEPTIONS[err]()

    async def put(self, key: str, value: bytes) -> None:
        """setData ``/key`` = ``value``; returns once the ensemble committed it."""
        if self._writer is None:
            async with self._lock:
                if self._writer is None:
                    await self._connect()
        path = znode(key)
        async with asyncio.timeout(self.call_timeout):
            if path not in self._created:
                await self._create(path, value)
                self._created.add(path)
            err = await self._call(SetData(path, value, -1))
        if err != OK:
            raise EXCEPTIONS[err]()

    async def close(self) -> None:
        """Close the session (closeSession, so the server drops it at once) and the socket."""
        if self._writer is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self._call(Close())
        for task in self._tasks:
            task.cancel()
        writer, self._writer = self._writer, None
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def make_zk_wire(endpoints: Sequence[str], call_timeout: float = 1.0) -> ZkWireKV:
    """Factory for ``_loadgen.py --factory zk_wire:make_zk_wire`` (leader's endpoint first)."""
    return ZkWireKV(endpoints, call_timeout=call_timeout)
