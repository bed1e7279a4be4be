"""Groups from the client's side: register, campaign, observe, watch, fencing.

::

    db = client.group("db")
    with client.session(ttl_s=5) as session:
        with db.member("db-1", session, address="10.0.0.1:5432", priority=10) as member:
            with member.campaign() as lead:              # blocks until elected
                resource.write(data, token=lead.token)   # the resource checks the token
                while lead.is_master():
                    ...

Neither a Session nor a Member does I/O when constructed: ``start()`` (or ``with``)
opens the session, and registers the member (leaving the block unregisters it).

``Leadership.is_master()`` turns False the moment the session's local validity
ends (docs/design.md, the safety argument): stop writing then. Tokens strictly increase per slot; a
resource that remembers the highest token it accepted (:class:`FencedResource`)
rejects a deposed master that wakes up late; coord.client.fencing stamps the token on
every outgoing gRPC call and HTTP request, and refuses to send once ``is_master()`` is False.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import grpc

from coord import errors
from coord.client import clock
from coord.client.client import Client, new_request_id
from coord.client.errors import translate
from coord.client.fencing import FencedResource  # noqa: F401  (its home before)
from coord.client.session import Session, SessionState
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2

T = TypeVar("T")

logger = logging.getLogger(__name__)


def _groups(ch: grpc.Channel) -> election_pb2_grpc.GroupsStub:
    return election_pb2_grpc.GroupsStub(ch)


# The cluster's default switchover timeout (coord/state/limits.py), for comparing
# policies: a policy that leaves it 0 gets this one.
DEFAULT_SWITCHOVER_TIMEOUT_MS = 10_000


def create_group(
    client: Client, name: str, slots: int = 1, exist_ok: bool = False, **policy: Any
) -> groups_pb2.Group:
    """Deprecated: ``client.group(name).create(slots, exist_ok, **policy)``."""
    _deprecated("create_group(client, name, ...)", "client.group(name).create(...)")
    return client.group(name).create(slots, exist_ok, **policy)


def _deprecated(old: str, new: str) -> None:
    warnings.warn(
        f"coord.client.{old} is deprecated (removed in the next release): use {new}",
        DeprecationWarning,
        stacklevel=3,
    )


def policy_differences(wanted: groups_pb2.GroupPolicy, has: groups_pb2.GroupPolicy) -> list[str]:
    """How ``has`` (a group's policy) differs from ``wanted`` (a create request's), with the
    cluster's defaults for the fields a request may leave unset; [] when they agree."""
    want = groups_pb2.GroupPolicy()
    want.CopyFrom(wanted)
    if want.failback == groups_pb2.FAILBACK_UNSPECIFIED:
        want.failback = groups_pb2.FAILBACK_OFF
    if want.switchover_timeout_ms == 0:
        want.switchover_timeout_ms = DEFAULT_SWITCHOVER_TIMEOUT_MS
    out = []
    for field in groups_pb2.GroupPolicy.DESCRIPTOR.fields:
        a, b = getattr(want, field.name), getattr(has, field.name)
        if a != b:
            if field.enum_type is not None:
                a, b = (
                    field.enum_type.values_by_number[a].name,
                    field.enum_type.values_by_number[b].name,
                )
            out.append(f"{field.name}: asked {a}, it has {b}")
    return out


class Member:
    """A member of a group, bound to a session: ``client.group(name).member(...)``.

    Constructing it does no I/O: ``start()`` registers it (the session must be open),
    as does entering it as a context manager; leaving the block unregisters it
    (:meth:`close`)."""

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
        self._record = groups_pb2.Member(
            group=group, id=member_id, address=address, priority=priority, weight=weight,
            tags=tags or {}, metadata=metadata or {}, nofailover=nofailover, check=check,
        )  # fmt: skip
        self.registered = False
        self._stepped_down = False  # the library resigned a holding on a step-down request
        self._leaderships: list[Leadership] = []  # grants this process may act on

    def start(self) -> Member:
        """Register in the group (as the session's member); returns this member. Once
        registered, does nothing (after :meth:`leave`, registers again)."""
        if self.registered:
            return self
        record = groups_pb2.Member()
        record.CopyFrom(self._record)
        record.session_id = self.session.id
        req = election_pb2.RegisterRequest(member=record, request_id=new_request_id())
        self.client.call(lambda ch, t: _groups(ch).Register(req, timeout=t))
        self.registered = True
        return self

    def close(self) -> None:
        """Unregister (giving up any slot), unless the session ended: then the cluster
        drops the member with it. A member already gone is fine."""
        opened = self.session.state is not SessionState.NEW
        if self.registered and opened and self.session.is_valid():
            with contextlib.suppress(errors.NotFound):
                self.leave()
        self.registered = False

    def __enter__(self) -> Member:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _registered(self) -> None:
        """Members used to register in their constructor: one used before ``start()``
        still registers, with a DeprecationWarning, for one release."""
        if not self.registered:
            warnings.warn(
                "a Member no longer registers in its constructor: call start() or use it "
                "as a context manager (it is registered now, implicitly)",
                DeprecationWarning,
                stacklevel=3,
            )
            self.start()

    def campaign(
        self, timeout_s: float | None = None, on_candidate: Callable[[], None] | None = None
    ) -> Leadership:
        """Block until this member holds a slot; returns the holding (a context manager).

        Survives node failures: the campaign is re-sent to whichever node answers, until
        elected or ``timeout_s`` passes. Campaigning is idempotent, so each send has its
        own request id: a re-send must campaign again even if the member was elected
        and revoked meanwhile (a re-used id would be answered from the dedupe table).
        ``on_candidate`` is called (on this thread) each time the cluster has applied the
        candidacy and the member is not elected yet: from then on a switchover to it is
        accepted.
        """
        self._registered()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            req = election_pb2.CampaignRequest(
                group=self.group, member_id=self.id, request_id=new_request_id()
            )
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise errors.DeadlineExceeded(
                    f"not elected in group {self.group!r} within {timeout_s} s"
                )
            endpoint = self.client.endpoints[0]
            try:
                endpoint = self.client.find_leader(wait=True) or endpoint
                stream = _groups(self.client.channel(endpoint)).Campaign(req, timeout=left)
                for resp in _guarded(stream):
                    if resp.elected:
                        self._stepped_down = False
                        return Leadership(self, resp.holding)
                    if on_candidate is not None:
                        on_candidate()
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
        position: int | None = None,
    ) -> groups_pb2.Member:
        """Change how this member is balanced, without re-registering. ``tags`` and
        ``metadata`` are merged (an empty value deletes a key), or with ``replace``
        replace the old ones. ``position`` reports how far its data has come
        (:meth:`report_position`)."""
        self._registered()
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
        if position is not None:
            update.position = position
        req = election_pb2.UpdateMemberRequest(update=update, request_id=new_request_id())
        resp: election_pb2.MemberResponse = self.client.call(
            lambda ch, t: _groups(ch).UpdateMember(req, timeout=t)
        )
        return resp.member

    def report_position(self, position: int) -> groups_pb2.Member:
        """Report this member's position: an opaque number that only increases (a WAL
        LSN, a log offset). A group whose policy sets ``max_lag_on_failover`` grants a
        slot only to members within that much of the best position reported, and with
        ``prefer_most_advanced`` the most advanced wins before priority. One replicated
        write per call (report when it moved, e.g. once a second). A lower position than
        the last raises FailedPrecondition; a negative one InvalidArgument."""
        return self.update(position=position)

    def _stop_acting(self, token: int = 0) -> None:
        """End mastership here (every grant, or the one under ``token``) before asking
        the cluster to release it: the successor may be granted in the same apply."""
        for leadership in list(self._leaderships):
            if not token or leadership.token == token:
                leadership._resigned.set()
                leadership._forget()  # (also drops it from this list)

    def leave(self) -> None:
        """Unregister at once (as the member's own session), giving up any slot."""
        self._stop_acting()
        self.registered = False
        req = election_pb2.UnregisterRequest(
            group=self.group, member_id=self.id, session_id=self.session.id,
            request_id=new_request_id(),
        )  # fmt: skip
        self.client.call(lambda ch, t: _groups(ch).Unregister(req, timeout=t))

    def resign(self, token: int = 0) -> None:
        """Give up the slot at once (as the holder's own session): every Leadership of
        this member stops acting first. With ``token``, only the grant under it (a stale
        resign must not give up a newer grant). Once the library has resigned it on a
        step-down request, there is nothing to give up: a no-op."""
        self._stop_acting(token)
        req = election_pb2.ResignRequest(
            group=self.group, member_id=self.id, session_id=self.session.id,
            request_id=new_request_id(), token=token,
        )  # fmt: skip
        try:
            self.client.call(lambda ch, t: _groups(ch).Resign(req, timeout=t))
        except errors.FailedPrecondition as e:  # "does not hold a slot"
            if not self._stepped_down or e.retryable:
                raise


class Leadership:
    """A slot this process holds: its fencing token, and whether it may still act.

    Asked to step down (a switchover, an operator's resign, failback), it ends
    mastership and resigns at once, or after the session's ``on_stepdown`` handler
    returned (at most ``stepdown_grace_s``): see coord.client.session.
    """

    def __init__(self, member: Member, holding: groups_pb2.Holding) -> None:
        self.member = member
        self.slot = holding.slot
        self.token = holding.token
        self.granted_at = clock.now()  # the session's validity clock
        self.stepdown: election_pb2.StepDown | None = None  # the request, once asked
        self._resigned = threading.Event()
        self._resign_lock = threading.Lock()
        self._asked = threading.Lock()  # held from the first step-down request on
        member.session._stepdown_hooks.append(self._on_stepdown)
        member._leaderships.append(self)

    @property
    def group(self) -> str:
        """The group this slot belongs to."""
        return self.member.group

    def is_master(self) -> bool:
        """True while the session is valid here, the slot was not given up (the library
        gives it up when asked to step down: at once, or once ``on_stepdown`` returned),
        and no keepalive acknowledgement shows it revoked, re-granted or gone (whether it
        arrived before or after this object was built: see ``Session.holds``)."""
        session = self.member.session
        return (
            not self._resigned.is_set()
            and session.is_valid()
            and session.holds(self.member.group, self.slot, self.token, self.granted_at)
        )

    def resign(self) -> None:
        """Give up the slot (once; a concurrent call returns when it is given up)."""
        with self._resign_lock:
            if self._resigned.is_set():
                return
            self._resigned.set()  # stop acting first
            self._forget()
            if self.member.session.is_valid():
                self.member.resign(self.token)

    def _forget(self) -> None:
        with contextlib.suppress(ValueError):
            self.member.session._stepdown_hooks.remove(self._on_stepdown)
        with contextlib.suppress(ValueError):
            self.member._leaderships.remove(self)

    def _on_stepdown(self, step: election_pb2.StepDown, revision: int) -> None:
        """A step-down request on a keepalive response (on the keepalive thread): ours if
        it names this slot, was read after our grant and we still hold the slot. Handled
        once, on a thread of its own."""
        if step.group != self.member.group or step.slot != self.slot or revision < self.token:
            return
        if self.is_master() and self._asked.acquire(blocking=False):
            self.stepdown = step
            threading.Thread(
                target=self._step_down, args=(step,), daemon=True, name="coord-stepdown"
            ).start()

    def _step_down(self, step: election_pb2.StepDown) -> None:
        session = self.member.session
        handler = session._on_stepdown
        if handler is not None:
            done = threading.Event()

            def hand_over() -> None:
                try:
                    handler(session, step)
                except Exception:
                    logger.exception("on_stepdown handler failed")
                finally:
                    done.set()

            threading.Thread(target=hand_over, daemon=True, name="coord-handover").start()
            if not done.wait(session.stepdown_grace_s):
                logger.warning(
                    "on_stepdown did not return within %.1f s: resigning %s/%d anyway",
                    session.stepdown_grace_s, self.member.group, self.slot,
                )  # fmt: skip
        self.member._stepped_down = True
        try:
            self.resign()
        except errors.CoordError as e:
            # The slot is not ours any more (revoked, released), or the cluster is away:
            # it revokes the slot after the switchover timeout; we stopped acting already.
            logger.warning(
                "resigning %s/%d after a step-down request failed: %s",
                self.member.group, self.slot, e.message,
            )  # fmt: skip

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
    """Deprecated: ``client.group(group).masters()``."""
    _deprecated("masters(client, group)", "client.group(group).masters()")
    return client.group(group).masters()


def _resuming(client: Client, stream: Callable[[grpc.Channel], Iterator[T]]) -> Iterator[T]:
    """Run ``stream`` against the leader (or any node), again after retryable failures."""
    while True:
        endpoint = client.endpoints[0]
        try:
            endpoint = client.find_leader(wait=True) or endpoint
            yield from stream(client.channel(endpoint))
        except grpc.RpcError as e:
            err = translate(e, endpoint)
            if not err.retryable:
                raise err from None
        except errors.CoordError as e:
            if not e.retryable:
                raise


def observe(client: Client, group: str) -> Iterator[list[groups_pb2.Holding]]:
    """Deprecated: ``client.group(group).observe()``."""
    _deprecated("observe(client, group)", "client.group(group).observe()")
    return client.group(group).observe()


def observe_masters(client: Client, group: str) -> Iterator[list[groups_pb2.Holding]]:
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
    """Deprecated: ``client.watch(from_revision, groups, types)``, or for one group
    ``client.group(name).watch(from_revision, types)``."""
    _deprecated("watch(client, ...)", "client.watch(...) or client.group(name).watch(...)")
    return client.watch(from_revision, groups, types)


def watch_events(
    client: Client,
    from_revision: int = 0,
    groups: Iterable[str] = (),
    types: Iterable[str] = (),
    key_prefix: bytes = b"",
) -> Iterator[groups_pb2.Event]:
    """Events from ``from_revision`` (0: from now) with automatic resume after failures
    (``Client.watch``).

    Gap-free across reconnects (each resume asks for the revision after the last
    one seen). Raises OutOfRange when the events needed were compacted: re-read
    the state and watch from its revision + 1.
    """
    for events, _ in watch_batches(client, from_revision, groups, types, key_prefix):
        yield from events


def watch_batches(
    client: Client,
    from_revision: int = 0,
    groups: Iterable[str] = (),
    types: Iterable[str] = (),
    key_prefix: bytes = b"",
) -> Iterator[tuple[list[groups_pb2.Event], int]]:
    """Like :func:`watch_events`, in batches with the revision every event up to which has
    been seen and filtered (progress messages yield an empty batch): a consumer knows
    how far it is caught up even when no event matched."""
    # "From now" is pinned to a revision at once, so that a reconnect resumes
    # exactly where the stream stopped.
    following = from_revision or client.status().revision + 1
    req_groups, req_types = list(groups), list(types)

    def stream(ch: grpc.Channel) -> Iterator[tuple[list[groups_pb2.Event], int]]:
        nonlocal following
        req = election_pb2.WatchRequest(
            from_revision=following, groups=req_groups, types=req_types, key_prefix=key_prefix
        )
        for resp in _guarded(election_pb2_grpc.WatchStub(ch).Watch(req)):
            events = list(resp.events)
            if events:
                following = events[-1].revision + 1
            # The server filtered every event up to the header's revision.
            following = max(following, resp.header.revision + 1)
            yield events, following - 1

    return _resuming(client, stream)
