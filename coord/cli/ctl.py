"""coordctl: operate a coord cluster (status, leader, nodes, kv).

The global options (``--endpoints``, ``-o/--output``, ``--timeout`` and the
credentials) are the root's, with defaults and ``COORDCTL_*`` variables; every
command below it takes them after its name too (as etcdctl and kubectl do), and
there they win. Under ``-o json`` errors print as one JSON object (coord.cli.output).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from coord import __version__, errors
from coord.cli.output import (
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    CLIError,
    emit,
    from_coord_error,
    show_error,
    text,
)

# Start-up time (issue 18): importing this module, `--help` and `--version` import no
# grpc and no generated code; the client library is imported by the first command that
# dials (Ctx.client), and commands defined in the other ctl_* modules are imported when
# used (LazyCommands; coordctl.py lists them). tests/unit/test_cli_lazy.py guards it.
if TYPE_CHECKING:
    from coord.client import Client
    from coord.client.credentials import Credentials
    from coord.v1 import cluster_pb2, common_pb2, kv_pb2

F = TypeVar("F", bound=Callable[..., Any])

# Start-up time, continued: the cyclic garbage collector. When coordctl is the program
# (`main()` called without arguments: the console script, `python -m`; see
# CtlRoot.__call__), the objects its imports made (modules, classes, functions, all
# alive until the process exits) are moved out of the collector's sight (gc.freeze)
# rather than traversed again by each full collection; a command's lazy imports run
# with the collector paused (_lazy_imports), and the collection at exit is skipped for
# them (they die with the process). About 11 % of `kv get`'s instructions, 10 % of
# `--version`'s (bench/README.md, "CLI start-up"). A caller running coordctl in its own
# process (`main([...])`, CliRunner, the tests) is left alone. tests/unit/test_cli_lazy.py
# guards both.
_OWNS_PROCESS = False


def _own_process() -> None:
    global _OWNS_PROCESS
    _OWNS_PROCESS = True
    gc.freeze()
    # Registered before the client's imports: runs after their exit handlers (grpc's,
    # logging's), just before the final collection.
    atexit.register(gc.freeze)


@contextlib.contextmanager
def _lazy_imports() -> Iterator[None]:
    """Around an import a command needs (the client library, a ctl_* module): in
    coordctl's own process, with the collector paused, its objects then frozen."""
    if not _OWNS_PROCESS or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def role_name(role: cluster_pb2.Role.ValueType) -> str:
    """A node's Raft role (cluster_pb2.Role) as coordctl prints it."""
    from coord.v1 import cluster_pb2

    names = {
        cluster_pb2.ROLE_LEADER: "leader",
        cluster_pb2.ROLE_CANDIDATE: "candidate",
        cluster_pb2.ROLE_FOLLOWER: "follower",
    }
    return names.get(role, "follower")


_CREDENTIAL_FIELDS = {
    "token": "token",
    "cacert": "ca_file",
    "cert": "cert_file",
    "key": "key_file",
    "server_name": "server_name",
}


class Ctx:
    def __init__(
        self,
        endpoints: str,
        output: str,
        timeout: float,
        credentials: Credentials | None = None,
        **credential_fields: str,
    ) -> None:
        self.output = output
        self.endpoints = endpoints
        # Credentials, or its fields (built on first use: grpc is imported with it).
        self._credentials = credentials
        self._credential_fields = credential_fields
        self._timeout = timeout
        self._client: Client | None = None

    @property
    def credentials(self) -> Credentials:
        if self._credentials is None:
            from coord.client.credentials import Credentials

            self._credentials = Credentials(**self._credential_fields)
        return self._credentials

    def override(self, name: str, value: Any) -> None:
        """A global option given after the command: it wins over the one before it.
        (Options are parsed before any command runs: no client exists yet.)"""
        if name == "output":
            self.output = value
        elif name == "endpoints":
            self.endpoints = value
        elif name == "timeout":
            self._timeout = value
        else:
            field = _CREDENTIAL_FIELDS[name]
            if self._credentials is None:
                self._credential_fields[field] = value
            else:
                import dataclasses  # not at the top: --help and --version need none

                self._credentials = dataclasses.replace(self._credentials, **{field: value})

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> Client:
        """Built on first use (commands such as ``certs init`` need no cluster).

        Connection refused by every endpoint fails at once (nothing listens there:
        waiting out --timeout would not help)."""
        if self._client is None:
            with _lazy_imports():
                from coord.client import Client

            try:
                self._client = Client(
                    self.endpoints,
                    timeout_s=self._timeout,
                    credentials=self.credentials,
                    fail_fast_refused=True,
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

# -- global options ----------------------------------------------------------------------

OUTPUT_HELP = (
    "Output format: table, or json (integers, int64 ones too, as JSON numbers; an "
    "error as one JSON object on stderr: reason, message, exit_code)."
)

# (flags, setting, type, help). The root has them with defaults and variables
# (_ROOT_DEFAULTS); every command below it has an override of the same flags.
GLOBAL_OPTIONS: list[tuple[tuple[str, ...], str, Any, str]] = [
    (("--endpoints",), "endpoints", str,
     "Comma-separated client API addresses (HOST:PORT) of the cluster's nodes."),
    (("--output", "-o"), "output", click.Choice(["table", "json"]), OUTPUT_HELP),
    (("--timeout",), "timeout", float, "Seconds for a whole command, retries included."),
    (("--token",), "token", str,
     "Bearer token (or COORDCTL_TOKEN); prefer the variable: flags show in `ps`."),
    (("--cacert",), "cacert", str, "CA to verify the servers."),
    (("--cert",), "cert", str, "Client certificate (mTLS)."),
    (("--key",), "key", str, "Client certificate's key."),
    (("--server-name",), "server_name", str,
     "Name to check in the servers' certificates (when dialling by IP)."),
]  # fmt: skip

_ROOT_DEFAULTS: dict[str, dict[str, Any]] = {
    "endpoints": {
        "envvar": "COORDCTL_ENDPOINTS",
        "default": "127.0.0.1:2379",
        "show_default": True,
    },
    "output": {"default": "table", "show_default": True},
    "timeout": {"default": 10.0, "show_default": True},
    "token": {"envvar": "COORDCTL_TOKEN", "default": ""},
    "cacert": {"envvar": "COORDCTL_CACERT", "default": ""},
    "cert": {"envvar": "COORDCTL_CERT", "default": ""},
    "key": {"envvar": "COORDCTL_KEY", "default": ""},
    "server_name": {"envvar": "COORDCTL_SERVER_NAME", "default": ""},
}


def _root_options(fn: F) -> F:
    for flags, name, typ, help_text in reversed(GLOBAL_OPTIONS):
        fn = click.option(*flags, name, type=typ, help=help_text, **_ROOT_DEFAULTS[name])(fn)
    return fn


def _check_timeout(value: float) -> float:
    if value <= 0:
        raise click.BadParameter("must be > 0", param_hint="--timeout")
    return value


def _override(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(cctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None or cctx.resilient_parsing:
            return
        if name == "timeout":
            _check_timeout(value)
        obj = cctx.find_object(Ctx)
        if obj is not None:
            obj.override(name, value)

    return callback


def _global_copies() -> list[click.Parameter]:
    """The global options as a command below the root takes them: no defaults and no
    variables (the root's apply), so only what is given overrides."""
    return [
        click.Option(
            [*flags, f"global_{name}"],
            type=typ,
            default=None,
            help=help_text,
            expose_value=False,
            callback=_override(name),
        )
        for flags, name, typ, help_text in GLOBAL_OPTIONS
    ]


def _format_options(
    cmd: click.Command,
    globals_: list[click.Parameter],
    ctx: click.Context,
    formatter: click.HelpFormatter,
) -> None:
    rows: list[tuple[str, str]] = []
    global_rows: list[tuple[str, str]] = []
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or isinstance(param, click.Argument):
            continue
        (global_rows if param in globals_ else rows).append(record)
    if rows:
        with formatter.section("Options"):
            formatter.write_dl(rows)
    if global_rows:
        with formatter.section("Global options (before or after the command)"):
            formatter.write_dl(global_rows)


class _TakesGlobalOptions(click.Command):
    """Adds a copy of the global options to the command's own (after its name)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.global_params = _global_copies()

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return [*super().get_params(ctx), *self.global_params]


class CtlCommand(_TakesGlobalOptions):
    """A coordctl command: takes the global options after its name too."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        _format_options(self, self.global_params, ctx, formatter)


class LazyCommands(dict[str, click.Command]):
    """A group's commands, some defined in modules not imported yet.

    ``lazy`` maps such a command's name to its module and its one-line help. Looking
    a command up (``get``, ``[]``, ``items()``, ``values()``) imports its module, which
    registers its commands on the group as before (``@main.group()``...); the names
    alone (iterating, ``in``, ``len``) import nothing, and neither does ``--help``
    (LazyGroup.format_commands shows the help kept here)."""

    def __init__(self, commands: dict[str, click.Command]) -> None:
        super().__init__(commands)
        self.lazy: dict[str, tuple[str, str]] = {}

    def _load(self, name: str) -> None:
        entry = self.lazy.get(name)
        if entry is None or dict.__contains__(self, name):
            return
        with _lazy_imports():
            importlib.import_module(entry[0])
        for n in [n for n, (module, _) in self.lazy.items() if module == entry[0]]:
            del self.lazy[n]

    def load_all(self) -> None:
        for name in list(self.lazy):
            self._load(name)

    def unloaded(self, name: str) -> str | None:
        """The help kept for ``name`` if its module is not imported yet, else None."""
        entry = self.lazy.get(name)
        return None if entry is None or dict.__contains__(self, name) else entry[1]

    def __getitem__(self, name: str) -> click.Command:
        self._load(name)
        return super().__getitem__(name)

    def get(self, name: str, default: Any = None) -> Any:
        self._load(name)
        return super().get(name, default)

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or name in self.lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def _names(self) -> list[str]:
        return [*dict.keys(self), *(n for n in self.lazy if not dict.__contains__(self, n))]

    def keys(self) -> Any:
        return self._names()

    def items(self) -> Any:
        self.load_all()
        return super().items()

    def values(self) -> Any:
        self.load_all()
        return super().values()


class LazyGroup(click.Group):
    """A group whose commands may come from modules imported on first use
    (``add_lazy``); see LazyCommands."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: LazyCommands = LazyCommands(self.commands)

    def add_lazy(self, name: str, module: str, short_help: str) -> None:
        """``name`` is registered on this group by importing ``module``; ``short_help``
        is its help's first sentence, for ``--help`` (checked by the unit tests)."""
        self.commands.lazy[name] = (module, short_help)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's, except that a command not imported yet shows its kept help."""
        commands: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            kept = self.commands.unloaded(name)
            cmd = self.get_command(ctx, name) if kept is None else click.Command(name, help=kept)
            if cmd is not None and not cmd.hidden:
                commands.append((name, cmd))
        if commands:
            limit = formatter.width - 6 - max(len(name) for name, _ in commands)
            rows = [(name, cmd.get_short_help_str(limit)) for name, cmd in commands]
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class CtlGroup(_TakesGlobalOptions, LazyGroup):
    """A coordctl command group below the root: takes the global options too."""

    command_class = CtlCommand
    group_class = type

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        _format_options(self, self.global_params, ctx, formatter)
        self.format_commands(ctx, formatter)


def wants_json(args: Sequence[str]) -> bool:
    """Does this command line ask for ``-o json`` (anywhere before ``--``)? Read from
    the arguments themselves, so that an error in parsing them is JSON too."""
    output = "table"
    it = iter(args)
    for a in it:
        if a == "--":
            break
        if a in ("-o", "--output"):
            output = next(it, output)
        elif a.startswith("--output="):
            output = a.removeprefix("--output=")
        elif a.startswith("-o"):
            output = a[2:].removeprefix("=")
    return output == "json"


class _JsonError(click.ClickException):
    """An error shown as one JSON object (under ``-o json``)."""

    def __init__(self, inner: click.ClickException) -> None:
        super().__init__(inner.format_message())
        self.exit_code = inner.exit_code  # type: ignore[misc]  # click declares it on the class
        self.inner = inner

    def show(self, file: Any = None) -> None:
        show_error(self.inner, as_json=True)


_JSON_ERRORS = "coordctl.json_errors"


class CtlRoot(LazyGroup):
    """coordctl itself: commands below take the global options too; under ``-o json``
    every error (usage errors included) prints as JSON."""

    command_class = CtlCommand
    group_class = CtlGroup

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``main()``: coordctl as the program, reading ``sys.argv`` and exiting at the
        end (the console script, ``python -m``); it takes the collector over (see
        _OWNS_PROCESS). With arguments, as click's."""
        if not args and not kwargs:
            _own_process()
        return super().__call__(*args, **kwargs)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        as_json = wants_json(args)
        try:
            ctx = super().make_context(info_name, list(args), parent, **extra)
        except click.ClickException as e:
            raise (_JsonError(e) if as_json else e) from None
        ctx.meta[_JSON_ERRORS] = as_json
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _JsonError:
            raise
        except click.ClickException as e:
            if ctx.meta.get(_JSON_ERRORS):
                raise _JsonError(e) from None
            raise


@click.group(cls=CtlRoot)
@_root_options
# The version is coord.__version__ (what the servers report), not the installed
# distribution's: importlib.metadata would cost --version a third of its time.
# tests/unit/test_version.py keeps it equal to pyproject.toml's.
@click.version_option(version=__version__)
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
    """Operate a coord cluster.

    The options below may also follow the command (`coordctl kv get config/ --prefix
    -o json`), and win there. Exit codes: 0 ok, 1 error, 2 usage, 3 invalid argument
    or configuration, 4 cluster unavailable, 5 not found, 6 refused by the cluster's
    state (README: "Exit codes").
    """
    ctx.obj = Ctx(
        endpoints, output, _check_timeout(timeout),
        token=token, ca_file=cacert, cert_file=cert, key_file=key, server_name=server_name,
    )  # fmt: skip
    ctx.call_on_close(ctx.obj.close)


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
        role = role_name(st.role)
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
        raise CLIError(f"no endpoint answered:\n{reasons}", EXIT_UNAVAILABLE)


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
    type=click.IntRange(min=0),
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
            f"compare-and-set failed: {key!r} is at mod revision {resp.kv.mod_revision}",
            EXIT_REFUSED,
            "compare_failed",
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
        raise CLIError(f"key {key!r} not found", EXIT_NOT_FOUND)
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
@click.option(
    "--expect-rev",
    type=click.IntRange(min=0),
    default=None,
    help="Compare-and-delete: only if the key's mod revision is this.",
)
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
        raise CLIError(f"compare-and-delete failed for {key!r}", EXIT_REFUSED, "compare_failed")
