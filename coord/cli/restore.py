"""``coord restore`` (cold restore) and the scheduled-backup flags of ``coord serve``.

``coord restore`` takes every flag ``coord serve`` takes (node id, data dir, peers,
cluster token, ...), so the node is restored with the very command line that then
starts it, plus ``--snapshot FILE`` and any number of ``--diff FILE`` (a chain,
in the order taken). See ``coord.raft.restore`` for what it writes.
"""

from __future__ import annotations

import re
from typing import Any

import click

from coord import config, errors
from coord.cli.output import EXIT_CONFIG, CLIError, emit, from_coord_error

_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
BACKUP_PARAMS = ("backup_dir", "backup_every_s", "backup_keep", "backup_full_every")


class Duration(click.ParamType[float, Any]):
    """``500ms``, ``30s``, ``15m``, ``1h30m``, ``1d``, or a number of seconds."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip()
        try:
            return float(text)
        except ValueError:
            pass
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            self.fail(f"{value!r} is not a duration like 30s, 15m, 1h30m or 500ms", param, ctx)
        return sum(float(n) * _UNIT_S[u] for n, u in parts)


def backup_options(fn: Any) -> Any:
    """The scheduled-backup flags of ``coord serve`` (config fields backup_*)."""
    options = [
        click.option(
            "--backup-dir",
            default=None,
            help="Directory where the leader writes scheduled backups (with --backup-every).",
        ),
        click.option(
            "--backup-every",
            "backup_every_s",
            type=Duration(),
            default=None,
            help="How often the leader writes a backup: 30s, 15m, 1h...",
        ),
        click.option(
            "--backup-keep",
            type=int,
            default=None,
            help="Full snapshots kept, with the diffs after them (default 3).",
        ),
        click.option(
            "--backup-full-every",
            type=int,
            default=None,
            help="A full snapshot every N backups, diffs in between (default 4).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def node_config(
    config_file: str | None, peers: tuple[str, ...], routes: tuple[str, ...], flags: dict[str, Any]
) -> config.NodeConfig:
    """A NodeConfig from ``coord serve``'s flags (defaults < YAML < env < flags)."""
    layer: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    if peers:
        layer["peers"] = [config.parse_peer(p) for p in peers]
    if routes:
        layer["raft_routes"] = dict(config.parse_route(r) for r in routes)
    return config.load(config_file, layer)


def _restore(
    snapshot: str,
    diffs: tuple[str, ...],
    config_file: str | None,
    peers: tuple[str, ...],
    routes: tuple[str, ...],
    **flags: Any,
) -> None:
    try:
        cfg = node_config(config_file, peers, routes, flags)
    except errors.CoordError as e:
        raise CLIError(e.message, EXIT_CONFIG) from None
    from coord.raft.restore import restore  # pysyncobj: only when restoring
    from coord.state.backupfile import BackupError

    try:
        done = restore(cfg, snapshot, diffs)
    except errors.CoordError as e:
        raise from_coord_error(e) from None
    except BackupError as e:
        raise CLIError(e.message, EXIT_CONFIG) from None
    header = ["NODE", "CLUSTER", "FROM CLUSTER", "REVISION", "KEYS", "SESSIONS", "GROUPS"]
    row = [
        cfg.node_id, done.cluster_id, done.backup_cluster_id, done.revision, done.keys,
        done.sessions, done.groups,
    ]  # fmt: skip
    emit("table", None, header, [row])
    click.echo(
        f"restored into {done.data_dir}: start it with `coord serve` and the same flags, "
        "and every other member restored from the same files"
    )


def restore_command(serve: click.Command) -> click.Command:
    """``coord restore``: ``serve``'s flags (its backup schedule aside) and the files."""
    params: list[click.Parameter] = [
        click.Option(
            ["--snapshot"],
            required=True,
            type=click.Path(dir_okay=False),
            help="The full snapshot to restore (coordctl snapshot save, or a scheduled one).",
        ),
        click.Option(
            ["--diff", "diffs"],
            multiple=True,
            type=click.Path(dir_okay=False),
            help="A diff to apply after it; repeat, in the order they were taken.",
        ),
        *(p for p in serve.params if p.name not in BACKUP_PARAMS),
    ]
    return click.Command(
        "restore",
        callback=_restore,
        params=params,
        help="Build this node's data dir for a NEW cluster from backup files (cold restore). "
        "Give the flags `coord serve` will get, with a new --cluster-token; restore every "
        "member from the same files, then start them with `coord serve`.",
    )
