"""The error tree, its wire reasons, and the client's translation from gRPC failures."""

from __future__ import annotations

import grpc
import pytest

from coord import errors
from coord.client.errors import CLOSED_HINT, TLS_HINT, FailedCall, hint_for, translate


def all_error_classes() -> list[type[errors.CoordError]]:
    out: list[type[errors.CoordError]] = []
    todo: list[type[errors.CoordError]] = [errors.CoordError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(out, key=lambda c: c.__name__)


CLASSES = all_error_classes()

RETRYABLE = {
    errors.NotLeader,
    errors.Unavailable,
    errors.NoLeader,
    errors.OutcomeUnknown,
    errors.DeadlineExceeded,
}

CODES = {
    errors.CoordError: "UNKNOWN",
    errors.InvalidArgument: "INVALID_ARGUMENT",
    errors.NotFound: "NOT_FOUND",
    errors.AlreadyExists: "ALREADY_EXISTS",
    errors.FailedPrecondition: "FAILED_PRECONDITION",
    errors.NotLeader: "FAILED_PRECONDITION",
    errors.StaleToken: "FAILED_PRECONDITION",
    errors.Unavailable: "UNAVAILABLE",
    errors.NoLeader: "UNAVAILABLE",
    errors.OutcomeUnknown: "UNAVAILABLE",
    errors.DeadlineExceeded: "DEADLINE_EXCEEDED",
    errors.ResourceExhausted: "RESOURCE_EXHAUSTED",
    errors.Unauthenticated: "UNAUTHENTICATED",
    errors.PermissionDenied: "PERMISSION_DENIED",
    errors.OutOfRange: "OUT_OF_RANGE",
    errors.Internal: "INTERNAL",
}


def test_the_tree_is_the_documented_one() -> None:
    assert set(CLASSES) == set(CODES)
    assert issubclass(errors.NotLeader, errors.FailedPrecondition)
    assert issubclass(errors.NoLeader, errors.Unavailable)
    assert issubclass(errors.OutcomeUnknown, errors.Unavailable)


def test_reasons_are_unique() -> None:
    reasons = [c.reason for c in CLASSES]
    assert len(set(reasons)) == len(reasons)
    assert set(errors.BY_REASON) == set(reasons)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_error_round_trips_through_its_reason(cls: type[errors.CoordError]) -> None:
    err = errors.from_reason(cls.reason, "coord: something went wrong")
    assert type(err) is cls
    assert err.message == "coord: something went wrong"
    assert str(err) == err.message


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_code_and_retryable_are_as_documented(cls: type[errors.CoordError]) -> None:
    assert cls.code == CODES[cls]
    assert hasattr(grpc.StatusCode, cls.code)  # the server does getattr(StatusCode, code)
    assert cls.retryable is (cls in RETRYABLE)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_messages_start_with_coord(cls: type[errors.CoordError]) -> None:
    assert cls("key is empty").message == "coord: key is empty"
    assert str(cls("coord: already prefixed")) == "coord: already prefixed"
    assert cls("").message == "coord: "


def test_an_unknown_reason_becomes_a_plain_coord_error() -> None:
    err = errors.from_reason("from_a_newer_server", "coord: new")
    assert type(err) is errors.CoordError
    assert err.reason == "unknown"
    assert err.retryable is False


def test_not_leader_carries_its_hint() -> None:
    err = errors.NotLeader("ask the leader", leader_id="n2", leader_address="127.0.0.1:8002")
    assert (err.leader_id, err.leader_address) == ("n2", "127.0.0.1:8002")
    assert err.message == "coord: ask the leader"
    plain = errors.from_reason("not_leader", "x")
    assert isinstance(plain, errors.NotLeader)
    assert (plain.leader_id, plain.leader_address) == ("", "")


def test_errors_are_exceptions_that_can_be_caught_by_family() -> None:
    with pytest.raises(errors.Unavailable):
        raise errors.OutcomeUnknown("retry with the same request id")
    with pytest.raises(errors.CoordError):
        raise errors.Internal("bug")


# -- the client's translation ------------------------------------------------------------------


FakeCall = FailedCall  # what a failed unary call raises: an RpcError that is a Call


def aborted(err: errors.CoordError, leader: tuple[str, str] = ("", "")) -> FakeCall:
    """What coord.server.runtime.grpc_errors.abort produces for ``err``."""
    md = [("coord-error", err.reason)]
    if leader[0]:
        md.append(("coord-leader-id", leader[0]))
    if leader[1]:
        md.append(("coord-leader", leader[1]))
    return FakeCall(getattr(grpc.StatusCode, err.code), err.message, tuple(md))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_translate_rebuilds_every_error_from_metadata(cls: type[errors.CoordError]) -> None:
    err = translate(aborted(cls("what happened: what to do")), "127.0.0.1:8001")
    assert type(err) is cls
    assert err.message == "coord: what happened: what to do"  # no double prefix
    assert err.retryable is cls.retryable


def test_translate_carries_the_leader_hint() -> None:
    call = aborted(errors.NotLeader("not the leader"), leader=("n2", "127.0.0.1:8002"))
    err = translate(call, "127.0.0.1:8001")
    assert isinstance(err, errors.NotLeader)
    assert (err.leader_id, err.leader_address) == ("n2", "127.0.0.1:8002")
    assert err.retryable


def test_translate_not_leader_without_a_known_leader() -> None:
    err = translate(aborted(errors.NotLeader("not the leader")), "e")
    assert isinstance(err, errors.NotLeader)
    assert (err.leader_id, err.leader_address) == ("", "")


def test_translate_gives_every_error_the_leader_address() -> None:
    err = translate(aborted(errors.NoLeader("election"), leader=("", "127.0.0.1:8003")), "e")
    assert isinstance(err, errors.NoLeader)
    assert err.leader_address == "127.0.0.1:8003"


def test_every_error_declares_a_leader_address() -> None:
    assert errors.CoordError("x").leader_address == ""
    assert errors.Unavailable("x", leader_address="a:1").leader_address == "a:1"
    assert errors.NotLeader("x", "n2", "b:2").leader_address == "b:2"


def test_leader_hint_still_reads_the_leader_address_and_warns() -> None:
    err = errors.NoLeader("election", leader_address="127.0.0.1:8003")
    with pytest.warns(DeprecationWarning, match="leader_address"):
        assert err.leader_hint == "127.0.0.1:8003"


FALLBACK = [
    (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
    (grpc.StatusCode.NOT_FOUND, errors.NotFound),
    (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExists),
    (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
    (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
    (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
    (grpc.StatusCode.OUT_OF_RANGE, errors.OutOfRange),
    (grpc.StatusCode.INTERNAL, errors.Internal),
    (grpc.StatusCode.CANCELLED, errors.Unavailable),
    (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
    (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
    (grpc.StatusCode.UNIMPLEMENTED, errors.CoordError),
    (grpc.StatusCode.UNKNOWN, errors.CoordError),
]


@pytest.mark.parametrize(("code", "cls"), FALLBACK, ids=lambda v: getattr(v, "name", ""))
def test_translate_falls_back_to_the_status_code(
    code: grpc.StatusCode, cls: type[errors.CoordError]
) -> None:
    """No coord-error metadata: a proxy, an old server, or the transport itself failed."""
    err = translate(FakeCall(code, "upstream says no"), "127.0.0.1:8001")
    assert type(err) is cls
    assert err.message.startswith("coord: ")
    assert "upstream says no" in err.message


def test_an_unreachable_endpoint_is_named() -> None:
    err = translate(FakeCall(grpc.StatusCode.UNAVAILABLE, "connection refused"), "10.1.1.1:8001")
    assert isinstance(err, errors.Unavailable)
    assert err.retryable
    assert err.message == "coord: endpoint 10.1.1.1:8001 is unreachable (connection refused)"


# What gRPC core reported here for each TLS failure (tests/integration/test_security.py
# meets them live).
TLS_FAILURES = [
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:23791: Tls "
    "handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1a000064:ECDSA "
    "routines:OPENSSL_internal:BAD_SIGNATURE: certificate signature failure: OK",
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Ssl handshake "
    "failed: SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:"
    "CERTIFICATE_VERIFY_FAILED",
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Custom "
    "verification check failed with error: UNAUTHENTICATED: Hostname Verification Check failed.",
]


@pytest.mark.parametrize("details", TLS_FAILURES)
def test_a_failed_tls_handshake_says_what_to_check(details: str) -> None:
    err = translate(FakeCall(grpc.StatusCode.UNAVAILABLE, details), "10.1.1.1:8001")
    assert isinstance(err, errors.Unavailable)
    assert err.message.startswith("coord: TLS handshake with 10.1.1.1:8001 failed (")
    assert err.message.endswith(TLS_HINT)
    assert hint_for(err) == ""


def test_a_server_hanging_up_at_the_handshake_points_at_the_tls_options() -> None:
    details = "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:h:1: Socket closed"
    err = translate(FakeCall(grpc.StatusCode.UNAVAILABLE, details), "h:1")
    assert err.message == f"coord: endpoint h:1 closed the connection ({details}): {CLOSED_HINT}"
    assert hint_for(err) == ""


def test_other_failures_point_at_the_cluster() -> None:
    err = translate(FakeCall(grpc.StatusCode.UNAVAILABLE, "connection refused"), "h:1")
    assert hint_for(err) == hint_for(None) == ": check that a majority of the cluster is up"


def test_unavailable_from_coord_itself_is_not_called_unreachable() -> None:
    err = translate(aborted(errors.NoLeader("no leader: an election is running")), "h:1")
    assert err.message == "coord: no leader: an election is running"


def test_an_unknown_reason_in_metadata_becomes_a_plain_coord_error() -> None:
    call = FakeCall(grpc.StatusCode.ABORTED, "coord: new", (("coord-error", "brand_new"),))
    err = translate(call, "e")
    assert type(err) is errors.CoordError


def test_missing_details_and_metadata() -> None:
    err = translate(FakeCall(grpc.StatusCode.INTERNAL, None, None), "e")
    assert type(err) is errors.Internal
    assert err.message.startswith("coord: ")
    assert err.leader_address == ""


def test_a_bare_rpc_error_is_a_coord_error() -> None:
    """An RpcError that is not a Call (e.g. raised before the call started)."""
    err = translate(grpc.RpcError("channel closed"), "e")
    assert type(err) is errors.CoordError
    assert err.message == "coord: channel closed"
