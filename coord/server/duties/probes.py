"""One health probe: TCP connect, HTTP(S) GET, or the gRPC health protocol.

Each probe runs on the asyncio loop, never raises, and returns a
:class:`ProbeResult` (ok, a one-line detail for operators, latency). The
checker (health.py) decides what a run of results means (rise/fall).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import urllib.parse
from dataclasses import dataclass

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coord.v1 import groups_pb2

BODY_LIMIT = 64 * 1024  # bytes of an HTTP body kept for the substring test
HEADER_LIMIT = 16 * 1024


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str
    latency_s: float


def split_host_port(address: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); ValueError with a clear message."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address {address!r} is not host:port")
    return host.strip("[]"), int(port)


async def probe(
    check: groups_pb2.HealthCheck, member_address: str, channels: GrpcChannels | None = None
) -> ProbeResult:
    """Run ``check`` once (its timeout applies); never raises."""
    start = time.monotonic()
    timeout = check.timeout_ms / 1000
    kind = check.WhichOneof("kind")
    try:
        if kind == "tcp":
            detail = await asyncio.wait_for(_tcp(check.tcp.address or member_address), timeout)
        elif kind == "http":
            detail = await asyncio.wait_for(_http(check.http), timeout)
        elif kind == "grpc":
            own = channels is None
            pool = channels or GrpcChannels()
            try:
                detail = await _grpc(check.grpc, member_address, timeout, pool)
            finally:
                if own:
                    await pool.close()
        else:
            detail = f"unknown check type {kind!r}"
            return ProbeResult(False, detail, 0.0)
    except TimeoutError:
        return ProbeResult(False, f"timed out after {timeout:g} s", time.monotonic() - start)
    except _Failed as e:
        return ProbeResult(False, str(e), time.monotonic() - start)
    except (OSError, ValueError, ssl.SSLError, asyncio.IncompleteReadError) as e:
        return ProbeResult(False, _oneline(e), time.monotonic() - start)
    return ProbeResult(True, detail, time.monotonic() - start)


class _Failed(Exception):
    """The endpoint answered, with the wrong answer."""


def _oneline(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:200]


async def _tcp(address: str) -> str:
    host, port = split_host_port(address)
    _, writer = await asyncio.open_connection(host, port)
    writer.close()
    await _closed(writer)
    return "connected"


async def _closed(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ssl.SSLError):  # the probe already has its answer
        await writer.wait_closed()


async def _http(spec: groups_pb2.HttpCheck) -> str:
    url = urllib.parse.urlsplit(spec.url)
    tls = url.scheme == "https"
    port = url.port or (443 if tls else 80)
    context = None
    if tls:
        context = ssl.create_default_context()
        if spec.tls_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    host = url.hostname or ""
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context, server_hostname=host if tls else None
    )
    try:
        target = url.path or "/"
        if url.query:
            target += "?" + url.query
        netloc = url.netloc.rpartition("@")[2]
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {netloc}\r\nUser-Agent: coord-health\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n".encode("latin-1")
        )
        await writer.drain()
        status, headers = await _read_head(reader)
        expected = list(spec.expect_status) or list(range(200, 400))
        if status not in expected:
            raise _Failed(f"HTTP {status} (expected {_statuses(spec.expect_status)})")
        if spec.body_contains:
            body = await _read_body(reader, headers)
            if spec.body_contains.encode() not in body:
                raise _Failed(f"HTTP {status}, body lacks {spec.body_contains!r}")
        return f"HTTP {status}"
    finally:
        writer.close()
        await _closed(writer)


def _statuses(codes: object) -> str:
    listed = list(codes)  # type: ignore[call-overload]
    return ", ".join(str(c) for c in listed) if listed else "2xx or 3xx"


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > HEADER_LIMIT:
        raise _Failed("HTTP response headers too large")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise _Failed(f"not an HTTP response: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while len(body) < BODY_LIMIT:
            size_line = await reader.readline()
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)  # the chunk's CRLF
        return body[:BODY_LIMIT]
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        return await reader.readexactly(min(int(length), BODY_LIMIT))
    return await reader.read(BODY_LIMIT)


class GrpcChannels:
    """One channel per gRPC target, reused across probes (a channel costs a handshake)."""

    def __init__(self) -> None:
        self._channels: dict[tuple[str, bool], aio.Channel] = {}

    def get(self, address: str, tls: bool) -> aio.Channel:
        key = (address, tls)
        ch = self._channels.get(key)
        if ch is None:
            if tls:  # verified against the system's roots
                ch = aio.secure_channel(address, grpc.ssl_channel_credentials())
            else:
                ch = aio.insecure_channel(address)
            self._channels[key] = ch
        return ch

    def retain(self, keep: set[tuple[str, bool]]) -> None:
        for key in list(self._channels):
            if key not in keep:
                ch = self._channels.pop(key)
                asyncio.get_running_loop().create_task(ch.close())

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            await ch.close()


async def _grpc(
    spec: groups_pb2.GrpcCheck, member_address: str, timeout: float, channels: GrpcChannels
) -> str:
    address = spec.address or member_address
    split_host_port(address)
    ch = channels.get(address, spec.tls)
    stub = health_pb2_grpc.HealthStub(ch)
    try:
        req = health_pb2.HealthCheckRequest(service=spec.service)
        resp = await stub.Check(req, timeout=timeout)
    except aio.AioRpcError as e:
        if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise TimeoutError from None
        raise _Failed(f"gRPC {e.code().name}: {(e.details() or '')[:160]}") from None
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    if resp.status != health_pb2.HealthCheckResponse.SERVING:
        raise _Failed(f"gRPC health {status}")
    return f"gRPC {status}"
