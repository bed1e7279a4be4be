"""The one place where coord errors become gRPC statuses.

Trailing metadata: ``coord-error`` carries the error's reason (the client
rebuilds the typed error from it); ``coord-leader`` and ``coord-leader-id``
hint where the leader is, when known.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import grpc

from coord import errors

logger = logging.getLogger(__name__)


async def abort(
    context: grpc.aio.ServicerContext[Any, Any],
    err: errors.CoordError,
    leader: tuple[str, str] = ("", ""),
) -> NoReturn:
    """Abort the RPC with the status for ``err`` and coord's trailing metadata."""
    md = [("coord-error", err.reason)]
    if leader[0]:
        md.append(("coord-leader-id", leader[0]))
    if leader[1]:
        md.append(("coord-leader", leader[1]))
    context.set_trailing_metadata(tuple(md))
    await context.abort(getattr(grpc.StatusCode, err.code), err.message)
    raise AssertionError("unreachable")  # context.abort raises
