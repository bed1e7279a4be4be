"""Groups servicer: groups, members, campaigns, masters, switchover, health views.

Member health checks run on the leader (coord.server.duties.member_checks); this
servicer sees their live results and runs a one-off probe only through the ports
of :mod:`coord.server.api.leader_ports`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from coord import errors
from coord.server.api.context import NodeContext, ServicerContext
from coord.server.api.leader_ports import MemberCheckResults, RunProbe, SessionDeadlines
from coord.server.api.state_servicer import IDLE_WAKE_S, StateServicer, holdings
from coord.server.runtime.notify import StateNotifier
from coord.state import healthspec
from coord.state.explain import explain
from coord.state.machine import StateMachine
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2, raft_pb2


class GroupsService(StateServicer, election_pb2_grpc.GroupsServicer):
    def __init__(
        self,
        ctx: NodeContext,
        notifier: StateNotifier,
        deadlines: SessionDeadlines,
        checks: MemberCheckResults,
        run_probe: RunProbe,
    ) -> None:
        super().__init__(ctx, notifier)
        self.keeper = deadlines
        self.checker = checks
        self.run_probe = run_probe

    async def UpdateMember(
        self, request: election_pb2.UpdateMemberRequest, context: ServicerContext
    ) -> election_pb2.MemberResponse:
        if not request.update.session_id:
            raise errors.InvalidArgument(
                "coord: UpdateMember needs the member's own session_id; an operator changes "
                "priority and nofailover with EditMember (coordctl member edit)"
            )
        result = await self._write(context, request.request_id, update_member=request.update)
        return election_pb2.MemberResponse(
            header=self.ctx.header(revision=result.revision), member=result.member
        )

    async def HealthStatus(
        self, request: election_pb2.HealthStatusRequest, context: ServicerContext
    ) -> election_pb2.HealthStatusResponse:
        if not self.keeper.leading:
            leader, address = self.ctx.leader_hint()
            raise errors.NotLeader(
                f"the leader runs the health checks ({leader or 'none yet'}): ask it",
                leader, address,
            )  # fmt: skip
        members = self.ctx.raft.read(lambda s: _health_rows(s, request.group))
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

        check, address = self.ctx.raft.read(read)
        result = await self.run_probe(check, address)
        return election_pb2.RunCheckResponse(
            header=self.ctx.header(serializable=True), ok=result.ok, detail=result.detail,
            latency_ms=result.latency_s * 1000,
        )  # fmt: skip

    async def Create(
        self, request: election_pb2.CreateGroupRequest, context: ServicerContext
    ) -> election_pb2.GroupResponse:
        result = await self._write(
            context, request.request_id,
            create_group=groups_pb2.CreateGroup(name=request.name, policy=request.policy),
        )  # fmt: skip
        return election_pb2.GroupResponse(
            header=self.ctx.header(revision=result.revision), group=result.group
        )

    async def Delete(
        self, request: election_pb2.DeleteGroupRequest, context: ServicerContext
    ) -> election_pb2.DeleteGroupResponse:
        result = await self._write(
            context, request.request_id,
            delete_group=groups_pb2.DeleteGroup(name=request.name, wait_out=not request.force),
        )  # fmt: skip
        return election_pb2.DeleteGroupResponse(header=self.ctx.header(revision=result.revision))

    async def Get(
        self, request: election_pb2.GetGroupRequest, context: ServicerContext
    ) -> election_pb2.GroupResponse:
        def read(state: StateMachine) -> groups_pb2.Group:
            g = state.groups.groups.get(request.name)
            if g is None:
                raise errors.NotFound(f"group {request.name!r} does not exist: create it first")
            return g.to_proto()

        group = await self._read(context, request.serializable, read)
        return election_pb2.GroupResponse(
            header=self.ctx.header(serializable=request.serializable), group=group
        )

    async def List(
        self, request: election_pb2.ListGroupsRequest, context: ServicerContext
    ) -> election_pb2.ListGroupsResponse:
        groups = await self._read(
            context, request.serializable,
            lambda s: [s.groups.groups[n].to_proto() for n in sorted(s.groups.groups)],
        )  # fmt: skip
        return election_pb2.ListGroupsResponse(
            header=self.ctx.header(serializable=request.serializable), groups=groups
        )

    async def Register(
        self, request: election_pb2.RegisterRequest, context: ServicerContext
    ) -> election_pb2.MemberResponse:
        self._own_session(request.member.session_id)
        result = await self._write(
            context, request.request_id, register=groups_pb2.Register(member=request.member)
        )
        return election_pb2.MemberResponse(
            header=self.ctx.header(revision=result.revision), member=result.member
        )

    async def Unregister(
        self, request: election_pb2.UnregisterRequest, context: ServicerContext
    ) -> election_pb2.UnregisterResponse:
        self._own_session(request.session_id)
        result = await self._write(
            context, request.request_id,
            unregister=groups_pb2.Unregister(
                group=request.group, member_id=request.member_id,
                session_id=request.session_id,
            ),
        )  # fmt: skip
        return election_pb2.UnregisterResponse(header=self.ctx.header(revision=result.revision))

    async def Campaign(
        self, request: election_pb2.CampaignRequest, context: ServicerContext
    ) -> AsyncIterator[election_pb2.CampaignResponse]:
        await self._write(
            context, request.request_id,
            campaign=groups_pb2.Campaign(group=request.group, member_id=request.member_id),
        )  # fmt: skip

        def read(state: StateMachine) -> tuple[groups_pb2.Holding | None, list[groups_pb2.Holding]]:
            masters = holdings(state, request.group)
            g = state.groups.groups[request.group]
            if request.member_id not in g.members:
                raise errors.NotFound(
                    f"member {request.member_id!r} left group {request.group!r} while campaigning"
                )
            mine = next((h for h in masters if h.member_id == request.member_id), None)
            return mine, masters

        generation = self.notifier.generation
        while True:
            mine, masters = self.ctx.raft.read(read)
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
        self._own_session(request.session_id)
        result = await self._write(
            context, request.request_id,
            resign=groups_pb2.Resign(
                group=request.group, member_id=request.member_id,
                session_id=request.session_id, token=request.token,
            ),
        )  # fmt: skip
        return election_pb2.ResignResponse(header=self.ctx.header(revision=result.revision))

    async def Masters(
        self, request: election_pb2.MastersRequest, context: ServicerContext
    ) -> election_pb2.MastersResponse:
        masters = await self._read(
            context, request.serializable, lambda s: holdings(s, request.group)
        )
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
            masters = self.ctx.raft.read(lambda s: holdings(s, request.group))
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
        if request.at_ms:  # scheduled: the leader fires it then (coord.state.scheduled)
            if request.at_ms < 0:
                raise errors.InvalidArgument(
                    f"coord: at_ms {request.at_ms} is not a time: give ms since the epoch"
                )
            result = await self._write(
                context, request.request_id,
                schedule_switchover=groups_pb2.ScheduleSwitchover(
                    group=request.group, to_member=request.to_member, at_ms=request.at_ms
                ),
            )  # fmt: skip
            return election_pb2.SwitchoverResponse(
                header=self.ctx.header(revision=result.revision), scheduled=result.scheduled
            )
        result = await self._write(
            context, request.request_id,
            switchover=groups_pb2.Switchover(group=request.group, to_member=request.to_member),
        )  # fmt: skip
        return election_pb2.SwitchoverResponse(header=self.ctx.header(revision=result.revision))

    async def CancelSwitchover(
        self, request: election_pb2.CancelSwitchoverRequest, context: ServicerContext
    ) -> election_pb2.CancelSwitchoverResponse:
        result = await self._write(
            context, request.request_id,
            cancel_switchover=groups_pb2.CancelSwitchover(group=request.group, id=request.id),
        )  # fmt: skip
        return election_pb2.CancelSwitchoverResponse(
            header=self.ctx.header(revision=result.revision), cancelled=result.scheduled
        )

    async def Pause(
        self, request: election_pb2.PauseGroupsRequest, context: ServicerContext
    ) -> election_pb2.PauseGroupsResponse:
        wait_ms = pause_wait_ms(request.until_ms, request.for_ms, int(time.time() * 1000))
        cmd = groups_pb2.PauseGroups(
            groups=request.groups, all=request.all, wait_ms=wait_ms, reason=request.reason,
            until_ms=request.until_ms, for_ms=request.for_ms,
        )  # fmt: skip
        result = await self._write(context, request.request_id, pause_groups=cmd)
        return self._named_groups(result)

    async def Resume(
        self, request: election_pb2.ResumeGroupsRequest, context: ServicerContext
    ) -> election_pb2.PauseGroupsResponse:
        cmd = groups_pb2.ResumeGroups(groups=request.groups, all=request.all)
        result = await self._write(context, request.request_id, resume_groups=cmd)
        return self._named_groups(result)

    def _named_groups(self, result: raft_pb2.CommandResult) -> election_pb2.PauseGroupsResponse:
        names = list(result.group_names.names)
        groups = self.ctx.raft.read(
            lambda s: [s.groups.groups[n].to_proto() for n in names if n in s.groups.groups]
        )
        return election_pb2.PauseGroupsResponse(
            header=self.ctx.header(revision=result.revision), groups=groups
        )

    async def Edit(
        self, request: election_pb2.EditGroupRequest, context: ServicerContext
    ) -> election_pb2.GroupResponse:
        result = await self._write(
            context, request.request_id,
            edit_group=groups_pb2.EditGroup(
                group=request.name, policy=request.policy, fields=request.fields
            ),
        )  # fmt: skip
        return election_pb2.GroupResponse(
            header=self.ctx.header(revision=result.revision), group=result.group
        )

    async def EditMember(
        self, request: election_pb2.EditMemberRequest, context: ServicerContext
    ) -> election_pb2.MemberResponse:
        if not request.HasField("priority") and not request.HasField("nofailover"):
            raise errors.InvalidArgument("coord: give a priority or nofailover to change")
        update = groups_pb2.UpdateMember(group=request.group, member_id=request.member_id)
        if request.HasField("priority"):
            update.priority = request.priority
        if request.HasField("nofailover"):
            update.nofailover = request.nofailover
        result = await self._write(context, request.request_id, update_member=update)
        return election_pb2.MemberResponse(
            header=self.ctx.header(revision=result.revision), member=result.member
        )

    async def Explain(
        self, request: election_pb2.ExplainRequest, context: ServicerContext
    ) -> election_pb2.ExplainResponse:
        explanation = await self._read(
            context, request.serializable, lambda s: explain(s.groups, request.group)
        )
        return election_pb2.ExplainResponse(
            header=self.ctx.header(serializable=request.serializable), explanation=explanation
        )


def pause_wait_ms(until_ms: int, for_ms: int, now_ms: int) -> int:
    """The pause's wait on the leader's monotonic clock (0: until resumed), from what
    the operator asked: a wall-clock time (converted here, on the proposing leader,
    against its wall clock) or a duration."""
    if until_ms and for_ms:
        raise errors.InvalidArgument("coord: give a pause either an end time or a duration")
    if for_ms < 0:
        raise errors.InvalidArgument(f"coord: a pause of {for_ms} ms: give a positive duration")
    if until_ms and until_ms <= now_ms:
        raise errors.InvalidArgument(
            f"coord: pause until {until_ms} ms since the epoch is in the past (the leader's "
            f"clock reads {now_ms}): give a later time, or a duration (--for)"
        )
    return until_ms - now_ms if until_ms else for_ms


def _health_rows(s: StateMachine, group: str) -> list[tuple[str, str, int, bool]]:
    if group and group not in s.groups.groups:
        raise errors.NotFound(f"group {group!r} does not exist")
    return [
        (g.name, m.id, m.registered_revision, m.healthy)
        for g in s.groups.groups.values()
        if not group or g.name == group
        for m in g.members.values()
    ]
