"""Cold restore: a node's data dir for a *new* cluster, built from backup files.

``coord restore --snapshot FILE [--diff FILE ...]`` with the flags ``coord serve``
will get (same node id, peers, token) verifies every file, replays the diffs on
the snapshot (``coord.state.replay``), and writes into an empty data dir:

- ``raft.dump``: the rebuilt state with the new cluster id and members, as the
  Raft snapshot pysyncobj loads at start; the journal stays empty. Its two log
  entries are no-ops at indices 2 and 3 of term 0, the same on every node
  restored from the same files, so those nodes hold identical logs and elect a
  leader among themselves. Index 2, not 1: a blank node's log starts with a no-op
  at index 1 of term 0, which would match and let a leader replicate later
  entries onto an empty state (from index 2 up, pysyncobj sends such a node the
  snapshot). Term 0: pysyncobj takes the current term from the empty journal,
  and a log entry of a later term would be ahead of it.
- ``coord.id``: the identity, written last. ``coord serve`` refuses a data dir
  with files but no identity, so a restore that died halfway never starts.

The state keeps its revision, key-value records, sessions, groups, event log
and dedupe table; its ``last_term`` restarts at 0 with the new cluster's terms.
Sessions need nothing here: a new leader restarts every session's deadline at
``now + TTL`` (``coord.server.duties.leases``), so a restored session is never treated
as already expired, and expires one TTL after that if nobody keeps it alive.

Refused, before anything is written: a data dir that is not empty, and a new
cluster id equal to the backup's (restored nodes must never mix with the old
cluster's nodes: choose a new ``--cluster-token``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from pysyncobj.syncobj import _COMMAND_TYPE

from coord import __version__
from coord.config import NodeConfig
from coord.errors import FailedPrecondition
from coord.raft import datadir, membership
from coord.raft.datadir import DataDirError
from coord.raft.fsutil import fsync_dir
from coord.raft.membership import NodeAddress
from coord.raft.node import DUMP_FILE
from coord.raft.snapshotfile import write_dump
from coord.state import backupfile, replay
from coord.state.backupfile import BackupError
from coord.state.snapshot_format import decode_snapshot, encode_snapshot

_NOOP = bytes([_COMMAND_TYPE.NO_OP])
PREV_ENTRY = (_NOOP, 2, 0)
LAST_ENTRY = (_NOOP, 3, 0)
_IGNORED = {"lost+found"}


@dataclass(frozen=True)
class Restored:
    """What a restore wrote."""

    data_dir: str
    cluster_id: str
    backup_cluster_id: str
    revision: int
    keys: int
    sessions: int
    groups: int
    dump_bytes: int


def restore(cfg: NodeConfig, snapshot_path: str, diff_paths: Sequence[str] = ()) -> Restored:
    """Build ``cfg.data_dir`` from the backup files. Raises BackupError (a file is
    unusable), DataDirError (the data dir is not empty) or FailedPrecondition (the
    new cluster id is the backup's); nothing is written then."""
    full = backupfile.read(snapshot_path)
    backupfile.expect_kind(full, backupfile.FULL, snapshot_path)
    diffs = [backupfile.read(p) for p in diff_paths]
    # Without diffs the decoded snapshot is the state: no need to build a StateMachine.
    snap = decode_snapshot(replay.rebuild(full, diffs).snapshot()) if diffs else full.state
    assert snap is not None
    if not snap.cluster_id:
        raise BackupError(f"{snapshot_path} holds no cluster id: it predates the bootstrap")
    old_id = snap.cluster_id
    if cfg.cluster_id == old_id:
        raise FailedPrecondition(
            f"the restored cluster would get the backup's cluster id {old_id}: restored "
            "nodes must never mix with the old cluster's; choose a new --cluster-token"
        )
    _check_empty(cfg.data_dir)
    snap.cluster_id = cfg.cluster_id
    snap.node_ids[:] = sorted(p.id for p in cfg.peers)
    snap.last_term = 0
    state = encode_snapshot(snap)

    os.makedirs(cfg.data_dir, mode=0o700, exist_ok=True)
    dump_path = os.path.join(cfg.data_dir, DUMP_FILE)
    members = {p.id: NodeAddress(p.raft_address, p.api_address) for p in cfg.peers}
    write_dump(
        dump_path + ".tmp",
        state,
        LAST_ENTRY,
        PREV_ENTRY,
        list(snap.node_ids),
        fsync=cfg.fsync,
        members=membership.to_json(members),
    )
    os.replace(dump_path + ".tmp", dump_path)
    if cfg.fsync:
        fsync_dir(cfg.data_dir)
    _write_identity(cfg, old_id)
    return Restored(
        data_dir=cfg.data_dir,
        cluster_id=cfg.cluster_id,
        backup_cluster_id=old_id,
        revision=snap.revision,
        keys=len(snap.kvs),
        sessions=len(snap.sessions),
        groups=len(snap.groups),
        dump_bytes=os.path.getsize(dump_path),
    )


def _check_empty(path: str) -> None:
    try:
        entries = set(os.listdir(path)) - _IGNORED
    except FileNotFoundError:
        return
    except OSError as e:
        raise DataDirError(f"cannot use data dir {path}: {e.strerror}") from e
    if entries:
        raise DataDirError(
            f"data dir {path} is not empty ({', '.join(sorted(entries)[:5])}): a restore "
            "builds a new node; point --data-dir at an empty or missing directory"
        )


def _write_identity(cfg: NodeConfig, restored_from: str) -> None:
    """The identity ``coord.raft.datadir.prepare`` checks, plus where the data came from."""
    datadir.write_identity(
        cfg, created_by=f"coord {__version__} restore", restored_from_cluster=restored_from
    )
