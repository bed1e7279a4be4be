"""The full-dump file pysyncobj keeps next to the journal.

Format (version 1)::

    magic "COORDD01" | u32 header length | header JSON | u32 crc32(state) | state

The header holds the last two log entries the snapshot covers (pysyncobj needs
them to continue the log) and the member ids; ``state`` is
``StateMachine.snapshot()`` (itself versioned and checksummed).
"""

from __future__ import annotations

import base64
import json
import os
import struct
import zlib
from dataclasses import dataclass

from coord.raft.fsutil import fsync_dir

MAGIC = b"COORDD01"
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


def _entry_json(e: Entry) -> list[object]:
    return [base64.b64encode(bytes(e[0])).decode(), int(e[1]), int(e[2])]


def _entry_from_json(v: list[object]) -> Entry:
    return (base64.b64decode(str(v[0])), int(str(v[1])), int(str(v[2])))


def write_dump(
    path: str, state: bytes, last: Entry, prev: Entry, node_ids: list[str], fsync: bool = True
) -> None:
    """Write the dump to ``path`` (pysyncobj renames it into place afterwards)."""
    header = json.dumps(
        {
            "format": FORMAT_VERSION,
            "last": _entry_json(last),
            "prev": _entry_json(prev),
            "nodes": node_ids,
        }
    ).encode()
    with open(path, "wb") as f:
        f.write(MAGIC + _U32.pack(len(header)) + header + _U32.pack(zlib.crc32(state)) + state)
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
        header = json.loads(data[12 : 12 + hlen])
        (crc,) = _U32.unpack_from(data, 12 + hlen)
        state = data[16 + hlen :]
    except (struct.error, ValueError) as e:
        raise DumpError(f"{path} is truncated or corrupt ({e})") from e
    if header.get("format") != FORMAT_VERSION:
        raise DumpError(f"{path}: dump format {header.get('format')} is not supported")
    if zlib.crc32(state) != crc:
        raise DumpError(f"{path}: checksum mismatch, the dump is corrupt")
    return Dump(
        state=state,
        last=_entry_from_json(header["last"]),
        prev=_entry_from_json(header["prev"]),
        node_ids=tuple(header.get("nodes", ())),
    )
