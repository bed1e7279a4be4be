"""coordctl: operate a coord cluster (status, leader, nodes, kv)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from coord import errors
from coord.cli.output import CLIError, emit, from_coord_error, text
from coord.client import Client
from coord.client.credentials import Credentials
from coord.v1 import cluster_pb2, common_pb2, kv_pb2

F = TypeVar("F", bound=Callable[..., Any])

ROLE_NAMES = {
    cluster_pb2.ROLE_LEADER: "leader",
    cluster_pb2.ROLE_CANDIDATE: "candidate",
    cluster_pb2.ROLE_FOLLOWER: "follower",
}


class Ctx:
    def __init__(
        self,
        endpoints: str,
        output: str,
        timeout: float,
        credentials: Credentials | None = None,
    ) -> None:
        self.output = output
        self.endpoints = endpoints
        self.credentials = credentials or Credentials()
        self._timeout = timeout
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        """Built on first use (commands such as ``certs init`` need no cluster)."""
        if self._client is None:
            try:
                self._client = Client(
                    self.endpoints, timeout_s=self._timeout, credentials=self.credentials
                )
            except errors.CoordError as e:
                raise from_coord_error(e) from None
        return self._client


def handles_errors(fn: F) -> F:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except errors.CoordError as e:
            raise from_coord_error(e) from None

    return run  # type: ignore[return-value]


pass_ctx = click.make_pass_decorator(Ctx)


@click.group()
@click.option(
    "--endpoints",
    envvar="COORDCTL_ENDPOINTS",
    default="127.0.0.1:2379",
    show_default=True,
    help="Comma-separated client API addresses of the cluster's nodes.",
)
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table")
@click.option(
    "--timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds for a whole command, retries included.",
)
@click.option(
    "--token",
    envvar="COORDCTL_TOKEN",
    default="",
    help="Bearer token (or COORDCTL_TOKEN); prefer the variable: flags show in `ps`.",
)
@click.option("--cacert", envvar="COORDCTL_CACERT", default="", help="CA to verify the servers.")
@click.option("--cert", envvar="COORDCTL_CERT", default="", help="Client certificate (mTLS).")
@click.option("--key", envvar="COORDCTL_KEY", default="", help="Client certificate's key.")
@click.option(
    "--server-name",
    envvar="COORDCTL_SERVER_NAME",
    default="",
    help="Name to check in the servers' certificates (when dialling by IP).",
)
@click.version_option(package_name="coord")
@click.pass_context
def main(
    ctx: click.Context,
    endpoints: str,
    output: str,
    timeout: float,
    token: str,
    cacert: str,
    cert: str,
    key: str,
    server_name: str,
) -> None:
    """Operate a coord cluster."""
    if timeout <= 0:
        raise click.BadParameter("must be > 0", param_hint="--timeout")
    creds = Credentials(
        token=token, ca_file=cacert, cert_file=cert, key_file=key, server_name=server_name
    )
    ctx.obj = Ctx(endpoints, output, timeout, creds)


def _header(h: common_pb2.ResponseHeader) -> dict[str, Any]:
    return {
        "cluster_id": h.cluster_id,
        "node_id": h.node_id,
        "term": h.term,
        "revision": h.revision,
    }


@main.command()
@pass_ctx
@handles_errors
def status(ctx: Ctx) -> None:
    """Status of every endpoint (a row per node; unreachable ones say so)."""
    rows: list[list[object]] = []
    data: list[dict[str, object]] = []
    for ep in ctx.client.endpoints:
        try:
            st = ctx.client.status(endpoint=ep)
        except errors.CoordError as e:
            rows.append([ep, "-", "unreachable", "-", "-", "-", "-", "-"])
            data.append({"endpoint": ep, "error": e.message})
            continue
        role = ROLE_NAMES.get(st.role, "follower")
        rows.append(
            [
                ep,
                st.node_id,
                role,
                st.term,
                st.leader_id or "-",
                st.commit_index,
                st.applied_index,
                st.revision,
            ]
        )
        data.append(
            {
                "endpoint": ep,
                "node_id": st.node_id,
                "role": role,
                "term": st.term,
                "leader": st.leader_id,
                "commit_index": st.commit_index,
                "applied_index": st.applied_index,
                "revision": st.revision,
                "has_quorum": st.has_quorum,
                "version": st.version,
                "cluster_id": st.header.cluster_id,
            }
        )
    emit(
        ctx.output,
        data,
        ["ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "REVISION"],
        rows,
    )
    if all("error" in d for d in data):
        reasons = "\n".join(f"  {d['endpoint']}: {d['error']}" for d in data)
        raise CLIError(f"no endpoint answered:\n{reasons}", 4)


@main.group(invoke_without_command=True)
@click.pass_context
def leader(cctx: click.Context) -> None:
    """The current leader (waits out an election in progress, up to --timeout)."""
    if cctx.invoked_subcommand is None:
        ctx = cctx.find_object(Ctx)
        assert ctx is not None  # main() made it
        show_leader(ctx)


@handles_errors
def show_leader(ctx: Ctx) -> None:
    resp = ctx.client.leader()
    emit(
        ctx.output,
        {
            "leader_id": resp.leader_id,
            "api_address": resp.leader_api_address,
            "header": _header(resp.header),
        },
        ["LEADER", "API ADDRESS", "TERM"],
        [[resp.leader_id, resp.leader_api_address, resp.header.term]],
    )


@main.group()
def kv() -> None:
    """Small configuration values in the cluster's key-value store."""


def _kv_dict(k: kv_pb2.KeyValue) -> dict[str, Any]:
    return {
        "key": text(k.key),
        "value": text(k.value),
        "create_revision": k.create_revision,
        "mod_revision": k.mod_revision,
        "version": k.version,
    }


@kv.command("put")
@click.argument("key")
@click.argument("value")
@click.option(
    "--expect-rev",
    type=int,
    default=None,
    help="Compare-and-set: write only if the key's mod revision is this (0: absent).",
)
@pass_ctx
@handles_errors
def kv_put(ctx: Ctx, key: str, value: str, expect_rev: int | None) -> None:
    """Set KEY to VALUE."""
    resp = ctx.client.put(key, value, expected_mod_revision=expect_rev)
    data = {"succeeded": resp.succeeded, "kv": _kv_dict(resp.kv), "header": _header(resp.header)}
    emit(
        ctx.output,
        data,
        ["RESULT", "KEY", "MOD_REVISION"],
        [["OK" if resp.succeeded else "CONFLICT", key, resp.kv.mod_revision]],
    )
    if not resp.succeeded:
        raise CLIError(
            f"compare-and-set failed: {key!r} is at mod revision {resp.kv.mod_revision}", 6
        )


@kv.command("get")
@click.argument("key")
@click.option("--prefix", is_flag=True, help="Every key starting with KEY.")
@click.option("--serializable", is_flag=True, help="Read the local node's state (may be stale).")
@pass_ctx
@handles_errors
def kv_get(ctx: Ctx, key: str, prefix: bool, serializable: bool) -> None:
    """Read KEY (or a prefix)."""
    resp = ctx.client.range(key, prefix=prefix, serializable=serializable)
    if not resp.kvs and not prefix:
        raise CLIError(f"key {key!r} not found", 5)
    _print_kvs(ctx, resp)


@kv.command("ls")
@click.argument("prefix", default="")
@click.option("--limit", type=click.IntRange(min=0), default=0)
@pass_ctx
@handles_errors
def kv_ls(ctx: Ctx, prefix: str, limit: int) -> None:
    """List keys under PREFIX (all keys by default)."""
    _print_kvs(ctx, ctx.client.range(prefix, prefix=True, limit=limit))


def _print_kvs(ctx: Ctx, resp: kv_pb2.RangeResponse) -> None:
    data = {
        "kvs": [_kv_dict(k) for k in resp.kvs],
        "count": resp.count,
        "more": resp.more,
        "header": _header(resp.header),
    }
    emit(
        ctx.output,
        data,
        ["KEY", "VALUE", "MOD_REVISION", "VERSION"],
        [[text(k.key), text(k.value), k.mod_revision, k.version] for k in resp.kvs],
    )


@kv.command("del")
@click.argument("key")
@click.option("--prefix", is_flag=True, help="Delete every key starting with KEY.")
@click.option("--expect-rev", type=int, default=None, help="Only if at this mod revision.")
@pass_ctx
@handles_errors
def kv_del(ctx: Ctx, key: str, prefix: bool, expect_rev: int | None) -> None:
    """Delete KEY (or a prefix)."""
    resp = ctx.client.delete(key, prefix=prefix, expected_mod_revision=expect_rev)
    emit(
        ctx.output,
        {"deleted": resp.deleted, "succeeded": resp.succeeded, "header": _header(resp.header)},
        ["DELETED"],
        [[resp.deleted]],
    )
    if not resp.succeeded:
        raise CLIError(f"compare-and-delete failed for {key!r}", 6)
