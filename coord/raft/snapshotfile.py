"""The full-dump file pysyncobj keeps next to the journal.

Format (version 2)::

    magic "COORDD02" | u32 header length | header JSON | u32 crc32(header + state) | state

The header holds the last two log entries the snapshot covers (pysyncobj needs
them to continue the log), the member ids and, since membership changes, the
configuration at the snapshot's index with every member's addresses
(``members``; dumps without it predate membership changes); ``state`` is
``StateMachine.snapshot()`` (itself versioned and checksummed).
"""

from __future__ import annotations

import base64
import json
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from coord.raft.fsutil import fsync_dir

MAGIC = b"COORDD02"
FORMAT_VERSION = 1
_U32 = struct.Struct("<I")

Entry = tuple[bytes, int, int]


class DumpError(Exception):
    """The dump file is corrupt, truncated or of an unknown format."""


@dataclass(frozen=True)
class Dump:
    state: bytes
    last: Entry
    prev: Entry
    node_ids: tuple[str, ...]
    # id -> {"raft": host:port, "api": host:port}; None in dumps that predate it.
    members: dict[str, dict[str, object]] | None = None


def _entry_json(e: Entry) -> list[object]:
    return [base64.b64encode(bytes(e[0])).decode(), int(e[1]), int(e[2])]


def _entry_from_json(v: list[object]) -> Entry:
    if not isinstance(v, list) or len(v) != 3:
        raise ValueError(f"a log entry is [command, idx, term], got {v!r}")
    return (base64.b64decode(str(v[0]), validate=True), int(str(v[1])), int(str(v[2])))


def write_dump(
    path: str,
    state: bytes | Sequence[bytes],
    last: Entry,
    prev: Entry,
    node_ids: list[str],
    fsync: bool = True,
    members: dict[str, dict[str, object]] | None = None,
) -> None:
    """Write the dump to ``path`` (the caller renames it into place). ``state`` may come
    in pieces (``StateCapture.encode_parts``): they are written one after another, so a
    large state is never copied into one buffer again."""
    parts = [state] if isinstance(state, bytes) else list(state)
    fields: dict[str, object] = {
        "format": FORMAT_VERSION,
        "last": _entry_json(last),
        "prev": _entry_json(prev),
        "nodes": node_ids,
    }
    if members is not None:
        fields["members"] = members
    header = json.dumps(fields).encode()
    with open(path, "wb") as f:
        crc = zlib.crc32(header)
        for part in parts:
            crc = zlib.crc32(part, crc)
        f.write(MAGIC + _U32.pack(len(header)) + header + _U32.pack(crc))
        for part in parts:
            f.write(part)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def read_dump(path: str, fsync: bool = False) -> Dump:
    """Read and verify a dump; with ``fsync``, first make the file and its directory durable
    (a snapshot received from the leader must be on disk before the journal is cleared)."""
    with open(path, "rb") as f:
        if fsync:
            os.fsync(f.fileno())
        data = f.read()
    if fsync:
        fsync_dir(os.path.dirname(path) or ".")
    if data[:8] != MAGIC:
        raise DumpError(f"{path} is not a coord snapshot dump (bad magic)")
    try:
        (hlen,) = _U32.unpack_from(data, 8)
        raw_header = data[12 : 12 + hlen]
        (crc,) = _U32.unpack_from(data, 12 + hlen)
    except struct.error as e:
        raise DumpError(f"{path} is truncated ({e})") from e
    state = data[16 + hlen :]
    if zlib.crc32(state, zlib.crc32(raw_header)) != crc:
        raise DumpError(f"{path}: checksum mismatch, the dump is corrupt or truncated")
    try:
        header = json.loads(raw_header)
        if header.get("format") != FORMAT_VERSION:
            raise DumpError(f"{path}: dump format {header.get('format')} is not supported")
        return Dump(
            state=state,
            last=_entry_from_json(header["last"]),
            prev=_entry_from_json(header["prev"]),
            node_ids=tuple(str(n) for n in header.get("nodes", ())),
            members=_members(header.get("members")),
        )
    except DumpError:
        raise
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise DumpError(f"{path}: the dump header is malformed ({e!r})") from e


def _members(raw: object) -> dict[str, dict[str, object]] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("members is not an object")
    out: dict[str, dict[str, object]] = {}
    for nid, addr in raw.items():
        if not isinstance(addr, dict):
            raise ValueError(f"member {nid!r} is not an object")
        member: dict[str, object] = {"raft": str(addr["raft"]), "api": str(addr["api"])}
        for flag in ("learner", "auto_promote"):  # a learner's role (coord.raft.membership)
            if addr.get(flag) is True:
                member[flag] = True
        out[str(nid)] = member
    return out
