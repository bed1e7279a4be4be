"""coordctl backups: ``snapshot save``/``snapshot status`` and ``backup diff``.

A file is written to a temporary file of its own as it arrives, verified (checksum, header,
body), then made durable and renamed into place (fsync, rename, fsync of the
directory): a backup file that exists is complete and verified. Restoring one is
``coord restore`` (on the nodes).
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

import click

from coord.cli.ctl import Ctx, handles_errors, main, pass_ctx
from coord.cli.output import EXIT_CONFIG, CLIError, emit
from coord.raft.fsutil import commit_file
from coord.state import backupfile

F = TypeVar("F", bound=Callable[..., Any])

_FIELDS = [
    ("kind", "KIND"),
    ("cluster_id", "CLUSTER"),
    ("revision", "REVISION"),
    ("base_revision", "BASE REVISION"),
    ("raft_term", "RAFT TERM"),
    ("created", "TIME"),
    ("keys", "KEYS"),
    ("sessions", "SESSIONS"),
    ("groups", "GROUPS"),
    ("members", "MEMBERS"),
    ("masters", "MASTERS"),
    ("events", "EVENTS"),
    ("size_bytes", "SIZE"),
    ("sha256", "SHA256"),
    ("format_version", "FORMAT"),
    ("coord_version", "COORD VERSION"),
    ("node_id", "TAKEN ON"),
]


def refuses_bad_files(fn: F) -> F:
    """A backup file that cannot be used: its message, exit code EXIT_CONFIG."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except backupfile.BackupError as e:
            raise CLIError(e.message, EXIT_CONFIG) from None

    return run  # type: ignore[return-value]


def _show(ctx_output: str, info: dict[str, Any]) -> None:
    rows = [
        [label, "-" if info[key] is None else info[key]] for key, label in _FIELDS if key in info
    ]
    if "path" in info:
        rows.insert(0, ["FILE", info["path"]])
    emit(ctx_output, info, ["FIELD", "VALUE"], rows)


def _save(path: str, download: Callable[[BinaryIO], bytes], what: str) -> dict[str, Any]:
    """Download a backup file into a temporary file beside ``path`` as it arrives
    (``download(file)`` gives back the whole file's bytes), verify it, then make it
    ``path`` durably (mode 0600, as etcdctl's snapshots). A file that does not verify,
    or a failed download, leaves nothing behind."""
    try:  # a name of its own: another save to the same path may be writing meanwhile
        fd, tmp = tempfile.mkstemp(
            prefix=os.path.basename(path) + ".", suffix=".tmp", dir=os.path.dirname(path) or "."
        )
    except OSError as e:
        raise CLIError(f"cannot write {path}: {e.strerror}") from None
    committed = False
    try:
        with os.fdopen(fd, "wb") as f:
            data = download(f)
            b = backupfile.decode(data, what)
            f.flush()
            os.fsync(f.fileno())
        commit_file(tmp, path)
        committed = True
    except OSError as e:
        raise CLIError(f"cannot write {path}: {e.strerror}") from None
    finally:
        if not committed:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return {"path": os.path.abspath(path), **backupfile.summary(b)}


@main.group()
def snapshot() -> None:
    """Full backups: a consistent snapshot of a live cluster, and checking a file."""


@snapshot.command("save")
@click.argument("path", type=click.Path(dir_okay=False))
@pass_ctx
@handles_errors
@refuses_bad_files
def snapshot_save(ctx: Ctx, path: str) -> None:
    """Save a snapshot of the cluster's state to PATH while it serves.

    Taken at a linearizable point: every write acknowledged before the command
    started is in it. Verified, then written atomically.
    """

    def download(f: BinaryIO) -> bytes:
        return ctx.client.snapshot(copy_to=f)[1]

    _show(ctx.output, _save(path, download, "the snapshot received"))


@snapshot.command("status")
@click.argument("path", type=click.Path(dir_okay=False))
@pass_ctx
@handles_errors
@refuses_bad_files
def snapshot_status(ctx: Ctx, path: str) -> None:
    """Verify a backup file (snapshot or diff) and summarise it."""
    info = backupfile.summary(backupfile.read(path))
    _show(ctx.output, {"path": os.path.abspath(path), **info})


@main.group()
def backup() -> None:
    """Differential backups: the changes since a snapshot (or since the last diff)."""


@backup.command("diff")
@click.option(
    "--since",
    "since_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The snapshot, or the last diff, this diff follows.",
)
@click.argument("out", type=click.Path(dir_okay=False))
@pass_ctx
@handles_errors
@refuses_bad_files
def backup_diff(ctx: Ctx, since_path: str, out: str) -> None:
    """Save the changes after the --since file's revision, up to now, to OUT.

    Restore with ``coord restore --snapshot SNAPSHOT --diff OUT`` (diffs in the order
    they were taken). If the cluster no longer holds those changes (its event log
    was compacted past them), take a full snapshot instead.
    """
    base = backupfile.read(since_path)

    def download(f: BinaryIO) -> bytes:
        return ctx.client.diff(base.header.revision, base.header.cluster_id, copy_to=f)[1]

    _show(ctx.output, _save(out, download, "the diff received"))
