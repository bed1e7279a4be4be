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
the node's Raft and API addresses, and its role.

**Learners** (etcd 3.4's): a member added as a learner is in the configuration
(so its role survives leader changes, restarts and snapshots like any member)
but is not a voter: it never votes or campaigns (``coord.raft.gate``), and the
leader replicates to it without counting it towards commits, elections or its
own lease (``coord.raft.node._sync_config`` keeps it out of pysyncobj's voter
set, in its read-only set). Only a ``promote`` entry, a configuration change
like add and remove (one at a time), makes it a voter, and the leader refuses
that until the learner's log is within :data:`PROMOTE_MAX_LAG` entries of its own.

:class:`Membership` holds the configuration in use; the pure functions above it
decode entries and check changes.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Protocol

from coord import errors
from coord.config import MAX_MEMBERS, MAX_VOTERS
from coord.raft.syncobj_adapter import REQUEST_DENIED, SUCCESS, SyncObjAdapter, error_for

logger = logging.getLogger(__name__)

MEMBERSHIP_TYPE = 2  # pysyncobj's _COMMAND_TYPE.MEMBERSHIP
_TAG = bytes([MEMBERSHIP_TYPE])
ADD, REMOVE, PROMOTE = "add", "rem", "pro"

# A learner is promoted only when its log is at most this many entries behind the
# leader's: its first votes and acknowledgements then come within a few batches, so
# the quorum it joins does not wait on its catch-up (etcd: 90% of the leader's log).
PROMOTE_MAX_LAG = 1000


@dataclass(frozen=True)
class NodeAddress:
    """A member of the configuration: its addresses and its role."""

    raft: str
    api: str
    # A learner receives the log but never votes or counts towards a commit.
    learner: bool = False
    # The leader promotes this learner by itself once it is caught up.
    auto_promote: bool = False


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
    payload = json.dumps(_address_json(change.address)) if change.address is not None else ""
    return _TAG + pickle.dumps([change.op, change.node_id, payload], protocol=4)


def _address_json(a: NodeAddress) -> dict[str, object]:
    out: dict[str, object] = {"raft": a.raft, "api": a.api}
    if a.learner:  # a voter's entry stays as it was before learners existed
        out["learner"] = True
    if a.auto_promote:
        out["auto_promote"] = True
    return out


def _address_from_json(raw: Mapping[str, object]) -> NodeAddress:
    return NodeAddress(
        raft=str(raw["raft"]),
        api=str(raw["api"]),
        learner=raw.get("learner") is True,
        auto_promote=raw.get("auto_promote") is True,
    )


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
        address = _address_from_json(json.loads(req[2]))
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
        elif change.op == PROMOTE and change.node_id in out:
            out[change.node_id] = replace(out[change.node_id], learner=False, auto_promote=False)
    return out


def voters(config: Config) -> set[str]:
    """The members that vote and count towards commits."""
    return {nid for nid, a in config.items() if not a.learner}


def learners(config: Config) -> set[str]:
    return {nid for nid, a in config.items() if a.learner}


def check_change(config: Config, change: Change, self_id: str) -> str | None:
    """Why ``change`` may not be proposed on ``config`` (None if it may)."""
    if change.op == ADD:
        if change.address is None:
            return "a node to add needs its raft and api addresses"
        if change.node_id in config:
            if config[change.node_id].learner and not change.address.learner:
                return (
                    f"node {change.node_id!r} is already a member, a learner: promote it "
                    f"(coordctl node promote {change.node_id})"
                )
            return f"node {change.node_id!r} is already a member"
        used = {a for n in config.values() for a in (n.raft, n.api)}
        clash = sorted({change.address.raft, change.address.api} & used)
        if clash:
            return f"address {clash[0]} is already used by a member"
        if len(config) >= MAX_MEMBERS:
            return f"the cluster already has {MAX_MEMBERS} members, the most coord supports"
        if not change.address.learner and len(voters(config)) >= MAX_VOTERS:
            return (
                f"the cluster already has {MAX_VOTERS} members that vote, the most coord supports"
            )
        return None
    if change.op == REMOVE:
        if change.node_id not in config:
            return f"node {change.node_id!r} is not a member (members: {sorted(config)})"
        if change.node_id == self_id:
            return (
                f"node {change.node_id!r} is the leader: transfer leadership first "
                "(coordctl leader transfer), then remove it"
            )
        if change.node_id in voters(config) and len(voters(config)) <= 1:
            return "cannot remove the last voting member"
        return None
    if change.op == PROMOTE:
        if change.node_id not in config:
            return f"node {change.node_id!r} is not a member (members: {sorted(config)})"
        if not config[change.node_id].learner:
            return f"node {change.node_id!r} is already a voting member"
        if len(voters(config)) >= MAX_VOTERS:
            return (
                f"the cluster already has {MAX_VOTERS} members that vote, the most coord supports"
            )
        return None
    return f"unknown membership change {change.op!r}"


def check_promotion(node_id: str, lag: int | None, connected: bool, bound: int) -> str | None:
    """Why learner ``node_id`` may not be promoted yet (None if it may): it must be
    connected to the leader, its log at most ``bound`` entries behind the leader's
    (``lag``: the leader's last index minus the learner's match index)."""
    if not connected or lag is None:
        return (
            f"{node_id} is not connected to the leader: start it (or check its links), "
            "or watch `coordctl node ls`"
        )
    if lag > bound:
        return (
            f"{node_id} is {lag:,} entries behind the leader (bound: {bound:,}): wait, "
            "or watch `coordctl node ls`"
        )
    return None


def check_quorum_after(config: Config, change: Change, active: set[str]) -> str | None:
    """Why ``change`` would leave the cluster unable to commit (None if it would not):
    etcd's strict reconfiguration check. ``active`` holds the members the leader hears
    from (itself included). A configuration commits with a majority of its members; an
    added node counts as not up yet (it has to start and catch up first). Learners are
    no part of any quorum: adding or removing one changes none; promoting one counts
    it as up when the leader hears it (it must be caught up to be promoted)."""
    voting = voters(config)
    up = active & voting
    if change.op == ADD:
        if change.address is not None and change.address.learner:
            return None
        if len(voting) == 1 and up:
            return None  # 1 -> 2, the way to grow a single node (restored from backup, say)
        size = len(voting) + 1
    elif change.op == REMOVE:
        if change.node_id not in voting:
            return None
        size = len(voting) - 1
        up.discard(change.node_id)
    elif change.op == PROMOTE:
        size = len(voting) + 1
        if change.node_id in active:
            up.add(change.node_id)
    else:
        return None
    need = size // 2 + 1
    if len(up) >= need:
        return None
    down = sorted(voting - active)
    what = {ADD: "adding", REMOVE: "removing", PROMOTE: "promoting"}[change.op]
    what = f"{what} {change.node_id!r}"
    return (
        f"{what} would leave {size} members of which {need} must be up to commit anything, "
        f"and only {len(up)} would be ({', '.join(down)} not connected): bring "
        f"{'them' if len(down) > 1 else 'it'} back, or remove "
        f"{'them' if len(down) > 1 else 'it'} first"
    )


def dump_voters(config: Config) -> list[str]:
    """What a dump records as its node ids: the voters. The dump's members keep
    addresses only, so a learner's role survives compaction as its absence here."""
    return sorted(voters(config))


def to_json(config: Config) -> dict[str, dict[str, object]]:
    """A dump's members: addresses, and a learner's role flags (its voters are also
    :func:`dump_voters`, which is what a dump from before auto_promote relies on)."""
    return {nid: _address_json(a) for nid, a in sorted(config.items())}


def from_json(raw: object) -> dict[str, NodeAddress]:
    if not isinstance(raw, dict):
        raise ValueError(f"members must be an object, got {type(raw).__name__}")
    return {str(k): _address_from_json(v) for k, v in raw.items()}


# -- the configuration in use ---------------------------------------------------------


class ConfigLog(Protocol):
    """What :class:`Membership` reads of the journal (coord.raft.journal.DurableJournal)."""

    def config_entries(self) -> list[tuple[int, bytes]]: ...


class Membership:
    """The configuration in use: the base plus the journal's configuration entries
    after it (see the module's docstring), and the dial route of every member.

    Threads: the tick thread changes it; any thread may read :meth:`members` and
    :meth:`api_address` (the configuration is replaced, never changed in place).
    """

    def __init__(
        self,
        me: str,
        initial: Mapping[str, NodeAddress],
        journal: ConfigLog,
        bind_raft: str,
        route_overrides: Mapping[str, str],
    ) -> None:
        """``initial``: the bootstrap peers; ``route_overrides``: node id -> address to
        dial instead of the member's own (chaos proxies)."""
        self.me = me
        self.initial: dict[str, NodeAddress] = dict(initial)
        self.base: dict[str, NodeAddress] = dict(initial)
        self.base_idx = 0
        self._journal = journal
        self._bind_raft = bind_raft
        self._overrides = route_overrides
        self.config: dict[str, NodeAddress] = dict(self.initial)
        # One route table for every node object (coord.raft.transport.RoutedNode):
        # id -> dial address. Updated in place: node objects hold it.
        self.routes: dict[str, str] = {}
        self._removed_by_peer = False

    def set_base(
        self, members: dict[str, dict[str, object]] | None, node_ids: tuple[str, ...], idx: int
    ) -> None:
        """A dump at ``idx`` was loaded: its configuration is the base.

        The dump's ``node_ids`` are its voters (:func:`dump_voters`): a member not
        among them is a learner. (A dump from before learners lists every member.)"""
        if members is not None:
            base = from_json(members)
            listed = set(node_ids)
            if listed:
                base = {
                    nid: a if a.learner or nid in listed else replace(a, learner=True)
                    for nid, a in base.items()
                }
        else:  # a dump from before membership changes: the bootstrap members
            base = {nid: self.initial[nid] for nid in node_ids if nid in self.initial}
        if base:
            self.base, self.base_idx = base, idx

    def at(self, idx: int) -> Config:
        """The configuration at log index ``idx`` (``idx`` at or after the base)."""
        entries = [e for e in self._journal.config_entries() if e[0] <= idx]
        return apply_changes(self.base, entries, self.base_idx)

    def fold(self, at: Config, idx: int) -> None:
        """A snapshot at ``idx`` with configuration ``at`` was written: entries up to
        ``idx`` may now be compacted away, so the base moves there."""
        if idx >= self.base_idx:
            self.base, self.base_idx = dict(at), idx

    def recompute(self, log_change: bool = True) -> dict[str, NodeAddress]:
        """Recompute the configuration from the log (and the routes); returns it."""
        config = dict(apply_changes(self.base, self._journal.config_entries(), self.base_idx))
        if log_change and config != self.config:
            logger.info(
                "cluster configuration: %s", ", ".join(f"{k}={v.raft}" for k, v in config.items())
            )
        self.config = config
        for nid, addr in config.items():
            self.routes[nid] = self._overrides.get(nid, addr.raft)
        self.routes[self.me] = self._bind_raft
        return config

    def members(self) -> dict[str, NodeAddress]:
        """The latest configuration: node id -> addresses."""
        return dict(self.config)

    def voters(self) -> set[str]:
        """The voting members of the latest configuration."""
        return voters(self.config)

    def is_voter(self, node_id: str) -> bool:
        addr = self.config.get(node_id)
        return addr is not None and not addr.learner

    def api_address(self, node_id: str) -> str:
        addr = self.config.get(node_id) or self.initial.get(node_id)
        return addr.api if addr is not None else ""

    # -- one change at a time ---------------------------------------------------------

    def pending_change(self, commit_index: int) -> int | None:
        """The index of a configuration entry not committed yet, if any."""
        entries = self._journal.config_entries()
        return entries[-1][0] if entries and entries[-1][0] > commit_index else None

    def check_no_pending_change(self, commit_index: int) -> None:
        pending = self.pending_change(commit_index)
        if pending is not None:
            raise errors.FailedPrecondition(
                f"another membership change (log index {pending}) has not committed yet: "
                "one change at a time; wait for it (is a majority of the new configuration "
                "up?) and retry"
            )

    def allows(self, request: object, commit_index: int) -> bool:
        """pysyncobj's leader asks before appending a configuration entry (tick thread)."""
        try:
            change = change_from_request(request)
        except (ValueError, KeyError, TypeError):
            return False
        if change is None or self.pending_change(commit_index) is not None:
            return False
        return check_change(self.config, change, self.me) is None

    def propose(self, change: Change, raft: SyncObjAdapter) -> Future[None]:
        """Append ``change`` through pysyncobj (on the leader); resolves once it
        committed. One change at a time: refused while another is uncommitted."""
        fut: Future[None] = Future()
        try:
            self.check_no_pending_change(raft.commit_index)
        except errors.FailedPrecondition as e:
            fut.set_exception(e)
            return fut
        reason = check_change(self.config, change, self.me)
        if reason is not None:
            fut.set_exception(errors.FailedPrecondition(reason))
            return fut

        def done(result: object, err: int) -> None:
            if not fut.set_running_or_notify_cancel():
                return
            if err == SUCCESS:
                fut.set_result(None)
            elif err == REQUEST_DENIED:
                why = check_change(self.config, change, self.me)
                fut.set_exception(
                    errors.FailedPrecondition(
                        why
                        or "refused: another membership change is in progress, or the "
                        "leader has not committed an entry of its term yet; retry"
                    )
                )
            else:
                fut.set_exception(error_for(err))

        raft.append_config_entry(encode_change(change), done)
        return fut

    # -- this node's removal -----------------------------------------------------------

    def mark_removed(self, why: str) -> None:
        """A leader's committed configuration no longer has this node (the leader stops
        replicating to a removed node at once, so it may never see its own removal)."""
        if not self._removed_by_peer:
            logger.warning("removed from the cluster: %s", why)
        self._removed_by_peer = True

    def removal_committed(self, commit_index: int) -> bool:
        if self._removed_by_peer:
            return True
        # Only an explicit, committed removal counts: a node that joins gets a leader's
        # snapshot from before its addition first, and is not in that configuration.
        if self.me in self.config:
            return False
        for idx, command in self._journal.config_entries():
            change = decode_change(command)
            if change is not None and change.op == REMOVE and change.node_id == self.me:
                return idx <= commit_index
        return False
