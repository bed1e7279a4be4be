"""What a Raft node believes right now (:class:`View`), and its roles."""

from __future__ import annotations

from dataclasses import dataclass

from coord.raft.syncobj_adapter import ROLE_CANDIDATE, ROLE_FOLLOWER, ROLE_LEADER

__all__ = ["ROLE_CANDIDATE", "ROLE_FOLLOWER", "ROLE_LEADER", "View"]


@dataclass(frozen=True)
class View:
    """What this node believes right now; replaced atomically once per tick."""

    role: int = ROLE_FOLLOWER
    term: int = 0
    leader_id: str = ""
    commit_index: int = 0
    applied_index: int = 0
    connected: frozenset[str] = frozenset()
    has_quorum: bool = False
    log_entries: int = 0
    # Not acknowledging or voting yet: a blank data dir that has not learned the current
    # term from enough members, or not caught up with a leader's log (coord.raft.gate).
    catching_up: bool = False
    # The ids in the latest configuration (coord.raft.membership), and whether this
    # node's own removal from it has committed.
    members: frozenset[str] = frozenset()
    removed: bool = False
    # Heard from the leader within an election timeout (a leader: from a majority).
    leader_alive: bool = False
