"""The full-dump file: ``magic | u32 header length | header JSON | u32 crc | state``.

Format 2 (magic ``COORDD02``): the crc32 covers the header JSON and the state, so any
damage to either is a checksum mismatch; a header that passes its checksum but does not
parse (bad JSON, not an object, missing keys, entries of the wrong shape, bad base64)
is a DumpError too, never an escaping ValueError/KeyError/binascii.Error.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coord.raft.snapshotfile import MAGIC, Dump, DumpError, read_dump, write_dump
from coord.state.machine import StateMachine
from coord.v1 import kv_pb2, raft_pb2

U32 = struct.Struct("<I")
LAST = (b"last command! \x00\xff", 7, 2)  # 16 bytes: base64 ends in "=="
PREV = (b"", 6, 2)
NODES = ["n1", "n2", "n3"]


def state_bytes() -> bytes:
    sm = StateMachine()
    put = kv_pb2.PutRequest(key=b"k", value=b"v")
    sm.apply(raft_pb2.Command(request_id="r", put=put).SerializeToString())
    return sm.snapshot()


STATE = state_bytes()


@pytest.fixture
def dump(tmp_path: Path) -> Path:
    path = tmp_path / "raft.dump"
    write_dump(str(path), STATE, LAST, PREV, NODES, fsync=False)
    return path


def header_span(data: bytes) -> tuple[int, int]:
    (hlen,) = U32.unpack_from(data, 8)
    return 12, 12 + hlen


def assemble(raw_header: bytes, state: bytes = STATE) -> bytes:
    """A dump built by hand from the documented layout, with a correct checksum."""
    crc = zlib.crc32(raw_header + state)
    return MAGIC + U32.pack(len(raw_header)) + raw_header + U32.pack(crc) + state


def rewrite(path: Path, header: object, state: bytes = STATE) -> None:
    """A dump with an arbitrary header and a correct checksum."""
    path.write_bytes(assemble(json.dumps(header).encode(), state))


def rewrite_raw(path: Path, raw_header: bytes) -> None:
    """Keep the state, replace the header bytes, fix up the checksum."""
    data = path.read_bytes()
    _, end = header_span(data)
    path.write_bytes(assemble(raw_header, data[end + 4 :]))


def valid_header(**changes: object) -> dict[str, object]:
    """What write_dump writes for LAST/PREV/NODES, with some keys changed (None: removed)."""
    header: dict[str, object] = {
        "format": 1,
        "last": [base64.b64encode(LAST[0]).decode(), LAST[1], LAST[2]],
        "prev": [base64.b64encode(PREV[0]).decode(), PREV[1], PREV[2]],
        "nodes": NODES,
    }
    for key, value in changes.items():
        if value is None:
            del header[key]
        else:
            header[key] = value
    return header


@pytest.mark.parametrize("fsync", [True, False])
def test_write_then_read_round_trips(tmp_path: Path, fsync: bool) -> None:
    path = tmp_path / "d"
    write_dump(str(path), STATE, LAST, PREV, NODES, fsync=fsync)
    got = read_dump(str(path), fsync=fsync)
    assert got == Dump(state=STATE, last=LAST, prev=PREV, node_ids=tuple(NODES))
    restored = StateMachine()
    restored.restore(got.state)
    assert restored.snapshot() == STATE


def test_the_file_starts_with_the_magic(dump: Path) -> None:
    assert MAGIC == b"COORDD02"
    assert dump.read_bytes().startswith(b"COORDD02")


def test_the_file_has_the_documented_layout(dump: Path) -> None:
    data = dump.read_bytes()
    start, end = header_span(data)
    assert json.loads(data[start:end]) == valid_header()
    assert data == assemble(data[start:end], STATE)  # crc32 over header + state


def test_a_hand_built_dump_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "d"
    rewrite(path, valid_header())
    assert read_dump(str(path)) == Dump(state=STATE, last=LAST, prev=PREV, node_ids=tuple(NODES))


def test_a_checksum_over_the_state_alone_is_refused(dump: Path) -> None:
    """A format-1 checksum (crc32 of the state only) does not pass in a format-2 file."""
    data = bytearray(dump.read_bytes())
    _, end = header_span(bytes(data))
    U32.pack_into(data, end, zlib.crc32(STATE))
    dump.write_bytes(bytes(data))
    with pytest.raises(DumpError, match="checksum mismatch"):
        read_dump(str(dump))


def test_memoryview_commands_and_empty_state_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "d"
    write_dump(str(path), b"", (memoryview(b"m"), 1, 1), (b"p", 0, 0), [], fsync=False)  # type: ignore[arg-type]
    got = read_dump(str(path))
    assert (got.state, got.last, got.prev, got.node_ids) == (b"", (b"m", 1, 1), (b"p", 0, 0), ())


ENTRIES = st.tuples(st.binary(max_size=30), st.integers(0, 2**62), st.integers(0, 2**62))


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    state=st.binary(max_size=200),
    last=ENTRIES,
    prev=ENTRIES,
    nodes=st.lists(st.text(max_size=8), max_size=5),
)
def test_round_trip_property(
    tmp_path: Path,
    state: bytes,
    last: tuple[bytes, int, int],
    prev: tuple[bytes, int, int],
    nodes: list[str],
) -> None:
    path = tmp_path / "prop.dump"  # overwritten by every example
    write_dump(str(path), state, last, prev, nodes, fsync=False)
    assert read_dump(str(path)) == Dump(state, last, prev, tuple(nodes))


def test_every_truncation_raises_dump_error(dump: Path) -> None:
    full = dump.read_bytes()
    for size in range(len(full)):
        dump.write_bytes(full[:size])
        # Both "is truncated" and "checksum mismatch, ... corrupt or truncated" say so.
        with pytest.raises(DumpError, match="bad magic" if size < len(MAGIC) else "truncated"):
            read_dump(str(dump))


def _header_end(dump: Path) -> int:
    return header_span(dump.read_bytes())[1]


@pytest.mark.parametrize(
    ("cut", "words"),
    [
        (lambda d: 0, "bad magic"),
        (lambda d: 5, "bad magic"),
        (lambda d: 10, "is truncated"),  # inside the header length
        (lambda d: 20, "is truncated"),  # inside the header
        (lambda d: _header_end(d) + 2, "is truncated"),  # inside the checksum
        (lambda d: _header_end(d) + 4, "checksum mismatch, the dump is corrupt or truncated"),
        (lambda d: -1, "checksum mismatch, the dump is corrupt or truncated"),
    ],
    ids=["empty", "in-magic", "in-length", "in-header", "in-crc", "no-state", "state-short"],
)
def test_truncation_messages(dump: Path, cut: Any, words: str) -> None:
    dump.write_bytes(dump.read_bytes()[: cut(dump)])
    with pytest.raises(DumpError, match=words):
        read_dump(str(dump))


def test_a_flipped_byte_in_the_header_raises(dump: Path) -> None:
    """The header is under the checksum: every flipped bit is refused, even one that leaves
    valid JSON (a different index, a different node id)."""
    full = dump.read_bytes()
    start, end = header_span(full)
    for pos in range(start, end):
        for mask in (0x01, 0x04, 0x80):
            data = bytearray(full)
            data[pos] ^= mask
            dump.write_bytes(bytes(data))
            with pytest.raises(DumpError, match="checksum mismatch, the dump is corrupt"):
                read_dump(str(dump))


def test_a_flipped_byte_in_the_header_length_raises(dump: Path) -> None:
    full = dump.read_bytes()
    for pos in range(len(MAGIC), len(MAGIC) + 4):
        for mask in (0x01, 0x80):
            data = bytearray(full)
            data[pos] ^= mask
            dump.write_bytes(bytes(data))
            with pytest.raises(DumpError, match="truncated"):
                read_dump(str(dump))


def test_a_flipped_byte_in_the_state_or_its_checksum_raises(dump: Path) -> None:
    full = dump.read_bytes()
    _, header_end = header_span(full)
    for pos in range(header_end, len(full)):
        data = bytearray(full)
        data[pos] ^= 0x04
        dump.write_bytes(bytes(data))
        with pytest.raises(DumpError, match="checksum mismatch, the dump is corrupt"):
            read_dump(str(dump))


def test_trailing_bytes_raise(dump: Path) -> None:
    dump.write_bytes(dump.read_bytes() + b"\x00")
    with pytest.raises(DumpError, match="checksum mismatch"):
        read_dump(str(dump))


@pytest.mark.parametrize("magic", [b"COORDJ02", b"COORDD01", b"COORDD03"])
def test_a_bad_magic_raises(dump: Path, magic: bytes) -> None:
    """Another coord file, a format-1 dump, a future format: all refused by the magic."""
    dump.write_bytes(magic + dump.read_bytes()[8:])
    with pytest.raises(DumpError, match=r"is not a coord snapshot dump \(bad magic\)"):
        read_dump(str(dump))


def test_an_empty_file_raises(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(DumpError, match="bad magic"):
        read_dump(str(tmp_path / "empty"))


def test_a_header_that_is_not_json_raises(dump: Path) -> None:
    data = bytearray(dump.read_bytes())
    data[12] = ord("[")
    dump.write_bytes(bytes(data))
    with pytest.raises(DumpError, match="checksum mismatch"):
        read_dump(str(dump))
    rewrite_raw(dump, bytes(data[12 : header_span(bytes(data))[1]]))  # same, checksum fixed
    with pytest.raises(DumpError, match="the dump header is malformed"):
        read_dump(str(dump))


def test_a_future_format_raises(dump: Path) -> None:
    rewrite(dump, {"format": 2, "last": ["", 1, 1], "prev": ["", 0, 0], "nodes": []})
    with pytest.raises(DumpError, match="dump format 2 is not supported"):
        read_dump(str(dump))


def test_a_missing_format_raises(dump: Path) -> None:
    rewrite(dump, {"last": ["", 1, 1], "prev": ["", 0, 0]})
    with pytest.raises(DumpError, match="dump format None is not supported"):
        read_dump(str(dump))


def _flip_digit_of_last_index(path: Path) -> None:
    data = path.read_bytes()
    start, end = header_span(data)
    header = data[start:end]
    pos = start + header.index(b", 7, 2]")  # "last": [..., 7, 2]
    flipped = bytearray(data)
    flipped[pos + 2] ^= 0x01  # '7' -> '6': still valid JSON
    path.write_bytes(bytes(flipped))


def _break_the_base64_padding(path: Path) -> None:
    data = bytearray(path.read_bytes())
    pos = bytes(data).index(b"==")
    data[pos + 1] ^= 0x01  # '=' -> '<'
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(_flip_digit_of_last_index, id="flipped-digit"),
        pytest.param(_break_the_base64_padding, id="bad-base64"),
    ],
)
def test_damage_to_the_header_is_a_checksum_mismatch(dump: Path, corrupt: Any) -> None:
    corrupt(dump)
    with pytest.raises(DumpError, match="checksum mismatch"):
        read_dump(str(dump))


BAD_B64 = base64.b64encode(LAST[0]).decode()[:-1]  # padding broken


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[", id="not-json"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b"", id="empty"),
        pytest.param(json.dumps([1]).encode(), id="header-not-an-object"),
        pytest.param(json.dumps("format").encode(), id="header-a-string"),
        pytest.param(json.dumps(valid_header(last=None)).encode(), id="without-last"),
        pytest.param(json.dumps(valid_header(prev=None)).encode(), id="without-prev"),
        pytest.param(json.dumps(valid_header(last=[])).encode(), id="entry-empty"),
        pytest.param(json.dumps(valid_header(last=["", 1])).encode(), id="entry-too-short"),
        pytest.param(json.dumps(valid_header(prev=["", 1, 1, 1])).encode(), id="entry-too-long"),
        pytest.param(json.dumps(valid_header(last={"idx": 7})).encode(), id="entry-an-object"),
        pytest.param(json.dumps(valid_header(last="AA==")).encode(), id="entry-a-string"),
        pytest.param(json.dumps(valid_header(last=[BAD_B64, 7, 2])).encode(), id="bad-padding"),
        pytest.param(json.dumps(valid_header(prev=["#!*", 6, 2])).encode(), id="bad-alphabet"),
        pytest.param(json.dumps(valid_header(last=["", "seven", 2])).encode(), id="idx-a-word"),
        pytest.param(json.dumps(valid_header(last=["", 7.5, 2])).encode(), id="idx-a-fraction"),
        pytest.param(json.dumps(valid_header(prev=["", 6, None])).encode(), id="term-null"),
        pytest.param(json.dumps(valid_header(nodes=5)).encode(), id="nodes-a-number"),
    ],
)
def test_a_malformed_header_with_a_valid_checksum_raises_dump_error(dump: Path, raw: bytes) -> None:
    """What a buggy or foreign writer could produce: refused as a DumpError, nothing else."""
    rewrite_raw(dump, raw)
    with pytest.raises(DumpError, match="the dump header is malformed"):
        read_dump(str(dump))


def test_a_missing_file_is_not_a_dump_error(tmp_path: Path) -> None:
    """Absence is the caller's business (no snapshot yet), not corruption."""
    with pytest.raises(FileNotFoundError):
        read_dump(str(tmp_path / "nope"))
