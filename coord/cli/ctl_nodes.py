"""coordctl commands on the cluster itself: node add/promote/remove/ls, leader transfer,
and the consistency check.

Membership changes are one at a time (the server refuses a change while the
previous one has not committed), like ``etcdctl member``. ``node add`` adds a
learner unless told ``--voter``, and prints the flags the new node must be
started with; ``node promote`` makes a caught-up learner a voter.
"""

from __future__ import annotations

import shlex
import time
from typing import Any

import click

from coord.cli.ctl import Ctx, handles_errors, leader, main, pass_ctx
from coord.cli.output import EXIT_ERROR, EXIT_UNAVAILABLE, CLIError, emit
from coord.v1 import cluster_pb2


def _node_rows(nodes: Any) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    data = [
        {
            "id": n.id,
            "api_address": n.api_address,
            "raft_address": n.raft_address,
            "connected": n.connected,
            "leader": n.is_leader,
            "role": _role(n),
            "match_index": n.match_index,
            "lag": n.lag,
            "promote_when_caught_up": n.promote_when_caught_up,
        }
        for n in nodes
    ]
    rows = [
        [
            n.id,
            n.api_address,
            n.raft_address,
            "yes" if n.connected else "no",
            "*" if n.is_leader else "",
            _role(n) + (" (auto)" if n.promote_when_caught_up else ""),
            n.match_index or "",
            n.lag if n.match_index else "",
        ]
        for n in nodes
    ]
    return data, rows


def _role(n: cluster_pb2.Node) -> str:
    return "learner" if n.learner else "voter"


_HEADERS = ["ID", "API", "RAFT", "CONNECTED", "LEADER", "ROLE", "MATCH", "LAG"]


@main.group()
def node() -> None:
    """Cluster members: list, add, remove (one change at a time)."""


@node.command("ls")
@pass_ctx
@handles_errors
def node_ls(ctx: Ctx) -> None:
    """The members; MATCH and LAG (from the leader) show how far each one's log has
    caught up: LAG is how many entries it is behind the leader's."""
    data, rows = _node_rows(ctx.client.nodes().nodes)
    emit(ctx.output, data, _HEADERS, rows)


# The older name: the members, as the answering node sees them.
main.add_command(node_ls, name="nodes")


def start_command(resp: cluster_pb2.AddNodeResponse, node_id: str) -> str:
    """The ``coord serve`` command line the added node must be started with."""
    args = [
        "coord",
        "serve",
        "--node-id",
        node_id,
        "--data-dir",
        f"DATA_DIR_OF_{node_id}",
        "--initial-cluster-state",
        "existing",
        "--cluster-id",
        resp.cluster_id,
    ]
    from coord.config import format_peer  # here: the module costs the other commands ~10 ms

    for n in resp.nodes:
        args += ["--peer", format_peer(n.id, n.raft_address, n.api_address, n.learner)]
    return shlex.join(args)


@node.command("add")
@click.argument("node_id")
@click.option("--raft", "raft_address", required=True, help="The new node's Raft HOST:PORT.")
@click.option("--api", "api_address", required=True, help="The new node's API HOST:PORT.")
@click.option(
    "--learner/--voter",
    default=True,
    show_default=True,
    help="A learner receives the log but does not vote or count in the quorum until "
    "promoted; a voter raises the quorum at once.",
)
@click.option(
    "--promote-when-caught-up",
    is_flag=True,
    help="The leader promotes the learner by itself once its log is caught up.",
)
@pass_ctx
@handles_errors
def node_add(
    ctx: Ctx,
    node_id: str,
    raft_address: str,
    api_address: str,
    learner: bool,
    promote_when_caught_up: bool,
) -> None:
    """Add NODE_ID to the cluster, then print how to start it.

    By default the node joins as a learner: it catches up from the leader (by
    snapshot if needed) without counting in the quorum, so writes never wait for it;
    `coordctl node promote NODE_ID` makes it a voter once it is close to the leader
    (or add it with --promote-when-caught-up). With --voter the cluster counts it in
    its quorum at once: start it promptly. A voter is refused while members are down
    if the larger configuration could not commit without them (remove dead members
    first).
    """
    if promote_when_caught_up and not learner:
        raise click.UsageError("--promote-when-caught-up is for a learner (not with --voter)")
    resp = ctx.client.add_node(
        node_id,
        raft_address,
        api_address,
        learner=learner,
        promote_when_caught_up=promote_when_caught_up,
    )
    command = start_command(resp, node_id)
    if ctx.output == "json":
        data, _ = _node_rows(resp.nodes)
        emit(ctx.output, {"cluster_id": resp.cluster_id, "nodes": data, "start": command}, [], [])
        return
    role = "a learner" if learner else "a voter"
    click.echo(f"added {node_id} as {role}; start it with an empty data dir:\n  {command}")
    if learner and promote_when_caught_up:
        click.echo(f"the leader promotes {node_id} once it has caught up (`coordctl node ls`)")
    elif learner:
        click.echo(
            f"once it has caught up (LAG in `coordctl node ls`): coordctl node promote {node_id}"
        )


@node.command("promote")
@click.argument("node_id")
@pass_ctx
@handles_errors
def node_promote(ctx: Ctx, node_id: str) -> None:
    """Make learner NODE_ID a voter (a membership change, one at a time).

    Refused (exit 6) while its log is further behind the leader's than the cluster's
    bound; the message says how far behind it is."""
    resp = ctx.client.promote_node(node_id)
    data, rows = _node_rows(resp.nodes)
    if ctx.output == "json":
        emit(ctx.output, {"promoted": node_id, "nodes": data}, [], [])
        return
    click.echo(f"promoted {node_id}; members now:")
    emit(ctx.output, data, _HEADERS, rows)


@node.command("remove")
@click.argument("node_id")
@pass_ctx
@handles_errors
def node_remove(ctx: Ctx, node_id: str) -> None:
    """Remove NODE_ID (a dead node too). Removing the leader first moves leadership.

    Refused if the remaining members that are up would be a minority."""
    current = ctx.client.leader()
    if current.leader_id == node_id:
        moved = ctx.client.transfer_leader()
        click.echo(f"moved leadership from {node_id} to {moved.leader_id}")
        _wait_leader_is_not(ctx, node_id)
    resp = ctx.client.remove_node(node_id)
    data, rows = _node_rows(resp.nodes)
    if ctx.output == "json":
        emit(ctx.output, {"removed": node_id, "nodes": data}, [], [])
        return
    click.echo(f"removed {node_id}; members now:")
    emit(ctx.output, data, _HEADERS, rows)


def _wait_leader_is_not(ctx: Ctx, node_id: str) -> None:
    deadline = time.monotonic() + ctx.client.timeout_s
    while time.monotonic() < deadline:
        if ctx.client.leader().leader_id not in ("", node_id):
            return
        time.sleep(0.05)
    raise CLIError(f"{node_id} still leads after the transfer: retry", EXIT_UNAVAILABLE)


@leader.command("transfer")
@click.option("--to", "to", default="", help="Target node id (default: the most caught up).")
@pass_ctx
@handles_errors
def leader_transfer(ctx: Ctx, to: str) -> None:
    """Move leadership to another member (graceful: no election timeout)."""
    before = ctx.client.leader().leader_id
    resp = ctx.client.transfer_leader(to)  # --to a non-member: NOT_FOUND (5), as node remove
    emit(
        ctx.output,
        {"from": before, "leader_id": resp.leader_id, "api_address": resp.leader_api_address},
        ["FROM", "LEADER", "API ADDRESS"],
        [[before, resp.leader_id, resp.leader_api_address]],
    )


@main.command()
@pass_ctx
@handles_errors
def consistency(ctx: Ctx) -> None:
    """Compare every member's state: each hashes its state at one committed point.

    Exit 0 when all match; 1 when a member's state differs from the majority's (it
    diverged: replace it from a healthy member); 4 when a member gave no hash.
    """
    resp = ctx.client.check_consistency()
    data = {
        "id": resp.id,
        "revision": resp.revision,
        "consistent": resp.consistent,
        "nodes": [
            {
                "id": n.node_id,
                "revision": n.revision,
                "hash": n.hash,
                "matches": n.matches,
                "error": n.error,
            }
            for n in resp.nodes
        ],
    }
    rows = [
        [
            n.node_id,
            n.revision if n.hash else "-",
            n.hash[:16] if n.hash else "-",
            "yes" if n.matches else ("NO" if n.hash else "-"),
            n.error,
        ]
        for n in resp.nodes
    ]
    emit(ctx.output, data, ["NODE", "REVISION", "HASH", "MATCHES", "ERROR"], rows)
    diverged = [n.node_id for n in resp.nodes if n.hash and not n.matches]
    if diverged:
        raise CLIError(f"state diverged on {', '.join(diverged)}: replace them", EXIT_ERROR)
    if not resp.consistent:
        silent = [n.node_id for n in resp.nodes if not n.hash]
        raise CLIError(f"no state hash from {', '.join(silent)}", EXIT_UNAVAILABLE)
