"""``coordctl rebalance``: restore the spread of masters across hosts or zones (the
groups' spread rule, docs/design.md "Spreading masters across hosts and zones").

The plan is the state machine's own (``Groups.Explain``'s ``spread.plan``, computed by
coord.state.rebalance); the moves are ordinary switchovers to a named member, run one
at a time by the client library (``Group.rebalance``), each waited for."""

from __future__ import annotations

import time
from typing import Any

import click

from coord import errors
from coord.cli.ctl import CtlCommand, Ctx, handles_errors, main, pass_ctx
from coord.cli.ctl_group_admin import DURATION, move_dict, rebalance_table, spread_dict
from coord.cli.output import EXIT_USAGE, CLIError, emit
from coord.client.group import Group, family_groups, spread_refusal
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2


def _domains(ctx: Ctx, group_name: str | None, family: str | None) -> list[str]:
    """One group per spread domain to plan for: GROUP (its family, if it has one), a
    group of --family, or one group of every domain that has a rule."""
    if group_name and family:
        raise CLIError("coord: give a GROUP or --family, not both", EXIT_USAGE)
    if group_name:
        return [group_name]
    if family:
        return [family_groups(ctx.client, family)[0].name]
    resp: election_pb2.ListGroupsResponse = ctx.client.call(
        lambda ch, t: election_pb2_grpc.GroupsStub(ch).List(
            election_pb2.ListGroupsRequest(), timeout=t
        )
    )
    seen: set[str] = set()
    out = []
    for g in sorted(resp.groups, key=lambda g: g.name):
        p = g.policy
        if not p.spread_tag or (p.spread_family and p.spread_family in seen):
            continue
        seen.add(p.spread_family)
        out.append(g.name)
    if not out:
        raise errors.NotFound(
            "no group has a spread rule: give one (coordctl group edit GROUP --spread-tag "
            "zone --spread-max 1 [--spread-family NAME])"
        )
    return out


def _label(name: str, rule: groups_pb2.SpreadExplanation) -> str:
    return f"family {rule.family}" if rule.family else f"group {name}"


@click.command("rebalance", cls=CtlCommand)
@click.argument("group_name", metavar="[GROUP]", required=False)
@click.option("--family", default=None, metavar="NAME", help="Every group of this family.")
@click.option("--dry-run", is_flag=True, help="Print the plan; switch nothing over.")
@click.option(
    "--wait",
    "wait_s",
    type=DURATION,
    default=60.0,
    show_default=True,
    help="How long each switchover may take (its master resigning, or its switchover "
    "timeout plus TTL).",
)
@pass_ctx
@handles_errors
def rebalance(
    ctx: Ctx, group_name: str | None, family: str | None, dry_run: bool, wait_s: float
) -> None:
    """Restore the spread of masters across zones or hosts, by switchovers.

    Plans the switchovers that bring the masters of GROUP (with its spread family), of
    --family, or of every group with a spread rule back within the rule (at most K per
    value of the tag), prints the plan, then runs each and waits for it before the next
    (none with --dry-run). Refused (exit 6) when the spread is violated and no
    switchover can improve it; nothing to do when it holds."""
    names = _domains(ctx, group_name, family)
    plans: list[tuple[str, groups_pb2.SpreadExplanation]] = []
    for name in names:
        plans.append((name, ctx.client.group(name).spread()))
    violated = [(n, r) for n, r in plans if r.violated]
    movable = [(n, r) for n, r in violated if r.plan]
    stuck = [(n, r) for n, r in violated if not r.plan]
    if violated and not movable:
        n, r = stuck[0]
        raise errors.FailedPrecondition(spread_refusal(n, r))
    planned = [m for _, r in movable for m in r.plan]
    tag = movable[0][1].tag if movable else ""
    if ctx.output != "json":
        if not violated:
            click.echo(
                "the spread holds: nothing to rebalance ("
                + "; ".join(_label(n, r) for n, r in plans)
                + ")"
            )
            return
        click.echo(rebalance_table(planned, tag, "planned" if dry_run else "to run"))
    done: list[tuple[groups_pb2.RebalanceMove, float]] = []
    started: dict[str, float] = {}

    def progress(move: groups_pb2.RebalanceMove, state: str) -> None:
        key = f"{move.group}/{move.slot}"
        if state == "running":
            started[key] = time.monotonic()
            if ctx.output != "json":
                click.echo(f"switchover {move.group}: {move.from_member} -> {move.to_member} ...",
                           err=True)  # fmt: skip
            return
        took = time.monotonic() - started.get(key, time.monotonic())
        done.append((move, took))
        if ctx.output != "json":
            click.echo(f"  done in {took:.1f}s", err=True)

    if not dry_run:
        for name, _ in movable:  # one spread domain after the other, each move waited for
            Group(ctx.client, name).rebalance(timeout_s=wait_s, progress=progress)
    after = [(n, ctx.client.group(n).spread()) for n, _ in plans]
    if ctx.output == "json":
        emit(ctx.output, _json(plans, after, dry_run, done), [], [])
        return
    for n, r in stuck:
        click.echo(spread_refusal(n, r), err=True)
    if not dry_run:
        left = [(n, r) for n, r in after if r.violated]
        click.echo(
            "the spread holds now" if not left else
            "still violated: " + "; ".join(
                f"{_label(n, r)} ({r.excess} beyond the limit)" for n, r in left
            ),
            err=True,
        )  # fmt: skip


def _json(
    before: list[tuple[str, groups_pb2.SpreadExplanation]],
    after: list[tuple[str, groups_pb2.SpreadExplanation]],
    dry_run: bool,
    done: list[tuple[groups_pb2.RebalanceMove, float]],
) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "plan": [move_dict(m) for _, r in before for m in r.plan],
        "done": [{**move_dict(m), "seconds": round(s, 3)} for m, s in done],
        "spread": [
            {"group": n, "before": spread_dict(b), "after": spread_dict(a)}
            for (n, b), (_, a) in zip(before, after, strict=True)
        ],
    }


main.add_command(rebalance)
