"""The group and session commands of the log, each mapped to the Groups method that
applies it and the result it returns (StateMachine._dispatch looks them up by op)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from coord.state import waits
from coord.state.groups import Groups
from coord.v1 import raft_pb2


def _open_session(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    return raft_pb2.CommandResult(session=g.open_session(req, now))


def _close_session(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.close_session(req.session_id, "session_closed", now, wait_out=req.wait_out)
    return raft_pb2.CommandResult()


def _expire_session(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.expire_session(req, now)
    return raft_pb2.CommandResult()


def _create_group(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    return raft_pb2.CommandResult(group=g.create_group(req, now).to_proto())


def _delete_group(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.delete_group(req.name, now, wait_out=req.wait_out)
    return raft_pb2.CommandResult()


def _register(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    return raft_pb2.CommandResult(member=g.register(req.member, now))


def _unregister(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.unregister(req.group, req.member_id, req.session_id, now)
    return raft_pb2.CommandResult()


def _campaign(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    return raft_pb2.CommandResult(member=g.campaign(req.group, req.member_id, now))


def _resign(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.resign(req.group, req.member_id, req.session_id, now, token=req.token)
    return raft_pb2.CommandResult()


def _switchover(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.switchover(req, now)
    return raft_pb2.CommandResult()


def _revoke(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.revoke(req.group, req.slot, "admin_revoke", now)
    return raft_pb2.CommandResult()


def _advance(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.end_waits([waits.from_proto(k) for k in req.over], now)
    return raft_pb2.CommandResult()


def _update_member(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    return raft_pb2.CommandResult(member=g.update_member(req, now))


def _set_health(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.set_health(req, now)
    return raft_pb2.CommandResult()


def _pause(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    return raft_pb2.CommandResult(group_names=raft_pb2.GroupNames(names=g.pause(req, now)))


def _resume(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    return raft_pb2.CommandResult(group_names=raft_pb2.GroupNames(names=g.resume(req, now)))


def _edit_group(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    return raft_pb2.CommandResult(group=g.edit_group(req, now).to_proto())


def _schedule_switchover(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    return raft_pb2.CommandResult(scheduled=g.schedule_switchover(req, now))


def _cancel_switchover(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    return raft_pb2.CommandResult(scheduled=g.cancel_switchover(req, now))


def _fire_switchover(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.fire_switchover(req, now)
    return raft_pb2.CommandResult()


def _set_loads(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.set_loads(req, now)
    return raft_pb2.CommandResult()


# Group and session commands: op name -> handler(groups, request, now).
GROUP_COMMANDS: dict[str, Callable[[Groups, Any, int], raft_pb2.CommandResult]] = {
    "open_session": _open_session,
    "close_session": _close_session,
    "expire_session": _expire_session,
    "create_group": _create_group,
    "delete_group": _delete_group,
    "register": _register,
    "unregister": _unregister,
    "campaign": _campaign,
    "resign": _resign,
    "switchover": _switchover,
    "revoke_holding": _revoke,
    "advance": _advance,
    "update_member": _update_member,
    "set_health": _set_health,
    "set_loads": _set_loads,
    "pause_groups": _pause,
    "resume_groups": _resume,
    "edit_group": _edit_group,
    "schedule_switchover": _schedule_switchover,
    "cancel_switchover": _cancel_switchover,
    "fire_switchover": _fire_switchover,
}
