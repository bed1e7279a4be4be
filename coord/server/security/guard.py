"""The gate every RPC passes before its servicer: identity, role, rate, stream count.

Runs on the asyncio loop, in the handler wrappers of :mod:`coord.server.api.handlers`.
The caller's identity is put in a context variable for the servicers that need it
(session ownership).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from coord import errors
from coord.server.security.auth import ANONYMOUS, Authenticator, Identity, RateLimiter

_CALLER: ContextVar[Identity] = ContextVar("coord_caller", default=ANONYMOUS)

# Methods whose streams count against the per-connection limit.
WATCH_STREAMS = frozenset(
    {"/coord.v1.Watch/Watch", "/coord.v1.Groups/Observe", "/coord.v1.Cluster/WatchLeader"}
)


# Failed authentications per client host: guessing tokens is slowed to this rate (valid
# credentials never count against it).
AUTH_FAILURES_PER_S = 5.0
AUTH_FAILURES_BURST = 20.0


def caller() -> Identity:
    """The identity of the RPC being served (ANONYMOUS when auth is off)."""
    return _CALLER.get()


class Guard:
    def __init__(
        self,
        auth: Authenticator,
        rate_per_s: float = 0.0,
        burst: float = 0.0,
        max_watch_streams: int = 0,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.auth = auth
        self.limiter = RateLimiter(rate_per_s, burst or max(1.0, 2 * rate_per_s))
        self.failures = RateLimiter(AUTH_FAILURES_PER_S, AUTH_FAILURES_BURST)
        self.max_watch_streams = max_watch_streams
        self._streams: Counter[str] = Counter()
        self._on_reject = on_reject

    def reject(self, kind: str) -> None:
        """Count a refusal (coord_requests_rejected_total{reason=kind})."""
        if self._on_reject is not None:
            self._on_reject(kind)

    def check(self, method: str, request: Any, context: Any) -> Identity:
        """Identify and authorize the call; raises Unauthenticated, PermissionDenied or
        ResourceExhausted. Sets the caller for the servicer."""
        try:
            auth_context = context.auth_context()
        except Exception:  # a test double without one
            auth_context = None
        try:
            who = self.auth.identify(context.invocation_metadata(), auth_context)
        except errors.Unauthenticated:
            self._failed(_host(context))
            raise
        return self.admit(method, who, request)

    def admit(self, method: str, who: Identity, request: Any) -> Identity:
        """Authorize a call of ``who`` already identified (a request on a stream whose
        opening :meth:`check` identified the caller); raises PermissionDenied or
        ResourceExhausted. Sets the caller for the servicer."""
        try:
            self.auth.authorize(method, who, request)
        except errors.PermissionDenied:
            self.reject("permission_denied")
            raise
        if not self.limiter.allow(who.name):
            self.reject("rate")
            raise errors.ResourceExhausted(
                f"{who.name!r} is over its rate limit ({self.limiter.rate:g} requests/s): "
                "slow down and retry"
            )
        _CALLER.set(who)
        return who

    def identify_http(self, authorization: str, cert_cn: str, host: str) -> Identity:
        """The HTTP port's check (/metrics, the status page's data): a bearer token or a
        client certificate of any role (or anonymous where the API allows it). Raises
        Unauthenticated, or ResourceExhausted after too many failures from ``host``."""
        metadata = [("authorization", authorization)] if authorization else []
        cert = {"x509_common_name": [cert_cn.encode()]} if cert_cn else None
        try:
            return self.auth.identify(metadata, cert)
        except errors.Unauthenticated:
            self._failed(host)
            raise

    def _failed(self, host: str) -> None:
        """A failed authentication from ``host``: counted; past the host's allowance,
        ResourceExhausted instead of the Unauthenticated the caller re-raises."""
        if not self.failures.allow(host):
            self.reject("auth_failures")
            raise errors.ResourceExhausted(
                f"too many failed authentications from {host}: wait a few seconds, then "
                "retry with valid credentials"
            ) from None
        self.reject("unauthenticated")

    def open_stream(self, method: str, context: Any) -> Callable[[], None]:
        """Count a watch-like stream against its connection's limit (ResourceExhausted
        when full); returns what to call when the stream ends."""
        if method not in WATCH_STREAMS or self.max_watch_streams <= 0:
            return _nothing
        peer = str(context.peer())
        if self._streams[peer] >= self.max_watch_streams:
            self.reject("watch_streams")
            raise errors.ResourceExhausted(
                f"this connection already has {self.max_watch_streams} watch streams open: "
                "close some, or multiplex filters over fewer streams"
            )
        self._streams[peer] += 1

        def close() -> None:
            self._streams[peer] -= 1
            if self._streams[peer] <= 0:
                del self._streams[peer]

        return close


def _nothing() -> None:
    pass


def _host(context: Any) -> str:
    """The client's address without its port ("ipv4:10.0.0.5:41234" -> "ipv4:10.0.0.5")."""
    try:
        peer = str(context.peer())
    except Exception:  # a test double without one
        return "unknown"
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer
