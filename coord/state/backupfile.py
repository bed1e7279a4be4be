"""Backup files: one full snapshot or one diff, self-describing and checksummed.

Format (version 1)::

    magic "COORDBAK" | u32 format version | u32 header length | header
    | u64 body length | body | sha256 of everything before it

The header is a ``BackupHeader`` (coord/v1/maintenance.proto): kind, cluster id,
revision, base revision (diffs), Raft term, time, coord version, node. A full
backup's body is ``StateMachine.snapshot()`` (itself versioned and checksummed);
a diff's body is a ``BackupDiff``: the events (base, revision] and what else
replaying them needs (``coord.state.replay``).

The format version sits right after the magic, so a file of another version is
named as such before anything else is decoded, and nothing in a file is trusted
before its checksum matched. Pure: bytes in, bytes out; :func:`read` is the only
function that touches a file.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from coord import __version__
from coord.state.snapshot_format import SnapshotError, decode_snapshot
from coord.v1 import maintenance_pb2, raft_pb2

MAGIC = b"COORDBAK"
FORMAT_VERSION = 1
FULL = maintenance_pb2.BACKUP_KIND_FULL
DIFF = maintenance_pb2.BACKUP_KIND_DIFF
KIND_NAMES = {FULL: "full", DIFF: "diff"}

_PREFIX = struct.Struct("<8sII")  # magic, format version, header length
_U64 = struct.Struct("<Q")
DIGEST_BYTES = 32  # the closing sha256


class BackupError(Exception):
    """A backup file cannot be used: corrupt, truncated, of another format version,
    or not the kind (or the place in a chain) it was given for. Like the other file
    format errors (SnapshotError, DumpError) it is not a CoordError: the commands that
    read backups turn it into their refusal."""

    def __init__(self, message: str) -> None:
        if not message.startswith("coord: "):
            message = "coord: " + message
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Backup:
    """A verified backup file. ``state`` is set for a full backup, ``diff`` for a diff."""

    header: maintenance_pb2.BackupHeader
    body: bytes | memoryview  # of the file's bytes (not a copy)
    size: int
    sha256: str
    state: raft_pb2.StateSnapshot | None = None
    diff: maintenance_pb2.BackupDiff | None = None

    @property
    def kind(self) -> str:
        return KIND_NAMES.get(self.header.kind, "unknown")


# -- writing -------------------------------------------------------------------


def encode(header: maintenance_pb2.BackupHeader, body: bytes) -> bytes:
    """A complete backup file for ``header`` and ``body``."""
    return b"".join(encode_parts(header, [body]))


def encode_parts(
    header: maintenance_pb2.BackupHeader, body: Sequence[bytes], signed: bool = True
) -> list[bytes]:
    """:func:`encode` of the concatenation of ``body`` as pieces whose concatenation is
    the file: a 20 MB snapshot is streamed or written without being copied into one.
    ``signed=False``: without the closing checksum, for a caller that computes it
    (:func:`checksum`) while it sends the rest."""
    head = header.SerializeToString(deterministic=True)
    parts = [
        _PREFIX.pack(MAGIC, FORMAT_VERSION, len(head)),
        head,
        _U64.pack(sum(map(len, body))),
        *body,
    ]
    if signed:
        parts.append(checksum(parts))
    return parts


def checksum(parts: Sequence[bytes]) -> bytes:
    """The file's closing checksum: the sha256 of everything before it, given as the
    pieces of :func:`encode_parts` with ``signed=False``. (hashlib lets other threads
    run while it hashes a piece: on a worker thread this overlaps sending.)"""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.digest()


def header(
    kind: int,
    *,
    cluster_id: str,
    revision: int,
    raft_term: int,
    node_id: str,
    base_revision: int = 0,
    created_unix_ms: int | None = None,
) -> maintenance_pb2.BackupHeader:
    return maintenance_pb2.BackupHeader(
        kind=kind,  # type: ignore[arg-type]
        cluster_id=cluster_id,
        revision=revision,
        base_revision=base_revision,
        raft_term=raft_term,
        created_unix_ms=int(time.time() * 1000) if created_unix_ms is None else created_unix_ms,
        coord_version=__version__,
        node_id=node_id,
    )


# -- reading -------------------------------------------------------------------


def read(path: str) -> Backup:
    """Read and verify the backup file at ``path`` (see :func:`decode`)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BackupError(f"cannot read backup file {path}: {e.strerror}") from e
    return decode(data, path)


def decode(data: bytes, name: str = "backup") -> Backup:
    """Verify and decode a backup file. Raises BackupError saying what is wrong."""
    if len(data) < _PREFIX.size:
        if MAGIC.startswith(data[:8]):
            raise BackupError(f"{name} is truncated: {len(data)} bytes, shorter than its header")
        raise BackupError(f"{name} is not a coord backup file (bad magic)")
    magic, version, head_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise BackupError(f"{name} is not a coord backup file (bad magic)")
    if version != FORMAT_VERSION:
        newer = "a newer" if version > FORMAT_VERSION else "an older"
        raise BackupError(
            f"{name} has backup format version {version} (written by {newer} coord, or the "
            f"file is corrupt); this coord reads version {FORMAT_VERSION}: use a coord release "
            "that reads it"
        )
    body_at = _PREFIX.size + head_len + _U64.size
    if len(data) < body_at:
        raise BackupError(f"{name} is truncated: {len(data)} bytes, its header needs {body_at}")
    (body_len,) = _U64.unpack_from(data, _PREFIX.size + head_len)
    expected = body_at + body_len + DIGEST_BYTES
    if len(data) != expected:
        what = "truncated or corrupt" if len(data) < expected else "corrupt (bytes after its end)"
        raise BackupError(
            f"{name} is {what}: {len(data)} bytes, its header says {expected}: copy it again "
            "or use another backup"
        )
    view = memoryview(data)  # slices of a 20 MB file without copying it
    digest = hashlib.sha256(view[:-DIGEST_BYTES]).digest()
    if digest != data[-DIGEST_BYTES:]:
        raise BackupError(
            f"{name} is corrupt: sha256 checksum mismatch; copy it again or use another backup"
        )
    try:
        head = maintenance_pb2.BackupHeader.FromString(data[_PREFIX.size : _PREFIX.size + head_len])
    except Exception as e:
        raise BackupError(f"{name}: the header does not decode ({e})") from e
    body = view[body_at : body_at + body_len]
    backup = Backup(header=head, body=body, size=len(data), sha256=digest.hex())
    if head.kind == FULL:
        return _full(backup, name)
    if head.kind == DIFF:
        return _diff(backup, name)
    raise BackupError(f"{name}: unknown backup kind {head.kind}: use a matching coord release")


def _full(b: Backup, name: str) -> Backup:
    try:
        state = decode_snapshot(b.body)
    except SnapshotError as e:
        raise BackupError(f"{name}: the state does not decode ({e})") from e
    h = b.header
    if (state.revision, state.cluster_id) != (h.revision, h.cluster_id):
        raise BackupError(
            f"{name}: the header says cluster {h.cluster_id} at revision {h.revision}, the state "
            f"is cluster {state.cluster_id} at {state.revision}: the file is inconsistent"
        )
    return Backup(b.header, b.body, b.size, b.sha256, state=state)


def _diff(b: Backup, name: str) -> Backup:
    try:
        diff = maintenance_pb2.BackupDiff.FromString(b.body)  # type: ignore[arg-type]  # any buffer
    except Exception as e:
        raise BackupError(f"{name}: the diff does not decode ({e})") from e
    h = b.header
    revs = [e.revision for e in diff.events]
    if revs != list(range(h.base_revision + 1, h.revision + 1)):
        raise BackupError(
            f"{name}: the header says revisions ({h.base_revision}, {h.revision}], the events "
            "do not cover exactly that: the file is inconsistent"
        )
    return Backup(b.header, b.body, b.size, b.sha256, diff=diff)


def expect_kind(b: Backup, kind: int, name: str) -> Backup:
    """``b`` if it is of ``kind``; else a BackupError that says how to pass it."""
    if b.header.kind == kind:
        return b
    if kind == FULL:
        raise BackupError(
            f"{name} is a diff (revisions {b.header.base_revision}..{b.header.revision}), not a "
            "full snapshot: give a full snapshot, then the diff with --diff"
        )
    raise BackupError(
        f"{name} is a full snapshot (revision {b.header.revision}), not a diff: give it as the "
        "snapshot, or give a diff here"
    )


# -- describing ----------------------------------------------------------------


def summary(b: Backup) -> dict[str, object]:
    """What ``coordctl snapshot status`` shows (counts are None for a diff)."""
    h = b.header
    out: dict[str, object] = {
        "kind": b.kind,
        "format_version": FORMAT_VERSION,
        "cluster_id": h.cluster_id,
        "revision": h.revision,
        "base_revision": h.base_revision if h.kind == DIFF else None,
        "raft_term": h.raft_term,
        "created": datetime.fromtimestamp(h.created_unix_ms / 1000, UTC).isoformat(
            timespec="milliseconds"
        ),
        "created_unix_ms": h.created_unix_ms,
        "coord_version": h.coord_version,
        "node_id": h.node_id,
        "size_bytes": b.size,
        "sha256": b.sha256,
        "keys": None,
        "sessions": None,
        "groups": None,
        "members": None,
        "masters": None,
        "events": None,
    }
    if b.state is not None:
        s = b.state
        out.update(
            keys=len(s.kvs),
            sessions=len(s.sessions),
            groups=len(s.groups),
            members=sum(len(g.members) for g in s.groups),
            masters=sum(len(g.holdings) for g in s.groups),
            events=len(s.events),
        )
    elif b.diff is not None:
        out["events"] = len(b.diff.events)
    return out
