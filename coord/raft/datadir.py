"""One data dir per node: identity file, journal, dump.

``coord.id`` (JSON) records which cluster and node a data dir belongs to. A
node refuses to start on a data dir of another node or cluster, or on a
directory that holds files but no identity (not a coord data dir), with a
message that says what to do. A data dir without Raft history is *blank*:
such a node must not vote until it has the leader's log (see
``coord.raft.gate``).
"""

from __future__ import annotations

import json
import os
import time

from coord import __version__
from coord.config import NodeConfig
from coord.errors import FailedPrecondition
from coord.raft.fsutil import write_file_durably

IDENTITY_FILE = "coord.id"
IDENTITY_FORMAT = 1
# The rules by which this data dir's log is applied. A log replays to the same state
# only under the rules it was written with. 1: group waits (a revoked holder's wait-out,
# handover timeouts, failback holds) end at wall-clock stamps in the commands; 2: the
# leader times them on its monotonic clock and proposes Advance (docs/timing.md). An
# identity without the field means 1.
REPLICATION_RULES = 2
_IGNORED = {"lost+found"}


class DataDirError(FailedPrecondition):
    """The data dir cannot be used by this node."""


def prepare(cfg: NodeConfig) -> bool:
    """Check or create the data dir's identity. Returns True when the dir is blank
    (no Raft history: journal empty or missing, no dump)."""
    path = cfg.data_dir
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        entries = set(os.listdir(path)) - _IGNORED
    except OSError as e:
        raise DataDirError(f"cannot use data dir {path}: {e.strerror}") from e
    if IDENTITY_FILE not in entries:
        if entries:
            raise DataDirError(
                f"data dir {path} holds {sorted(entries)[:5]} but no {IDENTITY_FILE}: it is not "
                "a coord data dir; point --data-dir at an empty or coord-owned directory"
            )
        write_identity(cfg, created_by=f"coord {__version__}")
        return True
    ident = read_identity(path)
    if ident.get("node_id") != cfg.node_id:
        raise DataDirError(
            f"data dir {path} belongs to node {ident.get('node_id')!r}, not {cfg.node_id!r}: "
            "start that node on it, or give this node its own data dir"
        )
    if ident.get("cluster_id") != cfg.cluster_id:
        raise DataDirError(
            f"data dir {path} belongs to cluster {ident.get('cluster_id')!r}, but this "
            f"configuration (token and members) makes cluster {cfg.cluster_id!r}: check "
            "--cluster-token and --peer (the bootstrap members), pass --cluster-id "
            f"{ident.get('cluster_id')} if members changed since, or use an empty data dir "
            "for a new cluster"
        )
    blank = not _has_history(path)
    _check_rules(path, ident, blank, cfg.fsync)
    return blank


def _check_rules(path: str, ident: dict[str, object], blank: bool, fsync: bool) -> None:
    """A log written under older replication rules would replay to another state than
    the one its nodes built (and than a node restored from a newer snapshot): refuse
    it, saying how to move the data. A blank data dir is simply stamped."""
    rules = ident.get("replication_rules", 1)
    if rules == REPLICATION_RULES:
        return
    if not blank or not isinstance(rules, int) or rules > REPLICATION_RULES:
        raise DataDirError(
            f"data dir {path} holds a log applied under replication rules {rules}; this "
            f"coord applies rules {REPLICATION_RULES} (group waits on the leader's clock), "
            "and the log would replay differently: with the coord that wrote it, take a "
            "snapshot (coordctl snapshot save F), then build new data dirs from it with this "
            "one (coord restore F) and start the cluster on them"
        )
    ident_path = os.path.join(path, IDENTITY_FILE)
    data = json.dumps({**ident, "replication_rules": REPLICATION_RULES}, indent=1).encode()
    write_file_durably(ident_path + ".tmp", data, ident_path, fsync=fsync)


def read_identity(path: str) -> dict[str, object]:
    ident_path = os.path.join(path, IDENTITY_FILE)
    try:
        with open(ident_path, encoding="utf-8") as f:
            ident: dict[str, object] = json.load(f)
    except (OSError, ValueError) as e:
        raise DataDirError(f"{ident_path} is unreadable or corrupt ({e})") from e
    if ident.get("format") != IDENTITY_FORMAT:
        raise DataDirError(f"{ident_path}: identity format {ident.get('format')} is not supported")
    return ident


def _has_history(path: str) -> bool:
    """True if a dump exists or the journal holds an entry from some leader (term > 0)."""
    from coord.raft.journal import DurableJournal  # local: avoid opening files at import
    from coord.raft.node import DUMP_FILE, JOURNAL_FILE

    if os.path.exists(os.path.join(path, DUMP_FILE)):
        return True
    journal_path = os.path.join(path, JOURNAL_FILE)
    if not os.path.exists(journal_path):
        return False
    j = DurableJournal(journal_path, fsync=False, inspect=True)
    try:
        return any(term > 0 for _, _, term in j[:])
    finally:
        j.close()


def write_identity(cfg: NodeConfig, created_by: str, **extra: str) -> dict[str, object]:
    """Write ``cfg.data_dir``'s identity file (durably) and return what it holds: the
    format, cluster and node ids, the replication rules, when and by what it was made."""
    ident: dict[str, object] = {
        "format": IDENTITY_FORMAT,
        "cluster_id": cfg.cluster_id,
        "node_id": cfg.node_id,
        "replication_rules": REPLICATION_RULES,
        "created_unix": int(time.time()),
        "created_by": created_by,
        **extra,
    }
    path = os.path.join(cfg.data_dir, IDENTITY_FILE)
    write_file_durably(path + ".tmp", json.dumps(ident, indent=1).encode(), path, fsync=cfg.fsync)
    return ident
