"""StateMachine: the deterministic core every replica runs.

Threading: ``apply``/``restore`` are called by the Raft tick thread only;
readers on other threads must hold the lock the Raft layer provides around
``apply`` (see ``coord.raft.node``). This module takes no locks itself.

Invariants:
- ``apply`` never raises; every failure is a ``CommandResult`` with an
  ``error_reason`` (an exception inside a pysyncobj replicated method wedges
  the whole cluster).
- ``revision`` grows by exactly one per state change; a compare-and-set miss
  or a retried request changes nothing.
- A command whose ``request_id`` is among the last ``DEDUPE_ENTRIES`` applied
  returns the first result and changes nothing.
- ``restore(snapshot())`` yields an equal state.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from coord.errors import CoordError, FailedPrecondition, Internal, InvalidArgument, NotFound
from coord.state import limits, txn
from coord.state.events import EventLog
from coord.state.group_commands import GROUP_COMMANDS
from coord.state.group_table import GroupState
from coord.state.groups import Groups
from coord.state.kv import KVStore, validate_key, validate_value
from coord.state.ledger import Ledger
from coord.state.request_ids import check_request_id
from coord.state.snapshot_format import (
    DEDUPE_TAG,
    EVENTS_TAG,
    HEADER,
    KVS_TAG,
    RECORDS_PER_CHUNK,
    SNAPSHOT_FORMAT_VERSION,
    SNAPSHOT_MAGIC,
    decode_snapshot,
    dedupe_records,
    encoded_chunks,
)
from coord.v1 import availability_pb2, groups_pb2, kv_pb2, raft_pb2

logger = logging.getLogger(__name__)

# Consistency check points kept per replica (each shares the state's immutable records).
CHECK_POINTS_KEPT = 4
MAX_CHECK_ID_CHARS = 64


class StateMachine:
    """KV store + dedupe table + cluster identity, driven by serialized Commands."""

    def __init__(self) -> None:
        self.cluster_id = ""
        self.node_ids: list[str] = []
        self.revision = 0
        self.last_time_ms = 0
        self.last_term = 0
        self.kv = KVStore()
        self.events = EventLog()
        self.ledger = Ledger()  # availability, fed by the events
        # While a session expires: the expiry time minus its TTL (Event.lost_since_ms).
        self._expiring_since_ms = 0
        self.groups = Groups(_Emitter(self), self._drop_session_keys)
        # request id -> (serialized result, fingerprint). Bytes, not messages: 20,000
        # results replaced at the write rate were most of the objects Python's cyclic
        # collector walked, and its full collections (30-225 ms under a write load)
        # stopped the Raft tick thread: late heartbeats, elections with short timeouts.
        self._dedupe: OrderedDict[str, tuple[bytes, bytes]] = OrderedDict()
        # Consistency check points (Digest commands): id -> this replica's state there,
        # to be hashed off the apply thread and compared with the other replicas'. Not
        # replicated state (never in a snapshot); the newest CHECK_POINTS_KEPT are kept.
        self.check_points: OrderedDict[str, StateCapture] = OrderedDict()

    # -- apply -----------------------------------------------------------------

    def apply(self, data: bytes) -> raft_pb2.CommandResult:
        """Apply one serialized Command. Never raises.

        The result is the caller's to keep and modify: the dedupe table keeps
        its own copy (a shared message would let a caller change replicated state).
        """
        try:
            cmd = raft_pb2.Command.FromString(data)
        except Exception:  # a malformed entry must not wedge the cluster
            logger.error("undecodable command of %d bytes skipped", len(data))
            result = _error(InvalidArgument("undecodable command"))
            result.revision = self.revision
            return result
        try:
            check_request_id(cmd.request_id)  # too long to remember: a retry would reapply
        except CoordError as e:
            result = _error(e)
            result.revision = self.revision
            return result
        fingerprint = _fingerprint(cmd) if cmd.request_id else b""
        if cmd.request_id:
            seen = self._dedupe.get(cmd.request_id)
            if seen is not None:
                if seen[1] != fingerprint:
                    result = _error(
                        InvalidArgument(
                            f"request id {cmd.request_id!r} was already used for a different "
                            "request: give every request its own id (a retry reuses it)"
                        )
                    )
                    result.revision = self.revision
                    return result
                return raft_pb2.CommandResult.FromString(seen[0])
        # Wall time, for events, display and the ledger only: no wait depends on it.
        self.last_time_ms = max(self.last_time_ms, cmd.time_ms)
        self.last_term = max(self.last_term, cmd.term)
        try:
            result = self._dispatch(cmd)
        except CoordError as e:
            result = _error(e)
        except Exception as e:  # a bug: record it, keep replicas in step
            logger.exception("apply failed on %s", cmd.WhichOneof("op"))
            result = _error(Internal(f"apply failed: {type(e).__name__}"))
        result.revision = self.revision
        if cmd.request_id:
            self._remember(cmd.request_id, result, fingerprint)
        return result

    def _dispatch(self, cmd: raft_pb2.Command) -> raft_pb2.CommandResult:
        op = cmd.WhichOneof("op")
        if op == "put":
            return self._put(cmd.put)
        if op == "delete":
            return self._delete(cmd.delete)
        if op == "txn":
            return self._txn(cmd.txn)
        if op == "bootstrap":
            return self._bootstrap(cmd.bootstrap)
        if op == "noop":
            return raft_pb2.CommandResult()
        if op == "digest":
            return self._check_point(cmd.digest.id)
        handler = GROUP_COMMANDS.get(op or "")
        if op is not None and handler is not None:
            self.groups.changed()
            if op == "expire_session":
                session = self.groups.sessions.get(cmd.expire_session.session_id)
                self._expiring_since_ms = (
                    max(0, self.last_time_ms - session.ttl_ms) if session is not None else 0
                )
            try:
                result = handler(self.groups, getattr(cmd, op), self.last_time_ms)
            finally:
                self._expiring_since_ms = 0
            self.groups.settle(self.last_time_ms)
            return result
        raise InvalidArgument(f"unknown command {op!r}: is this node running an older version?")

    def _check_point(self, check_id: str) -> raft_pb2.CommandResult:
        if not check_id or len(check_id) > MAX_CHECK_ID_CHARS:
            raise InvalidArgument(f"a check point id has 1 to {MAX_CHECK_ID_CHARS} characters")
        self.check_points[check_id] = self.capture()
        self.check_points.move_to_end(check_id)
        while len(self.check_points) > CHECK_POINTS_KEPT:
            self.check_points.popitem(last=False)
        return raft_pb2.CommandResult()

    def _remember(
        self, request_id: str, result: raft_pb2.CommandResult, fingerprint: bytes
    ) -> None:
        if len(request_id) > limits.MAX_REQUEST_ID_CHARS:
            return
        self._dedupe[request_id] = (result.SerializeToString(deterministic=True), fingerprint)
        while len(self._dedupe) > limits.DEDUPE_ENTRIES:
            self._dedupe.popitem(last=False)

    def _bump(self) -> int:
        self.revision += 1
        return self.revision

    def _record(self, revision: int, kind: str, **fields: Any) -> None:
        event = groups_pb2.Event(
            revision=revision, term=self.last_term, time_ms=self.last_time_ms, type=kind, **fields
        )
        if kind == "master_lost" and event.cause == "session_expired":
            event.lost_since_ms = self._expiring_since_ms
        g = self.groups.groups.get(event.group) if event.group else None
        if g is not None:
            _attach_group_state(event, g)
        self.append_event(event)

    def append_event(self, event: groups_pb2.Event) -> None:
        """Append the event of the newest revision: the one way into the event log, for
        events recorded here and events replayed from a backup (coord.state.replay).
        Anything derived from the events is fed here."""
        self.events.append(event)
        self.ledger.on_event(event)

    # -- commands --------------------------------------------------------------

    def _bootstrap(self, req: raft_pb2.Bootstrap) -> raft_pb2.CommandResult:
        if not req.cluster_id:
            raise InvalidArgument("bootstrap needs a cluster id")
        if not self.cluster_id:
            self.cluster_id = req.cluster_id
            self.node_ids = sorted(req.node_ids)
            self._record(self._bump(), "cluster_bootstrapped")
        return raft_pb2.CommandResult()

    def _put(self, req: kv_pb2.PutRequest) -> raft_pb2.CommandResult:
        validate_key(req.key)
        validate_value(req.value)
        if req.session_id:
            self._bindable(req.session_id, req.key)
        prev = self.kv.get(req.key)
        resp = kv_pb2.PutResponse(succeeded=True)
        if req.HasField("expected_mod_revision") and not _matches(prev, req.expected_mod_revision):
            resp.succeeded = False
            if prev is not None:
                resp.kv.CopyFrom(prev)
            return raft_pb2.CommandResult(put=resp)
        rev = self._bump()
        kv = self.kv.put(req.key, req.value, rev, req.session_id)
        self._record(rev, "kv_put", kvs=[kv])
        resp.kv.CopyFrom(kv)
        if req.prev_kv and prev is not None:
            resp.prev_kv.CopyFrom(prev)
        return raft_pb2.CommandResult(put=resp)

    def _delete(self, req: kv_pb2.DeleteRequest) -> raft_pb2.CommandResult:
        validate_key(req.key, allow_empty=req.prefix)
        if req.prefix and req.HasField("expected_mod_revision"):
            raise InvalidArgument("expected_mod_revision needs a single key, not a prefix")
        keys = list(self.kv.keys_with_prefix(req.key)) if req.prefix else [req.key]
        resp = kv_pb2.DeleteResponse(succeeded=True)
        if req.HasField("expected_mod_revision") and not _matches(
            self.kv.get(req.key), req.expected_mod_revision
        ):
            resp.succeeded = False
            return raft_pb2.CommandResult(delete=resp)
        removed = [kv for kv in (self.kv.delete(k) for k in keys) if kv is not None]
        if removed:
            self._record(self._bump(), "kv_delete", deleted_keys=[kv.key for kv in removed])
        resp.deleted = len(removed)
        if req.prev_kv:
            resp.prev_kvs.extend(removed)
        return raft_pb2.CommandResult(delete=resp)

    def _txn(self, req: kv_pb2.TxnRequest) -> raft_pb2.CommandResult:
        """Compare, then apply one branch in one revision (coord.state.txn). Everything
        is checked before the first change: a refusal changes nothing."""
        txn.check(req)
        ok = all(txn.holds(c, self.kv.get(c.key)) for c in req.compares)
        ops = req.success if ok else req.failure
        for i, op in enumerate(ops):
            if op.HasField("put") and op.put.session_id:
                branch = "success" if ok else "failure"
                self._bindable(op.put.session_id, op.put.key, f"{branch}[{i}]: ")
        resp = kv_pb2.TxnResponse(succeeded=ok)
        rev = self.revision + 1  # taken below only if the branch changes something
        put: list[kv_pb2.KeyValue] = []
        deleted: list[bytes] = []
        for op in ops:
            if op.HasField("put"):
                kv = self.kv.put(op.put.key, op.put.value, rev, op.put.session_id)
                put.append(kv)
                resp.responses.add().put.CopyFrom(kv_pb2.PutResponse(succeeded=True, kv=kv))
                continue
            d = op.delete
            keys = list(self.kv.keys_with_prefix(d.key)) if d.prefix else [d.key]
            removed = [k for k in keys if self.kv.delete(k) is not None]
            deleted += removed
            resp.responses.add().delete.CopyFrom(
                kv_pb2.DeleteResponse(succeeded=True, deleted=len(removed))
            )
        if put or deleted:
            self._bump()
            self._record(rev, "kv_txn", kvs=put, deleted_keys=deleted)
        return raft_pb2.CommandResult(txn=resp)

    def _bindable(self, session_id: str, key: bytes, where: str = "") -> None:
        """Refuse binding ``key`` to a session that does not exist or is closing."""
        if len(session_id) > limits.MAX_NAME_CHARS:
            raise InvalidArgument(
                f"{where}session_id is {len(session_id)} characters: that is no session id "
                "(give the id Sessions.Open answered)"
            )
        session = self.groups.sessions.get(session_id)
        if session is None:
            raise NotFound(
                f"{where}session {session_id!r} does not exist (expired or closed): open a "
                f"new session and put {key!r} with it, or put it without a session"
            )
        if session.closing:
            raise FailedPrecondition(
                f"{where}session {session_id!r} is closing (an operator closed it): open a "
                f"new session and put {key!r} with it"
            )

    def _drop_session_keys(self, session_id: str, cause: str) -> None:
        """Delete the keys bound to a session that ends (called by Groups in the apply
        that ends it, right before the session's own event): one kv_delete event, with
        the session and the cause."""
        keys = self.kv.session_keys(session_id)
        if not keys:
            return
        for k in keys:
            self.kv.delete(k)
        self._record(
            self._bump(), "kv_delete", deleted_keys=keys, session_id=session_id, cause=cause
        )

    # -- reads (caller holds the apply lock) -----------------------------------

    def range(
        self, key: bytes, prefix: bool, limit: int, keys_only: bool = False
    ) -> tuple[list[kv_pb2.KeyValue], int]:
        """Return up to ``limit`` matching records (and at most ``MAX_RANGE_BYTES``) and
        the total count."""
        validate_key(key, allow_empty=prefix)
        if not prefix:
            kv = self.kv.get(key)
            return ([kv] if kv is not None else []), (1 if kv is not None else 0)
        cap = min(limit, limits.MAX_RANGE_KEYS) if limit > 0 else limits.MAX_RANGE_KEYS
        out: list[kv_pb2.KeyValue] = []
        count = 0
        size = 0
        full = False
        for k in self.kv.keys_with_prefix(key):
            count += 1
            if full or len(out) >= cap:
                continue
            kv = self.kv.get(k)
            assert kv is not None
            size += len(k) + (0 if keys_only else len(kv.value))
            if out and size > limits.MAX_RANGE_BYTES:
                full = True
                continue
            out.append(kv)
        return out, count

    # -- snapshots -------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Serialize the whole state: header (magic, version, crc32) + protobuf body."""
        return self.capture().encode()

    def capture(self) -> StateCapture:
        """A consistent copy of the state, cheap enough to take under the apply lock
        while the cluster serves: key-value records, events and dedupe results are
        never mutated once stored, so they are shared; sessions and groups (changed
        in place) are copied. ``encode()`` it outside the lock."""
        return StateCapture(
            cluster_id=self.cluster_id,
            node_ids=list(self.node_ids),
            revision=self.revision,
            last_time_ms=self.last_time_ms,
            last_term=self.last_term,
            kvs=self.kv.encoded(),
            dedupe=list(self._dedupe.items()),  # one C-level copy (a comprehension: ~10x)
            sessions=[_copied(s) for s in self.groups.sessions.values()],
            groups=[g.to_proto() for g in self.groups.groups.values()],
            events=self.events.encoded(),
            ledgers=[_copied_ledger(g) for g in self.ledger.to_proto()],
        )

    def remembers(self, request_id: str) -> bool:
        """Whether a command with this request id was applied (and a retry of it would
        get its first result back)."""
        return bool(request_id) and request_id in self._dedupe

    # -- dedupe table, for differential backups (caller holds the apply lock) ---

    def dedupe_since(self, revision: int) -> list[raft_pb2.DedupeEntry]:
        """The dedupe entries remembered at or after ``revision`` (with some remembered
        just before it, whose result has that revision too), in table order."""
        out: list[raft_pb2.DedupeEntry] = []
        for rid, (raw, fp) in reversed(self._dedupe.items()):
            res = raft_pb2.CommandResult.FromString(raw)
            if res.revision < revision:
                break  # revisions never decrease along the table
            out.append(raft_pb2.DedupeEntry(request_id=rid, result=res, fingerprint=fp))
        out.reverse()
        return out

    def merge_dedupe(self, entries: list[raft_pb2.DedupeEntry]) -> None:
        """Append the entries not in the table yet (in order), then keep the newest
        ``DEDUPE_ENTRIES``: the table a replica that applied them would have."""
        for d in entries:
            if d.request_id not in self._dedupe:
                self._remember(d.request_id, d.result, d.fingerprint)

    def restore(self, data: bytes | memoryview) -> None:
        """Replace the whole state with a snapshot. Raises SnapshotError, changing nothing."""
        snap = decode_snapshot(data)
        self.cluster_id = snap.cluster_id
        self.node_ids = list(snap.node_ids)
        self.revision = snap.revision
        self.last_time_ms = snap.last_time_ms
        self.kv.load(list(snap.kvs))
        self._dedupe = OrderedDict(
            (d.request_id, (d.result.SerializeToString(deterministic=True), d.fingerprint))
            for d in snap.dedupe
        )
        self.last_term = snap.last_term
        self.groups = Groups(_Emitter(self), self._drop_session_keys)
        self.groups.sessions = {s.id: s for s in snap.sessions}
        self.groups.groups = {g.name: GroupState.from_proto(g) for g in snap.groups}
        self.events = EventLog()
        self.events.load(snap.events)
        self.ledger = Ledger()
        self.ledger.load(snap.ledgers)
        self._backfill_ledgers()

    def _backfill_ledgers(self) -> None:
        """A snapshot from before the ledger: account every group from now on."""
        for name, g in self.groups.groups.items():
            if name in self.ledger.groups:
                continue
            book = availability_pb2.GroupLedger(
                group=name, created_ms=self.last_time_ms, budget_ms=g.policy.downtime_budget_ms
            )
            live = sorted(s for s, h in g.holdings.items() if not h.revoked)
            if live:
                book.tracking_since_ms = max(self.last_time_ms, 1)
                book.up_slots.extend(live)
            self.ledger.groups[name] = book


@dataclass(frozen=True)
class StateCapture:
    """The parts of a state at one revision (see :meth:`StateMachine.capture`)."""

    cluster_id: str
    node_ids: list[str]
    revision: int
    last_time_ms: int
    last_term: int
    kvs: list[bytes]  # each a serialized KeyValue (coord.state.kv)
    dedupe: list[tuple[str, tuple[bytes, bytes]]]  # (request id, (result, fingerprint))
    sessions: list[groups_pb2.Session]
    groups: list[groups_pb2.Group]
    events: list[bytes]  # each a serialized Event (coord.state.events)
    ledgers: list[availability_pb2.GroupLedger] = field(default_factory=list)

    def encode(self) -> bytes:
        """The snapshot bytes (what ``StateMachine.snapshot()`` returns)."""
        return b"".join(self.encode_parts())

    def encode_parts(self) -> list[bytes]:
        """``encode()`` as a list of pieces whose concatenation it is: the header, then
        the body a chunk of records at a time. A protobuf message is the concatenation
        of its fields, a repeated field the concatenation of its elements, so chunks
        emitted in field-number order give the same bytes as one serialization. Unlike
        that one long call, other threads (the Raft tick) get the GIL between chunks:
        run it in a worker thread."""
        body = list(self._body_parts())
        crc = 0
        for part in body:
            crc = zlib.crc32(part, crc)
        return [HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_FORMAT_VERSION, crc), *body]

    def _body_parts(self) -> Iterator[bytes]:
        def serialized(part: raft_pb2.StateSnapshot) -> bytes:
            return part.SerializeToString(deterministic=True)

        # Fields 1-3, then 4 (kvs), 5 (dedupe), 6 (node_ids), 7-9, 10 (last_term), 11.
        yield serialized(
            raft_pb2.StateSnapshot(
                cluster_id=self.cluster_id,
                revision=self.revision,
                last_time_ms=self.last_time_ms,
            )
        )
        yield from encoded_chunks(KVS_TAG, self.kvs)
        yield from encoded_chunks(DEDUPE_TAG, dedupe_records(self.dedupe))
        yield serialized(raft_pb2.StateSnapshot(node_ids=self.node_ids))
        yield from _message_chunks("sessions", self.sessions)
        yield from _message_chunks("groups", self.groups)
        yield from encoded_chunks(EVENTS_TAG, self.events)
        yield serialized(raft_pb2.StateSnapshot(last_term=self.last_term))
        yield from _message_chunks("ledgers", self.ledgers)

    def digest(self) -> str:
        """A sha256 (hex) of this state, equal on replicas with equal states.

        Hashes what ``encode()`` holds, a chunk of records at a time (so a large state
        does not hold the GIL for one long serialization): run it in a worker thread.
        Computed once per capture (a reader asking again for the same check point costs
        nothing).
        """
        memo = self.__dict__.get("_digest")  # not a field: a frozen instance's memo
        if memo is None:
            memo = self.__dict__["_digest"] = self._digest()
        return str(memo)

    def _digest(self) -> str:
        h = hashlib.sha256()
        head = raft_pb2.StateSnapshot(
            cluster_id=self.cluster_id,
            revision=self.revision,
            last_time_ms=self.last_time_ms,
            node_ids=self.node_ids,
            last_term=self.last_term,
        )
        h.update(head.SerializeToString(deterministic=True))
        for chunk in encoded_chunks(KVS_TAG, self.kvs):
            h.update(b"kvs")
            h.update(chunk)

        for name, chunks in (
            ("sessions", _message_chunks("sessions", self.sessions)),
            ("groups", _message_chunks("groups", self.groups)),
            ("events", encoded_chunks(EVENTS_TAG, self.events)),  # the same bytes, stored
            ("ledgers", _message_chunks("ledgers", self.ledgers)),
        ):
            for chunk in chunks:
                h.update(name.encode())
                h.update(chunk)
        dedupe = dedupe_records(list(map(_without_error_message, self.dedupe)))
        for chunk in encoded_chunks(DEDUPE_TAG, dedupe):
            h.update(b"dedupe")
            h.update(chunk)
        return h.hexdigest()


def _message_chunks(name: str, records: list[Any]) -> Iterator[bytes]:
    """The repeated StateSnapshot field ``name`` of ``records``, serialized
    ``RECORDS_PER_CHUNK`` at a time (concatenated: one serialization of them all)."""
    for i in range(0, len(records), RECORDS_PER_CHUNK):
        part = raft_pb2.StateSnapshot()
        getattr(part, name).extend(records[i : i + RECORDS_PER_CHUNK])
        yield part.SerializeToString(deterministic=True)


def _without_error_message(
    entry: tuple[str, tuple[bytes, bytes]],
) -> tuple[str, tuple[bytes, bytes]]:
    """A dedupe entry as hashed: a refusal's wording may differ between coord versions
    (a rolling upgrade applies the same log on both), its reason is the outcome, so its
    error_message is left out. A stored result is a deterministic serialization, fields
    in number order: only one that starts with error_reason (field 1) or error_message
    (field 2) can hold a message, and only those (refusals, rare) are decoded."""
    rid, (res, fp) = entry
    if res[:1] not in (b"\x0a", b"\x12"):
        return entry
    result = raft_pb2.CommandResult.FromString(res)
    if not result.error_message:
        return entry
    result.error_message = ""
    return rid, (result.SerializeToString(deterministic=True), fp)


def _attach_group_state(event: groups_pb2.Event, g: GroupState) -> None:
    """Make a group event self-sufficient for replay (differential backups): the
    group's slot tables after it, and the named member's record if it is still there.

    A handover of an empty slot is left out: every release is followed, in the same
    command, by the fill that consumes it (granted or moot), without an event of its
    own when nobody is eligible.
    """
    slots = event.group_slots
    slots.SetInParent()
    slots.holdings.extend(g.holdings[s] for s in sorted(g.holdings))
    slots.handovers.extend(g.handovers[s] for s in sorted(g.handovers) if s in g.holdings)
    for slot in sorted(g.vacated_cause):
        slots.vacated_cause[slot] = g.vacated_cause[slot]
    slots.deleting = g.deleting
    slots.policy.CopyFrom(g.policy)
    if g.pause is not None:
        slots.pause.CopyFrom(g.pause)
    slots.breaker_failover_ms.extend(g.breaker_failovers)
    slots.scheduled.extend(g.scheduled[i] for i in sorted(g.scheduled))
    member = g.members.get(event.member) if event.member else None
    if member is not None and not event.HasField("member_record"):
        event.member_record.CopyFrom(member)


def _copied_ledger(g: availability_pb2.GroupLedger) -> availability_pb2.GroupLedger:
    out = availability_pb2.GroupLedger()
    out.CopyFrom(g)
    return out


def _copied(session: groups_pb2.Session) -> groups_pb2.Session:
    out = groups_pb2.Session()
    out.CopyFrom(session)
    return out


def _matches(prev: kv_pb2.KeyValue | None, expected: int) -> bool:
    return (prev.mod_revision if prev is not None else 0) == expected


def _fingerprint(cmd: raft_pb2.Command) -> bytes:
    """Digest of what the command does (not when it was proposed). A pause's wait is
    left out: the proposer converts the operator's time to it, so a retry proposed
    later differs there and is still the same request."""
    op = cmd.WhichOneof("op") or ""
    msg = getattr(cmd, op) if op else None
    if op == "pause_groups":
        msg = groups_pb2.PauseGroups()
        msg.CopyFrom(cmd.pause_groups)
        msg.wait_ms = 0
    body = msg.SerializeToString(deterministic=True) if msg is not None else b""
    return hashlib.blake2b(op.encode() + b"\0" + body, digest_size=16).digest()


def _error(e: CoordError) -> raft_pb2.CommandResult:
    return raft_pb2.CommandResult(error_reason=e.reason, error_message=e.message)


class _Emitter:
    """How coord.state.groups bumps the revision and records events (one per revision)."""

    def __init__(self, machine: StateMachine) -> None:
        self._m = machine

    def __call__(self, kind: str, **fields: Any) -> int:
        rev = self._m._bump()
        self._m._record(rev, kind, **fields)
        return rev

    def reserve(self) -> int:
        return self._m._bump()

    def record(self, revision: int, kind: str, **fields: Any) -> None:
        self._m._record(revision, kind, **fields)
