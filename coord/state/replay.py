"""Differential backups: capture the changes after a revision, replay them on a state.

The event log holds one event per revision, and each event carries what changed
(``coord/state/events.py``): a put its record (its session binding included), a delete
its keys, a transaction both, a session its
record; every event of a group carries the group's slot tables after it and the
named member's record (or its absence), which the state machine attaches when it
records the event. Replaying the events (R, R2] on the state at R therefore gives
the state at R2: exactly, field by field, since the replay stores what the events
carry instead of re-deciding anything. A diff also carries the dedupe entries
remembered since R and the state's clock and term at R2, so the rebuilt state is
the replica's state, dedupe table included.

Pure: :func:`capture_diff` runs under the apply lock of a live node; the rest on a
:class:`StateMachine` that nothing else uses (a restore).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from google.protobuf.message import Message

from coord.errors import FailedPrecondition, OutOfRange
from coord.state import backupfile
from coord.state.backupfile import Backup, BackupError
from coord.state.group_table import GroupState
from coord.state.machine import StateMachine
from coord.v1 import groups_pb2, maintenance_pb2, raft_pb2

# Events of a group that are replayed from the group tables they carry; anything
# else names its own handler below.
_GROUP_CREATED, _GROUP_DELETED = "group_created", "group_deleted"
_M = TypeVar("_M", bound=Message)


# -- capture (on a live node, under the apply lock) ---------------------------------


def capture_diff(sm: StateMachine, since_revision: int) -> maintenance_pb2.BackupDiff:
    """The changes after ``since_revision`` up to ``sm.revision``. OutOfRange if the
    event log no longer holds revision ``since_revision + 1`` (take a full snapshot);
    FailedPrecondition if ``since_revision`` is ahead of this state, or an event cannot
    be replayed (recorded by a coord that did not attach what replay needs)."""
    if since_revision < 0:
        raise FailedPrecondition(f"since revision {since_revision} is negative")
    if since_revision > sm.revision:
        raise FailedPrecondition(
            f"the base is at revision {since_revision}, ahead of this cluster's "
            f"{sm.revision}: it is not from this cluster's history; take a full snapshot"
        )
    oldest = sm.events.oldest_revision
    if since_revision < sm.revision and (not len(sm.events) or since_revision + 1 < oldest):
        raise OutOfRange(
            f"the changes after revision {since_revision} were compacted from the event log "
            f"(it holds revisions {oldest}..{sm.revision}): a diff cannot start there; take a "
            "full snapshot (coordctl snapshot save)"
        )
    start = max(since_revision, oldest)  # the base's own event too, when still held
    tail = sm.events.since(start, sm.revision) if len(sm.events) and start >= 1 else []
    base = [e for e in tail if e.revision == since_revision]
    events = [e for e in tail if e.revision > since_revision]
    for e in events:
        if not replayable(e):
            raise FailedPrecondition(
                f"the {e.type} event at revision {e.revision} was recorded by an older coord "
                "without what a replay needs: a diff cannot span it; take a full snapshot"
            )
    diff = maintenance_pb2.BackupDiff(
        events=events,
        dedupe=sm.dedupe_since(since_revision),
        last_time_ms=sm.last_time_ms,
        last_term=sm.last_term,
    )
    if base:
        diff.base_event.CopyFrom(base[0])
    return diff


def replayable(e: groups_pb2.Event) -> bool:
    """Whether replay knows how to apply ``e`` exactly."""
    if e.type in _HANDLERS:
        return True
    return bool(e.group) and e.HasField("group_slots")


# -- replay (on a state nothing else uses) ------------------------------------------


def rebuild(full: Backup, diffs: Sequence[Backup] = ()) -> StateMachine:
    """The state of ``full`` with ``diffs`` applied in order; BackupError if they do not
    form a chain (kinds, clusters, each diff's base the previous file's revision)."""
    backupfile.expect_kind(full, backupfile.FULL, "the snapshot")
    sm = StateMachine()
    sm.restore(full.body)
    if not sm.cluster_id:
        raise BackupError("the snapshot holds no cluster id: it predates the cluster's bootstrap")
    prev = f"the snapshot (revision {full.header.revision})"
    for i, d in enumerate(diffs, 1):
        backupfile.expect_kind(d, backupfile.DIFF, f"diff #{i}")
        h = d.header
        if h.cluster_id != sm.cluster_id:
            raise BackupError(
                f"diff #{i} is of cluster {h.cluster_id}, {prev} of cluster {sm.cluster_id}: "
                "use diffs taken from the snapshot's cluster"
            )
        if h.base_revision != sm.revision:
            raise BackupError(
                f"diff #{i} applies to revision {h.base_revision}, but {prev} ends at revision "
                f"{sm.revision}: give the diffs in the order they were taken, each taken "
                "since the file before it"
            )
        assert d.diff is not None
        apply_diff(sm, d.diff, h.revision, f"diff #{i}")
        prev = f"diff #{i} (revision {h.revision})"
    return sm


def apply_diff(
    sm: StateMachine, diff: maintenance_pb2.BackupDiff, revision: int, name: str = "the diff"
) -> None:
    """Replay ``diff`` on ``sm`` (at the diff's base revision), ending at ``revision``."""
    if diff.HasField("base_event") and len(sm.events):
        ours = sm.events.last(1)[0]
        if ours.revision == diff.base_event.revision and ours != diff.base_event:
            raise BackupError(
                f"{name} was taken from another history than the state it is applied to (their "
                f"events at revision {ours.revision} differ): use diffs of the snapshot's cluster"
            )
    for e in diff.events:
        apply_event(sm, e)
    if sm.revision != revision:
        raise BackupError(f"{name} ends at revision {sm.revision}, its header says {revision}")
    sm.merge_dedupe(list(diff.dedupe))
    sm.last_time_ms = max(sm.last_time_ms, diff.last_time_ms)
    sm.last_term = max(sm.last_term, diff.last_term)
    sm.groups.changed()  # the pending waits are derived from the tables replaced above
    sm.groups.sessions_version = object()


def apply_event(sm: StateMachine, e: groups_pb2.Event) -> None:
    """Apply one recorded event to the state at ``e.revision - 1``."""
    if e.revision != sm.revision + 1:
        raise BackupError(
            f"event at revision {e.revision} does not follow revision {sm.revision}: the diff "
            "does not apply to this state"
        )
    handler = _HANDLERS.get(e.type)
    if handler is None and not replayable(e):
        raise BackupError(
            f"the {e.type!r} event at revision {e.revision} cannot be replayed: use the coord "
            "release that wrote the diff"
        )
    try:
        (handler or _group_event)(sm, e)
    except KeyError as missing:
        raise BackupError(
            f"the {e.type} event at revision {e.revision} names {missing}, which this state "
            "does not hold: the diff does not apply to this state"
        ) from None
    sm.revision = e.revision
    sm.last_time_ms = max(sm.last_time_ms, e.time_ms)
    sm.last_term = max(sm.last_term, e.term)
    sm.append_event(_copy(e))


def _kv_put(sm: StateMachine, e: groups_pb2.Event) -> None:
    for kv in e.kvs:
        sm.kv.store(_copy(kv))


def _kv_delete(sm: StateMachine, e: groups_pb2.Event) -> None:
    for key in e.deleted_keys:
        if sm.kv.delete(key) is None:
            raise KeyError(f"key {key!r}")


def _kv_txn(sm: StateMachine, e: groups_pb2.Event) -> None:
    """A transaction: its deletes and its puts touch different keys (coord.state.txn)."""
    _kv_delete(sm, e)
    _kv_put(sm, e)


def _session_opened(sm: StateMachine, e: groups_pb2.Event) -> None:
    sm.groups.sessions[e.session.id] = _copy(e.session)


def _session_ended(sm: StateMachine, e: groups_pb2.Event) -> None:
    del sm.groups.sessions[e.session_id]


def _loads_reported(sm: StateMachine, e: groups_pb2.Event) -> None:
    for item in e.loads:
        sm.groups.sessions[item.session_id].load = item.load


def _group_created(sm: StateMachine, e: groups_pb2.Event) -> None:
    sm.groups.groups[e.group] = GroupState(
        name=e.group, policy=_copy(e.policy), created_revision=e.revision
    )


def _group_deleted(sm: StateMachine, e: groups_pb2.Event) -> None:
    del sm.groups.groups[e.group]


def _group_event(sm: StateMachine, e: groups_pb2.Event) -> None:
    """Any other event of a group: the named member becomes the record the event
    carries (none: it is gone), and the slot tables become the event's."""
    g = sm.groups.groups[e.group]
    if e.member:
        if e.HasField("member_record"):
            g.members[e.member] = _copy(e.member_record)  # a new one goes last, as registered
        else:
            g.members.pop(e.member, None)
    slots = e.group_slots
    g.holdings = {h.slot: _copy(h) for h in slots.holdings}
    g.handovers = {ho.slot: _copy(ho) for ho in slots.handovers}
    g.vacated_cause = dict(sorted(slots.vacated_cause.items()))
    g.deleting = slots.deleting
    if slots.HasField("policy"):  # older events: the policy did not change
        g.policy = _copy(slots.policy)
    g.pause = _copy(slots.pause) if slots.HasField("pause") else None
    g.breaker_failovers = list(slots.breaker_failover_ms)
    g.scheduled = {s.id: _copy(s) for s in slots.scheduled}


def _bootstrapped(sm: StateMachine, e: groups_pb2.Event) -> None:
    raise BackupError(
        f"the diff holds the cluster's bootstrap (revision {e.revision}): take the snapshot "
        "after the cluster started"
    )


_HANDLERS: dict[str, Callable[[StateMachine, groups_pb2.Event], None]] = {
    "kv_put": _kv_put,
    "kv_delete": _kv_delete,
    "kv_txn": _kv_txn,
    "session_opened": _session_opened,
    "session_closing": _session_opened,  # the record, now closing
    "session_closed": _session_ended,
    "session_expired": _session_ended,
    "loads_reported": _loads_reported,
    _GROUP_CREATED: _group_created,
    _GROUP_DELETED: _group_deleted,
    "cluster_bootstrapped": _bootstrapped,
}


def _copy(m: _M) -> _M:
    out = type(m)()
    out.CopyFrom(m)
    return out


# -- comparing states --------------------------------------------------------------


def differences(
    a: raft_pb2.StateSnapshot,
    b: raft_pb2.StateSnapshot,
    ignore: Sequence[str] = (),
    limit: int = 20,
) -> list[str]:
    """Where two states differ, field by field (at most ``limit`` lines; [] if equal).

    ``ignore`` names top-level StateSnapshot fields to skip (e.g. ``last_time_ms``,
    which every no-op advances without a revision).
    """
    out: list[str] = []
    for field in raft_pb2.StateSnapshot.DESCRIPTOR.fields:
        name = field.name
        if name in ignore:
            continue
        x, y = getattr(a, name), getattr(b, name)
        if not field.is_repeated:
            if x != y:
                out.append(f"{name}: {x!r} != {y!r}")
            continue
        key = _KEYS.get(name)
        if key is None:
            if list(x) != list(y):
                out.append(f"{name}: {list(x)!r} != {list(y)!r}")
            continue
        out += _keyed(name, [(key(m), m) for m in x], [(key(m), m) for m in y])
    return out[:limit]


def _keyed(
    name: str, xs: list[tuple[object, Message]], ys: list[tuple[object, Message]]
) -> list[str]:
    out: list[str] = []
    left, right = dict(xs), dict(ys)
    for k in sorted(left.keys() | right.keys(), key=repr):
        if k not in right:
            out.append(f"{name}[{k!r}]: only in the first state")
        elif k not in left:
            out.append(f"{name}[{k!r}]: only in the second state")
        elif left[k] != right[k]:
            out += [f"{name}[{k!r}].{d}" for d in _fields(left[k], right[k])]
    if not out and [k for k, _ in xs] != [k for k, _ in ys]:
        out.append(f"{name}: same entries in another order")
    return out


def _fields(x: Message, y: Message) -> list[str]:
    """The differing fields of two messages of one type (recursing into messages)."""
    out = []
    for field in x.DESCRIPTOR.fields:
        u, v = getattr(x, field.name), getattr(y, field.name)
        if u == v:
            continue
        key = _KEYS.get(field.name)
        if field.message_type is not None and not field.is_repeated:
            out += [f"{field.name}.{d}" for d in _fields(u, v)]
        elif key is not None and field.is_repeated:
            out += _keyed(field.name, [(key(m), m) for m in u], [(key(m), m) for m in v])
        else:
            out.append(f"{field.name}: {_short(u)} != {_short(v)}")
    return out


def _short(v: object) -> str:
    if hasattr(v, "items"):
        v = dict(v.items())
    elif not isinstance(v, str | bytes | int | float | bool | Message):
        v = list(v)  # type: ignore[call-overload]
    text = repr(v)
    return text if len(text) <= 200 else text[:200] + "..."


# Repeated messages compared entry by entry, by these keys.
_KEYS: dict[str, Callable[[Any], object]] = {
    "kvs": lambda m: m.key,
    "dedupe": lambda m: m.request_id,
    "sessions": lambda m: m.id,
    "groups": lambda m: m.name,
    "events": lambda m: m.revision,
    "members": lambda m: m.id,
    "holdings": lambda m: m.slot,
    "handovers": lambda m: m.slot,
}
