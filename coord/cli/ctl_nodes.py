"""coordctl commands on the cluster itself: node add/remove/ls, leader transfer, and the
consistency check.

Membership changes are one at a time (the server refuses a change while the
previous one has not committed), like ``etcdctl member``. ``node add`` prints
the flags the new node must be started with.
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
            "match_index": n.match_index,
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
            n.match_index or "",
        ]
        for n in nodes
    ]
    return data, rows


_HEADERS = ["ID", "API", "RAFT", "CONNECTED", "LEADER", "MATCH"]


@main.group()
def node() -> None:
    """Cluster members: list, add, remove (one change at a time)."""


@node.command("ls")
@pass_ctx
@handles_errors
def node_ls(ctx: Ctx) -> None:
    """The members; MATCH (from the leader) shows how far each one's log has caught up."""
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
    for n in resp.nodes:
        args += ["--peer", f"{n.id}={n.raft_address},{n.api_address}"]
    return shlex.join(args)


@node.command("add")
@click.argument("node_id")
@click.option("--raft", "raft_address", required=True, help="The new node's Raft HOST:PORT.")
@click.option("--api", "api_address", required=True, help="The new node's API HOST:PORT.")
@pass_ctx
@handles_errors
def node_add(ctx: Ctx, node_id: str, raft_address: str, api_address: str) -> None:
    """Add NODE_ID to the cluster, then print how to start it.

    The cluster counts the new node in its quorum at once: start it promptly (it
    catches up from the leader, by snapshot if needed, before it votes). Refused while
    members are down if the larger configuration could not commit without them
    (remove dead members first).
    """
    resp = ctx.client.add_node(node_id, raft_address, api_address)
    command = start_command(resp, node_id)
    if ctx.output == "json":
        data, _ = _node_rows(resp.nodes)
        emit(ctx.output, {"cluster_id": resp.cluster_id, "nodes": data, "start": command}, [], [])
        return
    click.echo(f"added {node_id}; start it with an empty data dir:\n  {command}")


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
