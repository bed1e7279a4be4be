"""The one exception tree of coord.

Every error knows its gRPC status code name, a stable machine-readable
``reason`` and whether a client may retry it. Three places translate errors:
``coord.raft`` (pysyncobj fail reasons -> errors), ``coord.server`` (errors ->
gRPC status + ``coord-error``/``coord-leader`` trailing metadata) and
``coord.client`` (metadata -> typed errors, via :func:`from_reason`).

::

    CoordError
    +-- InvalidArgument          INVALID_ARGUMENT     bad input, never retried
    +-- NotFound                 NOT_FOUND
    +-- AlreadyExists            ALREADY_EXISTS
    +-- FailedPrecondition       FAILED_PRECONDITION
    |   +-- NotLeader            (+ leader hint)      retry on the leader
    |   +-- StaleToken           a fencing token older than one already accepted
    +-- Unavailable              UNAVAILABLE          retryable
    |   +-- NoLeader             election in progress
    |   +-- OutcomeUnknown       the write may or may not have applied; retry
    |                            with the same request id
    +-- DeadlineExceeded         DEADLINE_EXCEEDED    retryable
    +-- ResourceExhausted        RESOURCE_EXHAUSTED   limits
    +-- Unauthenticated          UNAUTHENTICATED      no or unknown credentials
    +-- PermissionDenied         PERMISSION_DENIED    a role too low for the call
    +-- OutOfRange               OUT_OF_RANGE
    +-- Internal                 INTERNAL

Messages start with ``coord: `` and say what to do.
"""

from __future__ import annotations

import warnings
from typing import ClassVar


class CoordError(Exception):
    """Root of every coord error.

    ``leader_address``: the client API address of the cluster's leader as the answering
    node knew it (the ``coord-leader`` trailing metadata; the client sets it on every
    error it translates), or "" when unknown. A client retries there.
    """

    code: ClassVar[str] = "UNKNOWN"
    reason: ClassVar[str] = "unknown"
    retryable: ClassVar[bool] = False
    leader_address: str = ""

    def __init__(self, message: str, *, leader_address: str = "") -> None:
        if not message.startswith("coord: "):
            message = "coord: " + message
        super().__init__(message)
        self.message = message
        self.leader_address = leader_address

    @property
    def leader_hint(self) -> str:
        """Deprecated alias of :attr:`leader_address` (removed in the next release)."""
        warnings.warn(
            "CoordError.leader_hint is deprecated: use leader_address",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.leader_address


class InvalidArgument(CoordError):
    code = "INVALID_ARGUMENT"
    reason = "invalid_argument"


class NotFound(CoordError):
    code = "NOT_FOUND"
    reason = "not_found"


class AlreadyExists(CoordError):
    code = "ALREADY_EXISTS"
    reason = "already_exists"


class FailedPrecondition(CoordError):
    code = "FAILED_PRECONDITION"
    reason = "failed_precondition"


class NotLeader(FailedPrecondition):
    """This node is not the leader; ``leader_id``/``leader_address`` hint where it is."""

    reason = "not_leader"
    retryable = True

    def __init__(self, message: str, leader_id: str = "", leader_address: str = "") -> None:
        super().__init__(message, leader_address=leader_address)
        self.leader_id = leader_id


class StaleToken(FailedPrecondition):
    """A write carried a fencing token older than one already accepted: a newer master
    exists, and the sender must stop acting as master."""

    reason = "stale_token"


class Unavailable(CoordError):
    code = "UNAVAILABLE"
    reason = "unavailable"
    retryable = True


class NoLeader(Unavailable):
    reason = "no_leader"


class OutcomeUnknown(Unavailable):
    """The write may have been applied. Retrying with the same request id is safe."""

    reason = "outcome_unknown"


class DeadlineExceeded(CoordError):
    code = "DEADLINE_EXCEEDED"
    reason = "deadline_exceeded"
    retryable = True


class ResourceExhausted(CoordError):
    code = "RESOURCE_EXHAUSTED"
    reason = "resource_exhausted"


class Unauthenticated(CoordError):
    code = "UNAUTHENTICATED"
    reason = "unauthenticated"


class PermissionDenied(CoordError):
    code = "PERMISSION_DENIED"
    reason = "permission_denied"


class OutOfRange(CoordError):
    code = "OUT_OF_RANGE"
    reason = "out_of_range"


class Internal(CoordError):
    code = "INTERNAL"
    reason = "internal"


def _all_subclasses(cls: type[CoordError]) -> list[type[CoordError]]:
    out: list[type[CoordError]] = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


BY_REASON: dict[str, type[CoordError]] = {c.reason: c for c in _all_subclasses(CoordError)}


def from_reason(reason: str, message: str) -> CoordError:
    """Rebuild a typed error from its wire ``reason`` (unknown reasons -> CoordError)."""
    cls = BY_REASON.get(reason, CoordError)
    return cls(message)
