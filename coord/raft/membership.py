"""The cluster configuration, as Raft defines it: the latest configuration entry in the log.

pysyncobj 0.3.17 has dynamic membership, but its bookkeeping is not Raft's:

- a follower rolls back configuration entries whenever it holds entries past
  ``prevLogIdx``, even when coord vetoes the truncation itself (see
  ``coord.raft.appendfix``): its configuration then disagrees with its log;
- after a restart the configuration is the constructor's peers, then the
  dump's, and entries after the dump count only once re-applied at commit: a
  restarted node can count votes in an old configuration;
- its dump records the configuration of the whole log, uncommitted changes
  included, as the configuration at the dump's index;
- "one change at a time" is never enforced (``__changeClusterIDx`` is never set);
- entries carry pickled node objects with the proposer's dial addresses.

coord keeps the configuration as a pure function of the log instead: a *base*
(the configuration at the dump's last index, or the bootstrap peers for a log
that was never compacted) plus the configuration entries in the journal after
it. The node recomputes it whenever the journal gains or loses such an entry
or a dump is loaded, so the configuration in use is always the latest one in
the log, committed or not (Raft thesis 4.1).

Entries keep pysyncobj's shape (type byte 2, then a pickled list) so that its
leader-side checks still recognise them; the third element is JSON text with
the node's Raft and API addresses.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MEMBERSHIP_TYPE = 2  # pysyncobj's _COMMAND_TYPE.MEMBERSHIP
_TAG = bytes([MEMBERSHIP_TYPE])
ADD, REMOVE = "add", "rem"


@dataclass(frozen=True)
class NodeAddress:
    raft: str
    api: str


Config = Mapping[str, NodeAddress]


@dataclass(frozen=True)
class Change:
    op: str  # ADD or REMOVE
    node_id: str
    address: NodeAddress | None = None


def is_change(command: bytes) -> bool:
    return command[:1] == _TAG


def encode_change(change: Change) -> bytes:
    """The journal entry for ``change`` (pysyncobj's framing, coord's payload)."""
    payload = (
        json.dumps({"raft": change.address.raft, "api": change.address.api})
        if change.address is not None
        else ""
    )
    return _TAG + pickle.dumps([change.op, change.node_id, payload], protocol=4)


def decode_change(command: bytes) -> Change | None:
    """The change an entry carries, or None for any other entry."""
    if not is_change(command):
        return None
    # The entry came from this cluster's own log (pysyncobj unpickles it too).
    return change_from_request(pickle.loads(command[1:]))


def change_from_request(req: object) -> Change | None:
    """The change in pysyncobj's unpickled form of an entry (``[op, id, payload]``)."""
    if not isinstance(req, list) or len(req) < 2:
        return None
    op, node_id = str(req[0]), str(req[1])
    address = None
    if len(req) >= 3 and isinstance(req[2], str) and req[2]:
        raw = json.loads(req[2])
        address = NodeAddress(raft=str(raw["raft"]), api=str(raw["api"]))
    return Change(op, node_id, address)


def apply_changes(base: Config, entries: Iterable[tuple[int, bytes]], after: int) -> Config:
    """``base`` (the configuration at index ``after``) with the changes of ``entries``
    (``(idx, command)`` in log order) whose index is above ``after``."""
    out = dict(base)
    for idx, command in entries:
        if idx <= after:
            continue
        change = decode_change(command)
        if change is None:
            continue
        if change.op == ADD and change.address is not None:
            out[change.node_id] = change.address
        elif change.op == REMOVE:
            out.pop(change.node_id, None)
    return out


def check_change(config: Config, change: Change, self_id: str) -> str | None:
    """Why ``change`` may not be proposed on ``config`` (None if it may)."""
    if change.op == ADD:
        if change.address is None:
            return "a node to add needs its raft and api addresses"
        if change.node_id in config:
            return f"node {change.node_id!r} is already a member"
        used = {a for n in config.values() for a in (n.raft, n.api)}
        clash = sorted({change.address.raft, change.address.api} & used)
        if clash:
            return f"address {clash[0]} is already used by a member"
        if len(config) >= 7:
            return "the cluster already has 7 members, the most coord supports"
        return None
    if change.op == REMOVE:
        if change.node_id not in config:
            return f"node {change.node_id!r} is not a member (members: {sorted(config)})"
        if change.node_id == self_id:
            return (
                f"node {change.node_id!r} is the leader: transfer leadership first "
                "(coordctl leader transfer), then remove it"
            )
        if len(config) <= 1:
            return "cannot remove the last member"
        return None
    return f"unknown membership change {change.op!r}"


def check_quorum_after(config: Config, change: Change, active: set[str]) -> str | None:
    """Why ``change`` would leave the cluster unable to commit (None if it would not):
    etcd's strict reconfiguration check. ``active`` holds the members the leader hears
    from (itself included). A configuration commits with a majority of its members; an
    added node counts as not up yet (it has to start and catch up first)."""
    up = active & set(config)
    if change.op == ADD:
        if len(config) == 1 and up:
            return None  # 1 -> 2, the way to grow a single node (restored from backup, say)
        size = len(config) + 1
    elif change.op == REMOVE:
        size = len(config) - 1
        up.discard(change.node_id)
    else:
        return None
    need = size // 2 + 1
    if len(up) >= need:
        return None
    down = sorted(set(config) - active)
    what = f"adding {change.node_id!r}" if change.op == ADD else f"removing {change.node_id!r}"
    return (
        f"{what} would leave {size} members of which {need} must be up to commit anything, "
        f"and only {len(up)} would be ({', '.join(down)} not connected): bring "
        f"{'them' if len(down) > 1 else 'it'} back, or remove "
        f"{'them' if len(down) > 1 else 'it'} first"
    )


def to_json(config: Config) -> dict[str, dict[str, str]]:
    return {nid: {"raft": a.raft, "api": a.api} for nid, a in sorted(config.items())}


def from_json(raw: object) -> dict[str, NodeAddress]:
    if not isinstance(raw, dict):
        raise ValueError(f"members must be an object, got {type(raw).__name__}")
    return {str(k): NodeAddress(raft=str(v["raft"]), api=str(v["api"])) for k, v in raw.items()}
