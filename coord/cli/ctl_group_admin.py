"""coordctl commands that change how a group is run: pause/resume (maintenance mode),
live policy edits, member edits, and explain. Registered under ``group`` and
``member`` by coord.cli.ctl_groups."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import click

from coord.cli.ctl import CtlCommand, CtlGroup, Ctx, handles_errors, pass_ctx
from coord.cli.output import EXIT_USAGE, CLIError, emit, proto_dict, table
from coord.cli.restore import Duration
from coord.client import pause_all, resume_all, scheduled_switchovers
from coord.v1 import groups_pb2

FAILBACK = {"off": groups_pb2.FAILBACK_OFF, "auto": groups_pb2.FAILBACK_AUTO}
DURATION = Duration()


def future_s(value: str, hint: str = "--until", otherwise: str = "a duration with --for") -> float:
    """--until (or ``hint``): an ISO 8601 time (local time unless it names a zone, as
    in 2026-12-24T03:00Z), or seconds since the epoch. Refused if it is not in the
    future (``otherwise`` says what to give instead)."""
    try:
        t = float(value)
    except ValueError:
        try:
            t = datetime.fromisoformat(value).timestamp()
        except ValueError:
            raise click.BadParameter(
                f"{value!r} is not a time: use ISO 8601 (2030-01-01T12:00, 12:00 is not enough: "
                f"give the date) or seconds since the epoch; or give {otherwise}",
                param_hint=hint,
            ) from None
    if t <= time.time():
        raise click.BadParameter(
            f"{value} is in the past: give a later time, or {otherwise}", param_hint=hint
        )
    return t


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _stamp(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def pause_text(p: groups_pb2.GroupPause) -> str:
    """How `group get` and `group ls` show a pause."""
    text = f"paused since {_stamp(p.paused_time_ms)}"
    if p.breaker:
        text = f"breaker open since {_stamp(p.paused_time_ms)} ({p.breaker}): paused"
    if p.wait_ms:
        text += f", until about {_stamp(p.until_estimate_ms)} (an estimate: the leader times it)"
    else:
        text += ", until resumed"
    return text + (f" — {p.reason}" if p.reason else "")


def breaker_text(g: groups_pb2.Group) -> str:
    """The failover breaker as `group get` shows it."""
    p = g.policy
    if not p.breaker_failovers:
        return "off"
    rule = f"pause after {p.breaker_failovers} automatic failovers within "
    rule += f"{p.breaker_window_ms / 1000:g}s"
    if g.HasField("pause") and g.pause.breaker:
        return f"{rule}: OPEN (resume the group to close it)"
    n = len(g.breaker_failover_ms)
    return f"{rule}: closed ({n} counted)" if n else f"{rule}: closed"


def breaker_failovers(value: int | None, off: str) -> int | None:
    """--breaker-failovers: 1..100 (0 is refused: ``off`` says how to have no breaker)."""
    if value is not None and not 1 <= value <= 100:
        raise click.BadParameter(
            f"{value} is not 1..100: give how many automatic failovers open the breaker ({off})",
            param_hint="--breaker-failovers",
        )
    return value


def _names(names: tuple[str, ...], all_groups: bool, verb: str) -> None:
    if all_groups == bool(names):
        raise CLIError(
            f"coord: {verb} names groups, or takes --all (not both, not neither)", EXIT_USAGE
        )


@click.command("pause", cls=CtlCommand)
@click.argument("names", metavar="[GROUP]...", nargs=-1)
@click.option("--all", "all_groups", is_flag=True, help="Every group of the cluster.")
@click.option("--until", "until", default=None, help="Resume then (ISO 8601, or epoch seconds).")
@click.option("--for", "for_s", type=DURATION, default=None, help="Resume after this long.")
@click.option("--reason", default="", help="A note shown with the pause.")
@pass_ctx
@handles_errors
def group_pause(
    ctx: Ctx,
    names: tuple[str, ...],
    all_groups: bool,
    until: str | None,
    for_s: float | None,
    reason: str,
) -> None:
    """Pause GROUPs (maintenance mode): nothing is failed over, failed back or revoked
    automatically until resumed. Sessions still expire; a lost master's slot stays
    empty (a failover_paused event says so). A switchover by hand still completes.

    --until/--for resume by themselves: the leader times the wait on its own clock
    (the time shown is an estimate)."""
    _names(names, all_groups, "pause")
    if until is not None and for_s is not None:
        raise CLIError("coord: give --until or --for, not both", EXIT_USAGE)
    if for_s is not None and for_s <= 0:
        raise click.BadParameter("give a positive duration", param_hint="--for")
    until_s = future_s(until) if until is not None else None
    if all_groups:
        groups = pause_all(ctx.client, until_s=until_s, for_s=for_s, reason=reason)
    else:
        groups = [
            ctx.client.group(n).pause(until_s=until_s, for_s=for_s, reason=reason) for n in names
        ]
    emit(
        ctx.output,
        [{"group": g.name, "pause": proto_dict(g.pause)} for g in groups],
        ["GROUP", "PAUSED"],
        [[g.name, pause_text(g.pause)] for g in groups],
    )


@click.command("resume", cls=CtlCommand)
@click.argument("names", metavar="[GROUP]...", nargs=-1)
@click.option("--all", "all_groups", is_flag=True, help="Every paused group.")
@pass_ctx
@handles_errors
def group_resume(ctx: Ctx, names: tuple[str, ...], all_groups: bool) -> None:
    """Resume paused GROUPs: empty slots are filled at once; a failback hold counts
    from now. A group that is not paused is left as it is."""
    _names(names, all_groups, "resume")
    if all_groups:
        resumed = resume_all(ctx.client)
    else:
        for n in names:
            ctx.client.group(n).resume()
        resumed = list(names)
    emit(ctx.output, [{"resumed": n} for n in resumed], ["RESUMED"], [[n] for n in resumed])


@click.command("edit", cls=CtlCommand)
@click.argument("name")
@click.option("--slots", type=click.IntRange(1, 64), default=None, help="1..64.")
@click.option("--failback", type=click.Choice(["off", "auto"]), default=None)
@click.option("--failback-hold", type=DURATION, default=None, help="e.g. 30s.")
@click.option("--switchover-timeout", type=DURATION, default=None, help="e.g. 10s (>= 100ms).")
@click.option("--downtime-budget", type=DURATION, default=None, help="Per 30 days; 0: none.")
@click.option("--failover-on-unhealthy/--no-failover-on-unhealthy", default=None)
@click.option(
    "--breaker-failovers",
    type=int,
    default=None,
    callback=lambda _c, _p, v: breaker_failovers(v, "--no-breaker turns the breaker off"),
    help="Failover breaker: pause after this many automatic failovers (1..100) within "
    "--breaker-window (--no-breaker turns it off).",
)
@click.option("--breaker-window", type=DURATION, default=None, help="e.g. 10m.")
@click.option("--no-breaker", is_flag=True, help="Turn the failover breaker off.")
@click.option(
    "--max-lag-on-failover",
    type=int,
    default=None,
    help="A member further than this behind the best reported position (or with none) is "
    "never granted a slot; 0 turns it off.",
)
@click.option("--prefer-most-advanced/--no-prefer-most-advanced", default=None)
@click.option(
    "--synchronous",
    default=None,
    metavar="IDS",
    help="Comma-separated member ids: only they may be granted a slot (--no-synchronous: "
    "any member).",
)
@click.option("--no-synchronous", is_flag=True, help="Let any member be granted a slot.")
@click.option(
    "--spread-tag",
    default=None,
    metavar="TAG",
    help="Spread the masters over the values of this member tag (zone, host): at most "
    "--spread-max per value (--no-spread turns the rule off).",
)
@click.option("--spread-max", type=int, default=None, metavar="K", help="At most K (>= 1).")
@click.option(
    "--spread-family",
    default=None,
    metavar="NAME",
    help="Groups with the same family count their masters together (one group per "
    "shard); --no-spread-family: this group alone.",
)
@click.option("--no-spread-family", is_flag=True, help="Count this group's masters alone.")
@click.option("--no-spread", is_flag=True, help="Turn the spread rule off.")
@pass_ctx
@handles_errors
def group_edit(
    ctx: Ctx,
    name: str,
    slots: int | None,
    failback: str | None,
    failback_hold: float | None,
    switchover_timeout: float | None,
    downtime_budget: float | None,
    failover_on_unhealthy: bool | None,
    breaker_failovers: int | None,
    breaker_window: float | None,
    no_breaker: bool,
    max_lag_on_failover: int | None,
    prefer_most_advanced: bool | None,
    synchronous: str | None,
    no_synchronous: bool,
    spread_tag: str | None,
    spread_max: int | None,
    spread_family: str | None,
    no_spread_family: bool,
    no_spread: bool,
) -> None:
    """Change NAME's policy now (the options given; the rest stays). Fewer slots ask
    the masters of the highest slots to step down (the normal handover: switchover
    timeout, then revoke and TTL wait-out); more slots are filled at once.

    The failover breaker pauses the group after --breaker-failovers automatic
    failovers (a master's session expired or its health check failed) within
    --breaker-window; `group resume` closes it.

    The spread rule (--spread-tag, --spread-max, --spread-family) applies to the next
    grants; no master moves by itself: `coordctl rebalance NAME` restores the spread."""
    if switchover_timeout is not None and switchover_timeout < 0.1:
        raise click.BadParameter("use at least 100ms", param_hint="--switchover-timeout")
    if no_breaker and (breaker_failovers is not None or breaker_window is not None):
        raise CLIError("coord: --no-breaker turns the breaker off: give no other --breaker-*",
                       EXIT_USAGE)  # fmt: skip
    if no_synchronous and synchronous is not None:
        raise CLIError("coord: give --synchronous or --no-synchronous, not both", EXIT_USAGE)
    spread = spread_edit(spread_tag, spread_max, spread_family, no_spread_family, no_spread)
    if breaker_window is not None and breaker_window <= 0:
        raise click.BadParameter(
            "give a positive window (--no-breaker turns the breaker off)",
            param_hint="--breaker-window",
        )
    policy: dict[str, Any] = {
        "slots": slots,
        "failback": FAILBACK[failback] if failback else None,
        "failback_hold_ms": _ms(failback_hold) if failback_hold is not None else None,
        "switchover_timeout_ms": _ms(switchover_timeout) if switchover_timeout else None,
        "downtime_budget_ms": _ms(downtime_budget) if downtime_budget is not None else None,
        "failover_on_unhealthy": failover_on_unhealthy,
        "breaker_failovers": breaker_failovers,
        "breaker_window_ms": _ms(breaker_window) if breaker_window is not None else None,
        "max_lag_on_failover": max_lag_on_failover,
        "prefer_most_advanced": prefer_most_advanced,
        "synchronous": [] if no_synchronous else member_ids(synchronous) or None,
        **spread,
    }
    if no_breaker:
        policy["breaker_failovers"] = policy["breaker_window_ms"] = 0
    policy = {k: v for k, v in policy.items() if v is not None}
    if not policy:
        raise CLIError("coord: nothing to change: give at least one option (--help)", EXIT_USAGE)
    g = ctx.client.group(name).edit(**policy)
    p = g.policy
    emit(
        ctx.output,
        proto_dict(g),
        ["GROUP", "SLOTS", "FAILBACK", "HOLD", "SWITCHOVER TIMEOUT", "FAILOVER ON UNHEALTHY",
         "BREAKER", "MAX LAG", "SYNCHRONOUS", "SPREAD"],
        [[g.name, p.slots, "auto" if p.failback == groups_pb2.FAILBACK_AUTO else "off",
          f"{p.failback_hold_ms / 1000:g}s", f"{p.switchover_timeout_ms / 1000:g}s",
          "yes" if p.failover_on_unhealthy else "no",
          f"{p.breaker_failovers}/{p.breaker_window_ms / 1000:g}s"
          if p.breaker_failovers else "off",
          p.max_lag_on_failover or "off", ",".join(p.synchronous) or "-", spread_rule(p)]],
    )  # fmt: skip


def spread_edit(
    tag: str | None, limit: int | None, family: str | None, no_family: bool, off: bool
) -> dict[str, Any]:
    """The policy fields `group edit`'s spread options change (the cluster checks them)."""
    if off and (tag is not None or limit is not None or family is not None or no_family):
        raise CLIError("coord: --no-spread turns the rule off: give no other --spread-*",
                       EXIT_USAGE)  # fmt: skip
    if no_family and family is not None:
        raise CLIError("coord: give --spread-family or --no-spread-family, not both", EXIT_USAGE)
    if off:
        return {"spread_tag": "", "spread_max": 0, "spread_family": ""}
    out: dict[str, Any] = {"spread_tag": tag, "spread_max": limit, "spread_family": family}
    if no_family:
        out["spread_family"] = ""
    return out


def spread_rule(p: groups_pb2.GroupPolicy) -> str:
    """A policy's spread rule as coordctl shows it: `at most 1 per zone (family f)`."""
    if not p.spread_tag:
        return "off"
    rule = f"at most {p.spread_max} per {p.spread_tag}"
    return rule + (f" (family {p.spread_family})" if p.spread_family else "")


def spread_value(tag: str, value: str) -> str:
    return f"{tag}={value}" if value else f"(no {tag})"


def spread_lines(name: str, rule: groups_pb2.SpreadExplanation) -> list[str]:
    """The spread rule's state as `group get` and `group explain` print it."""
    per = ", ".join(f"{spread_value(rule.tag, v.value)}: {v.masters} ({', '.join(v.holders)})"
                    for v in rule.values) or "no masters"  # fmt: skip
    state = f"VIOLATED ({rule.excess} beyond the limit)" if rule.violated else "holds"
    lines = [f"{state}; {per}"]
    if rule.plan:
        lines.append(f"`coordctl rebalance {name}` would run {len(rule.plan)} switchover(s)")
    lines.extend(rule.stuck)
    return lines


def member_ids(text: str | None) -> list[str]:
    """--synchronous's comma-separated member ids (an empty item is kept: the server
    refuses it with what to do)."""
    if text is None:
        return []
    return [part.strip() for part in text.split(",")]


@click.command("explain", cls=CtlCommand)
@click.argument("name")
@pass_ctx
@handles_errors
def group_explain(ctx: Ctx, name: str) -> None:
    """For every slot of NAME, who would be chosen now and why; for every member, why
    it is or is not eligible. The state machine's own rule, read now."""
    x = ctx.client.group(name).explain()
    if ctx.output == "json":
        emit(ctx.output, proto_dict(x), [], [])
        return
    click.echo(table(["SLOT", "HOLDER", "STATE", "NEXT", "WHY"], [
        [s.slot, s.holder or "-", s.state, s.next or "-", s.why] for s in x.slots
    ]))  # fmt: skip
    click.echo()
    spread = x.HasField("spread")
    click.echo(table(["MEMBER", "PRIORITY", "POSITION", "ELIGIBLE", "RANK",
                      *([x.spread.tag.upper()] if spread else []), "WHY"], [
        [m.member_id, m.priority, m.position if m.HasField("position") else "-",
         "yes" if m.eligible else "no", m.rank or "-",
         *([m.spread_value or "-"] if spread else []), m.detail]
        for m in x.members
    ]))  # fmt: skip
    if spread and x.spread.plan:
        click.echo()
        click.echo(rebalance_table(list(x.spread.plan), x.spread.tag, "planned"))
    for note in x.notes:
        click.echo(f"\n{note}", nl=False)
    if x.notes:
        click.echo()


@click.command("edit", cls=CtlCommand)
@click.argument("group_name", metavar="GROUP")
@click.argument("member_id", metavar="MEMBER")
@click.option("--priority", type=int, default=None, help="Higher is preferred for mastership.")
@click.option(
    "--nofailover/--failover",
    default=None,
    help="Never make it master (it keeps a slot it holds) / make it eligible again.",
)
@pass_ctx
@handles_errors
def member_edit(
    ctx: Ctx, group_name: str, member_id: str, priority: int | None, nofailover: bool | None
) -> None:
    """Change MEMBER's priority or nofailover now: placement uses them at once (a
    failback, if the group has it, follows after its hold)."""
    if priority is None and nofailover is None:
        raise CLIError("coord: nothing to change: give --priority or --nofailover/--failover",
                       EXIT_USAGE)  # fmt: skip
    m = ctx.client.group(group_name).edit_member(member_id, priority, nofailover)
    emit(
        ctx.output,
        proto_dict(m),
        ["GROUP", "MEMBER", "PRIORITY", "NOFAILOVER"],
        [[group_name, m.id, m.priority, "yes" if m.nofailover else "no"]],
    )


# -- scheduled switchovers -----------------------------------------------------------------


def at_text(ms: int) -> str:
    """A scheduled time as coordctl shows it: UTC, ISO 8601 (what --at takes)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def schedule_rows(entries: list[groups_pb2.ScheduledSwitchover]) -> list[list[Any]]:
    return [[s.id, s.group, s.to_member or "(best)", at_text(s.at_ms)] for s in entries]


SCHEDULE_HEADERS = ["ID", "GROUP", "TO", "AT (UTC)"]


@click.group("schedule", cls=CtlGroup)
def schedule() -> None:
    """Scheduled switchovers (`coordctl switchover GROUP --to M --at TIME` makes them)."""


@schedule.command("ls", cls=CtlCommand)
@click.argument("group_name", metavar="[GROUP]", required=False)
@pass_ctx
@handles_errors
def schedule_ls(ctx: Ctx, group_name: str | None) -> None:
    """The scheduled switchovers (of GROUP, or of every group), soonest first. The
    leader starts each when its wall clock reaches the time."""
    if group_name:
        entries = sorted(
            ctx.client.group(group_name).scheduled_switchovers(), key=lambda s: (s.at_ms, s.id)
        )
    else:
        entries = scheduled_switchovers(ctx.client)
    emit(ctx.output, [proto_dict(s) for s in entries], SCHEDULE_HEADERS, schedule_rows(entries))


@schedule.command("cancel", cls=CtlCommand)
@click.argument("group_name", metavar="GROUP")
@click.argument("switchover_id", metavar="ID", type=click.IntRange(min=1))
@pass_ctx
@handles_errors
def schedule_cancel(ctx: Ctx, group_name: str, switchover_id: int) -> None:
    """Cancel the scheduled switchover ID of GROUP (`schedule ls` lists them)."""
    s = ctx.client.group(group_name).cancel_switchover(switchover_id)
    emit(ctx.output, proto_dict(s), SCHEDULE_HEADERS, schedule_rows([s]))


def rebalance_table(moves: list[groups_pb2.RebalanceMove], tag: str, state: str) -> str:
    """A rebalance plan (or the moves run) as a table."""
    return table(["#", "GROUP", "SLOT", "FROM", "TO", tag.upper(), "STATE"], [
        [i, m.group, m.slot, m.from_member, m.to_member,
         f"{spread_value(tag, m.from_value)} -> {spread_value(tag, m.to_value)}", state]
        for i, m in enumerate(moves, 1)
    ])  # fmt: skip


def move_dict(m: groups_pb2.RebalanceMove) -> dict[str, Any]:
    """A rebalance move as JSON, every field present (slot 0 included)."""
    return {"group": m.group, "slot": m.slot, "from_member": m.from_member,
            "to_member": m.to_member, "from_value": m.from_value, "to_value": m.to_value,
            "why": m.why}  # fmt: skip


def spread_dict(rule: groups_pb2.SpreadExplanation) -> dict[str, Any]:
    """A spread rule's state as JSON, every field present (excess 0, violated false)."""
    return {
        "tag": rule.tag, "max": rule.max, "family": rule.family, "groups": list(rule.groups),
        "values": [{"value": v.value, "masters": v.masters, "holders": list(v.holders)}
                   for v in rule.values],
        "excess": rule.excess, "violated": rule.violated,
        "plan": [move_dict(m) for m in rule.plan], "stuck": list(rule.stuck),
        "notes": list(rule.notes),
    }  # fmt: skip
