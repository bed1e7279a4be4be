"""The bytes of a state snapshot (``StateMachine.snapshot()``, a Raft dump's and a
full backup's body), apart from the state machine: what reads a file (``coordctl``,
``coord restore``) need not import it.

Format (version 1)::

    magic "COORDSM" NUL | u32 format version | u32 crc32 of the body | body

The body is a serialized ``StateSnapshot`` (coord/v1/raft.proto), written a chunk of
records at a time (``StateCapture.encode_parts``). Repeated fields of records kept
serialized (key-values, dedupe entries) are framed here by hand: the same bytes as
protobuf's deterministic serialization, pinned by tests/unit/test_state_snapshot.py.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from coord.v1 import raft_pb2

SNAPSHOT_MAGIC = b"COORDSM\x00"
SNAPSHOT_FORMAT_VERSION = 1
HEADER = struct.Struct("<8sII")  # magic, format version, crc32 of the body

# Records per protobuf message when encoding or hashing a capture: other threads get
# the GIL between them.
RECORDS_PER_CHUNK = 1024


class SnapshotError(Exception):
    """A snapshot could not be decoded: corrupt, truncated or of a foreign format."""


# StateSnapshot.kvs is field 4, length-delimited (wire type 2): (4 << 3) | 2.
KVS_TAG = b"\x22"
# StateSnapshot.dedupe is field 5; a DedupeEntry's request_id, result and fingerprint
# are its fields 1, 2 and 3 (all length-delimited).
DEDUPE_TAG = b"\x2a"
# StateSnapshot.events is field 9: (9 << 3) | 2.
EVENTS_TAG = b"\x4a"
_DEDUPE_ENTRY_TAGS = (b"\x0a", b"\x12", b"\x1a")


def dedupe_records(entries: list[tuple[str, tuple[bytes, bytes]]]) -> list[bytes]:
    """Serialized DedupeEntries from the dedupe table's (request id, (result,
    fingerprint)), framed by hand: the bytes of a DedupeEntry built from them and
    serialized deterministically (the stored result is such a serialization), without
    building one (~1.5 µs an entry, ~30 ms of a snapshot at 20,000 entries; this
    ~0.4). proto3 leaves out an empty string or bytes field; the result is always there."""
    rid_frames, res_frames, fp_frames = map(_frames, _DEDUPE_ENTRY_TAGS)
    out: list[bytes] = []
    for rid, (res, fp) in entries:
        r = rid.encode()
        if len(r) >= _FRAMED_LENGTHS or len(res) >= _FRAMED_LENGTHS or len(fp) >= _FRAMED_LENGTHS:
            out.append(_dedupe_record_unframed(r, res, fp))
            continue
        record = res_frames[len(res)] + res
        if r:
            record = rid_frames[len(r)] + r + record
        if fp:
            record += fp_frames[len(fp)] + fp
        out.append(record)
    return out


def _dedupe_record_unframed(r: bytes, res: bytes, fp: bytes) -> bytes:
    """One record of :func:`dedupe_records` with a field too long for the tables."""
    rid_tag, res_tag, fp_tag = _DEDUPE_ENTRY_TAGS
    record = res_tag + _varint(len(res)) + res
    if r:
        record = rid_tag + _varint(len(r)) + r + record
    if fp:
        record += fp_tag + _varint(len(fp)) + fp
    return record


def encoded_chunks(tag: bytes, records: list[bytes]) -> Iterator[bytes]:
    """A repeated message field of serialized ``records``, ``RECORDS_PER_CHUNK`` at a time:
    the bytes ``SerializeToString`` gives for a message holding just those elements.

    Each element is framed as tag + varint(length) + record. Records shorter than
    ``_FRAMED_LENGTHS`` (nearly all) take their frame from a table, and frames and
    records are interleaved by slice assignment and joined once, all in C: a Python
    loop per record cost ~35 ms at 100,000 keys (this ~9), a large part of a
    snapshot's encoding and of a consistency check's hash."""
    frames = _frames(tag)
    for i in range(0, len(records), RECORDS_PER_CHUNK):
        chunk = records[i : i + RECORDS_PER_CHUNK]
        if max(map(len, chunk), default=0) < _FRAMED_LENGTHS:
            parts: list[bytes] = [b""] * (2 * len(chunk))
            parts[0::2] = map(frames.__getitem__, map(len, chunk))
            parts[1::2] = chunk
            yield b"".join(parts)
        else:
            yield b"".join(tag + _varint(len(r)) + r for r in chunk)


# Record lengths whose frames (tag + varint) are tabled, per tag.
_FRAMED_LENGTHS = 1 << 14
_FRAME_TABLES: dict[bytes, list[bytes]] = {}


def _frames(tag: bytes) -> list[bytes]:
    table = _FRAME_TABLES.get(tag)
    if table is None:
        table = _FRAME_TABLES[tag] = [tag + _varint(n) for n in range(_FRAMED_LENGTHS)]
    return table


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_snapshot(snap: raft_pb2.StateSnapshot) -> bytes:
    """Header (magic, version, crc32) + protobuf body: the inverse of decode_snapshot."""
    body = snap.SerializeToString(deterministic=True)
    return HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_FORMAT_VERSION, zlib.crc32(body)) + body


def decode_snapshot(data: bytes | memoryview) -> raft_pb2.StateSnapshot:
    """Check header and checksum, then decode. Raises SnapshotError with a clear message."""
    if len(data) < HEADER.size:
        raise SnapshotError(f"snapshot truncated: {len(data)} bytes is shorter than its header")
    magic, version, crc = HEADER.unpack_from(data)
    if magic != SNAPSHOT_MAGIC:
        raise SnapshotError("not a coord state snapshot (bad magic)")
    if version != SNAPSHOT_FORMAT_VERSION:
        raise SnapshotError(
            f"snapshot format {version} is not supported (this build reads "
            f"{SNAPSHOT_FORMAT_VERSION}): use a matching coord version"
        )
    body = memoryview(data)[HEADER.size :]  # not a copy
    if zlib.crc32(body) != crc:
        raise SnapshotError("snapshot checksum mismatch: the file is corrupt or truncated")
    try:
        return raft_pb2.StateSnapshot.FromString(body)  # type: ignore[arg-type]  # any buffer
    except Exception as e:
        raise SnapshotError(f"snapshot body does not decode: {e}") from e
