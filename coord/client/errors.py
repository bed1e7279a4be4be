"""Translate gRPC failures into coord's typed errors (the client's one translation point)."""

from __future__ import annotations

from typing import Any

import grpc

from coord import errors

_BY_CODE: dict[grpc.StatusCode, type[errors.CoordError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.OUT_OF_RANGE: errors.OutOfRange,
    grpc.StatusCode.INTERNAL: errors.Internal,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.CANCELLED: errors.Unavailable,
}


class FailedCall(grpc.RpcError, grpc.Call):
    """A failed call as gRPC raises one (an RpcError that is also a Call: status, details,
    trailing metadata), built by hand: a request that failed on a KV.Pipeline stream
    (coord.client.pipeline), so that :func:`translate` reads it as it reads any call."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str | None = "",
        trailing: tuple[tuple[str, str | bytes], ...] = (),
    ) -> None:
        super().__init__(details)
        self._code = code
        self._details = details
        self._trailing = trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details  # type: ignore[return-value]  # real calls return None too

    def trailing_metadata(self) -> Any:
        return self._trailing

    def initial_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> bool:
        return False


def translate(e: grpc.RpcError, endpoint: str) -> errors.CoordError:
    """Rebuild the typed error from ``coord-error`` metadata, else from the status code."""
    call = e if isinstance(e, grpc.Call) else None
    md: dict[str, object] = dict(call.trailing_metadata() or ()) if call is not None else {}
    code = call.code() if call is not None else grpc.StatusCode.UNKNOWN
    details = (call.details() if call is not None else None) or str(e)
    reason = md.get("coord-error")
    if isinstance(reason, str):
        err = errors.from_reason(reason, details)
    else:
        cls = _BY_CODE.get(code, errors.CoordError)
        if code == grpc.StatusCode.UNAVAILABLE:
            details = _unreachable(endpoint, details)
        err = cls(details)
    if isinstance(err, errors.NotLeader):
        err.leader_id = str(md.get("coord-leader-id", ""))
    leader = md.get("coord-leader")
    err.leader_address = str(leader) if leader else ""
    return err


# What gRPC core says when a TLS handshake fails on the client's side (verification of
# the server's certificate or name), and when the server hangs up during the handshake.
_TLS_FAILED = (
    "andshake failed",
    "CERTIFICATE_VERIFY_FAILED",
    "Hostname Verification",
    "certificate signature failure",
    "WRONG_VERSION_NUMBER",
)
TLS_HINT = (
    "is --cacert the CA that signed the cluster's certificates, and the address (or "
    "--server-name) a name in them?"
)
CLOSED_HINT = (
    "a TLS server hangs up on plaintext clients and on client certificates it does not "
    "accept: check --cacert, --cert and --key"
)


def _unreachable(endpoint: str, details: str) -> str:
    if any(s in details for s in _TLS_FAILED):
        return f"TLS handshake with {endpoint} failed ({details}): {TLS_HINT}"
    if "Socket closed" in details or "Connection reset" in details:
        return f"endpoint {endpoint} closed the connection ({details}): {CLOSED_HINT}"
    return f"endpoint {endpoint} is unreachable ({details})"


def hint_for(err: errors.CoordError | None) -> str:
    """What to check when every endpoint failed, the last time with ``err`` (a TLS
    failure's message already says)."""
    if err is not None and (TLS_HINT in err.message or CLOSED_HINT in err.message):
        return ""
    return ": check that a majority of the cluster is up"
