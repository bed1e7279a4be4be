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
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from coord.errors import CoordError, Internal, InvalidArgument
from coord.state import limits
from coord.state.events import EventLog
from coord.state.groups import Groups, GroupState
from coord.state.kv import KVStore, validate_key, validate_value
from coord.v1 import groups_pb2, kv_pb2, raft_pb2

logger = logging.getLogger(__name__)

SNAPSHOT_MAGIC = b"COORDSM\x00"
SNAPSHOT_FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sII")  # magic, format version, crc32 of the body


class SnapshotError(Exception):
    """A snapshot could not be decoded: corrupt, truncated or of a foreign format."""


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
        self.groups = Groups(_Emitter(self))
        # request id -> (first result, fingerprint of the operation)
        self._dedupe: OrderedDict[str, tuple[raft_pb2.CommandResult, bytes]] = OrderedDict()

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
                return _copy(seen[0])
        self.last_time_ms = max(self.last_time_ms, cmd.time_ms)
        self.last_term = max(self.last_term, cmd.term)
        try:
            if self.groups.groups:
                self.groups.run_due_timers(self.last_time_ms)  # due by this command's time
            result = self._dispatch(cmd)
        except CoordError as e:
            result = _error(e)
        except Exception as e:  # a bug: record it, keep replicas in step
            logger.exception("apply failed on %s", cmd.WhichOneof("op"))
            result = _error(Internal(f"apply failed: {type(e).__name__}"))
        result.revision = self.revision
        if cmd.request_id:
            self._remember(cmd.request_id, _copy(result), fingerprint)
        return result

    def _dispatch(self, cmd: raft_pb2.Command) -> raft_pb2.CommandResult:
        op = cmd.WhichOneof("op")
        if op == "put":
            return self._put(cmd.put)
        if op == "delete":
            return self._delete(cmd.delete)
        if op == "bootstrap":
            return self._bootstrap(cmd.bootstrap)
        if op in {"noop", "advance"}:
            return raft_pb2.CommandResult()
        handler = _GROUP_COMMANDS.get(op or "")
        if op is not None and handler is not None:
            self.groups.changed()
            return handler(self.groups, getattr(cmd, op), self.last_time_ms)
        raise InvalidArgument(f"unknown command {op!r}: is this node running an older version?")

    def _remember(
        self, request_id: str, result: raft_pb2.CommandResult, fingerprint: bytes
    ) -> None:
        if len(request_id) > limits.MAX_REQUEST_ID_CHARS:
            return
        self._dedupe[request_id] = (result, fingerprint)
        while len(self._dedupe) > limits.DEDUPE_ENTRIES:
            self._dedupe.popitem(last=False)

    def _bump(self) -> int:
        self.revision += 1
        return self.revision

    def _record(self, revision: int, kind: str, **fields: Any) -> None:
        self.events.append(
            groups_pb2.Event(
                revision=revision,
                term=self.last_term,
                time_ms=self.last_time_ms,
                type=kind,
                **fields,
            )
        )

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
        prev = self.kv.get(req.key)
        resp = kv_pb2.PutResponse(succeeded=True)
        if req.HasField("expected_mod_revision") and not _matches(prev, req.expected_mod_revision):
            resp.succeeded = False
            if prev is not None:
                resp.kv.CopyFrom(prev)
            return raft_pb2.CommandResult(put=resp)
        rev = self._bump()
        kv = self.kv.put(req.key, req.value, rev)
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
        snap = raft_pb2.StateSnapshot(
            cluster_id=self.cluster_id,
            revision=self.revision,
            last_time_ms=self.last_time_ms,
            node_ids=self.node_ids,
        )
        snap.kvs.extend(self.kv.items())
        for rid, (res, fp) in self._dedupe.items():
            snap.dedupe.add(request_id=rid, result=res, fingerprint=fp)
        snap.last_term = self.last_term
        snap.sessions.extend(self.groups.sessions.values())
        snap.groups.extend(g.to_proto() for g in self.groups.groups.values())
        snap.events.extend(self.events.items())
        body = snap.SerializeToString(deterministic=True)
        return _HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_FORMAT_VERSION, zlib.crc32(body)) + body

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot. Raises SnapshotError, changing nothing."""
        snap = decode_snapshot(data)
        self.cluster_id = snap.cluster_id
        self.node_ids = list(snap.node_ids)
        self.revision = snap.revision
        self.last_time_ms = snap.last_time_ms
        self.kv.load(list(snap.kvs))
        self._dedupe = OrderedDict((d.request_id, (d.result, d.fingerprint)) for d in snap.dedupe)
        self.last_term = snap.last_term
        self.groups = Groups(_Emitter(self))
        self.groups.sessions = {s.id: s for s in snap.sessions}
        self.groups.groups = {g.name: GroupState.from_proto(g) for g in snap.groups}
        self.events = EventLog()
        self.events.load(snap.events)


def decode_snapshot(data: bytes) -> raft_pb2.StateSnapshot:
    """Check header and checksum, then decode. Raises SnapshotError with a clear message."""
    if len(data) < _HEADER.size:
        raise SnapshotError(f"snapshot truncated: {len(data)} bytes is shorter than its header")
    magic, version, crc = _HEADER.unpack_from(data)
    if magic != SNAPSHOT_MAGIC:
        raise SnapshotError("not a coord state snapshot (bad magic)")
    if version != SNAPSHOT_FORMAT_VERSION:
        raise SnapshotError(
            f"snapshot format {version} is not supported (this build reads "
            f"{SNAPSHOT_FORMAT_VERSION}): use a matching coord version"
        )
    body = data[_HEADER.size :]
    if zlib.crc32(body) != crc:
        raise SnapshotError("snapshot checksum mismatch: the file is corrupt or truncated")
    try:
        return raft_pb2.StateSnapshot.FromString(body)
    except Exception as e:
        raise SnapshotError(f"snapshot body does not decode: {e}") from e


def _matches(prev: kv_pb2.KeyValue | None, expected: int) -> bool:
    return (prev.mod_revision if prev is not None else 0) == expected


def _fingerprint(cmd: raft_pb2.Command) -> bytes:
    """Digest of what the command does (not when it was proposed)."""
    op = cmd.WhichOneof("op") or ""
    body = getattr(cmd, op).SerializeToString(deterministic=True) if op else b""
    return hashlib.blake2b(op.encode() + b"\0" + body, digest_size=16).digest()


def _copy(result: raft_pb2.CommandResult) -> raft_pb2.CommandResult:
    out = raft_pb2.CommandResult()
    out.CopyFrom(result)
    return out


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


def _open_session(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    return raft_pb2.CommandResult(session=g.open_session(req, now))


def _close_session(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.close_session(req.session_id, "session_closed", now)
    return raft_pb2.CommandResult()


def _expire_session(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.expire_session(req, now)
    return raft_pb2.CommandResult()


def _create_group(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    return raft_pb2.CommandResult(group=g.create_group(req, now).to_proto())


def _delete_group(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.delete_group(req.name, now)
    return raft_pb2.CommandResult()


def _register(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    return raft_pb2.CommandResult(member=g.register(req.member, now))


def _unregister(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.unregister(req.group, req.member_id, req.session_id, now)
    return raft_pb2.CommandResult()


def _campaign(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    return raft_pb2.CommandResult(member=g.campaign(req.group, req.member_id, now))


def _resign(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.resign(req.group, req.member_id, req.session_id, now)
    return raft_pb2.CommandResult()


def _switchover(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.switchover(req, now)
    return raft_pb2.CommandResult()


def _revoke(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.revoke(req.group, req.slot, "admin_revoke", now)
    return raft_pb2.CommandResult()


def _update_member(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    return raft_pb2.CommandResult(member=g.update_member(req, now))


def _set_health(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.set_health(req, now)
    return raft_pb2.CommandResult()


def _set_loads(g: Groups, req: Any, now: int) -> raft_pb2.CommandResult:
    g.set_loads(req, now)
    return raft_pb2.CommandResult()


# Group and session commands: op name -> handler(groups, request, now).
_GROUP_COMMANDS: dict[str, Callable[[Groups, Any, int], raft_pb2.CommandResult]] = {
    "open_session": _open_session,
    "close_session": _close_session,
    "expire_session": _expire_session,
    "create_group": _create_group,
    "delete_group": _delete_group,
    "register": _register,
    "unregister": _unregister,
    "campaign": _campaign,
    "resign": _resign,
    "switchover": _switchover,
    "revoke_holding": _revoke,
    "update_member": _update_member,
    "set_health": _set_health,
    "set_loads": _set_loads,
}
