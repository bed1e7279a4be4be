"""Sessions, Groups and Watch servicers: thin layers over the state machine.

Writes are proposed like KV writes (request ids, errors mapped once); reads are
linearizable unless ``serializable``; streams wake on :class:`StateNotifier`
and read the state under the Raft node's lock.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from coord import errors
from coord.server.auth import ADMIN
from coord.server.context import NodeContext, ServicerContext
from coord.server.guard import caller
from coord.server.health import HealthChecker
from coord.server.leases import LeaseKeeper
from coord.server.notify import StateNotifier
from coord.server.probes import probe
from coord.server.status import abort
from coord.state import healthspec
from coord.state.machine import StateMachine
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2, raft_pb2

IDLE_WAKE_S = 1.0  # streams re-check at least this often (a closed client, a lost leadership)


def _holdings(state: StateMachine, group: str) -> list[groups_pb2.Holding]:
    g = state.groups.groups.get(group)
    if g is None:
        raise errors.NotFound(f"group {group!r} does not exist: create it first")
    return [_copy(g.holdings[s]) for s in sorted(g.holdings)]


def _copy(msg: Any) -> Any:
    out = type(msg)()
    out.CopyFrom(msg)
    return out


class _Base:
    def __init__(self, ctx: NodeContext, notifier: StateNotifier, keeper: LeaseKeeper) -> None:
        self.ctx = ctx
        self.notifier = notifier
        self.keeper = keeper

    async def _write(
        self, context: ServicerContext, request_id: str, **op: Any
    ) -> raft_pb2.CommandResult:
        cmd = raft_pb2.Command(request_id=request_id, term=self.ctx.raft.view.term, **op)
        return await self.ctx.write(cmd, context)

    def _own_session(self, session_id: str) -> None:
        """The caller may use this session: it opened it, or it is an admin. (An unknown
        session passes: the state machine answers NOT_FOUND.)"""
        who = caller()
        if not session_id or who.role == ADMIN:
            return
        # A lock-free dict lookup: a session's owner never changes.
        session = self.ctx.raft.state.groups.sessions.get(session_id)
        if session is not None and session.owner != who.name:
            self.ctx.rejected("permission_denied")
            raise errors.PermissionDenied(
                f"session {session_id} belongs to {session.owner or 'another identity'!r}, not "
                f"{who.name!r}: use a session of your own"
            )

    async def _read(
        self, context: ServicerContext, serializable: bool, fn: Callable[[StateMachine], Any]
    ) -> Any:
        if not serializable:
            await self.ctx.linearize(context)
        return self.ctx.raft.read(fn)


_SessionView = tuple[list[election_pb2.StepDown], list[election_pb2.Held]]
_NO_VIEW: _SessionView = ([], [])


class SessionsService(_Base, election_pb2_grpc.SessionsServicer):
    def __init__(self, ctx: NodeContext, notifier: StateNotifier, keeper: LeaseKeeper) -> None:
        super().__init__(ctx, notifier, keeper)
        self._views_cache: tuple[tuple[object, int], dict[str, _SessionView]] | None = None

    async def Open(
        self, request: election_pb2.OpenSessionRequest, context: ServicerContext
    ) -> election_pb2.OpenSessionResponse:
        try:
            who = caller()
            limit = self.ctx.cfg.max_sessions_per_identity
            sessions = self.ctx.raft.state.groups.sessions
            if limit and sum(1 for x in list(sessions.values()) if x.owner == who.name) >= limit:
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
        except errors.CoordError as e:
            await abort(context, e, self.ctx.leader_hint())
        self.keeper.touch(result.session.id, time.monotonic())
        return election_pb2.OpenSessionResponse(
            header=self.ctx.header(revision=result.revision), session=result.session
        )

    async def KeepAlive(
        self, requests: AsyncIterator[election_pb2.KeepAliveRequest], context: ServicerContext
    ) -> AsyncIterator[election_pb2.KeepAliveResponse]:
        async for req in requests:
            arrival = time.monotonic()
            try:
                term = self._leading_term()
                if not 0 <= req.load < float("inf"):
                    raise errors.InvalidArgument(
                        f"load must be a finite number >= 0, got {req.load}"
                    )
                self._own_session(req.session_id)
                known = self.keeper.touch(req.session_id, arrival, req.load)
                # Acknowledge only after a commit proposed after the arrival: a deposed
                # leader cannot commit, so it cannot acknowledge. The same barrier, of
                # this term, applies here everything committed before the term: only
                # then does a session missing from the state mean it expired or closed.
                await self._ack_barrier(context)
                self._check_still_leading(term)
                answer = self._keepalive_answer(req)
                if not answer.expired and not known:  # opened by an entry not applied then
                    self.keeper.touch(req.session_id, arrival, req.load)
                self._check_still_leading(term)  # the answer speaks for this term's leader
            except errors.CoordError as e:
                await abort(context, e, self.ctx.leader_hint())
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
        try:
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
        except errors.CoordError as e:
            await abort(context, e, self.ctx.leader_hint())
        return election_pb2.CloseSessionResponse(header=self.ctx.header(revision=result.revision))

    async def List(
        self, request: election_pb2.ListSessionsRequest, context: ServicerContext
    ) -> election_pb2.ListSessionsResponse:
        try:
            sessions = await self._read(
                context, False, lambda s: [_copy(x) for x in s.groups.sessions.values()]
            )
        except errors.CoordError as e:
            await abort(context, e, self.ctx.leader_hint())
        return election_pb2.ListSessionsResponse(header=self.ctx.header(), sessions=sessions)


class GroupsService(_Base, election_pb2_grpc.GroupsServicer):
    def __init__(
        self,
        ctx: NodeContext,
        notifier: StateNotifier,
        keeper: LeaseKeeper,
        checker: HealthChecker,
    ) -> None:
        super().__init__(ctx, notifier, keeper)
        self.checker = checker

    async def UpdateMember(
        self, request: election_pb2.UpdateMemberRequest, context: ServicerContext
    ) -> election_pb2.MemberResponse:
        try:
            result = await self._write(context, request.request_id, update_member=request.update)
        except errors.CoordError as e:
            await abort(context, e, self.ctx.leader_hint())
        return election_pb2.MemberResponse(
            header=self.ctx.header(revision=result.revision), member=result.member
        )

    async def HealthStatus(
        self, request: election_pb2.HealthStatusRequest, context: ServicerContext
    ) -> election_pb2.HealthStatusResponse:
        try:
            if not self.keeper.leading:
                leader, address = self.ctx.leader_hint()
                raise errors.NotLeader(
                    f"the leader runs the health checks ({leader or 'none yet'}): ask it",
                    leader, address,
                )  # fmt: skip
            members = self.ctx.raft.read(lambda s: _health_rows(s, request.group))
        except errors.CoordError as e:
            await abort(context, e, self.ctx.leader_hint())
        out = []
        for group, member_id, registered, healthy in members:
            t = self.checker.targets.get((group, member_id, registered))
            row = election_pb2.MemberHealth(group=group, member_id=member_id, healthy=healthy)
            if t is not None and t.last is not None:
                row.checked, row.last_ok, row.last_detail = True, t.last.ok, t.last.detail
                row.last_latency_ms = t.last.latency_s * 1000
                row.last_time_ms, row.streak = t.last_time_ms, t.streak
            out.append(row)
        return election_pb2.HealthStatusResponse(header=self.ctx.header(), members=out)

    async def RunCheck(
        self, request: election_pb2.RunCheckRequest, context: ServicerContext
    ) -> election_pb2.RunCheckResponse:
        def read(state: StateMachine) -> tuple[groups_pb2.HealthCheck, str]:
            g = state.groups.groups.get(request.group)
            m = g.members.get(request.member_id) if g is not None else None
            if m is None:
                raise errors.NotFound(
                    f"member {request.member_id!r} is not registered in group {request.group!r}"
                )
            if not request.HasField("check") and not m.HasField("check"):
                raise errors.FailedPrecondition(
                    f"member {request.member_id!r} has no health check: give one to run"
                )
            check = request.check if request.HasField("check") else m.check
            return healthspec.checked(check, m.address), m.address

        try:
            check, address = self.ctx.raft.read(read)
        except errors.CoordError as e:
            await abort(context, e, self.ctx.leader_hint())
        result = await probe(check, address)
        return election_pb2.RunCheckResponse(
            header=self.ctx.header(serializable=True), ok=result.ok, detail=result.detail,
            latency_ms=result.latency_s * 1000,
        )  # fmt: skip

    async def Create(
        self, request: election_pb2.CreateGroupRequest, context: ServicerContext
    ) -> election_pb2.GroupResponse:
        try:
            result = await self._write(
                context, request.request_id,
                create_group=groups_pb2.CreateGroup(name=request.name, policy=request.policy),
            )  # fmt: skip
        except errors.CoordError as e:
            await abort(context, e, self.ctx.leader_hint())
        return election_pb2.GroupResponse(
            header=self.ctx.header(revision=result.revision), group=result.group
        )

    async def Delete(
        self, request: election_pb2.DeleteGroupRequest, context: ServicerContext
    ) -> election_pb2.DeleteGroupResponse:
        try:
            result = await self._write(
                context, request.request_id,
                delete_group=groups_pb2.DeleteGroup(name=request.name, wait_out=not request.force),
            )  # fmt: skip
        except errors.CoordError as e:
            await abort(context, e, self.ctx.leader_hint())
        return election_pb2.DeleteGroupResponse(header=self.ctx.header(revision=result.revision))

    async def Get(
        self, request: election_pb2.GetGroupRequest, context: ServicerContext
    ) -> election_pb2.GroupResponse:
        def read(state: StateMachine) -> groups_pb2.Group:
            g = state.groups.groups.get(request.name)
            if g is None:
                raise errors.NotFound(f"group {request.name!r} does not exist: create it first")
            return g.to_proto()

        try:
            group = await self._read(context, request.serializable, read)
        except errors.CoordError as e:
            await abort(context, e, self.ctx.leader_hint())
        return election_pb2.GroupResponse(
            header=self.ctx.header(serializable=request.serializable), group=group
        )

    async def List(
        self, request: election_pb2.ListGroupsRequest, context: ServicerContext
    ) -> election_pb2.ListGroupsResponse:
        try:
            groups = await self._read(
                context, request.serializable,
                lambda s: [s.groups.groups[n].to_proto() for n in sorted(s.groups.groups)],
            )  # fmt: skip
        except errors.CoordError as e:
            await abort(context, e, self.ctx.leader_hint())
        return election_pb2.ListGroupsResponse(
            header=self.ctx.header(serializable=request.serializable), groups=groups
        )

    async def Register(
        self, request: election_pb2.RegisterRequest, context: ServicerContext
    ) -> election_pb2.MemberResponse:
        try:
            self._own_session(request.member.session_id)
            result = await self._write(
                context, request.request_id, register=groups_pb2.Register(member=request.member)
            )
        except errors.CoordError as e:
            await abort(context, e, self.ctx.leader_hint())
        return election_pb2.MemberResponse(
            header=self.ctx.header(revision=result.revision), member=result.member
        )

    async def Unregister(
        self, request: election_pb2.UnregisterRequest, context: ServicerContext
    ) -> election_pb2.UnregisterResponse:
        try:
            self._own_session(request.session_id)
            result = await self._write(
                context, request.request_id,
                unregister=groups_pb2.Unregister(
                    group=request.group, member_id=request.member_id,
                    session_id=request.session_id,
                ),
            )  # fmt: skip
        except errors.CoordError as e:
            await abort(context, e, self.ctx.leader_hint())
        return election_pb2.UnregisterResponse(header=self.ctx.header(revision=result.revision))

    async def Campaign(
        self, request: election_pb2.CampaignRequest, context: ServicerContext
    ) -> AsyncIterator[election_pb2.CampaignResponse]:
        try:
            await self._write(
                context, request.request_id,
                campaign=groups_pb2.Campaign(group=request.group, member_id=request.member_id),
            )  # fmt: skip
        except errors.CoordError as e:
            await abort(context, e, self.ctx.leader_hint())

        def read(state: StateMachine) -> tuple[groups_pb2.Holding | None, list[groups_pb2.Holding]]:
            masters = _holdings(state, request.group)
            g = state.groups.groups[request.group]
            if request.member_id not in g.members:
                raise errors.NotFound(
                    f"member {request.member_id!r} left group {request.group!r} while campaigning"
                )
            mine = next((h for h in masters if h.member_id == request.member_id), None)
            return mine, masters

        generation = self.notifier.generation
        while True:
            try:
                mine, masters = self.ctx.raft.read(read)
            except errors.CoordError as e:
                await abort(context, e, self.ctx.leader_hint())
            if mine is not None and not mine.revoked:
                yield election_pb2.CampaignResponse(
                    header=self.ctx.header(), elected=True, holding=mine, masters=masters
                )
                return
            yield election_pb2.CampaignResponse(header=self.ctx.header(), masters=masters)
            generation = await self.notifier.wait_beyond(generation, IDLE_WAKE_S)

    async def Resign(
        self, request: election_pb2.ResignRequest, context: ServicerContext
    ) -> election_pb2.ResignResponse:
        try:
            self._own_session(request.session_id)
            result = await self._write(
                context, request.request_id,
                resign=groups_pb2.Resign(
                    group=request.group, member_id=request.member_id,
                    session_id=request.session_id, token=request.token,
                ),
            )  # fmt: skip
        except errors.CoordError as e:
            await abort(context, e, self.ctx.leader_hint())
        return election_pb2.ResignResponse(header=self.ctx.header(revision=result.revision))

    async def Masters(
        self, request: election_pb2.MastersRequest, context: ServicerContext
    ) -> election_pb2.MastersResponse:
        try:
            masters = await self._read(
                context, request.serializable, lambda s: _holdings(s, request.group)
            )
        except errors.CoordError as e:
            await abort(context, e, self.ctx.leader_hint())
        return election_pb2.MastersResponse(
            header=self.ctx.header(serializable=request.serializable),
            group=request.group, masters=masters,
        )  # fmt: skip

    async def Observe(
        self, request: election_pb2.MastersRequest, context: ServicerContext
    ) -> AsyncIterator[election_pb2.MastersResponse]:
        seen: tuple[tuple[int, str, int, int], ...] | None = None
        last_sent = 0.0
        generation = self.notifier.generation
        while True:
            try:
                masters = self.ctx.raft.read(lambda s: _holdings(s, request.group))
            except errors.CoordError as e:
                await abort(context, e, self.ctx.leader_hint())
            view = tuple((h.slot, h.member_id, h.token, h.revoked) for h in masters)
            # Also re-sent after IDLE_WAKE_S of silence: the client notices a hung node.
            if view != seen or time.monotonic() - last_sent >= IDLE_WAKE_S:
                seen, last_sent = view, time.monotonic()
                yield election_pb2.MastersResponse(
                    header=self.ctx.header(serializable=True), group=request.group,
                    masters=masters,
                )  # fmt: skip
            generation = await self.notifier.wait_beyond(generation, IDLE_WAKE_S)

    async def Switchover(
        self, request: election_pb2.SwitchoverRequest, context: ServicerContext
    ) -> election_pb2.SwitchoverResponse:
        try:
            result = await self._write(
                context, request.request_id,
                switchover=groups_pb2.Switchover(group=request.group, to_member=request.to_member),
            )  # fmt: skip
        except errors.CoordError as e:
            await abort(context, e, self.ctx.leader_hint())
        return election_pb2.SwitchoverResponse(header=self.ctx.header(revision=result.revision))


def _health_rows(s: StateMachine, group: str) -> list[tuple[str, str, int, bool]]:
    if group and group not in s.groups.groups:
        raise errors.NotFound(f"group {group!r} does not exist")
    return [
        (g.name, m.id, m.registered_revision, m.healthy)
        for g in s.groups.groups.values()
        if not group or g.name == group
        for m in g.members.values()
    ]


class WatchService(_Base, election_pb2_grpc.WatchServicer):
    async def Watch(
        self, request: election_pb2.WatchRequest, context: ServicerContext
    ) -> AsyncIterator[election_pb2.WatchResponse]:
        if request.from_revision < 0:
            await abort(context, errors.InvalidArgument("from_revision must be >= 0"))
        groups, types = set(request.groups), set(request.types)
        raft = self.ctx.raft
        following = request.from_revision or raft.state.revision + 1
        last_sent = time.monotonic()
        generation = self.notifier.generation
        while True:

            def tail(s: StateMachine, start: int = following) -> tuple[list[Any], int]:
                return s.events.since(start, s.revision), s.revision

            try:
                events, current = raft.read(tail)
            except errors.CoordError as e:
                await abort(context, e)
            if events:
                following = events[-1].revision + 1
                picked = [
                    _copy(e)
                    for e in events
                    if (not groups or e.group in groups) and (not types or e.type in types)
                ]
                batches = _batches(picked)
                for i, batch in enumerate(batches):
                    # The header's revision promises "filtered up to here": only the last
                    # batch may claim the whole read (a client resumes after it).
                    upto = current if i == len(batches) - 1 else batch[-1].revision
                    last_sent = time.monotonic()
                    yield election_pb2.WatchResponse(
                        header=self.ctx.header(revision=upto, serializable=True), events=batch
                    )
            if time.monotonic() - last_sent >= IDLE_WAKE_S:
                # Progress notification (as etcd's): a stream whose filter matched
                # nothing lately still hears from this node, and learns how far it
                # has been filtered; a client notices a hung node by the silence.
                last_sent = time.monotonic()
                yield election_pb2.WatchResponse(
                    header=self.ctx.header(revision=following - 1, serializable=True)
                )
            generation = await self.notifier.wait_beyond(generation, IDLE_WAKE_S)


WATCH_BATCH_BYTES = 2 * 1024 * 1024  # a response stays well under the 4 MiB message limit


def _batches(events: list[groups_pb2.Event]) -> list[list[groups_pb2.Event]]:
    """Split events into responses of at most WATCH_BATCH_BYTES (at least one event each)."""
    out: list[list[groups_pb2.Event]] = []
    size = 0
    for e in events:
        n = e.ByteSize()
        if not out or size + n > WATCH_BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(e)
        size += n
    return out
