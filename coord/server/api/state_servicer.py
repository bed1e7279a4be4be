"""The base of the Sessions, Groups and Watch servicers: thin layers over the state machine.

Writes are proposed like KV writes (request ids checked in ``NodeContext.write``); reads
are linearizable unless ``serializable``; streams wake on :class:`StateNotifier` and read
the state under the Raft node's lock. A CoordError raised here becomes its gRPC status in
the handler wrapper (coord.server.api.handlers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from coord import errors
from coord.server.api.context import NodeContext, ServicerContext
from coord.server.runtime.notify import StateNotifier
from coord.server.security.auth import ADMIN
from coord.server.security.guard import caller
from coord.state.machine import StateMachine
from coord.v1 import groups_pb2, raft_pb2

IDLE_WAKE_S = 1.0  # streams re-check at least this often (a closed client, a lost leadership)


def holdings(state: StateMachine, group: str) -> list[groups_pb2.Holding]:
    """Copies of ``group``'s holdings by slot; NotFound if there is no such group."""
    g = state.groups.groups.get(group)
    if g is None:
        raise errors.NotFound(f"group {group!r} does not exist: create it first")
    return [copy_message(g.holdings[s]) for s in sorted(g.holdings)]


def copy_message(msg: Any) -> Any:
    """A copy a stream can keep after the state's lock is released."""
    out = type(msg)()
    out.CopyFrom(msg)
    return out


def _owner(state: StateMachine, session_id: str) -> str | None:
    session = state.groups.sessions.get(session_id)
    return None if session is None else session.owner


def check_own_session(ctx: NodeContext, session_id: str) -> None:
    """The caller may use this session: it opened it, or it is an admin. (An unknown
    session passes: the state machine answers NOT_FOUND.)"""
    who = caller()
    if not session_id or who.role == ADMIN:
        return
    owner = ctx.raft.read(lambda s: _owner(s, session_id))
    if owner is not None and owner != who.name:
        ctx.rejected("permission_denied")
        raise errors.PermissionDenied(
            f"session {session_id} belongs to {owner or 'another identity'!r}, not "
            f"{who.name!r}: use a session of your own"
        )


class StateServicer:
    """What the Sessions, Groups and Watch servicers share: proposing a write, reading
    the replicated state (under the node's lock), and checking who owns a session."""

    def __init__(self, ctx: NodeContext, notifier: StateNotifier) -> None:
        self.ctx = ctx
        self.notifier = notifier

    async def _write(
        self, context: ServicerContext, request_id: str, **op: Any
    ) -> raft_pb2.CommandResult:
        cmd = raft_pb2.Command(request_id=request_id, term=self.ctx.raft.view.term, **op)
        return await self.ctx.write(cmd, context)

    def _own_session(self, session_id: str) -> None:
        """The caller may use this session (:func:`check_own_session`)."""
        check_own_session(self.ctx, session_id)

    async def _read(
        self, context: ServicerContext, serializable: bool, fn: Callable[[StateMachine], Any]
    ) -> Any:
        if not serializable:
            await self.ctx.linearize(context)
        return self.ctx.raft.read(fn)
