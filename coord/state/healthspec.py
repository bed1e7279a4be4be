"""Validation and defaults of a member's health check (pure: part of apply)."""

from __future__ import annotations

import urllib.parse

from coord.errors import InvalidArgument
from coord.state import limits
from coord.v1 import groups_pb2

DEFAULT_INTERVAL_MS = 1000
MIN_INTERVAL_MS = 100
MAX_INTERVAL_MS = 3_600_000
DEFAULT_TIMEOUT_MS = 1000
MIN_TIMEOUT_MS = 10
DEFAULT_RISE = 2
DEFAULT_FALL = 3
MAX_THRESHOLD = 100
MAX_URL_CHARS = 2048


def checked(check: groups_pb2.HealthCheck, member_address: str) -> groups_pb2.HealthCheck:
    """``check`` with its defaults filled in; InvalidArgument says what to fix."""
    out = groups_pb2.HealthCheck()
    out.CopyFrom(check)
    kind = out.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument(
            "health check has no type: set one of tcp, http or grpc (or leave the check out)"
        )
    if out.interval_ms == 0:
        out.interval_ms = DEFAULT_INTERVAL_MS
    if not MIN_INTERVAL_MS <= out.interval_ms <= MAX_INTERVAL_MS:
        raise InvalidArgument(
            f"health check interval {limits.ms_and_s(out.interval_ms)} is out of bounds: use "
            f"{MIN_INTERVAL_MS}..{MAX_INTERVAL_MS} ms "
            f"({MIN_INTERVAL_MS / 1000:g}..{MAX_INTERVAL_MS / 1000:g} s)"
        )
    if out.timeout_ms == 0:
        out.timeout_ms = min(out.interval_ms, DEFAULT_TIMEOUT_MS)
    if not MIN_TIMEOUT_MS <= out.timeout_ms <= out.interval_ms:
        raise InvalidArgument(
            f"health check timeout {limits.ms_and_s(out.timeout_ms)} must be "
            f"{limits.ms_and_s(MIN_TIMEOUT_MS)}..the interval "
            f"({limits.ms_and_s(out.interval_ms)})"
        )
    out.rise = out.rise or DEFAULT_RISE
    out.fall = out.fall or DEFAULT_FALL
    for name, value in (("rise", out.rise), ("fall", out.fall)):
        if not 1 <= value <= MAX_THRESHOLD:
            raise InvalidArgument(f"health check {name} must be 1..{MAX_THRESHOLD}, got {value}")
    if kind == "tcp":
        _address(out.tcp.address or member_address, "tcp", bool(out.tcp.address))
    elif kind == "grpc":
        _address(out.grpc.address or member_address, "grpc", bool(out.grpc.address))
        if len(out.grpc.service) > 256:
            raise InvalidArgument("grpc check service name is longer than 256 characters")
    else:
        _url(out.http)
    return out


def _address(address: str, kind: str, given: bool) -> None:
    where = "its address" if given else "the member's address (no address in the check)"
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(
            f"{kind} check needs host:port, and {where} is {address!r}: give the check an "
            "address, or register the member with one"
        )


def _url(spec: groups_pb2.HttpCheck) -> None:
    if len(spec.url) > MAX_URL_CHARS:
        raise InvalidArgument(f"http check URL is longer than {MAX_URL_CHARS} characters")
    try:
        url = urllib.parse.urlsplit(spec.url)
        port = url.port
    except ValueError as e:
        raise InvalidArgument(f"http check URL {spec.url!r} is invalid: {e}") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise InvalidArgument(
            f"http check URL {spec.url!r} is invalid: use http://host[:port]/path or https://..."
        )
    if port == 0 or any(c in spec.url for c in " \r\n\t"):
        raise InvalidArgument(f"http check URL {spec.url!r} is invalid (port 0 or whitespace)")
    for status in spec.expect_status:
        if not 100 <= status <= 599:
            raise InvalidArgument(f"http check expect_status {status} is not an HTTP status")
    if len(spec.body_contains) > 1024:
        raise InvalidArgument("http check body_contains is longer than 1024 characters")
