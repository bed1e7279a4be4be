"""coordctl commands for sessions, groups, members, campaigns and events."""

from __future__ import annotations

import json
import math
import re
import signal
import threading
import time
from typing import Any

import click

from coord import errors
from coord.cli import ctl_group_admin
from coord.cli.ctl import Ctx, handles_errors, main, pass_ctx
from coord.cli.output import (
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    CLIError,
    emit,
    proto_dict,
    table,
)
from coord.client import new_request_id
from coord.state import limits
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2

FAILBACK = {"off": groups_pb2.FAILBACK_OFF, "auto": groups_pb2.FAILBACK_AUTO}

# The server's advice for a group that does not exist, apt only when a command would
# create something in it (campaign); elsewhere the CLI drops it.
_CREATE_ADVICE = re.compile(r": create it first( \(coordctl group create\))?")
_GROUP_LS_HINT = " (`coordctl group ls` lists the groups)"


def _dict(msg: Any) -> dict[str, Any]:
    return proto_dict(msg)


def _call_groups(ctx: Ctx, method: str, request: Any) -> Any:
    """A Groups call (none of them creates a group: a missing group's error loses the
    server's "create it first")."""
    if "request_id" in request.DESCRIPTOR.fields_by_name and not request.request_id:
        request.request_id = new_request_id()  # a write: one id, reused by every retry
    try:
        return ctx.client.call(
            lambda ch, t: getattr(election_pb2_grpc.GroupsStub(ch), method)(request, timeout=t)
        )
    except errors.NotFound as e:
        if _CREATE_ADVICE.search(e.message):
            raise errors.NotFound(_CREATE_ADVICE.sub("", e.message) + _GROUP_LS_HINT) from None
        raise


def _seconds(ms: int) -> str:
    return f"{ms / 1000:g}s"


def _state(g: groups_pb2.Group) -> str:
    if g.deleting:
        return "deleting"
    if g.HasField("pause"):
        return "breaker open" if g.pause.breaker else "paused"
    return "active"


# -- sessions ------------------------------------------------------------------


@main.group()
def session() -> None:
    """Client sessions (TTL leases kept alive by keepalives)."""


@session.command("ls")
@pass_ctx
@handles_errors
def session_ls(ctx: Ctx) -> None:
    """Every live session."""
    resp = ctx.client.call(
        lambda ch, t: election_pb2_grpc.SessionsStub(ch).List(
            election_pb2.ListSessionsRequest(), timeout=t
        )
    )
    emit(
        ctx.output,
        [_dict(s) for s in resp.sessions],
        ["ID", "NAME", "TTL_MS", "CREATED_REVISION"],
        [[s.id, s.name, s.ttl_ms, s.created_revision] for s in resp.sessions],
    )


# -- groups --------------------------------------------------------------------


@main.group()
def group() -> None:
    """Groups: services that need masters."""


@group.command("create")
@click.argument("name")
@click.option(
    "--slots",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="1 = master/standby; N = N masters.",
)
@click.option("--failback", type=click.Choice(["off", "auto"]), default="off", show_default=True)
@click.option("--failback-hold-s", type=click.FloatRange(min=0), default=30.0, show_default=True)
@click.option(
    "--switchover-timeout-s", type=click.FloatRange(min=0.1), default=10.0, show_default=True
)
@click.option(
    "--downtime-budget-s",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Maximum allowed downtime per 30 days (0: none set).",
)
@click.option("--failover-on-unhealthy", is_flag=True)
@click.option(
    "--breaker-failovers",
    type=int,
    default=None,
    callback=lambda _c, _p, v: ctl_group_admin.breaker_failovers(v, "leave it out: no breaker"),
    help="Failover breaker: pause the group after this many automatic failovers (1..100) "
    "within --breaker-window-s (default: no breaker).",
)
@click.option("--breaker-window-s", type=click.FloatRange(min=0.001), default=None)
@click.option(
    "--max-lag-on-failover",
    type=int,
    default=0,
    help="Freshness: a member further than this behind the best reported position (or "
    "with none) is never granted a slot (default 0: off).",
)
@click.option(
    "--prefer-most-advanced",
    is_flag=True,
    help="Among the eligible, the most advanced reported position wins before priority.",
)
@click.option(
    "--synchronous",
    default=None,
    metavar="IDS",
    help="Comma-separated member ids: only they may be granted a slot (members that "
    "register later may be named).",
)
@click.option(
    "--spread-tag",
    default="",
    metavar="TAG",
    help="Spread the masters over the values of this member tag (zone, host): at most "
    "--spread-max per value (default: no spread rule).",
)
@click.option("--spread-max", type=int, default=0, metavar="K", help="At most K (>= 1).")
@click.option(
    "--spread-family",
    default="",
    metavar="NAME",
    help="Groups with the same family count their masters together (one group per shard).",
)
@pass_ctx
@handles_errors
def group_create(
    ctx: Ctx,
    name: str,
    slots: int,
    failback: str,
    failback_hold_s: float,
    switchover_timeout_s: float,
    downtime_budget_s: float,
    failover_on_unhealthy: bool,
    breaker_failovers: int | None,
    breaker_window_s: float | None,
    max_lag_on_failover: int,
    prefer_most_advanced: bool,
    synchronous: str | None,
    spread_tag: str,
    spread_max: int,
    spread_family: str,
) -> None:
    """Create group NAME."""
    if (breaker_failovers is None) != (breaker_window_s is None):
        raise click.UsageError(
            "the failover breaker needs both --breaker-failovers and --breaker-window-s"
        )
    g = ctx.client.group(name).create(
        slots=slots, failback=FAILBACK[failback],
        failback_hold_ms=int(failback_hold_s * 1000),
        switchover_timeout_ms=int(switchover_timeout_s * 1000),
        downtime_budget_ms=int(downtime_budget_s * 1000),
        failover_on_unhealthy=failover_on_unhealthy,
        breaker_failovers=breaker_failovers or 0,
        breaker_window_ms=round((breaker_window_s or 0) * 1000),
        max_lag_on_failover=max_lag_on_failover, prefer_most_advanced=prefer_most_advanced,
        synchronous=ctl_group_admin.member_ids(synchronous),
        spread_tag=spread_tag, spread_max=spread_max, spread_family=spread_family,
    )  # fmt: skip
    emit(
        ctx.output,
        _dict(g),
        ["GROUP", "SLOTS", "FAILBACK"],
        [[g.name, g.policy.slots, "auto" if g.policy.failback == 2 else "off"]],
    )


def _group_rows(g: groups_pb2.Group) -> list[list[Any]]:
    holders = {h.member_id: h for h in g.holdings}
    rows = []
    for m in g.members:
        h = holders.get(m.id)
        role = ("REVOKED" if h.revoked else "MASTER") if h else "standby"
        rows.append(
            [
                g.name,
                m.id,
                role,
                h.slot if h else "-",
                h.token if h else "-",
                m.priority,
                "yes" if m.healthy else "no",
                m.address or "-",
                m.session_id,
            ]
        )
    return rows


_GROUP_HEADERS = [
    "GROUP",
    "MEMBER",
    "ROLE",
    "SLOT",
    "TOKEN",
    "PRIORITY",
    "HEALTHY",
    "ADDRESS",
    "SESSION",
]


@group.command("ls")
@pass_ctx
@handles_errors
def group_ls(ctx: Ctx) -> None:
    """Every group with its masters and its state (active, or deleting: its masters
    are being waited out before it is deleted)."""
    resp = _call_groups(ctx, "List", election_pb2.ListGroupsRequest())
    rows = [
        [
            g.name,
            g.policy.slots,
            len(g.members),
            ",".join(f"{h.slot}:{h.member_id}" for h in g.holdings) or "-",
            _state(g),
        ]
        for g in resp.groups
    ]
    emit(
        ctx.output,
        [{**_dict(g), "state": _state(g)} for g in resp.groups],
        ["GROUP", "SLOTS", "MEMBERS", "MASTERS", "STATE"],
        rows,
    )


@group.command("get")
@click.argument("name")
@pass_ctx
@handles_errors
def group_get(ctx: Ctx, name: str) -> None:
    """Group NAME: state, policy, slots (master, token), then its members."""
    g = _call_groups(ctx, "Get", election_pb2.GetGroupRequest(name=name)).group
    spread = _spread(ctx, g)
    if ctx.output == "json":
        extra = {"spread": ctl_group_admin.spread_dict(spread)} if spread is not None else {}
        emit(ctx.output, {**_dict(g), "state": _state(g), **extra}, [], [])
        return
    rows = _policy_rows(g)
    if spread is not None:
        at = next(i for i, row in enumerate(rows) if row[0] == "SCHEDULED SWITCHOVERS")
        lines = ctl_group_admin.spread_lines(name, spread)
        rows[at:at] = [["SPREAD", ctl_group_admin.spread_rule(g.policy)],
                       *(["SPREAD STATE" if i == 0 else "", line]
                         for i, line in enumerate(lines))]  # fmt: skip
    click.echo(table(["FIELD", "VALUE"], rows))
    click.echo()
    click.echo(table(["SLOT", "MASTER", "TOKEN", "STATE"], _slot_rows(g)))
    click.echo()
    click.echo(table(_GROUP_HEADERS, _group_rows(g)))


def _spread(ctx: Ctx, g: groups_pb2.Group) -> groups_pb2.SpreadExplanation | None:
    """The group's spread rule now (from explain: the state machine's own count), or
    None without a rule."""
    if not g.policy.spread_tag:
        return None
    x = _call_groups(ctx, "Explain", election_pb2.ExplainRequest(group=g.name)).explanation
    return x.spread if x.HasField("spread") else None


def _policy_rows(g: groups_pb2.Group) -> list[list[Any]]:
    p = g.policy
    state = "deleting (its masters are waited out, then it is deleted)" if g.deleting else "active"
    if g.HasField("pause") and not g.deleting:
        state = ctl_group_admin.pause_text(g.pause)
    failback = "off"
    if p.failback == groups_pb2.FAILBACK_AUTO:
        failback = f"auto (hold {_seconds(p.failback_hold_ms)})"
    return [
        ["GROUP", g.name],
        ["STATE", state],
        ["SLOTS", p.slots],
        ["FAILBACK", failback],
        ["SWITCHOVER TIMEOUT", _seconds(p.switchover_timeout_ms)],
        ["DOWNTIME BUDGET", f"{_seconds(p.downtime_budget_ms)} per 30 days"
         if p.downtime_budget_ms else "-"],
        ["FAILOVER ON UNHEALTHY", "yes" if p.failover_on_unhealthy else "no"],
        ["FAILOVER BREAKER", ctl_group_admin.breaker_text(g)],
        ["MAX LAG ON FAILOVER", p.max_lag_on_failover or "off"],
        ["PREFER MOST ADVANCED", "yes" if p.prefer_most_advanced else "no"],
        ["SYNCHRONOUS", ",".join(p.synchronous) or "- (any member)"],
        ["SCHEDULED SWITCHOVERS", "; ".join(
            f"{s.id}: to {s.to_member or '(best)'} at {ctl_group_admin.at_text(s.at_ms)}"
            for s in g.scheduled) or "-"],
        ["MEMBERS", len(g.members)],
        ["CREATED REVISION", g.created_revision],
    ]  # fmt: skip


def _slot_rows(g: groups_pb2.Group) -> list[list[Any]]:
    holdings = {h.slot: h for h in g.holdings}
    handovers = {h.slot: h for h in g.handovers}
    rows: list[list[Any]] = []
    for slot in range(max([g.policy.slots - 1, *holdings]) + 1):
        h = holdings.get(slot)
        if h is None:
            cause = g.vacated_cause.get(slot, "")
            state = f"vacant ({cause})" if cause else "vacant"
            if g.HasField("pause") and slot < g.policy.slots:
                state += ": stays empty while paused"
            rows.append([slot, "-", "-", state])
            continue
        state = "revoked (waited out before it moves)" if h.revoked else "held"
        ho = handovers.get(slot)
        if ho is not None and not h.revoked:
            state = f"stepping down ({ho.cause}" + (
                f", to {ho.to_member})" if ho.to_member else ")"
            )
        rows.append([slot, h.member_id, h.token, state])
    return rows


@group.command("rm")
@click.argument("name")
@click.option(
    "--force",
    is_flag=True,
    help="Delete at once, without waiting out its masters: an old master may still act "
    "while the name is created and granted again.",
)
@pass_ctx
@handles_errors
def group_rm(ctx: Ctx, name: str, force: bool) -> None:
    """Delete group NAME. Its masters are revoked first and the group is deleted once
    each has been waited out (its session TTL): until then it shows as deleting and
    nothing is granted in it."""
    try:
        _call_groups(ctx, "Delete", election_pb2.DeleteGroupRequest(name=name, force=force))
    except errors.NotFound:
        raise CLIError(
            f"coord: group {name!r} does not exist: nothing to delete{_GROUP_LS_HINT}",
            EXIT_NOT_FOUND,
        ) from None
    if _deleting(ctx, name):
        emit(ctx.output, {"deleting": name}, ["DELETING"], [[name]])
        click.echo(
            f"{name}: its masters are revoked; the group is deleted once each has been "
            "waited out (its session TTL). Until then `coordctl group get` shows it as "
            "deleting (--force deletes at once).",
            err=True,
        )
        return
    emit(ctx.output, {"deleted": name}, ["DELETED"], [[name]])


def _deleting(ctx: Ctx, name: str) -> bool:
    """Is the group still there, being deleted (after a delete that waits out masters)?"""
    try:
        g = _call_groups(ctx, "Get", election_pb2.GetGroupRequest(name=name)).group
    except errors.NotFound:
        return False
    return bool(g.deleting)


@main.group()
def member() -> None:
    """Members of groups."""


@member.command("ls")
@click.argument("group_name", metavar="GROUP", required=False)
@pass_ctx
@handles_errors
def member_ls(ctx: Ctx, group_name: str | None) -> None:
    """Members of GROUP (or of every group), with their roles."""
    resp = _call_groups(ctx, "List", election_pb2.ListGroupsRequest())
    groups = [g for g in resp.groups if group_name in (None, g.name)]
    if group_name and not groups:
        raise errors.NotFound(f"group {group_name!r} does not exist{_GROUP_LS_HINT}")
    live = _health_status(ctx, group_name or "")
    rows, data = [], []
    for g in groups:
        reported = [m.position for m in g.members if m.HasField("position")]
        best = max(reported) if reported else None
        for m, row in zip(g.members, _group_rows(g), strict=True):
            h = live.get((g.name, m.id))
            kind = m.check.WhichOneof("kind") if m.HasField("check") else None
            last = "-"
            if h is not None and h.checked:
                last = f"{'ok' if h.last_ok else 'FAIL'} {h.last_detail} x{h.streak}"
            latency = f"{h.last_latency_ms:.1f}ms" if h is not None and h.checked else "-"
            lag = best - m.position if best is not None and m.HasField("position") else None
            position = m.position if m.HasField("position") else "-"
            rows.append([*row, kind or "-", last, latency, position, "-" if lag is None else lag])
            record = _dict(m)
            if lag is not None:
                record["lag"] = lag  # behind the group's best reported position
            if h is not None:
                record["last_check"] = _dict(h)
            data.append(record)
    emit(ctx.output, data,
         [*_GROUP_HEADERS, "CHECK", "LAST-CHECK", "LATENCY", "POSITION", "LAG"], rows)  # fmt: skip


def _health_status(ctx: Ctx, group: str) -> dict[tuple[str, str], election_pb2.MemberHealth]:
    """The leader's live check results (empty if it cannot be asked now)."""
    try:
        resp = _call_groups(ctx, "HealthStatus", election_pb2.HealthStatusRequest(group=group))
    except errors.CoordError:
        return {}
    return {(h.group, h.member_id): h for h in resp.members}


@main.command()
@click.argument("group_name", metavar="GROUP")
@click.argument("member_id", metavar="MEMBER")
@pass_ctx
@handles_errors
def check(ctx: Ctx, group_name: str, member_id: str) -> None:
    """Run MEMBER's health check once, now, and print the result (for debugging).

    Exits 1 if the check fails.
    """
    resp = _call_groups(
        ctx, "RunCheck", election_pb2.RunCheckRequest(group=group_name, member_id=member_id)
    )
    emit(
        ctx.output,
        {"ok": resp.ok, "detail": resp.detail, "latency_ms": round(resp.latency_ms, 3),
         "node": resp.header.node_id},
        ["OK", "DETAIL", "LATENCY", "NODE"],
        [["ok" if resp.ok else "FAIL", resp.detail, f"{resp.latency_ms:.1f}ms",
          resp.header.node_id]],
    )  # fmt: skip
    if not resp.ok:
        raise CLIError(f"check of {group_name}/{member_id} failed: {resp.detail}", EXIT_ERROR)


@member.command("rm")
@click.argument("group_name", metavar="GROUP")
@click.argument("member_id", metavar="MEMBER")
@pass_ctx
@handles_errors
def member_rm(ctx: Ctx, group_name: str, member_id: str) -> None:
    """Unregister MEMBER from GROUP.

    A standby leaves at once. A master is first asked to step down, like `resign`,
    and leaves once its slot has moved on.
    """
    _call_groups(
        ctx, "Unregister", election_pb2.UnregisterRequest(group=group_name, member_id=member_id)
    )
    emit(ctx.output, {"unregistered": member_id}, ["UNREGISTERED"], [[member_id]])


@main.command()
@click.argument("group_name", metavar="GROUP")
@click.argument("member_id", metavar="MEMBER")
@click.option(
    "--ttl-s",
    type=click.FloatRange(limits.MIN_SESSION_TTL_MS / 1000, limits.MAX_SESSION_TTL_MS / 1000),
    default=5.0,
    show_default=True,
    callback=lambda _c, _p, v: _finite(v, "--ttl-s"),
    help="The session's TTL, in seconds.",
)
@click.option("--priority", type=int, default=0, show_default=True)
@click.option("--address", default="", help="Where clients reach this member.")
@click.option(
    "--hold/--no-hold",
    default=True,
    show_default=True,
    help="Keep mastership until Ctrl-C (else resign and exit once elected).",
)
@pass_ctx
@handles_errors
def campaign(
    ctx: Ctx, group_name: str, member_id: str, ttl_s: float, priority: int, address: str, hold: bool
) -> None:
    """Open a session, register MEMBER in GROUP and wait until it is elected."""
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    session = ctx.client.session(ttl_s=ttl_s, name=f"coordctl campaign {member_id}")
    try:
        session.start()
    except errors.InvalidArgument as e:
        raise _ttl_in_seconds(e, ttl_s) from None
    with session as s:
        group = ctx.client.group(group_name)
        m = group.member(member_id, s, address=address, priority=priority).start()
        click.echo(f"campaigning for {group_name} as {member_id} (session {s.id})", err=True)
        lead = m.campaign()
        emit(
            ctx.output,
            {"group": group_name, "member": member_id, "slot": lead.slot, "token": lead.token},
            ["GROUP", "MEMBER", "SLOT", "TOKEN"],
            [[group_name, member_id, lead.slot, lead.token]],
        )
        try:
            while hold and lead.is_master() and not done.wait(0.1):
                pass
        except KeyboardInterrupt:
            pass
        if hold and not lead.is_master():
            click.echo("no longer master (session lost or resigned)", err=True)
        lead.resign()


def _finite(value: float, flag: str) -> float:
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds", param_hint=flag)
    return value


_TTL_MS = re.compile(r"session TTL \d+ ms .*is out of bounds: use (\d+)\.\.(\d+) ms")


def _ttl_in_seconds(e: errors.InvalidArgument, ttl_s: float) -> Exception:
    """The server's TTL bounds error (coord/state/groups.py, in ms) in the unit of
    --ttl-s: seconds. Other errors pass unchanged."""
    m = _TTL_MS.search(e.message)
    if m is None:
        return e
    low, high = (int(x) / 1000 for x in m.groups())
    return CLIError(
        f"coord: --ttl-s {ttl_s:g} is out of bounds: use {low:g}..{high:g} s",
        EXIT_CONFIG,
        e.reason,
    )


@main.command()
@click.argument("group_name", metavar="GROUP")
@click.argument("member_id", metavar="MEMBER")
@pass_ctx
@handles_errors
def resign(ctx: Ctx, group_name: str, member_id: str) -> None:
    """Ask MEMBER, a master of GROUP, to step down.

    The slot moves when the member resigns (its library does so at once), or after
    the group's switchover timeout plus the member's session TTL if it does not
    answer: it may still believe it is master until then.
    """
    _call_groups(ctx, "Resign", election_pb2.ResignRequest(group=group_name, member_id=member_id))
    emit(ctx.output, {"resigned": member_id}, ["RESIGNED"], [[member_id]])


@main.command()
@click.argument("group_name", metavar="GROUP")
@click.option("--to", "to_member", default="", help="The member to hand over to (default: best).")
@click.option(
    "--at",
    default=None,
    help="Schedule it for then (ISO 8601, e.g. 2026-12-24T03:00Z; local time without a "
    "zone; or epoch seconds).",
)
@pass_ctx
@handles_errors
def switchover(ctx: Ctx, group_name: str, to_member: str, at: str | None) -> None:
    """Ask GROUP's master to step down in favour of --to (or the best candidate).

    With --at, schedule it: the cluster keeps it (across leader changes and restarts)
    and its leader starts it when its wall clock reaches that time, or records why it
    cannot then (a scheduled_switchover_refused event: the target is not eligible, ...).
    `coordctl schedule ls` lists them, `coordctl schedule cancel GROUP ID` cancels one."""
    at_s = ctl_group_admin.future_s(at, "--at", "no --at to switch over now") if at else None
    req = election_pb2.SwitchoverRequest(
        group=group_name, to_member=to_member, at_ms=round(at_s * 1000) if at_s else 0
    )
    resp = _call_groups(ctx, "Switchover", req)
    if at_s is not None:
        s = resp.scheduled
        emit(ctx.output, _dict(s), ctl_group_admin.SCHEDULE_HEADERS,
             ctl_group_admin.schedule_rows([s]))  # fmt: skip
        return
    emit(
        ctx.output,
        {"switchover": group_name, "to": to_member},
        ["GROUP", "TO"],
        [[group_name, to_member or "(best)"]],
    )


@main.command("watch")
@click.option(
    "--from-revision",
    type=click.IntRange(min=0),
    default=0,
    help="Replay from this revision first (0: only new events).",
)
@click.option("--group", "groups", multiple=True, help="Only these groups (they must exist).")
@click.option("--type", "types", multiple=True, help="Only these event types.")
@click.option("--count", type=click.IntRange(min=0), default=0, help="Stop after N events.")
@click.option(
    "--allow-missing",
    is_flag=True,
    help="Watch --group names that do not exist (yet, or any more) instead of failing.",
)
@pass_ctx
@handles_errors
def watch_cmd(
    ctx: Ctx,
    from_revision: int,
    groups: tuple[str, ...],
    types: tuple[str, ...],
    count: int,
    allow_missing: bool,
) -> None:
    """Stream events (resumes after node failures); Ctrl-C to stop.

    A --group that does not exist is an error (exit 5), unless --allow-missing asks
    to wait for its events."""
    if groups:
        known = {g.name for g in _call_groups(ctx, "List", election_pb2.ListGroupsRequest()).groups}
        missing = ", ".join(repr(g) for g in groups if g not in known)
        if missing and not allow_missing:
            raise CLIError(
                f"coord: no group {missing}: nothing to watch{_GROUP_LS_HINT}; --allow-missing "
                "watches for its events anyway",
                EXIT_NOT_FOUND,
            )
        if missing:
            # Pinned before saying so: every event after the note is watched.
            from_revision = from_revision or ctx.client.status().revision + 1
            click.echo(f"no group {missing} (yet): watching for its events", err=True)
    seen = 0
    try:
        for ev in ctx.client.watch(from_revision, groups, types):
            if ctx.output == "json":
                click.echo(json.dumps(_dict(ev), sort_keys=True))
            else:
                stamp = time.strftime("%H:%M:%S", time.localtime(ev.time_ms / 1000))
                click.echo(
                    f"{ev.revision:>8} {stamp} {ev.type:<18} {ev.group or '-':<12} "
                    f"{ev.member or '-':<12} slot={ev.slot} token={ev.token or '-'} "
                    f"cause={ev.cause or '-'}"
                )
            seen += 1
            if count and seen >= count:
                return
    except KeyboardInterrupt:
        pass


for _command in (
    ctl_group_admin.group_pause,
    ctl_group_admin.group_resume,
    ctl_group_admin.group_edit,
    ctl_group_admin.group_explain,
):
    group.add_command(_command)
member.add_command(ctl_group_admin.member_edit)
main.add_command(ctl_group_admin.schedule)
