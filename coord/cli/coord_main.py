"""``coord``: run a node (``serve``), a local development cluster (``dev``) or a member
agent (``agent``)."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from typing import Any

import click

from coord import __version__, config, errors
from coord.cli.agent import agent_command
from coord.cli.output import EXIT_CONFIG, EXIT_REFUSED, EXIT_UNAVAILABLE, CLIError
from coord.cli.restore import Duration, backup_options, restore_command

_TIMING_FLAGS = [f.name for f in dataclasses.fields(config.RaftTimings)]


def _timing_options(fn: Any) -> Any:
    for name in reversed(_TIMING_FLAGS):
        fn = click.option(
            "--" + name.replace("_", "-"),
            name,
            type=float,
            default=None,
            help=f"Raft timing {name} (see the configuration reference).",
        )(fn)
    return fn


@click.group()
@click.version_option(version=__version__)  # coord.__version__: no metadata lookup
def main() -> None:
    """coord: a Raft-based high-availability coordinator."""


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="COORD_CONFIG",
    help="YAML configuration file.",
)
@click.option("--node-id", default=None, help="This node's stable id (e.g. n1).")
@click.option("--data-dir", default=None, help="Directory for this node's journal and snapshots.")
@click.option(
    "--peer",
    "peers",
    multiple=True,
    help="A member as ID=RAFT_HOST:PORT,API_HOST:PORT; repeat for every member.",
)
@click.option(
    "--cluster-token", default=None, help="Mixed into the cluster id; unique per cluster."
)
@click.option("--initial-cluster-state", type=click.Choice(["new", "existing"]), default=None)
@click.option(
    "--cluster-id",
    "explicit_cluster_id",
    default=None,
    help="The cluster to join (a node added later: `coordctl node add` prints it).",
)
@click.option(
    "--cluster-secret",
    default=None,
    help="Secret for Raft traffic; required when Raft binds beyond loopback.",
)
@click.option("--listen-raft", default=None, help="Raft bind address (default: own peer entry).")
@click.option("--listen-api", default=None, help="API bind address (default: own peer entry).")
@click.option(
    "--listen-http",
    default=None,
    help="HTTP address for /metrics, /healthz, /readyz and the status page (default: none).",
)
@click.option("--tls-cert", default=None, help="TLS certificate (PEM) for the client API.")
@click.option("--tls-key", default=None, help="Its private key (PEM).")
@click.option(
    "--tls-ca",
    default=None,
    help="CA (PEM) that signed the nodes' certificates and, for mutual TLS, the clients'.",
)
@click.option(
    "--tls-client-auth",
    type=click.Choice(["none", "require"]),
    default=None,
    help="require: clients must present a certificate signed by --tls-ca (mutual TLS).",
)
@click.option(
    "--auth-tokens-file",
    default=None,
    help="YAML file of hashed bearer tokens and certificate names mapped to roles.",
)
@click.option(
    "--allow-unauthenticated",
    type=click.Choice(["auto", "true", "false"]),
    default=None,
    help="Calls without credentials act as admin: only on a loopback API (auto: when no "
    "credentials are configured).",
)
@click.option("--rate-limit-per-s", type=float, default=None, help="Requests/s per identity.")
@click.option("--max-watch-streams", type=int, default=None, help="Watch streams per connection.")
@click.option(
    "--max-sessions-per-identity", type=int, default=None, help="Open sessions per identity."
)
@click.option(
    "--notify-webhook",
    default=None,
    help="POST failover and budget events to this URL as JSON (retried, bounded queue).",
)
@click.option(
    "--raft-route",
    "routes",
    multiple=True,
    help="Dial a peer's Raft port elsewhere: ID=HOST:PORT (proxies, NAT).",
)
@click.option(
    "--fsync/--no-fsync",
    default=None,
    help="fsync the journal before acknowledging writes (default on).",
)
@click.option("--request-timeout-s", type=float, default=None)
@click.option(
    "--health-check-concurrency",
    type=int,
    default=None,
    help="Member health checks the leader runs at once, at most (default 64).",
)
@click.option(
    "--consistency-check-every",
    "consistency_check_every_s",
    type=Duration(),
    default=None,
    help="How often the leader compares every member's state hash (default 5m; 0s: never).",
)
@click.option("--log-compaction-entries", type=int, default=None)
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default=None)
@backup_options
@_timing_options
def serve(
    config_file: str | None, peers: tuple[str, ...], routes: tuple[str, ...], **flags: Any
) -> None:
    """Run one coord node in the foreground until SIGINT/SIGTERM."""
    try:
        layer: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
        if peers:
            layer["peers"] = [config.parse_peer(p) for p in peers]
        if routes:
            layer["raft_routes"] = dict(config.parse_route(r) for r in routes)
        cfg = config.load(config_file, layer)
    except errors.CoordError as e:
        raise CLIError(f"{e.message}", EXIT_CONFIG) from None
    logging.basicConfig(
        level=cfg.log_level,
        format=f"%(asctime)s {cfg.node_id} %(levelname)s %(name)s: %(message)s",
    )
    from coord.server.app import serve as run  # heavy imports only when serving

    _exit_with_parent(os.environ.get("COORD_EXIT_WITH_PARENT", ""))
    try:
        run(cfg)
    except errors.InvalidArgument as e:
        raise CLIError(e.message, EXIT_CONFIG) from None
    except errors.FailedPrecondition as e:
        raise CLIError(e.message, EXIT_REFUSED) from None
    except errors.Unavailable as e:
        raise CLIError(e.message, EXIT_UNAVAILABLE) from None


@main.command()
@click.option("--nodes", "n", type=click.Choice(["3", "5"]), default="3", show_default=True)
@click.option(
    "--base-port",
    type=click.IntRange(0, 65000),
    default=None,
    help="First port: n1 serves its API on BASE and Raft on BASE+1, n2 on BASE+2 and "
    "BASE+3, ...; status pages from BASE+2N. Default 2379, the README's ports (APIs "
    "127.0.0.1:2379, :2381, :2383), or free ports when those are taken; 0: free ports.",
)
@click.option(
    "--data-dir",
    default=".coord-dev",
    show_default=True,
    help="Parent directory of the nodes' data dirs (kept across runs); its file `env` "
    "sets COORDCTL_ENDPOINTS for coordctl: `source .coord-dev/env`.",
)
@click.option(
    "--demo",
    is_flag=True,
    help="Run a scripted failover (write, kill -9 the leader, measure, restart).",
)
@click.option("--exit-after-demo", is_flag=True, help="Stop the cluster once the demo is done.")
@click.option("--fresh", is_flag=True, help="Wipe --data-dir first.")
def dev(
    n: str, base_port: int | None, data_dir: str, demo: bool, exit_after_demo: bool, fresh: bool
) -> None:
    """A local cluster of separate processes with a live view of leader and nodes.

    SIGINT (Ctrl-C), SIGTERM or SIGHUP stops every node and member process it started;
    they also stop by themselves when it dies (even by kill -9).
    """
    from coord.cli.dev import run_dev

    run_dev(int(n), base_port, data_dir, demo, exit_after_demo, fresh)


def _exit_with_parent(pid: str) -> None:
    """``COORD_EXIT_WITH_PARENT=PID`` (set by ``coord dev``): stop as on SIGTERM once
    process PID is no longer our parent — it died, even by kill -9, and we were handed
    to init or a subreaper — so a dev cluster never outlives ``coord dev``."""
    if not pid.isdigit():
        return
    parent = int(pid)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        logging.getLogger("coord").warning("parent process %d exited: stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(15)  # a clean stop takes a few seconds; one that hangs must not leak
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


main.add_command(restore_command(serve))
main.add_command(agent_command)

if __name__ == "__main__":
    main()
