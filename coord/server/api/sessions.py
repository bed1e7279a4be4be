"""Sessions servicer: open, keep alive, close, list.

Keepalives go to the leader, whose duties (coord.server.duties.leases) time every
session on its monotonic clock; this servicer reaches them only through the
:class:`SessionDeadlines` port, and answers "expired" only as a leader that still
leads in the term it read the state in (docs/design.md, the safety argument, point 8:
only a leader that applied an outcome may state it).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from coord import errors
from coord.server.api.context import NodeContext, ServicerContext
from coord.server.api.leader_ports import SessionDeadlines
from coord.server.api.state_servicer import StateServicer, copy_message
from coord.server.runtime.notify import StateNotifier
from coord.server.security.guard import caller
from coord.state.machine import StateMachine
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2


def _over_limit(
    state: StateMachine, request: election_pb2.OpenSessionRequest, owner: str, limit: int
) -> bool:
    """``owner`` has ``limit`` sessions open, and this is not the retry of an Open that
    was applied (a retry gets its first answer, whatever the count is now)."""
    if state.remembers(request.request_id):
        return False
    return sum(1 for x in state.groups.sessions.values() if x.owner == owner) >= limit


_SessionView = tuple[list[election_pb2.StepDown], list[election_pb2.Held]]
_NO_VIEW: _SessionView = ([], [])


class SessionsService(StateServicer, election_pb2_grpc.SessionsServicer):
    def __init__(
        self, ctx: NodeContext, notifier: StateNotifier, deadlines: SessionDeadlines
    ) -> None:
        super().__init__(ctx, notifier)
        self.keeper = deadlines
        self._views_cache: tuple[tuple[object, int], dict[str, _SessionView]] | None = None

    async def Open(
        self, request: election_pb2.OpenSessionRequest, context: ServicerContext
    ) -> election_pb2.OpenSessionResponse:
        who = caller()
        limit = self.ctx.cfg.max_sessions_per_identity
        if limit and self.ctx.raft.read(lambda s: _over_limit(s, request, who.name, limit)):
            self.ctx.rejected("sessions")
            raise errors.ResourceExhausted(
                f"{who.name!r} already has {limit} open sessions, the most allowed: close "
                "sessions you no longer use (one per process is enough)"
            )
        result = await self._write(
            context, request.request_id,
            open_session=groups_pb2.OpenSession(
                ttl_ms=request.ttl_ms, name=request.name, owner=who.name
            ),
        )  # fmt: skip
        self.keeper.touch(result.session.id, time.monotonic())
        return election_pb2.OpenSessionResponse(
            header=self.ctx.header(revision=result.revision), session=result.session
        )

    async def KeepAlive(
        self, requests: AsyncIterator[election_pb2.KeepAliveRequest], context: ServicerContext
    ) -> AsyncIterator[election_pb2.KeepAliveResponse]:
        async for req in requests:
            arrival = time.monotonic()
            term = self._leading_term()
            if not 0 <= req.load < float("inf"):
                raise errors.InvalidArgument(f"load must be a finite number >= 0, got {req.load}")
            self._own_session(req.session_id)
            known = self.keeper.touch(req.session_id, arrival, req.load)
            # Acknowledge only after a read barrier begun after the arrival (a round
            # of heartbeats a majority answered in this term, or a no-op commit): a
            # deposed leader gets neither, so it cannot acknowledge. The barrier also
            # applies here everything committed before it began: only then does a
            # session missing from the state mean it expired or closed.
            await self._ack_barrier(context)
            self._check_still_leading(term)
            answer = self._keepalive_answer(req)
            if not answer.expired and not known:  # opened by an entry not applied then
                self.keeper.touch(req.session_id, arrival, req.load)
            self._check_still_leading(term)  # the answer speaks for this term's leader
            yield answer

    def _leading_term(self) -> int:
        """The term this node leads in; NotLeader (with a hint) if it does not lead."""
        term = self.keeper.leading_term
        if term is None:
            leader, address = self.ctx.leader_hint()
            raise errors.NotLeader(
                f"keepalives go to the leader ({leader or 'none yet'}): reconnect there",
                leader, address,
            )  # fmt: skip
        return term

    def _check_still_leading(self, term: int) -> None:
        """NotLeader unless this node still leads in ``term``: a node that stopped
        leading (a transfer while the barrier was pending) must not answer for the
        cluster, least of all that a session expired."""
        if self.keeper.leading_term != term:
            leader, address = self.ctx.leader_hint()
            raise errors.NotLeader(
                f"leadership changed while acknowledging the keepalive (leader now: "
                f"{leader or 'none yet'}): reconnect there",
                leader, address,
            )  # fmt: skip

    async def _ack_barrier(self, context: ServicerContext) -> None:
        try:
            await self.keeper.ack_barrier(self.ctx.timeout(context))
        except TimeoutError:
            raise errors.Unavailable(
                "keepalive not acknowledged in time (no quorum?): retry"
            ) from None

    def _keepalive_answer(
        self, req: election_pb2.KeepAliveRequest
    ) -> election_pb2.KeepAliveResponse:
        def read(state: StateMachine) -> tuple[int, int | None, _SessionView]:
            session = state.groups.sessions.get(req.session_id)
            ttl_ms = session.ttl_ms if session is not None else None
            return state.revision, ttl_ms, self._views(state).get(req.session_id, _NO_VIEW)

        # One read: whether the session lives, its holdings and the revision they were
        # read at (a client tells from it whether this view is older than a grant).
        revision, ttl_ms, (steps, held) = self.ctx.raft.read(read)
        return election_pb2.KeepAliveResponse(
            header=self.ctx.header(revision=revision), session_id=req.session_id, seq=req.seq,
            ttl_ms=ttl_ms or 0, expired=ttl_ms is None, stepdown=steps, held=held,
        )  # fmt: skip

    def _views(self, state: StateMachine) -> dict[str, _SessionView]:
        """Per session: its step-down requests and holdings, rebuilt once per revision
        (a keepalive then costs a lookup, however many groups there are)."""
        key = (state.groups, state.revision)
        cached = self._views_cache
        if cached is not None and cached[0][0] is key[0] and cached[0][1] == key[1]:
            return cached[1]
        views: dict[str, _SessionView] = {}
        for g in state.groups.groups.values():
            for h in g.holdings.values():
                sid = g.members[h.member_id].session_id
                views.setdefault(sid, ([], []))[1].append(
                    election_pb2.Held(group=g.name, slot=h.slot, token=h.token, revoked=h.revoked)
                )
            for slot, ho in g.handovers.items():
                holder = g.members.get(ho.from_member)
                if holder is not None:
                    views.setdefault(holder.session_id, ([], []))[0].append(
                        election_pb2.StepDown(
                            group=g.name, slot=slot, cause=ho.cause, to_member=ho.to_member
                        )
                    )
        self._views_cache = (key, views)
        return views

    async def Close(
        self, request: election_pb2.CloseSessionRequest, context: ServicerContext
    ) -> election_pb2.CloseSessionResponse:
        self._own_session(request.session_id)
        # "own" (its slots move at once) only from the identity that opened it: an
        # admin closing another's session waits its holders out unless it forces.
        session = self.ctx.raft.read(lambda s: s.groups.sessions.get(request.session_id))
        own = request.own and (session is None or session.owner == caller().name)
        result = await self._write(
            context, request.request_id,
            close_session=groups_pb2.CloseSession(
                session_id=request.session_id, wait_out=not (own or request.force)
            ),
        )  # fmt: skip
        return election_pb2.CloseSessionResponse(header=self.ctx.header(revision=result.revision))

    async def List(
        self, request: election_pb2.ListSessionsRequest, context: ServicerContext
    ) -> election_pb2.ListSessionsResponse:
        sessions = await self._read(
            context, False, lambda s: [copy_message(x) for x in s.groups.sessions.values()]
        )
        return election_pb2.ListSessionsResponse(header=self.ctx.header(), sessions=sessions)
