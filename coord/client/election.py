"""Groups from the client's side: register, campaign, observe, watch, fencing.

::

    with Session(client, ttl_s=5) as session:
        member = Member(client, session, "db", "db-1", address="10.0.0.1:5432", priority=10)
        with member.campaign() as lead:           # blocks until elected
            resource.write(data, token=lead.token)  # the resource checks the token
            while lead.is_master():
                ...

``Leadership.is_master()`` turns False the moment the session's local validity
ends (DESIGN.md): stop writing then. Tokens strictly increase per slot; a
resource that remembers the highest token it accepted (:class:`FencedResource`)
rejects a deposed master that wakes up late.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import grpc

from coord import errors
from coord.client import clock
from coord.client.client import Client, new_request_id
from coord.client.errors import translate
from coord.client.session import Session
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2

T = TypeVar("T")


def _groups(ch: grpc.Channel) -> election_pb2_grpc.GroupsStub:
    return election_pb2_grpc.GroupsStub(ch)


def create_group(client: Client, name: str, slots: int = 1, **policy: Any) -> groups_pb2.Group:
    """Create a group; ``policy`` takes GroupPolicy fields (failback, failback_hold_ms, ...)."""
    req = election_pb2.CreateGroupRequest(
        name=name, policy=groups_pb2.GroupPolicy(slots=slots, **policy),
        request_id=new_request_id(),
    )  # fmt: skip
    resp: election_pb2.GroupResponse = client.call(lambda ch, t: _groups(ch).Create(req, timeout=t))
    return resp.group


class Member:
    """A member of a group, bound to a session (registered on construction)."""

    def __init__(
        self,
        client: Client,
        session: Session,
        group: str,
        member_id: str,
        address: str = "",
        priority: int = 0,
        weight: int = 1,
        tags: dict[str, str] | None = None,
        metadata: dict[str, str] | None = None,
        nofailover: bool = False,
        check: groups_pb2.HealthCheck | None = None,
    ) -> None:
        """``check``: a health check the cluster runs against this member (see
        :func:`tcp_check`, :func:`http_check`, :func:`grpc_check`)."""
        self.client = client
        self.session = session
        self.group = group
        self.id = member_id
        record = groups_pb2.Member(
            group=group, id=member_id, session_id=session.id, address=address,
            priority=priority, weight=weight, tags=tags or {}, metadata=metadata or {},
            nofailover=nofailover, check=check,
        )  # fmt: skip
        req = election_pb2.RegisterRequest(member=record, request_id=new_request_id())
        client.call(lambda ch, t: _groups(ch).Register(req, timeout=t))

    def campaign(self, timeout_s: float | None = None) -> Leadership:
        """Block until this member holds a slot; returns the holding (a context manager).

        Survives node failures: the campaign is re-sent (with the same request id) to
        whichever node answers, until elected or ``timeout_s`` passes.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        req = election_pb2.CampaignRequest(
            group=self.group, member_id=self.id, request_id=new_request_id()
        )
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise errors.DeadlineExceeded(
                    f"not elected in group {self.group!r} within {timeout_s} s"
                )
            endpoint = self.client.endpoints[0]
            try:
                endpoint = self.client.leader().leader_api_address or endpoint
                stream = _groups(self.client.channel(endpoint)).Campaign(req, timeout=left)
                for resp in _guarded(stream):
                    if resp.elected:
                        return Leadership(self, resp.holding)
            except grpc.RpcError as e:
                err = translate(e, endpoint)
                if not err.retryable or isinstance(err, errors.DeadlineExceeded):
                    raise err from None
            except errors.CoordError as e:
                if not e.retryable:
                    raise
            time.sleep(0.02)  # back off before re-sending the campaign elsewhere

    def update(
        self,
        weight: int | None = None,
        address: str | None = None,
        tags: dict[str, str] | None = None,
        metadata: dict[str, str] | None = None,
        replace: bool = False,
    ) -> groups_pb2.Member:
        """Change how this member is balanced, without re-registering. ``tags`` and
        ``metadata`` are merged (an empty value deletes a key), or with ``replace``
        replace the old ones."""
        update = groups_pb2.UpdateMember(
            group=self.group, member_id=self.id, session_id=self.session.id,
            tags=tags or {}, metadata=metadata or {},
            replace_tags=replace and tags is not None,
            replace_metadata=replace and metadata is not None,
        )  # fmt: skip
        if weight is not None:
            update.weight = weight
        if address is not None:
            update.address = address
        req = election_pb2.UpdateMemberRequest(update=update, request_id=new_request_id())
        resp: election_pb2.MemberResponse = self.client.call(
            lambda ch, t: _groups(ch).UpdateMember(req, timeout=t)
        )
        return resp.member

    def leave(self) -> None:
        """Unregister at once (as the member's own session), giving up any slot."""
        req = election_pb2.UnregisterRequest(
            group=self.group, member_id=self.id, session_id=self.session.id,
            request_id=new_request_id(),
        )  # fmt: skip
        self.client.call(lambda ch, t: _groups(ch).Unregister(req, timeout=t))

    def resign(self) -> None:
        """Give up the slot at once (as the holder's own session)."""
        req = election_pb2.ResignRequest(
            group=self.group, member_id=self.id, session_id=self.session.id,
            request_id=new_request_id(),
        )  # fmt: skip
        self.client.call(lambda ch, t: _groups(ch).Resign(req, timeout=t))


class Leadership:
    """A slot this process holds: its fencing token, and whether it may still act."""

    def __init__(self, member: Member, holding: groups_pb2.Holding) -> None:
        self.member = member
        self.slot = holding.slot
        self.token = holding.token
        self.granted_at = clock.now()  # the session's validity clock
        self._resigned = threading.Event()

    def is_master(self) -> bool:
        """True while the session is valid here, the slot was not given up, and no
        keepalive acknowledgement shows it revoked, re-granted or gone (whether it
        arrived before or after this object was built: see ``Session.holds``)."""
        session = self.member.session
        return (
            not self._resigned.is_set()
            and session.is_valid()
            and session.holds(self.member.group, self.slot, self.token, self.granted_at)
        )

    def resign(self) -> None:
        if not self._resigned.is_set():
            self._resigned.set()
            if self.member.session.is_valid():
                self.member.resign()

    def __enter__(self) -> Leadership:
        return self

    def __exit__(self, *exc: object) -> None:
        self.resign()


# Servers send on every stream at least once a second (progress); this much silence
# means the node hangs (SIGSTOP keeps its sockets open): give up and go elsewhere.
STREAM_SILENCE_S = 3.0


def _guarded(call: Any, silence_s: float = STREAM_SILENCE_S) -> Iterator[Any]:
    """Iterate a gRPC response stream, cancelling it after ``silence_s`` without a message."""
    last = [time.monotonic()]
    done = threading.Event()

    def watchdog() -> None:
        while not done.wait(0.25):
            if time.monotonic() - last[0] > silence_s:
                call.cancel()
                return

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        for item in call:
            last[0] = time.monotonic()
            yield item
    finally:
        done.set()


def tcp_check(
    address: str = "", interval_s: float = 1.0, timeout_s: float = 0.0, rise: int = 2, fall: int = 3
) -> groups_pb2.HealthCheck:
    """Connect to ``address`` (default: the member's address)."""
    return _check(interval_s, timeout_s, rise, fall, tcp=groups_pb2.TcpCheck(address=address))


def http_check(
    url: str,
    expect_status: Sequence[int] = (),
    body_contains: str = "",
    interval_s: float = 1.0,
    timeout_s: float = 0.0,
    rise: int = 2,
    fall: int = 3,
    tls_skip_verify: bool = False,
) -> groups_pb2.HealthCheck:
    """GET ``url``; healthy on an expected status (default 2xx/3xx) and body."""
    spec = groups_pb2.HttpCheck(
        url=url, expect_status=list(expect_status), body_contains=body_contains,
        tls_skip_verify=tls_skip_verify,
    )  # fmt: skip
    return _check(interval_s, timeout_s, rise, fall, http=spec)


def grpc_check(
    address: str = "",
    service: str = "",
    tls: bool = False,
    interval_s: float = 1.0,
    timeout_s: float = 0.0,
    rise: int = 2,
    fall: int = 3,
) -> groups_pb2.HealthCheck:
    """grpc.health.v1 Check of ``service`` at ``address`` (default: the member's)."""
    spec = groups_pb2.GrpcCheck(address=address, service=service, tls=tls)
    return _check(interval_s, timeout_s, rise, fall, grpc=spec)


def _check(
    interval_s: float, timeout_s: float, rise: int, fall: int, **kind: Any
) -> groups_pb2.HealthCheck:
    return groups_pb2.HealthCheck(
        interval_ms=round(interval_s * 1000), timeout_ms=round(timeout_s * 1000),
        rise=rise, fall=fall, **kind,
    )  # fmt: skip


def masters(client: Client, group: str) -> list[groups_pb2.Holding]:
    resp: election_pb2.MastersResponse = client.call(
        lambda ch, t: _groups(ch).Masters(election_pb2.MastersRequest(group=group), timeout=t)
    )
    return list(resp.masters)


def _resuming(client: Client, stream: Callable[[grpc.Channel], Iterator[T]]) -> Iterator[T]:
    """Run ``stream`` against the leader (or any node), again after retryable failures."""
    while True:
        endpoint = client.endpoints[0]
        try:
            endpoint = client.leader().leader_api_address or endpoint
            yield from stream(client.channel(endpoint))
        except grpc.RpcError as e:
            err = translate(e, endpoint)
            if not err.retryable:
                raise err from None
        except errors.CoordError as e:
            if not e.retryable:
                raise


def observe(client: Client, group: str) -> Iterator[list[groups_pb2.Holding]]:
    """The group's masters now, then after every change (reconnects on node failure)."""
    seen: list[groups_pb2.Holding] | None = None

    def stream(ch: grpc.Channel) -> Iterator[list[groups_pb2.Holding]]:
        nonlocal seen
        for resp in _guarded(_groups(ch).Observe(election_pb2.MastersRequest(group=group))):
            if list(resp.masters) != seen:  # the server also repeats views as a heartbeat
                seen = list(resp.masters)
                yield seen

    return _resuming(client, stream)


def watch(
    client: Client,
    from_revision: int = 0,
    groups: Iterable[str] = (),
    types: Iterable[str] = (),
) -> Iterator[groups_pb2.Event]:
    """Events from ``from_revision`` (0: from now) with automatic resume after failures.

    Gap-free across reconnects (each resume asks for the revision after the last
    one seen). Raises OutOfRange when the events needed were compacted: re-read
    the state and watch from its revision + 1.
    """
    for events, _ in watch_batches(client, from_revision, groups, types):
        yield from events


def watch_batches(
    client: Client,
    from_revision: int = 0,
    groups: Iterable[str] = (),
    types: Iterable[str] = (),
) -> Iterator[tuple[list[groups_pb2.Event], int]]:
    """Like :func:`watch`, in batches with the revision every event up to which has
    been seen and filtered (progress messages yield an empty batch): a consumer knows
    how far it is caught up even when no event matched."""
    # "From now" is pinned to a revision at once, so that a reconnect resumes
    # exactly where the stream stopped.
    following = from_revision or client.status().revision + 1
    req_groups, req_types = list(groups), list(types)

    def stream(ch: grpc.Channel) -> Iterator[tuple[list[groups_pb2.Event], int]]:
        nonlocal following
        req = election_pb2.WatchRequest(from_revision=following, groups=req_groups, types=req_types)
        for resp in _guarded(election_pb2_grpc.WatchStub(ch).Watch(req)):
            events = list(resp.events)
            if events:
                following = events[-1].revision + 1
            # The server filtered every event up to the header's revision.
            following = max(following, resp.header.revision + 1)
            yield events, following - 1

    return _resuming(client, stream)


class FencedResource:
    """How a resource protects itself from deposed masters: accept a token only if it
    is at least the highest seen for that (group, slot). Thread-safe."""

    def __init__(self) -> None:
        self._highest: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

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
