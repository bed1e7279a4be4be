"""Translate gRPC failures into coord's typed errors (the client's one translation point)."""

from __future__ import annotations

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
            details = f"endpoint {endpoint} is unreachable ({details})"
        err = cls(details)
    if isinstance(err, errors.NotLeader):
        err.leader_id = str(md.get("coord-leader-id", ""))
        err.leader_address = str(md.get("coord-leader", ""))
    leader = md.get("coord-leader")
    err.leader_hint = str(leader) if leader else ""  # type: ignore[attr-defined]
    return err
