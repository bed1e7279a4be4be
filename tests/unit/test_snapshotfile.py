"""The full-dump file: ``magic | u32 header length | header JSON | u32 crc32(state) | state``."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

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


def rewrite(path: Path, header: object, state: bytes = STATE) -> None:
    """A dump with an arbitrary header and a correct state checksum."""
    raw = json.dumps(header).encode()
    path.write_bytes(MAGIC + U32.pack(len(raw)) + raw + U32.pack(zlib.crc32(state)) + state)


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
    assert dump.read_bytes().startswith(b"COORDD01")


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
        with pytest.raises(DumpError):
            read_dump(str(dump))


@pytest.mark.parametrize(
    ("cut", "words"),
    [(0, "bad magic"), (5, "bad magic"), (10, "truncated or corrupt"), (-1, "checksum mismatch")],
)
def test_truncation_messages(dump: Path, cut: int, words: str) -> None:
    dump.write_bytes(dump.read_bytes()[:cut])
    with pytest.raises(DumpError, match=words):
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


def test_a_bad_magic_raises(dump: Path) -> None:
    dump.write_bytes(b"COORDJ01" + dump.read_bytes()[8:])
    with pytest.raises(DumpError, match="is not a coord snapshot dump"):
        read_dump(str(dump))


def test_an_empty_file_raises(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(DumpError, match="bad magic"):
        read_dump(str(tmp_path / "empty"))


def test_a_header_that_is_not_json_raises(dump: Path) -> None:
    data = bytearray(dump.read_bytes())
    data[12] = ord("[")
    dump.write_bytes(bytes(data))
    with pytest.raises(DumpError, match="truncated or corrupt"):
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


@pytest.mark.xfail(
    strict=True,
    reason="BUG: the dump header (last/prev entries, node ids) is neither covered by a "
    "checksum nor validated; corruption there is accepted or escapes as a non-DumpError",
)
@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(_flip_digit_of_last_index, id="flipped-digit-accepted"),
        pytest.param(_break_the_base64_padding, id="bad-base64-raises-binascii-error"),
        pytest.param(lambda p: rewrite(p, [1]), id="header-not-an-object"),
        pytest.param(lambda p: rewrite(p, {"format": 1}), id="header-without-entries"),
        pytest.param(
            lambda p: rewrite(p, {"format": 1, "last": [], "prev": ["", 0, 0]}),
            id="entry-of-wrong-shape",
        ),
    ],
)
def test_a_corrupt_header_raises_dump_error(dump: Path, corrupt: object) -> None:
    assert callable(corrupt)
    corrupt(dump)
    with pytest.raises(DumpError):
        read_dump(str(dump))


def test_a_missing_file_is_not_a_dump_error(tmp_path: Path) -> None:
    """Absence is the caller's business (no snapshot yet), not corruption."""
    with pytest.raises(FileNotFoundError):
        read_dump(str(tmp_path / "nope"))
