"""Fenced calls: a master's fencing token on everything it sends, checked by the resource.

docs/design.md (point 6): a lease alone never gives mutual exclusion to an outside
resource. A master stamps its token on every action, and the resource rejects a token
lower than the highest it has accepted. This module has both halves.

The master's side, given a ``Leadership`` (``member.campaign()``) or any :class:`Fence`::

    channel = fenced_channel(grpc.insecure_channel("10.0.0.9:7000"), lead)
    stub = MyStoreStub(channel)        # every call carries coord-fencing-token: <token>
    http = FencedHTTP(lead)            # urllib: every request carries Coord-Fencing-Token
    http.request("PUT", "http://10.0.0.9:8080/files/a", b"data")
    requests.put(url, data=b"data", auth=FencedAuth(lead))   # the same, for requests

Before each call the fence is asked ``is_master()``: once it is False, nothing is sent and
``StaleToken`` is raised (its message starts "not sent"). That check cannot close the window of a
call already in flight, or of a pause between the check and the send: the resource's
check does (a newer master's token was accepted first, so the stale one is refused).

The resource's side: :class:`FencedResource` remembers the highest token per (group,
slot); ``check_grpc(context)`` (a servicer), ``check_headers(headers)`` (an HTTP handler)
or ``check_metadata(pairs)`` read the stamp and check it. ``accept(stamp)`` (with
``stamp_from_headers`` / ``stamp_from_metadata``) checks and holds the resource's lock
while the action runs, so that an older token cannot overtake a newer one between check
and write. docs/fencing.md has a worked example: a small file store.

Stamp on the wire (gRPC metadata keys; HTTP headers are the same names, any case):
``coord-fencing-token`` (decimal), ``coord-fencing-group``, ``coord-fencing-slot``
(decimal). A rejected gRPC call fails FAILED_PRECONDITION with trailing metadata
``coord-error: stale_token`` (the client library raises ``StaleToken``); a rejected HTTP
request is answered 409 with a ``Coord-Error: stale_token`` header (``FencedHTTP`` raises
``StaleToken``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import grpc

from coord import errors

TOKEN_KEY = "coord-fencing-token"
GROUP_KEY = "coord-fencing-group"
SLOT_KEY = "coord-fencing-slot"
ERROR_HEADER = "Coord-Error"  # on a rejected HTTP request: stale_token or invalid_argument
STALE_STATUS = 409  # HTTP status of a request with a stale token (Conflict)


class Fence(Protocol):
    """What a fenced call needs of a holding: ``coord.client.Leadership`` is one."""

    @property
    def group(self) -> str: ...

    @property
    def slot(self) -> int: ...

    @property
    def token(self) -> int: ...

    def is_master(self) -> bool: ...


@dataclass(frozen=True)
class Stamp:
    """A fencing stamp read from a call: whose slot, and the token."""

    group: str
    slot: int
    token: int


@dataclass(frozen=True)
class StaticFence:
    """A fence without a session of its own: the program the agent runs while master
    (``coord agent --run-while-master``) gets its token in the environment, and the agent
    stops it when mastership ends. ``is_master()`` is always True: the resource's check
    is what protects against a stale token (:meth:`from_env`)."""

    group: str
    slot: int
    token: int

    def is_master(self) -> bool:
        return True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StaticFence:
        """From COORD_GROUP, COORD_SLOT and COORD_TOKEN (what ``coord agent`` sets)."""
        env = os.environ if env is None else env
        try:
            return cls(env["COORD_GROUP"], int(env["COORD_SLOT"]), int(env["COORD_TOKEN"]))
        except (KeyError, ValueError) as e:
            raise errors.InvalidArgument(
                f"no fencing token in the environment ({e}): COORD_GROUP, COORD_SLOT and "
                "COORD_TOKEN are set by `coord agent` for the command it runs while master"
            ) from None


def stamp_of(fence: Fence) -> Stamp:
    """The fence's stamp; StaleToken ("not sent") if it may no longer act."""
    if not fence.is_master():
        raise errors.StaleToken(
            f"not sent: the holding of {fence.group}/{fence.slot} under fencing token "
            f"{fence.token} is no longer master (validity ended, stepped down or revoked)"
        )
    return Stamp(fence.group, fence.slot, fence.token)


def fencing_metadata(fence: Fence) -> list[tuple[str, str]]:
    """gRPC metadata for one call (raises StaleToken instead once not master)."""
    s = stamp_of(fence)
    return [(TOKEN_KEY, str(s.token)), (GROUP_KEY, s.group), (SLOT_KEY, str(s.slot))]


def fencing_headers(fence: Fence) -> dict[str, str]:
    """HTTP headers for one request (raises StaleToken instead once not master)."""
    s = stamp_of(fence)
    return {
        "Coord-Fencing-Token": str(s.token),
        "Coord-Fencing-Group": s.group,
        "Coord-Fencing-Slot": str(s.slot),
    }


# -- gRPC, the caller's side -------------------------------------------------------------


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class FencingInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the fence's stamp to every call's metadata; raises StaleToken (the call is not
    made) once the fence is no longer master. Use :func:`fenced_channel`."""

    def __init__(self, fence: Fence) -> None:
        self.fence = fence

    def _stamped(self, details: Any) -> _CallDetails:
        metadata = [*(details.metadata or ()), *fencing_metadata(self.fence)]
        return _CallDetails(
            details.method, details.timeout, metadata, details.credentials,
            getattr(details, "wait_for_ready", None), getattr(details, "compression", None),
        )  # fmt: skip

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._stamped(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._stamped(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._stamped(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._stamped(details), requests)


def fenced_channel(channel: grpc.Channel, fence: Fence) -> grpc.Channel:
    """``channel`` with every call stamped with ``fence``'s token (and refused once the
    fence is no longer master)."""
    return grpc.intercept_channel(channel, FencingInterceptor(fence))


# -- HTTP, the caller's side -------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    """An HTTP answer, read in full."""

    status: int
    headers: dict[str, str]
    body: bytes


class FencedHTTP:
    """urllib requests stamped with the fence's token, refused once it is not master.

    ``request()`` returns the answer read in full (:class:`Response`); a 409 with
    ``Coord-Error: stale_token`` raises StaleToken, other HTTP errors raise
    ``urllib.error.HTTPError`` as urllib does."""

    def __init__(self, fence: Fence, timeout_s: float = 10.0) -> None:
        self.fence = fence
        self.timeout_s = timeout_s

    def request(
        self,
        method: str,
        url: str,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
        for k, v in fencing_headers(self.fence).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                return Response(r.status, dict(r.headers.items()), r.read())
        except urllib.error.HTTPError as e:
            with e:
                if e.code == STALE_STATUS and e.headers.get(ERROR_HEADER) == "stale_token":
                    body = e.read().decode("utf-8", "replace").strip()
                    raise errors.StaleToken(body or f"{url}: stale fencing token") from None
                raise


class FencedAuth:
    """For ``requests``: ``requests.put(url, auth=FencedAuth(lead))`` stamps the request
    (raises StaleToken instead of sending once the fence is not master)."""

    def __init__(self, fence: Fence) -> None:
        self.fence = fence

    def __call__(self, request: Any) -> Any:
        request.headers.update(fencing_headers(self.fence))
        return request


# -- the resource's side -----------------------------------------------------------------


class FencedResource:
    """How a resource protects itself from deposed masters: accept a token only if it
    is at least the highest seen for that (group, slot). Thread-safe.

    ``check`` records a token; ``accept(stamp)`` is a context manager that checks and
    then holds the resource's lock while the caller acts, so that no older token is
    accepted between the check and the action. The highest tokens live in memory: a
    resource that restarts must restore them (``highest``, ``restore``) or refuse writes
    until a master has written (its token then sets the bar)."""

    def __init__(self, highest: Mapping[tuple[str, int], int] | None = None) -> None:
        self._highest: dict[tuple[str, int], int] = dict(highest or {})
        self._lock = threading.RLock()

    def check(self, group: str, slot: int, token: int) -> None:
        """Raise StaleToken if ``token`` is older than one already accepted, else record it."""
        with self._lock:
            highest = self._highest.get((group, slot), 0)
            if token < highest:
                raise errors.StaleToken(
                    f"fencing token {token} for {group}/{slot} is older than {highest}: a newer "
                    "master exists; this one must stop"
                )
            self._highest[(group, slot)] = token

    @contextlib.contextmanager
    def accept(self, stamp: Stamp) -> Iterator[Stamp]:
        """Check ``stamp`` and hold the resource's lock while the block acts on it."""
        with self._lock:
            self.check(stamp.group, stamp.slot, stamp.token)
            yield stamp

    def highest(self) -> dict[tuple[str, int], int]:
        """The highest token accepted per (group, slot), to persist."""
        with self._lock:
            return dict(self._highest)

    def check_metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> Stamp:
        """Read the stamp from gRPC metadata pairs and check it: InvalidArgument when
        there is none, StaleToken when it is stale."""
        stamp = stamp_from_metadata(metadata)
        self.check(stamp.group, stamp.slot, stamp.token)
        return stamp

    def check_headers(self, headers: Any) -> Stamp:
        """Read the stamp from HTTP request headers (see :func:`stamp_from_headers`) and
        check it."""
        stamp = stamp_from_headers(headers)
        self.check(stamp.group, stamp.slot, stamp.token)
        return stamp

    def check_grpc(self, context: grpc.ServicerContext) -> Stamp:
        """In a servicer: the call's stamp, checked; a missing or stale one aborts the
        call (INVALID_ARGUMENT, or FAILED_PRECONDITION with ``coord-error: stale_token``,
        which the caller's client library raises as StaleToken)."""
        try:
            return self.check_metadata(context.invocation_metadata())
        except errors.CoordError as e:
            abort_grpc(context, e)
            raise  # abort raises; not reached


def stamp_from_metadata(metadata: Iterable[tuple[str, str | bytes]]) -> Stamp:
    """The stamp in gRPC metadata pairs (InvalidArgument when there is none)."""
    md = {k.lower(): v if isinstance(v, str) else v.decode() for k, v in metadata}
    return parse_stamp(md.get)


def stamp_from_headers(headers: Any) -> Stamp:
    """The stamp in HTTP request headers: a mapping with ``get``, such as
    ``http.server``'s ``self.headers`` or a dict (names in any case)."""
    lookup = cast(Callable[[str], str | None], headers.get)
    return parse_stamp(lambda k: lookup(k) or lookup(k.title()))


def abort_grpc(context: grpc.ServicerContext, e: errors.CoordError) -> None:
    """End the call with ``e`` as coord's own servers do (status code and ``coord-error``)."""
    code = (
        grpc.StatusCode.FAILED_PRECONDITION
        if isinstance(e, errors.FailedPrecondition)
        else grpc.StatusCode.INVALID_ARGUMENT
    )
    context.set_trailing_metadata((("coord-error", e.reason),))
    context.abort(code, e.message)


def parse_stamp(get: Callable[[str], str | None]) -> Stamp:
    """The stamp from a lookup of its keys (metadata or headers); InvalidArgument when the
    token is missing or malformed. Group and slot default to "" and 0."""
    token = get(TOKEN_KEY)
    if not token:
        raise errors.InvalidArgument(
            f"no {TOKEN_KEY}: this resource accepts only fenced calls (coord.client.fencing)"
        )
    try:
        stamp = Stamp(get(GROUP_KEY) or "", int(get(SLOT_KEY) or 0), int(token))
    except ValueError:
        raise errors.InvalidArgument(
            f"malformed fencing stamp: {TOKEN_KEY}={token!r}, {SLOT_KEY}={get(SLOT_KEY)!r}"
        ) from None
    if stamp.token <= 0 or stamp.slot < 0:
        raise errors.InvalidArgument(f"malformed fencing stamp: {stamp}")
    return stamp
