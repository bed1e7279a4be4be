"""``coord agent``: the member agent (coord.agent) from a YAML file and/or flags."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from coord import errors
from coord.cli.output import EXIT_ERROR, EXIT_USAGE, CLIError, from_coord_error

HELP = """Hold a member's place in a group on this host: keep a session, campaign, serve
role endpoints for load balancers (/master, /standby, /health, /role), run hooks on role
changes and, optionally, a command only while master; report this member's position
(--position, --position-file) for freshness-aware succession.

Settings come from --config (YAML; README "The member agent") with the flags over them.
A bad setting (an unknown key, a TTL out of bounds, a command that cannot be split, a
program that is not there) exits 2 with the reason. One JSON line per event on stdout.
SIGTERM, SIGINT or SIGHUP: a master stops its command, resigns and closes its session."""


@click.command("agent", help=HELP)
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), envvar="COORD_AGENT_CONFIG",
    help="YAML agent configuration (or $COORD_AGENT_CONFIG).",
)  # fmt: skip
@click.option("--endpoints", default=None,
              help="Comma-separated HOST:PORT of the nodes (default: the file's, else "
              "$COORDCTL_ENDPOINTS).")  # fmt: skip
@click.option("--group", default=None, help="The group to join (it must exist).")
@click.option("--member", default=None, help="This member's id in the group.")
@click.option("--address", default=None, help="Where clients reach this member's service.")
@click.option("--priority", type=int, default=None, help="Higher is preferred (default 0).")
@click.option("--ttl", default=None, help="Session TTL, e.g. 10s (default 10s).")
@click.option("--listen", default=None, help="HOST:PORT of the role endpoints (127.0.0.1:8008).")
@click.option("--nofailover/--failover", default=None, help="Register without campaigning.")
@click.option("--check-tcp", default=None, metavar="HOST:PORT",
              help="A TCP health check the cluster runs against this member.")  # fmt: skip
@click.option("--check-http", default=None, metavar="URL",
              help="An HTTP health check the cluster runs against this member.")  # fmt: skip
@click.option(
    "--hook", "hooks", multiple=True, metavar="NAME=CMD",
    help="A hook: pre_promote, on_elected, on_demoted or on_lost (repeatable).",
)  # fmt: skip
@click.option("--hook-timeout", default=None, help="Kill a hook after this long (default 30s).")
@click.option(
    "--run-while-master", "run", default=None, metavar="CMD",
    help="Run CMD only while master (SIGTERM, then SIGKILL after --stop-grace).",
)  # fmt: skip
@click.option("--stop-grace", default=None,
              help="SIGTERM to SIGKILL for the command (default and at most TTL/4).")  # fmt: skip
@click.option("--retry-delay", default=None,
              help="Pause before campaigning again after a failed pre_promote (2s).")  # fmt: skip
@click.option(
    "--position", "position", default=None, metavar="CMD",
    help="A command that prints this member's position (one integer >= 0, such as a WAL "
    "LSN), reported when it moves up.",
)  # fmt: skip
@click.option("--position-file", default=None, metavar="FILE",
              help="A file holding this member's position (instead of --position).")  # fmt: skip
@click.option("--position-interval", default=None,
              help="Read and report the position this often (default 1s).")  # fmt: skip
@click.option("--check-config", is_flag=True,
              help="Check the settings, print them as JSON and exit.")  # fmt: skip
def agent_command(
    config_file: str | None,
    hooks: tuple[str, ...],
    check_tcp: str | None,
    check_http: str | None,
    check_config: bool,
    **flags: Any,
) -> None:
    from coord.agent import config as agent_config

    layer: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    if "position" in layer and "position_file" in layer:
        raise CLIError("--position and --position-file: give one", EXIT_USAGE)
    if "position" in layer:  # a flag replaces the file's way of reading it
        layer["position_file"] = None
    elif "position_file" in layer:
        layer["position"] = None
    if check_tcp or check_http:
        layer["check"] = {"tcp": check_tcp} if check_tcp else {"http": check_http}
    if hooks:
        layer["hooks"] = {}
        for spec in hooks:
            name, sep, cmd = spec.partition("=")
            if not sep:
                raise CLIError(f"--hook {spec!r} is not NAME=CMD", EXIT_USAGE)
            layer["hooks"][name.strip()] = cmd
    try:
        env = os.environ.get("COORDCTL_ENDPOINTS")
        cfg = agent_config.load(config_file, layer, {"endpoints": env} if env else None)
        if check_config:
            click.echo(json.dumps(agent_config.describe(cfg), indent=2))
            return
        agent_config.runnable(cfg, config_file or "flags")
    except errors.CoordError as e:
        raise CLIError(e.message, EXIT_USAGE, "usage") from None
    from coord.agent.agent import Agent, serve

    try:
        agent = Agent(cfg)  # binds the role endpoints' port
    except OSError as e:
        raise CLIError(f"cannot listen on {cfg.listen}: {e.strerror or e}", EXIT_ERROR) from None
    try:
        code = serve(agent)
    except errors.CoordError as e:
        raise from_coord_error(e) from None
    raise SystemExit(code)
