"""Backup files of a node's applied state: a full snapshot, or a diff since a revision.

A backup is captured under the apply lock and encoded outside it.
``StateMachine.capture()`` copies only what changes in place (sessions, groups) and
shares the immutable records, so the lock is held for milliseconds even at 100k keys
and the node keeps applying while the file is built (callers run these functions in a
worker thread). The Snapshot and Diff RPCs (coord.server.api.maintenance) and the
leader's scheduled backups (coord.server.duties.backups) both use them; the caller
takes the read barrier that makes the point linearizable.
"""

from __future__ import annotations

from coord import errors
from coord.raft.node import RaftNode
from coord.state import backupfile, replay
from coord.state.machine import StateCapture, StateMachine
from coord.v1 import maintenance_pb2


def full_backup(raft: RaftNode, node_id: str, signed: bool = True) -> tuple[list[bytes], int]:
    """A full backup file of this node's state now, as pieces whose concatenation it
    is (``backupfile.encode_parts``; ``signed=False``: without its closing checksum),
    and its revision. Blocking (run it in a worker thread): takes the apply lock
    briefly, then encodes outside it."""

    def capture(s: StateMachine) -> tuple[StateCapture, int]:
        _check_bootstrapped(s)
        return s.capture(), raft.view.term

    cap, term = raft.read(capture)
    head = backupfile.header(
        backupfile.FULL,
        cluster_id=cap.cluster_id,
        revision=cap.revision,
        raft_term=term,
        node_id=node_id,
    )
    return backupfile.encode_parts(head, cap.encode_parts(), signed), cap.revision


def diff_backup(
    raft: RaftNode, node_id: str, since_revision: int, cluster_id: str = "", signed: bool = True
) -> tuple[list[bytes], int]:
    """A diff backup file (as pieces, like full_backup's): this node's changes after
    ``since_revision``, and its revision. Refuses another cluster's base; OutOfRange
    once those changes were compacted (see ``coord.state.replay.capture_diff``).
    Blocking, like full_backup."""

    def capture(s: StateMachine) -> tuple[maintenance_pb2.BackupDiff, str, int, int]:
        _check_bootstrapped(s)
        if cluster_id and cluster_id != s.cluster_id:
            raise errors.FailedPrecondition(
                f"the base backup is of cluster {cluster_id}, this is cluster {s.cluster_id}: "
                "take the diff from the cluster the snapshot came from, or take a full snapshot"
            )
        return replay.capture_diff(s, since_revision), s.cluster_id, s.revision, raft.view.term

    diff, cid, revision, term = raft.read(capture)
    head = backupfile.header(
        backupfile.DIFF,
        cluster_id=cid,
        revision=revision,
        base_revision=since_revision,
        raft_term=term,
        node_id=node_id,
    )
    body = [diff.SerializeToString(deterministic=True)]
    return backupfile.encode_parts(head, body, signed), revision


def _check_bootstrapped(s: StateMachine) -> None:
    if not s.cluster_id:
        raise errors.Unavailable("the cluster has not bootstrapped yet: retry shortly")
