"""coordctl report: availability per group (FTSD, MTTR, MTBF, budget) and outage timelines."""

from __future__ import annotations

import re
import time
from typing import Any

import click

from coord.cli.ctl import Ctx, handles_errors, main, pass_ctx
from coord.cli.output import EXIT_USAGE, CLIError, emit, proto_dict, table

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_window(spec: str) -> int:
    """``90s``, ``15m``, ``1h``, ``24h``, ``30d``, ``2w`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", spec)
    if not m or int(m.group(1)) <= 0:
        raise CLIError(
            f"window {spec!r} is not a duration like 15m, 1h, 24h or 30d", EXIT_USAGE, "usage"
        )
    return int(m.group(1)) * _UNITS[m.group(2)]


def human_window(seconds: int) -> str:
    """A window's label: ``1h``, ``24h`` (not ``1d``: a day's window is named in hours,
    as the default windows 1h, 24h, 30d are), ``7d``, ``15m``, ``90s``."""
    for unit, size, least in (("d", 86400, 2 * 86400), ("h", 3600, 3600), ("m", 60, 60)):
        if seconds % size == 0 and seconds >= least:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def human_ms(ms: float) -> str:
    if ms <= 0:
        return "0"
    s = ms / 1000
    if s < 60:
        return f"{s:.2f}s"
    if s < 3600:
        return f"{s / 60:.1f}m"
    if s < 86400:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def _when(ms: int) -> str:
    if not ms:
        return "-"
    t = time.gmtime(ms / 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", t) + f".{ms % 1000:03d}Z"


@main.command()
@click.option("--group", "-g", default="", help="One group (default: every group).")
@click.option(
    "--window",
    "-w",
    "windows",
    multiple=True,
    help="Window to report on, e.g. 1h, 24h, 30d (repeat; default 1h, 24h and 30d).",
)
@click.option("--serializable", is_flag=True, help="Read the answering node's state.")
@pass_ctx
@handles_errors
def report(ctx: Ctx, group: str, windows: tuple[str, ...], serializable: bool) -> None:
    """Availability per group: downtime, FTSD, outages, MTTR, MTBF and the downtime budget
    (MAD) with what remains of it, then each group's outage timeline."""
    seconds = [parse_window(w) for w in windows]
    # A window is labelled as it was asked for (-w 1d: 1d), else by human_window.
    labels = {s: w.strip() for s, w in zip(seconds, windows, strict=True)}
    resp = ctx.client.availability(group, seconds, serializable=serializable)
    if ctx.output == "json":
        data: dict[str, Any] = proto_dict(resp)
        for g in data.get("groups", []):
            for w in g.get("windows", []):
                w["window"] = labels.get(w.get("window_s", 0)) or human_window(w.get("window_s", 0))
        emit(ctx.output, data, [], [])
        return
    click.echo(table(_HEADERS, [_row(g.group, w, labels) for g in resp.groups for w in g.windows]))
    for g in resp.groups:
        if g.timeline:
            _print_timeline(g)


_HEADERS = [
    "GROUP", "WINDOW", "OBSERVED", "DOWNTIME", "FTSD", "AVAILABILITY", "OUTAGES",
    "MTTR", "MTBF", "BUDGET", "REMAINING", "FAILOVERS",
]  # fmt: skip


def _row(group: str, w: Any, labels: dict[int, str]) -> list[Any]:
    """One window of one group, as the table shows it."""
    causes = ",".join(f"{c}={n}" for c, n in sorted(w.failovers_by_cause.items()))
    return [
        group,
        labels.get(w.window_s) or human_window(w.window_s),
        human_ms(w.observed_ms),
        human_ms(w.downtime_ms),
        f"{w.ftsd:.6f}",
        f"{100 * (1 - w.ftsd):.4f}%" if w.observed_ms else "-",
        w.outages,
        human_ms(w.mttr_ms) if w.mttr_ms else "-",
        human_ms(w.mtbf_ms) if w.mtbf_ms else "-",
        human_ms(w.budget_ms) if w.budget_ms else "-",
        _remaining(w.budget_ms, w.budget_remaining_ms),
        causes or "-",
    ]


def _print_timeline(g: Any) -> None:
    click.echo(f"\n{g.group}: outages, oldest first" + (" (one open)" if g.outage_open else ""))
    lines = [
        [
            _when(o.start_ms),
            _when(o.end_ms) if o.end_ms else "open",
            human_ms((o.end_ms or g.now_ms) - o.start_ms),
            o.slot,
            o.cause,
            o.member,
        ]
        for o in g.timeline
    ]
    click.echo(table(["START", "END", "DURATION", "SLOT", "CAUSE", "MEMBER"], lines))


def _remaining(budget_ms: int, remaining_ms: int) -> str:
    if not budget_ms:
        return "-"
    if remaining_ms < 0:
        return f"OVERSPENT {human_ms(-remaining_ms)}"
    return f"{human_ms(remaining_ms)} ({100 * remaining_ms / budget_ms:.0f}%)"
