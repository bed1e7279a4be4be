"""DurableJournal: pysyncobj's Journal interface over an append-only, checksummed file.

Format 3: the 8-byte magic ``COORDJ03``, then a header ``start u64 | crc32 u32 | 0 u32``
(``HEADER_LEN`` = 24 bytes in all; the crc32 covers the 8 bytes of ``start``): the file
offset of the first live record. Records follow, ``len u32 | crc32 u32 | idx u64 | term u64 |
command``, the crc32 covering ``len | idx | term | command``. A new journal is the header
alone, saying 24. Record offsets are absolute: log compaction (``deleteEntriesTo``) only
rewrites the header, moving ``start`` past the dropped records, and once a sync covers that
write the dead prefix's pages (after the first) are freed with ``fallocate(PUNCH_HOLE)``; the
file's size never shrinks for it. At open, a header saying more than the file holds (it
reached the disk before the appends it skips) means an empty log that begins at the end; a
damaged header is refused; a format-2 file (``COORDJ02``, records right after the magic) is
read and rewritten in format 3, as is a file whose dead prefix (``start - HEADER_LEN``
bytes) reaches ``REWRITE_DEAD_BYTES``; a compaction whose dead prefix reaches
``RUNTIME_REWRITE_BYTES`` rewrites the file the same way while the node runs (a temporary
file, fsync, rename, fsync of the directory). ``inspect=True`` only reads: it writes
nothing (no header into an empty file, no torn tail cut, no header corrected, no rewrite).
Term/vote/commit index live in ``<path>.meta`` (JSON).

A write that fails or comes up short (``add``, the header write of a compaction, the
ftruncate of a cut, a runtime rewrite) calls ``on_write_failed(error)`` if set (the node
exits there), then raises the OSError; the journal's memory does not take the change.
Freeing a dead prefix is best effort: an error is logged and the next compaction's sync
tries again; a file system without holes (EOPNOTSUPP) is not asked again.

A damaged live record is a torn tail (cut at load) unless a valid record with an index in
``(last good idx, last good idx + 2**32]`` follows it somewhere later in the file: then
the damage is in the middle, where acknowledged entries lived, and the start is refused.
Messages name absolute file offsets. Damage in the dead prefix does not matter.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import coord.raft.journal as journal_module
from coord.raft.journal import HEADER_LEN, MAGIC, DurableJournal, JournalCorrupt, header

REC = struct.Struct("<IIQQ")
LEN_IDX_TERM = struct.Struct("<IQQ")
HEADER = struct.Struct("<QII")
PAGE = 4096
Entry = tuple[bytes, int, int]

ENTRIES: list[Entry] = [(b"first", 1, 1), (b"", 2, 1), (b"\x00third\xff" * 10, 3, 2)]
# Four records, none with an empty command, so that every field of every record can be hit.
FOUR: list[Entry] = [(b"first", 1, 1), (b"second", 2, 1), (b"third" * 10, 3, 2), (b"4th", 4, 2)]
# Offsets of a record's fields: length, crc, idx, term, then a byte inside the command.
FIELDS = {"length": 0, "crc": 4, "idx": 8, "term": 16, "command": REC.size + 2}


def four_behind(path: Path, dead: int) -> list[Entry]:
    """A journal holding FOUR's commands after ``dead`` compacted entries (the indexes
    run on from them): the live records do not begin right after the header. Returns
    the live entries."""
    live = [(command, idx + dead, term) for command, idx, term in FOUR]
    written(path, [(b"dead %d" % i, i + 1, 1) for i in range(dead)] + live, drop=dead)
    return live


def open_journal(path: Path, fsync: bool = False) -> DurableJournal:
    return DurableJournal(str(path), fsync=fsync)


def inspect_journal(path: Path) -> DurableJournal:
    """Opened the way coord.raft.datadir looks into a data dir: only to read."""
    return DurableJournal(str(path), fsync=False, inspect=True)


def contents(j: DurableJournal) -> list[Entry]:
    return [j[i] for i in range(len(j))]


def written(path: Path, entries: list[Entry], fsync: bool = False, drop: int = 0) -> Path:
    """A journal file holding ``entries``, the first ``drop`` of them compacted away (a
    dead prefix), closed the way pysyncobj closes it."""
    j = open_journal(path, fsync)
    for e in entries:
        j.add(*e)
    if drop:
        j.deleteEntriesTo(drop)
    j._destroy()
    return path


def record(command: bytes, idx: int, term: int) -> bytes:
    """One record built by hand from the documented layout (not with the journal's code)."""
    crc = zlib.crc32(LEN_IDX_TERM.pack(len(command), idx, term) + command)
    return REC.pack(len(command), crc, idx, term) + command


def records(entries: list[Entry]) -> bytes:
    return b"".join(record(*e) for e in entries)


def hand_header(start: int) -> bytes:
    """The magic and the header built by hand from the documented layout."""
    return b"COORDJ03" + HEADER.pack(start, zlib.crc32(struct.pack("<Q", start)), 0)


def header_start(data: bytes) -> int:
    """Where a format-3 file's header says the live records begin (its crc checked)."""
    assert data[:8] == b"COORDJ03"
    start, crc, reserved = HEADER.unpack_from(data, 8)
    assert crc == zlib.crc32(struct.pack("<Q", start))
    assert reserved == 0
    return int(start)


def file_size(entries: list[Entry], start: int = HEADER_LEN) -> int:
    return start + sum(REC.size + len(command) for command, _, _ in entries)


def record_offsets(path: Path) -> list[int]:
    """Absolute offsets of the live records (from the header's start to the end)."""
    data = path.read_bytes()
    off, out = header_start(data), []
    while off < len(data):
        out.append(off)
        off += REC.size + REC.unpack_from(data, off)[0]
    return out


def refused(name: str) -> Callable[..., None]:
    """A stand-in for ``name`` that fails the test if it is called."""

    def call(*args: object) -> None:
        pytest.fail(f"{name} was called")

    return call


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _fs_punches_holes(directory: Path) -> bool:
    """Whether this file system frees the blocks of fallocate(PUNCH_HOLE | KEEP_SIZE)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    probe = directory / "punch-probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"\xab" * 4 * PAGE)
        os.fsync(fd)
        blocks = os.fstat(fd).st_blocks
        if libc.fallocate(fd, 0x02 | 0x01, PAGE, 2 * PAGE) != 0:  # PUNCH_HOLE | KEEP_SIZE
            return False
        st = os.fstat(fd)
        return st.st_size == 4 * PAGE and st.st_blocks < blocks
    finally:
        os.close(fd)
        probe.unlink()


@pytest.fixture(scope="module")
def punchable(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip where the file system (of the tests' temporary files) cannot punch holes."""
    if not _fs_punches_holes(tmp_path_factory.mktemp("probe")):
        pytest.skip("this file system does not punch holes (fallocate PUNCH_HOLE)")


@pytest.fixture
def jpath(tmp_path: Path) -> Path:
    return tmp_path / "raft.journal"


# -- entries ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fsync", [True, False])
def test_entries_read_back_after_reopen(jpath: Path, fsync: bool) -> None:
    written(jpath, ENTRIES, fsync=fsync)
    j = open_journal(jpath, fsync=fsync)
    assert len(j) == 3
    assert contents(j) == ENTRIES
    assert j[-1] == ENTRIES[-1]
    assert j[1:] == ENTRIES[1:]  # pysyncobj slices the journal
    j.close()


def test_a_new_journal_is_empty_and_is_exactly_a_header(jpath: Path) -> None:
    j = open_journal(jpath)
    assert len(j) == 0
    assert jpath.read_bytes() == hand_header(HEADER_LEN) == header(HEADER_LEN)
    j.close()


def test_entries_survive_a_crash_without_sync(jpath: Path) -> None:
    """A process crash keeps what os.write handed to the page cache."""
    j = open_journal(jpath)
    for e in ENTRIES:
        j.add(*e)
    j.close()  # no sync, no meta
    j = open_journal(jpath)
    assert contents(j) == ENTRIES
    j.close()


def test_add_accepts_bytes_like_commands(jpath: Path) -> None:
    j = open_journal(jpath)
    j.add(bytearray(b"abc"), 1, 1)  # type: ignore[arg-type]
    j.add(memoryview(b"def"), 2, 1)  # type: ignore[arg-type]
    assert contents(j) == [(b"abc", 1, 1), (b"def", 2, 1)]
    j._destroy()
    reopened = open_journal(jpath)
    assert contents(reopened) == [(b"abc", 1, 1), (b"def", 2, 1)]
    reopened.close()


def test_delete_entries_from_then_reopen(jpath: Path) -> None:
    j = open_journal(written(jpath, ENTRIES))
    j.deleteEntriesFrom(1)
    assert contents(j) == ENTRIES[:1]
    j.add(b"new", 2, 3)
    j._destroy()
    j = open_journal(jpath)
    assert contents(j) == [ENTRIES[0], (b"new", 2, 3)]
    j.deleteEntriesFrom(5)  # beyond the end: nothing to do
    assert len(j) == 2
    j.close()


def test_delete_entries_to_then_reopen(jpath: Path) -> None:
    j = open_journal(written(jpath, ENTRIES))
    j.deleteEntriesTo(2)
    assert contents(j) == ENTRIES[2:]
    j.add(b"after", 4, 2)
    j._destroy()
    j = open_journal(jpath)
    assert contents(j) == [*ENTRIES[2:], (b"after", 4, 2)]
    assert not Path(str(jpath) + ".tmp").exists()
    j.close()


@pytest.mark.parametrize("drop", [1, 3])
def test_compaction_writes_only_the_header(
    jpath: Path, drop: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prefix a snapshot covers is dropped by moving the header's start, not by
    rewriting the file (three fsyncs on the tick thread): no sync of its own, no new
    file, every record stays where it was, byte for byte, and the size does not change."""
    written(jpath, FOUR)
    before = jpath.read_bytes()
    offsets = record_offsets(jpath)
    j = open_journal(jpath, fsync=True)
    with monkeypatch.context() as m:
        for name in ("fsync", "fdatasync", "replace", "rename"):
            m.setattr(os, name, refused(f"os.{name}"))
        j.deleteEntriesTo(drop)
    after = jpath.read_bytes()
    assert after[:HEADER_LEN] == hand_header(offsets[drop])
    assert after[HEADER_LEN:] == before[HEADER_LEN:]  # the kept records at their old offsets
    assert contents(j) == FOUR[drop:]
    j._destroy()
    assert jpath.read_bytes()[HEADER_LEN:] == before[HEADER_LEN:]
    assert not Path(str(jpath) + ".tmp").exists()
    assert record_offsets(jpath) == offsets[drop:]
    j = open_journal(jpath)
    assert contents(j) == FOUR[drop:]
    j.close()


@pytest.mark.parametrize("reopen", ["destroy", "close"])
def test_delete_entries_to_everything_then_add(jpath: Path, reopen: str) -> None:
    """With the whole log compacted the header points at the end of the file: the next
    append goes there, the records before it stay dead, also after a crash (close)."""
    j = open_journal(written(jpath, ENTRIES), fsync=True)
    before = jpath.read_bytes()
    j.deleteEntriesTo(10)
    assert len(j) == 0
    assert jpath.read_bytes() == hand_header(len(before)) + before[HEADER_LEN:]
    j.add(b"x", 4, 2)
    assert jpath.read_bytes() == hand_header(len(before)) + before[HEADER_LEN:] + record(b"x", 4, 2)
    if reopen == "destroy":
        j._destroy()
    else:
        j.close()
    j = open_journal(jpath)
    assert contents(j) == [(b"x", 4, 2)]
    j.close()


def test_clear_then_reopen(jpath: Path) -> None:
    j = open_journal(written(jpath, ENTRIES))
    j.clear()
    assert len(j) == 0
    j._destroy()
    j = open_journal(jpath)
    assert len(j) == 0
    assert jpath.read_bytes() == hand_header(HEADER_LEN)
    j.add(b"again", 10, 4)
    j._destroy()
    j = open_journal(jpath)
    assert contents(j) == [(b"again", 10, 4)]
    j.close()


# -- the on-disk format ----------------------------------------------------------------------


def test_the_magic_names_format_3() -> None:
    assert MAGIC == b"COORDJ03"
    assert HEADER_LEN == 24


@pytest.mark.parametrize("start", [HEADER_LEN, 4097, 2**40 + 3])
def test_the_header_has_the_documented_layout(start: int) -> None:
    assert header(start) == hand_header(start)


def test_records_have_the_documented_layout(jpath: Path) -> None:
    written(jpath, ENTRIES)
    assert jpath.read_bytes() == hand_header(HEADER_LEN) + records(ENTRIES)


@pytest.mark.parametrize("dead", [b"", b"\x00" * 5, b"any bytes at all" * 300])
def test_hand_built_records_read_back(jpath: Path, dead: bytes) -> None:
    """Whatever lies between the header and its start is dead: never read."""
    jpath.write_bytes(hand_header(HEADER_LEN + len(dead)) + dead + records(ENTRIES))
    j = open_journal(jpath)
    assert contents(j) == ENTRIES
    j.close()


def test_the_checksum_covers_the_length(jpath: Path) -> None:
    """A format-1 record (crc over idx | term | command only) does not pass for a valid one."""
    command, idx, term = ENTRIES[2]
    v1_crc = zlib.crc32(struct.pack("<QQ", idx, term) + command)
    v1_record = REC.pack(len(command), v1_crc, idx, term) + command
    jpath.write_bytes(hand_header(HEADER_LEN) + records(ENTRIES[:2]) + v1_record)
    j = open_journal(jpath)
    assert contents(j) == ENTRIES[:2]  # the last record fails its checksum: a torn tail
    j.close()


def test_a_format_1_journal_is_refused_untouched(jpath: Path) -> None:
    old = b"COORDJ01" + records(ENTRIES)
    jpath.write_bytes(old)
    with pytest.raises(JournalCorrupt, match=r"bad magic, it was written by an older coord"):
        open_journal(jpath)
    assert jpath.read_bytes() == old


@pytest.mark.parametrize("entries", [FOUR, []], ids=["four", "empty"])
def test_a_format_2_journal_is_read_then_rewritten_in_format_3(
    jpath: Path, entries: list[Entry]
) -> None:
    """An upgraded node keeps its log: read as it was, then stored in format 3 (a new
    file renamed over it), and the offsets it keeps are those of the new file."""
    jpath.write_bytes(b"COORDJ02" + records(entries))
    j = open_journal(jpath)
    assert contents(j) == entries
    assert not j.dirty
    assert jpath.read_bytes() == hand_header(HEADER_LEN) + records(entries)
    assert not Path(str(jpath) + ".tmp").exists()
    j.close()
    j = open_journal(jpath)
    assert contents(j) == entries
    j.close()
    assert jpath.read_bytes() == hand_header(HEADER_LEN) + records(entries)


def test_offsets_after_a_format_2_rewrite_are_those_of_the_new_file(jpath: Path) -> None:
    jpath.write_bytes(b"COORDJ02" + records(FOUR))
    j = open_journal(jpath)
    j.deleteEntriesTo(1)
    assert header_start(jpath.read_bytes()) == HEADER_LEN + len(record(*FOUR[0]))
    j.deleteEntriesFrom(2)  # FOUR[3] goes
    assert os.path.getsize(jpath) == HEADER_LEN + len(records(FOUR[:3]))
    j.add(b"new", 4, 3)
    j._destroy()
    j = open_journal(jpath)
    assert contents(j) == [*FOUR[1:3], (b"new", 4, 3)]
    j.close()


def test_a_format_2_journal_with_a_torn_tail_is_rewritten_without_it(jpath: Path) -> None:
    jpath.write_bytes(b"COORDJ02" + records(FOUR) + record(b"torn", 5, 2)[:-1])
    j = open_journal(jpath)
    assert contents(j) == FOUR
    j.close()
    assert jpath.read_bytes() == hand_header(HEADER_LEN) + records(FOUR)


def test_inspecting_a_format_2_journal_leaves_it_untouched(jpath: Path) -> None:
    """coord.raft.datadir only looks: the node that opens the journal next upgrades it."""
    old = b"COORDJ02" + records(FOUR)
    jpath.write_bytes(old)
    j = inspect_journal(jpath)
    assert contents(j) == FOUR
    j.close()
    assert jpath.read_bytes() == old
    j = open_journal(jpath)
    assert contents(j) == FOUR
    j.close()
    assert jpath.read_bytes() == hand_header(HEADER_LEN) + records(FOUR)


def test_damage_in_a_format_2_journal_is_refused_with_its_offsets_untouched(jpath: Path) -> None:
    """Offsets in the message are those of the file on disk, which is not rewritten."""
    old = b"COORDJ02" + records(FOUR)
    jpath.write_bytes(old)
    second = 8 + len(record(*FOUR[0]))
    damaged = flip(jpath, 8 + FIELDS["crc"])
    with pytest.raises(JournalCorrupt, match=damaged_message(8, second)):
        open_journal(jpath)
    assert jpath.read_bytes() == damaged


# -- torn tails: cut at load -----------------------------------------------------------------


def flip(path: Path, pos: int, mask: int = 0x10) -> bytes:
    """Flip bits of one byte in place; return the damaged file's bytes."""
    data = bytearray(path.read_bytes())
    data[pos] ^= mask
    path.write_bytes(bytes(data))
    return bytes(data)


def damaged_message(bad: int, good: int) -> str:
    return rf"record at offset {bad} is damaged but a valid record follows at offset {good}:"


def test_a_torn_tail_is_cut_at_load(jpath: Path) -> None:
    written(jpath, ENTRIES)
    full = jpath.read_bytes()
    last = record_offsets(jpath)[-1]
    for size in range(last + 1, len(full)):  # every cut inside the last record
        jpath.write_bytes(full[:size])
        j = open_journal(jpath)
        assert contents(j) == ENTRIES[:-1], size
        assert os.path.getsize(jpath) == last, size
        assert not j.dirty  # the cut is made durable at open
        j.close()


def test_writing_continues_cleanly_after_a_cut_tail(jpath: Path) -> None:
    written(jpath, ENTRIES)
    with open(jpath, "r+b") as f:
        f.truncate(os.path.getsize(jpath) - 3)
    j = open_journal(jpath)
    j.add(b"replacement", 3, 3)
    j._destroy()
    j = open_journal(jpath)
    assert contents(j) == [*ENTRIES[:-1], (b"replacement", 3, 3)]
    j.close()


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b"\x07", id="one-byte"),
        pytest.param(b"\x00" * (REC.size - 1), id="partial-header-zeros"),
        pytest.param(b"garbage", id="partial-header-text"),
        pytest.param(REC.pack(1000, 0, 9, 9) + b"only a bit", id="header-then-short-body"),
        pytest.param(b"\x00" * REC.size, id="one-zero-header-exactly"),
    ],
)
def test_appended_garbage_that_cannot_be_a_record_is_cut(jpath: Path, tail: bytes) -> None:
    written(jpath, ENTRIES)
    size = os.path.getsize(jpath)
    with open(jpath, "ab") as f:
        f.write(tail)
    j = open_journal(jpath)
    assert contents(j) == ENTRIES
    assert os.path.getsize(jpath) == size
    j.close()


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b"\x00" * 64, id="zero-filled"),
        pytest.param(b"\x00" * 4096, id="zero-filled-page"),
        pytest.param(struct.pack("<I", 1) + b"\xab" * 60, id="garbage"),
        pytest.param(bytes(range(256)) * 8, id="garbage-2k"),
        pytest.param(record(b"next", 4, 2)[:-1] + b"\x00" * 50, id="torn-record-then-zeros"),
        pytest.param(
            REC.pack(4, 0, 4, 2) + b"next" + b"\x00" * 50, id="next-index-bad-crc-then-zeros"
        ),
        pytest.param(
            record(b"next", 4, 2)[:-1] + record(b"then", 5, 2)[:-1], id="two-torn-records"
        ),
    ],
)
def test_an_unsynced_garbage_tail_is_cut(jpath: Path, tail: bytes) -> None:
    """More than one record header's worth of zeros or garbage after the last good record
    (a power loss before the tick's fsync): cut, and the good records survive."""
    written(jpath, ENTRIES)
    size = os.path.getsize(jpath)
    with open(jpath, "ab") as f:
        f.write(tail)
    j = open_journal(jpath)
    assert contents(j) == ENTRIES
    assert os.path.getsize(jpath) == size
    assert not j.dirty  # the cut is made durable at open
    j.add(b"after", 4, 2)
    j._destroy()
    j = open_journal(jpath)
    assert contents(j) == [*ENTRIES, (b"after", 4, 2)]
    assert os.path.getsize(jpath) == file_size([*ENTRIES, (b"after", 4, 2)])
    j.close()


@pytest.mark.parametrize("extra", [0, 10, -1], ids=["at-a-boundary", "inside", "last-byte"])
def test_a_multi_record_unsynced_tail_is_cut(jpath: Path, extra: int) -> None:
    """Power loss after one tick appended several records: the file kept its new size, but its
    pages never reached the disk and read back as zeros, from some point to the end."""
    written(jpath, FOUR)
    offsets = record_offsets(jpath)
    data = bytearray(jpath.read_bytes())
    start = offsets[1] + extra if extra >= 0 else offsets[2] + extra
    data[start:] = bytes(len(data) - start)
    jpath.write_bytes(bytes(data))
    j = open_journal(jpath)
    assert contents(j) == FOUR[:1]
    assert os.path.getsize(jpath) == offsets[1]
    j.close()


def test_a_last_record_failing_its_checksum_is_cut(jpath: Path) -> None:
    written(jpath, ENTRIES)
    flip(jpath, os.path.getsize(jpath) - 1, 0x01)
    j = open_journal(jpath)
    assert contents(j) == ENTRIES[:-1]
    j.close()


@pytest.mark.parametrize("dead", [0, 2], ids=["no-dead-prefix", "dead-prefix"])
@pytest.mark.parametrize("field", list(FIELDS))
def test_any_corrupt_field_of_the_last_record_is_cut(jpath: Path, field: str, dead: int) -> None:
    live = four_behind(jpath, dead)
    last = record_offsets(jpath)[-1]
    flip(jpath, last + FIELDS[field])
    j = open_journal(jpath)
    assert contents(j) == live[:-1]
    assert os.path.getsize(jpath) == last
    j.close()


# -- damage in the middle: refused -------------------------------------------------------------


@pytest.mark.parametrize("dead", [0, 2], ids=["no-dead-prefix", "dead-prefix"])
@pytest.mark.parametrize("victim", [0, 1, 2], ids=["first", "second", "third"])
@pytest.mark.parametrize("field", list(FIELDS))
def test_a_corrupt_record_in_the_middle_refuses_the_start(
    jpath: Path, field: str, victim: int, dead: int
) -> None:
    """The offsets in the message are absolute (where to look in the file), also when the
    live records begin after a dead prefix."""
    four_behind(jpath, dead)
    offsets = record_offsets(jpath)
    damaged = flip(jpath, offsets[victim] + FIELDS[field])
    with pytest.raises(JournalCorrupt, match=damaged_message(offsets[victim], offsets[victim + 1])):
        open_journal(jpath)
    assert jpath.read_bytes() == damaged  # evidence left untouched


def test_the_corrupt_message_says_what_to_do(jpath: Path) -> None:
    written(jpath, ENTRIES)
    flip(jpath, record_offsets(jpath)[1] + 5, 0xFF)
    with pytest.raises(
        JournalCorrupt,
        match="restore this node's data dir from a backup, or wipe it so that it catches up "
        "from the leader",
    ):
        open_journal(jpath)


@pytest.mark.parametrize(
    "length",
    [
        pytest.param(0x7FFF_FFFF, id="past-eof"),
        pytest.param(0, id="zero"),
        pytest.param(len(ENTRIES[0][0]) - 1, id="one-short"),
        pytest.param(len(ENTRIES[0][0]) + 1, id="one-long"),
        # Ends exactly where the third record starts: a record boundary, still refused.
        pytest.param(len(ENTRIES[0][0]) + REC.size + len(ENTRIES[1][0]), id="onto-a-boundary"),
    ],
)
def test_a_corrupt_length_in_the_middle_refuses_the_start(jpath: Path, length: int) -> None:
    written(jpath, ENTRIES)
    offsets = record_offsets(jpath)
    data = bytearray(jpath.read_bytes())
    struct.pack_into("<I", data, offsets[0], length)
    jpath.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match=damaged_message(offsets[0], offsets[1])):
        open_journal(jpath).close()
    assert jpath.read_bytes() == bytes(data)  # the evidence is left in place


@pytest.mark.parametrize("gap", [1, 7, REC.size - 1, REC.size, 37])
def test_damage_followed_by_a_valid_record_anywhere_later_refuses_the_start(
    jpath: Path, gap: int
) -> None:
    """The valid record need not sit on a record boundary, nor a header's length away from
    the damage: it is searched for byte by byte."""
    written(jpath, ENTRIES)
    size = os.path.getsize(jpath)
    with open(jpath, "ab") as f:
        f.write(b"\xab" * gap + record(b"acknowledged", 4, 3) + b"\x00" * 11)
    data = jpath.read_bytes()
    with pytest.raises(JournalCorrupt, match=damaged_message(size, size + gap)):
        open_journal(jpath)
    assert jpath.read_bytes() == data


@pytest.mark.parametrize(
    ("idx", "refused"),
    [
        pytest.param(1, False, id="an-old-index"),
        pytest.param(3, False, id="the-last-good-index"),
        pytest.param(4, True, id="the-next-index"),
        pytest.param(9, True, id="a-few-past"),
        pytest.param(3 + 2**32, True, id="the-largest-plausible-index"),
        pytest.param(3 + 2**32 + 1, False, id="too-far-past"),
    ],
)
def test_only_a_later_record_with_a_plausible_index_proves_mid_file_damage(
    jpath: Path, idx: int, refused: bool
) -> None:
    """Evidence is a valid record with idx in (last good idx, last good idx + 2**32]."""
    written(jpath, ENTRIES)  # last good idx: 3
    size = os.path.getsize(jpath)
    with open(jpath, "ab") as f:
        f.write(b"\x00" * 40 + record(b"later", idx, 9))
    data = jpath.read_bytes()
    if refused:
        with pytest.raises(JournalCorrupt, match=damaged_message(size, size + 40)):
            open_journal(jpath)
        assert jpath.read_bytes() == data
    else:
        j = open_journal(jpath)
        assert contents(j) == ENTRIES
        assert os.path.getsize(jpath) == size
        j.close()


@pytest.mark.parametrize("dead", [0, 100])
def test_without_a_good_record_any_valid_later_record_is_evidence(jpath: Path, dead: int) -> None:
    start = HEADER_LEN + dead
    jpath.write_bytes(hand_header(start) + b"\xee" * dead + b"\x00" * 30 + record(b"x", 1, 1))
    with pytest.raises(JournalCorrupt, match=damaged_message(start, start + 30)):
        open_journal(jpath)


@settings(max_examples=200, deadline=None)
@given(commands=st.lists(st.binary(max_size=30), min_size=2, max_size=6), data=st.data())
def test_any_damaged_byte_is_refused_in_the_middle_and_cut_at_the_tail(
    commands: list[bytes], data: st.DataObject
) -> None:
    """Past the header: a damaged byte in the dead prefix (compacted records) is ignored,
    in a live record it is refused or cut as anywhere."""
    entries = [(c, i + 1, 1 + i // 2) for i, c in enumerate(commands)]
    drop = data.draw(st.integers(0, len(entries) - 1), label="drop")
    with tempfile.TemporaryDirectory() as d:
        path = written(Path(d) / "j", entries, drop=drop)
        entries = entries[drop:]
        offsets = record_offsets(path)
        pos = data.draw(st.integers(HEADER_LEN, os.path.getsize(path) - 1), label="pos")
        damaged = flip(path, pos, data.draw(st.integers(1, 255), label="mask"))
        if pos < offsets[0]:
            j = open_journal(path)
            assert contents(j) == entries
            j.close()
            assert path.read_bytes() == damaged
            return
        victim = max(i for i, off in enumerate(offsets) if off <= pos)
        if victim < len(entries) - 1:
            with pytest.raises(
                JournalCorrupt, match=damaged_message(offsets[victim], offsets[victim + 1])
            ):
                open_journal(path)
            assert path.read_bytes() == damaged
        else:
            j = open_journal(path)
            assert contents(j) == entries[:-1]
            assert os.path.getsize(path) == offsets[-1]
            j.close()


def test_a_file_that_is_not_a_journal_is_refused(jpath: Path) -> None:
    jpath.write_bytes(b"NOTAJOURNAL, just some file")
    with pytest.raises(JournalCorrupt, match="not a coord journal"):
        open_journal(jpath)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_a_refused_journal_leaves_no_file_open(jpath: Path) -> None:
    written(jpath, ENTRIES)
    flip(jpath, record_offsets(jpath)[0] + FIELDS["crc"])
    before = open_fds()
    for _ in range(3):
        with pytest.raises(JournalCorrupt):
            open_journal(jpath)
    assert open_fds() == before


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_a_journal_refused_for_its_magic_leaves_no_file_open(jpath: Path) -> None:
    jpath.write_bytes(b"NOTAJOURNAL, just some file")
    before = open_fds()
    for _ in range(3):
        with pytest.raises(JournalCorrupt):
            open_journal(jpath)
    assert open_fds() == before


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_a_failed_format_2_rewrite_leaves_no_file_open_and_the_file_untouched(
    jpath: Path,
) -> None:
    """The rewrite at open can fail (a full disk, here a directory in the way of its
    temporary file): the start fails, and must not leave a descriptor open per try."""
    old = b"COORDJ02" + records(FOUR)
    jpath.write_bytes(old)
    Path(str(jpath) + ".tmp").mkdir()
    before = open_fds()
    for _ in range(3):
        with pytest.raises(OSError):
            open_journal(jpath)
    assert jpath.read_bytes() == old
    assert open_fds() == before


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_a_failed_first_sync_at_open_leaves_no_file_open(
    jpath: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What was read back is synced before the journal is used: if that fdatasync fails
    (EIO) the start fails, without leaving a descriptor open per try."""
    written(jpath, ENTRIES)
    data = jpath.read_bytes()

    def failing_fdatasync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
    before = open_fds()
    for _ in range(3):
        with pytest.raises(OSError) as raised:
            open_journal(jpath, fsync=True)
        assert raised.value.errno == errno.EIO
    assert open_fds() == before
    assert jpath.read_bytes() == data


def at_open_failing(path: Path, case: str) -> tuple[str, Callable[..., object]]:
    """A journal file whose open must write (``case``), and the os function, failing
    with EIO, that the write goes through."""

    def fail(*args: object) -> object:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    if case == "empty":  # the header is written into it
        path.write_bytes(b"")
        return "write", fail
    if case == "torn-tail":  # the tail is cut
        written(path, ENTRIES)
        with open(path, "ab") as f:
            f.write(b"\x00" * 40)
        return "ftruncate", fail
    assert case == "header-past-end"  # the header is corrected
    crash_after_the_header(path)
    return "pwrite", fail


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
@pytest.mark.parametrize("case", ["empty", "torn-tail", "header-past-end"])
def test_a_failed_write_while_loading_leaves_no_file_open(
    jpath: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    name, fail = at_open_failing(jpath, case)
    before = open_fds()
    with monkeypatch.context() as m:
        m.setattr(os, name, fail)
        for _ in range(3):
            with pytest.raises(OSError):
                open_journal(jpath)
    assert open_fds() == before


# -- the header: damaged, or saying more than the file holds --------------------------------


def header_damage(path: Path, kind: str) -> bytes:
    """Damage the header of a journal holding ENTRIES; return the file's bytes."""
    written(path, ENTRIES)
    data = bytearray(path.read_bytes())
    if kind == "start-bit":
        data[8] ^= 0x10
    elif kind == "start-high-bit":
        data[15] ^= 0x01
    elif kind == "crc-bit":
        data[16] ^= 0x01
    elif kind.startswith("start-"):  # a start inside the header, with its crc right
        data[:HEADER_LEN] = hand_header(int(kind.removeprefix("start-")))
    else:
        assert kind == "cut-short"
        data = data[: HEADER_LEN - 10]
    path.write_bytes(bytes(data))
    return bytes(data)


HEADER_DAMAGE = ["start-bit", "start-high-bit", "crc-bit", "start-0", "start-8", "start-23"]


@pytest.mark.parametrize("kind", [*HEADER_DAMAGE, "cut-short"])
@pytest.mark.parametrize("inspect", [False, True], ids=["open", "inspect"])
def test_a_damaged_header_is_refused_untouched(jpath: Path, kind: str, inspect: bool) -> None:
    """The header says where the log begins: guessing could resurrect compacted records
    or skip live ones. A start before the end of the header (8 is where a format-2 log
    began) is as wrong as a bad checksum."""
    damaged = header_damage(jpath, kind)
    with pytest.raises(JournalCorrupt, match=r"raft\.journal: the header .*(damaged|cut short)"):
        inspect_journal(jpath) if inspect else open_journal(jpath)
    assert jpath.read_bytes() == damaged


@pytest.mark.parametrize("kind", [*HEADER_DAMAGE, "cut-short"])
def test_the_damaged_header_message_says_what_to_do(jpath: Path, kind: str) -> None:
    header_damage(jpath, kind)
    with pytest.raises(
        JournalCorrupt,
        match="restore this node's data dir from a backup, or wipe it so that it catches up "
        "from the leader",
    ):
        open_journal(jpath)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
@pytest.mark.parametrize("kind", [*HEADER_DAMAGE, "cut-short"])
def test_a_journal_refused_for_its_header_leaves_no_file_open(jpath: Path, kind: str) -> None:
    header_damage(jpath, kind)
    before = open_fds()
    for _ in range(3):
        with pytest.raises(JournalCorrupt):
            open_journal(jpath)
    assert open_fds() == before


def crash_after_the_header(path: Path) -> int:
    """A journal whose header reached the disk before the appends it skips: entries synced,
    more appended but not synced, the whole log compacted (the header now points past
    them), then a power loss that kept page 0 (the header) but not the appends. Returns
    the file's size on disk."""
    j = open_journal(path, fsync=True)
    for e in ENTRIES:
        j.add(*e)
    j.sync()
    synced = os.path.getsize(path)
    for e in FOUR:
        j.add(e[0], e[1] + 3, e[2] + 2)
    j.deleteEntriesTo(len(j))  # the snapshot holds all seven
    j.close()
    os.truncate(path, synced)  # the unsynced appends are lost
    return synced


def test_a_header_past_the_end_of_the_file_means_an_empty_log_there(
    jpath: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Writeback has no order: the header may reach the disk before the appends it skips
    (the snapshot holds them). The log is empty and begins at the end of the file, and the
    header is corrected to say so: otherwise the appends made after the restart, before
    the header's old start, would be skipped at the next one. It is not silent."""
    size = crash_after_the_header(jpath)
    on_disk = jpath.read_bytes()
    old_start = header_start(on_disk)
    assert old_start > size
    with caplog.at_level(logging.WARNING, logger="coord.raft.journal"):
        j = open_journal(jpath)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert (
        f"the log begins at offset {old_start}, past the end of the file ({size} bytes)"
        in warnings[0].getMessage()
    )
    assert len(j) == 0
    assert not j.dirty  # the corrected header is durable before anything is appended
    assert jpath.read_bytes() == hand_header(size) + on_disk[HEADER_LEN:]
    j.add(b"after", 8, 4)
    j.add(b"and after", 9, 4)
    j._destroy()
    j = open_journal(jpath)
    assert contents(j) == [(b"after", 8, 4), (b"and after", 9, 4)]
    j.add(b"third start", 10, 5)
    j.close()
    j = open_journal(jpath)
    assert contents(j) == [(b"after", 8, 4), (b"and after", 9, 4), (b"third start", 10, 5)]
    j.close()


def test_inspecting_a_header_past_the_end_of_the_file_leaves_it(
    jpath: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The header is corrected in memory only (the log is empty), with the same warning."""
    crash_after_the_header(jpath)
    on_disk = jpath.read_bytes()
    with caplog.at_level(logging.WARNING, logger="coord.raft.journal"):
        j = inspect_journal(jpath)
    assert "past the end of the file" in caplog.text
    assert len(j) == 0
    assert j[:] == []
    j.close()
    assert jpath.read_bytes() == on_disk


# What an open writes, case by case: the file, what it holds, and how the open changes it.
def inspect_case(path: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> list[Entry]:
    """Make ``path`` a file that a (non-inspect) open changes; return its entries."""
    if case == "empty":  # a header is written into it
        path.write_bytes(b"")
        return []
    if case == "torn-tail":  # the tail is cut
        written(path, ENTRIES)
        with open(path, "ab") as f:
            f.write(record(b"torn", 4, 2)[:-3])
        return ENTRIES
    if case == "zero-tail":  # the tail is cut
        written(path, ENTRIES)
        with open(path, "ab") as f:
            f.write(b"\x00" * PAGE)
        return ENTRIES
    if case == "header-past-end":  # the header is corrected
        crash_after_the_header(path)
        return []
    if case == "format-2":  # rewritten in format 3
        path.write_bytes(b"COORDJ02" + records(FOUR))
        return FOUR
    assert case == "long-dead-prefix"  # rewritten without it
    monkeypatch.setattr(journal_module, "REWRITE_DEAD_BYTES", 1)
    return four_behind(path, 3)


INSPECT_CASES = [
    "empty",
    "torn-tail",
    "zero-tail",
    "header-past-end",
    "format-2",
    "long-dead-prefix",
]


@pytest.mark.parametrize("case", INSPECT_CASES)
def test_inspect_writes_nothing(jpath: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """coord.raft.datadir only looks: the file's bytes (and its inode: no rewrite) are the
    same after an inspecting open, where a node's open changes them."""
    entries = inspect_case(jpath, case, monkeypatch)
    before, ino = jpath.read_bytes(), os.stat(jpath).st_ino
    for _ in range(2):  # a second look sees the same
        j = inspect_journal(jpath)
        assert contents(j) == entries
        j.close()
        assert jpath.read_bytes() == before
        assert os.stat(jpath).st_ino == ino
    assert not Path(str(jpath) + ".tmp").exists()
    j = open_journal(jpath)  # a node's open does write
    assert contents(j) == entries
    j.close()
    assert jpath.read_bytes() != before
    inspected = inspect_journal(jpath)  # and what it wrote reads the same
    assert contents(inspected) == entries
    inspected.close()


# -- term, vote, commit index ----------------------------------------------------------------


def test_meta_defaults(jpath: Path) -> None:
    j = open_journal(jpath)
    assert j.getCurrentTerm() == 0
    assert j.getVotedForNodeId() is None
    assert j.getRaftCommitIndex() == 1
    j.close()


def test_term_and_vote_persist_at_once(jpath: Path) -> None:
    j = open_journal(jpath, fsync=True)
    j.setCurrentTerm(5, "n2")
    j.close()  # a crash right after the vote: it must already be on disk
    j = open_journal(jpath)
    assert (j.getCurrentTerm(), j.getVotedForNodeId()) == (5, "n2")
    j.setCurrentTerm(6, None)
    j.close()
    j = open_journal(jpath)
    assert (j.getCurrentTerm(), j.getVotedForNodeId()) == (6, None)
    j.close()


def test_the_commit_index_is_stored_with_the_term_and_at_close_never_by_the_timer(
    jpath: Path,
) -> None:
    """pysyncobj's one-second timer would store it with two fsyncs on the tick thread
    (a slow disk then stops a leader's heartbeats); a restart with an older commit
    index is safe, the leader brings the current one."""
    meta = Path(str(jpath) + ".meta")
    j = open_journal(jpath)
    j.setRaftCommitIndex(7)
    assert j.getRaftCommitIndex() == 7
    j.onOneSecondTimer()
    assert not meta.exists()
    j.close()  # a crash: not stored
    j = open_journal(jpath)
    assert j.getRaftCommitIndex() == 1
    j.setRaftCommitIndex(7)
    j.setCurrentTerm(2, "n1")  # stored with the term and vote
    j.setRaftCommitIndex(9)
    j.close()
    j = open_journal(jpath)
    assert j.getRaftCommitIndex() == 7
    j.setRaftCommitIndex(9)
    j._destroy()  # a clean stop stores it
    j = open_journal(jpath)
    assert (j.getRaftCommitIndex(), j.getCurrentTerm(), j.getVotedForNodeId()) == (9, 2, "n1")
    j.close()


def test_destroy_persists_the_commit_index(jpath: Path) -> None:
    j = open_journal(jpath)
    j.setRaftCommitIndex(9)
    j._destroy()
    j = open_journal(jpath)
    assert j.getRaftCommitIndex() == 9
    j.close()


def test_a_meta_file_that_does_not_decode_is_refused(jpath: Path) -> None:
    Path(str(jpath) + ".meta").write_bytes(b"{not json")
    with pytest.raises(JournalCorrupt, match=r"\.meta does not decode"):
        open_journal(jpath)


# -- sync ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fsync", [True, False])
def test_sync_returns_true_only_when_dirty(jpath: Path, fsync: bool) -> None:
    j = open_journal(jpath, fsync=fsync)
    assert not j.dirty  # opening syncs what it wrote (the magic) or read back
    assert j.sync() is False
    j.add(b"a", 1, 1)
    j.add(b"b", 2, 1)
    assert j.dirty
    assert j.sync() is True  # one sync covers the batch
    assert j.sync() is False
    j.deleteEntriesFrom(5)  # nothing removed
    assert j.sync() is False
    j.deleteEntriesFrom(1)
    assert j.sync() is True
    j.clear()
    assert j.sync() is True
    j.clear()
    assert j.sync() is False
    j.add(b"c", 3, 1)
    j.sync()
    j.deleteEntriesTo(0)  # nothing compacted
    assert j.sync() is False
    j.deleteEntriesTo(1)  # the header moved
    assert j.sync() is True
    j._destroy()
    j = open_journal(jpath, fsync=fsync)
    assert j.sync() is False  # a clean reopen has nothing to sync
    j.close()


# -- random histories vs a list model ----------------------------------------------------------

# Some commands span pages, so that compactions followed by a sync punch holes.
COMMANDS = st.one_of(st.binary(max_size=40), st.integers(1000, 6000).map(lambda n: b"\xab" * n))
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), COMMANDS, st.integers(0, 3)),
        st.tuples(st.just("from"), st.integers(0, 12)),
        st.tuples(st.just("to"), st.integers(0, 12)),
        st.tuples(st.just("clear")),
        st.tuples(st.just("sync")),
        st.tuples(
            st.just("reopen"), st.sampled_from(["destroy", "close", "sync-close", "rewrite"])
        ),
    ),
    max_size=40,
)


def reopened(j: DurableJournal, path: Path, how: str) -> DurableJournal:
    """Close ``j`` (``how``: cleanly, as a crash, a crash after a sync) and open it again;
    "rewrite" opens it with any dead prefix long enough to be rewritten away."""
    if how == "destroy":
        j._destroy()
    elif how == "sync-close":
        j.sync()
        j.close()
    else:
        j.close()
    if how == "rewrite":
        with mock.patch.object(journal_module, "REWRITE_DEAD_BYTES", 1):
            j = open_journal(path)
        assert header_start(path.read_bytes()) == HEADER_LEN
    else:
        j = open_journal(path)
    assert not j.dirty
    return j


@settings(max_examples=150, deadline=None)
@given(OPS, st.sampled_from([None, 1, 3 * PAGE]))
def test_random_histories_match_a_list_model(
    ops: list[tuple[object, ...]], runtime: int | None
) -> None:
    """After every step the file is a header, a dead prefix (maybe with holes), then
    exactly the model's records: no stray bytes, no hole under a live record. "rewrite"
    reopens with every dead prefix long enough to be rewritten away; ``runtime``, when
    set, is RUNTIME_REWRITE_BYTES (1: every compaction rewrites the file)."""
    limit = journal_module.RUNTIME_REWRITE_BYTES if runtime is None else runtime
    with (
        mock.patch.object(journal_module, "RUNTIME_REWRITE_BYTES", limit),
        tempfile.TemporaryDirectory() as d,
    ):
        path = Path(d) / "j"
        j = open_journal(path)
        model: list[Entry] = []
        next_idx, term = 1, 1
        for op in ops:
            kind = op[0]
            if kind == "add":
                command, bump = op[1], op[2]
                assert isinstance(command, bytes)
                assert isinstance(bump, int)
                term += bump
                j.add(command, next_idx, term)
                model.append((command, next_idx, term))
                next_idx += 1
            elif kind == "from":
                assert isinstance(op[1], int)
                j.deleteEntriesFrom(op[1])
                del model[op[1] :]
            elif kind == "to":
                assert isinstance(op[1], int)
                j.deleteEntriesTo(op[1])
                del model[: op[1]]
                dead = header_start(path.read_bytes()) - HEADER_LEN
                assert dead < limit  # a dead prefix that reached it was rewritten away
            elif kind == "clear":
                j.clear()
                model.clear()
            elif kind == "sync":
                j.sync()
            else:
                assert isinstance(op[1], str)
                j = reopened(j, path, op[1])
            assert contents(j) == model
            data = path.read_bytes()
            assert data[header_start(data) :] == records(model)
        j._destroy()
        j = open_journal(path)
        assert contents(j) == model
        j.close()


# -- what is durable: sequences and the durable index (the sync thread reads them) -------


def test_writes_and_syncs_are_counted_and_the_durable_index_follows(jpath: Path) -> None:
    j = open_journal(jpath, fsync=True)
    opened = j.written_seq
    assert j.synced_seq == opened and j.durable_index == 0  # opening synced the magic
    for e in ENTRIES:
        j.add(*e)
    assert j.written_seq == opened + 3 and j.synced_seq == opened and j.durable_index == 0
    assert j.sync() is True
    assert j.synced_seq == opened + 3 and j.durable_index == 3
    j.deleteEntriesFrom(1)  # a cut lowers the durable index at once
    assert j.durable_index == 1 and j.dirty
    j.add(b"new", 2, 3)
    assert j.durable_index == 1
    j.sync()
    assert j.durable_index == 2 and not j.dirty
    j.add(b"more", 3, 3)
    j.sync()
    j.deleteEntriesTo(1)  # a header write: a write like any other, for the next sync
    assert j.dirty and j.durable_index == 3
    j.sync()
    assert not j.dirty and j.durable_index == 3
    j._destroy()
    j = open_journal(jpath, fsync=True)
    assert not j.dirty and j.durable_index == 3  # what was read back was synced at open
    j.close()


def test_a_sync_begun_before_a_cut_does_not_vouch_for_entries_written_after_it(
    jpath: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync thread captures what it covers, then sits in fdatasync; meanwhile the
    tick thread cuts the log and appends other entries at the same indexes. The sync's
    end must not call those durable."""
    j = open_journal(jpath, fsync=True)
    for e in ENTRIES:
        j.add(*e)
    j.sync()
    j.add(b"old4", 4, 2)
    j.add(b"old5", 5, 2)
    captured = j.written_seq
    started, gate = threading.Event(), threading.Event()
    real = os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        started.set()
        gate.wait(10)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", slow_fdatasync)
    t = threading.Thread(target=j.sync)
    t.start()
    try:
        assert started.wait(10)
        j.deleteEntriesFrom(3)  # drops 4 and 5 (positions 3, 4)
        j.add(b"new4", 4, 3)
        j.add(b"new5", 5, 3)
    finally:
        gate.set()
        t.join(10)
    assert j.synced_seq == captured  # the writes before the sync began are durable
    assert j.durable_index == 3  # but not the new 4 and 5
    assert j.dirty
    j.sync()
    assert j.durable_index == 5
    j.close()


def test_a_compaction_is_a_write_that_the_next_sync_covers(jpath: Path) -> None:
    """The header write is made durable by the group commit like an append: until then
    the journal is dirty. It neither raises the durable index (the kept entries are as
    durable as they were) nor lowers it (nothing that was durable is replaced)."""
    j = open_journal(jpath, fsync=True)
    for e in ENTRIES:
        j.add(*e)
    j.sync()
    seq = j.written_seq
    j.deleteEntriesTo(0)  # nothing to drop: no write
    assert j.written_seq == seq and not j.dirty
    j.deleteEntriesTo(1)
    assert j.written_seq == seq + 1 and j.synced_seq == seq and j.dirty
    assert j.durable_index == 3
    assert j.sync() is True
    assert j.synced_seq == seq + 1 and not j.dirty and j.durable_index == 3
    j.add(b"four", 4, 2)
    j.add(b"five", 5, 2)
    j.deleteEntriesTo(2)  # drops 2 and 3; 4 and 5 are not durable yet
    assert j.written_seq == seq + 4 and j.durable_index == 3
    j.sync()
    assert j.durable_index == 5 and not j.dirty
    j.deleteEntriesTo(len(j))  # everything: the durable index stays where the log was
    assert j.written_seq == seq + 5 and j.dirty and j.durable_index == 5
    j.sync()
    assert not j.dirty and j.durable_index == 5
    j.add(b"six", 6, 2)
    assert j.durable_index == 5
    j.sync()
    assert j.durable_index == 6
    j.close()


class GatedFdatasync:
    """os.fdatasync held until :meth:`release`: the sync thread sits in it while the test
    acts as the tick thread. Records the inode of every file it syncs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.inodes: list[int] = []
        self.started, self.gate = threading.Event(), threading.Event()
        self._real = os.fdatasync
        monkeypatch.setattr(os, "fdatasync", self)

    def __call__(self, fd: int) -> None:
        self.inodes.append(os.fstat(fd).st_ino)
        self.started.set()
        self.gate.wait(10)
        self._real(fd)

    def sync_in_background(self, j: DurableJournal) -> threading.Thread:
        """``j.sync()`` on a thread of its own, once it is in fdatasync."""
        t = threading.Thread(target=j.sync)
        t.start()
        assert self.started.wait(10)
        return t

    def release(self, t: threading.Thread) -> None:
        self.gate.set()
        t.join(10)
        assert not t.is_alive()


# -- compaction: holes, and the rewrite at open ------------------------------------------------

KIB: list[Entry] = [(bytes([i % 251 + 1]) * 1024, i + 1, 1) for i in range(200)]


def test_compaction_frees_the_dead_prefix_once_a_sync_covers_the_header(
    jpath: Path, punchable: None
) -> None:
    """The dead records' pages are freed (a hole: the size stays, the blocks go) only
    after the header that skips them is durable: before that, a crash finds the old
    header, which still needs them. The first page, the header's, is never freed."""
    j = open_journal(jpath, fsync=True)
    for e in KIB:
        j.add(*e)
    j.sync()
    offsets = record_offsets(jpath)
    before = jpath.read_bytes()
    st0 = os.stat(jpath)
    j.deleteEntriesTo(150)
    st1 = os.stat(jpath)
    assert (st1.st_size, st1.st_blocks) == (st0.st_size, st0.st_blocks)  # nothing freed yet
    assert jpath.read_bytes()[HEADER_LEN:] == before[HEADER_LEN:]
    assert j.sync() is True
    upto = offsets[150] // PAGE * PAGE  # the page holding the first kept record stays
    st2 = os.stat(jpath)
    assert st2.st_size == st0.st_size
    assert st2.st_blocks <= st0.st_blocks - (upto - PAGE) // 512
    after = jpath.read_bytes()
    assert after[:HEADER_LEN] == hand_header(offsets[150])
    assert after[HEADER_LEN:PAGE] == before[HEADER_LEN:PAGE]
    assert after[PAGE:upto] == bytes(upto - PAGE)  # a hole reads as zeros
    assert after[upto:] == before[upto:]
    j.deleteEntriesTo(25)  # a second compaction frees the pages after the first hole
    j.sync()
    upto2 = offsets[175] // PAGE * PAGE
    assert os.stat(jpath).st_blocks <= st0.st_blocks - (upto2 - PAGE) // 512
    after = jpath.read_bytes()
    assert after[PAGE:upto2] == bytes(upto2 - PAGE)
    assert after[upto2:] == before[upto2:]
    j._destroy()
    j = open_journal(jpath)
    assert contents(j) == KIB[175:]
    j.close()


def test_a_compaction_during_a_sync_does_not_wait_for_it_and_is_not_freed_by_it(
    jpath: Path, punchable: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replaces the test that the old prefix rewrite, which swapped the file descriptor,
    waited for a sync using it. The header write keeps the file: the tick thread
    compacts while the sync thread is in fdatasync, without waiting for it (an fdatasync
    can take hundreds of milliseconds). That sync began before the header write and does
    not cover it: it must not free the pages the header on disk may still point at."""
    j = open_journal(jpath, fsync=True)
    for e in KIB:
        j.add(*e)
    j.sync()
    j.add(b"one more", 201, 1)  # something for the next sync to do
    offsets = record_offsets(jpath)
    before = jpath.read_bytes()
    gated = GatedFdatasync(monkeypatch)
    t = gated.sync_in_background(j)
    try:
        j.deleteEntriesTo(150)
        assert t.is_alive(), "the compaction waited for the fdatasync in progress"
    finally:
        gated.release(t)
    assert j.dirty  # the header write is left for the next sync
    assert jpath.read_bytes()[HEADER_LEN:] == before[HEADER_LEN:]  # nothing freed
    blocks = os.stat(jpath).st_blocks
    assert j.sync() is True
    upto = offsets[150] // PAGE * PAGE
    assert jpath.read_bytes()[PAGE:upto] == bytes(upto - PAGE)
    assert os.stat(jpath).st_blocks < blocks
    # Both syncs fdatasync'ed the journal's file (through a descriptor of their own: a
    # runtime rewrite may replace the journal's meanwhile), the one still in place.
    inode = os.stat(jpath).st_ino
    assert gated.inodes == [inode, inode]
    assert os.fstat(j._fd).st_ino == inode
    j._destroy()
    j = open_journal(jpath)
    assert contents(j) == [*KIB[150:], (b"one more", 201, 1)]
    j.close()


def test_a_long_dead_prefix_is_rewritten_away_at_open(
    jpath: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file's size only grows while the node runs (holes free the blocks, not the
    size, and not at all on a file system without holes): a dead prefix (the bytes
    between the header and its start) of REWRITE_DEAD_BYTES or more is rewritten away at
    the next open."""
    entries = [(b"%03d" % i * 20, i + 1, 1) for i in range(30)]
    written(jpath, entries, drop=20)
    old = jpath.read_bytes()
    dead = header_start(old) - HEADER_LEN
    live = entries[20:]
    monkeypatch.setattr(journal_module, "REWRITE_DEAD_BYTES", dead + 1)
    j = open_journal(jpath)
    assert contents(j) == live
    j._destroy()
    assert jpath.read_bytes() == old  # one byte short of the threshold: left as it is
    monkeypatch.setattr(journal_module, "REWRITE_DEAD_BYTES", dead)
    j = inspect_journal(jpath)
    assert contents(j) == live
    j.close()
    assert jpath.read_bytes() == old  # only looked at
    j = open_journal(jpath)
    assert contents(j) == live
    assert not j.dirty
    assert jpath.read_bytes() == hand_header(HEADER_LEN) + records(live)
    assert not Path(str(jpath) + ".tmp").exists()
    # The offsets the journal keeps are those of the new file.
    j.deleteEntriesTo(2)
    assert header_start(jpath.read_bytes()) == HEADER_LEN + len(records(live[:2]))
    j.deleteEntriesFrom(3)
    assert os.path.getsize(jpath) == HEADER_LEN + len(records(live[:5]))
    j.add(b"appended", 26, 2)
    j._destroy()
    j = open_journal(jpath)
    assert contents(j) == [*live[2:5], (b"appended", 26, 2)]
    j.close()


def test_no_dead_prefix_is_never_rewritten_at_open(
    jpath: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The threshold counts the dead bytes, not the start: a journal with none is left
    alone even with the threshold at its smallest."""
    written(jpath, ENTRIES)
    old, inode = jpath.read_bytes(), os.stat(jpath).st_ino
    monkeypatch.setattr(journal_module, "REWRITE_DEAD_BYTES", 1)
    j = open_journal(jpath)
    assert contents(j) == ENTRIES
    j.close()
    assert jpath.read_bytes() == old
    assert os.stat(jpath).st_ino == inode


# -- the rewrite at a compaction (RUNTIME_REWRITE_BYTES) --------------------------------------

SIXTY: list[Entry] = [(b"%03d" % i * 20, i + 1, 1 + i // 40) for i in range(60)]


@pytest.mark.parametrize(("extra", "rewritten"), [(0, True), (1, False)])
def test_the_runtime_rewrite_threshold_counts_the_dead_bytes(
    jpath: Path, monkeypatch: pytest.MonkeyPatch, extra: int, rewritten: bool
) -> None:
    written(jpath, SIXTY)
    offsets = record_offsets(jpath)
    monkeypatch.setattr(journal_module, "RUNTIME_REWRITE_BYTES", offsets[20] - HEADER_LEN + extra)
    j = open_journal(jpath)
    j.deleteEntriesTo(20)
    data = jpath.read_bytes()
    if rewritten:
        assert data == hand_header(HEADER_LEN) + records(SIXTY[20:])
    else:
        assert header_start(data) == offsets[20] and len(data) == file_size(SIXTY)
    assert contents(j) == SIXTY[20:]
    j.close()


def near_the_runtime_threshold(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[DurableJournal, list[int]]:
    """A journal holding SIXTY[10:30], synced, its dead prefix (SIXTY[:10]) half of
    RUNTIME_REWRITE_BYTES: the next ``deleteEntriesTo(10)`` reaches it. Returns the
    journal and the offsets its records had."""
    j = open_journal(path, fsync=True)
    for e in SIXTY[:30]:
        j.add(*e)
    j.sync()
    offsets = record_offsets(path)
    monkeypatch.setattr(journal_module, "RUNTIME_REWRITE_BYTES", offsets[20] - HEADER_LEN)
    j.deleteEntriesTo(10)  # below the threshold: the header moves, nothing else
    assert header_start(path.read_bytes()) == offsets[10]
    assert os.path.getsize(path) == file_size(SIXTY[:30])
    j.sync()
    return j, offsets


def test_a_compaction_that_reaches_the_runtime_threshold_rewrites_the_file(
    jpath: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A node that runs long enough never reopens its journal: the compaction that takes
    the dead prefix to RUNTIME_REWRITE_BYTES rewrites the file as an open would (a
    temporary file synced, renamed over the journal, the directory synced). Everything
    the journal holds is durable: the new file was synced whole."""
    j, offsets = near_the_runtime_threshold(jpath, monkeypatch)
    old_inode = os.stat(jpath).st_ino
    tmp, directory = os.path.realpath(str(jpath) + ".tmp"), os.path.realpath(jpath.parent)
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append(("replace", os.path.realpath(src), os.path.realpath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    j.add(*SIXTY[30])  # not synced: the rewrite makes it durable
    with caplog.at_level(logging.INFO, logger="coord.raft.journal"):
        j.deleteEntriesTo(10)  # the dead prefix reaches the threshold
    live = SIXTY[20:31]
    assert events == [
        ("fsync", tmp),
        ("replace", tmp, os.path.realpath(jpath)),
        ("fsync", directory),
    ]
    assert f"without its dead prefix of {offsets[20] - HEADER_LEN} bytes" in caplog.text
    assert jpath.read_bytes() == hand_header(HEADER_LEN) + records(live)
    assert os.stat(jpath).st_ino != old_inode
    assert os.fstat(j._fd).st_ino == os.stat(jpath).st_ino
    assert not Path(tmp).exists()
    assert contents(j) == live
    assert j._offsets == record_offsets(jpath)
    assert not j.dirty and j.synced_seq == j.written_seq and j.durable_index == 31
    assert j.sync() is False
    j.close()


def test_the_journal_goes_on_in_the_file_a_runtime_rewrite_made(
    jpath: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends, cuts and compactions after the rewrite use the new file's offsets."""
    j, _ = near_the_runtime_threshold(jpath, monkeypatch)
    j.deleteEntriesTo(10)  # the rewrite
    assert os.path.getsize(jpath) == file_size(SIXTY[20:30])
    for e in SIXTY[30:40]:
        j.add(*e)
    assert jpath.read_bytes() == hand_header(HEADER_LEN) + records(SIXTY[20:40])
    assert j.durable_index == 30 and j.dirty
    j.sync()
    assert j.durable_index == 40
    j.deleteEntriesTo(2)  # a compaction in the new file: below the threshold again
    assert header_start(jpath.read_bytes()) == file_size(SIXTY[20:22])
    j.deleteEntriesFrom(10)  # SIXTY[32:40] go
    assert os.path.getsize(jpath) == file_size(SIXTY[20:32])
    assert j.durable_index == 32
    j.add(b"appended", 33, 3)
    j.sync()
    assert j.durable_index == 33
    assert j._offsets == record_offsets(jpath)
    expected = [*SIXTY[22:32], (b"appended", 33, 3)]
    assert contents(j) == expected
    j._destroy()
    j = open_journal(jpath, fsync=True)
    assert contents(j) == expected
    assert not j.dirty and j.durable_index == 33
    j.close()


@pytest.mark.parametrize("reopen", ["destroy", "close"])
def test_a_runtime_rewrite_of_the_whole_log_leaves_the_header_alone(
    jpath: Path, monkeypatch: pytest.MonkeyPatch, reopen: str
) -> None:
    """A snapshot that covers the whole log: the new file is the header alone, appends
    begin right after it, also across a crash (close: nothing synced after the rewrite)."""
    written(jpath, SIXTY[:30])
    monkeypatch.setattr(journal_module, "RUNTIME_REWRITE_BYTES", 1)
    j = open_journal(jpath, fsync=True)
    j.deleteEntriesTo(len(j))
    assert len(j) == 0
    assert jpath.read_bytes() == hand_header(HEADER_LEN)
    assert not j.dirty and j.durable_index == 30
    j.add(b"after", 31, 3)
    assert jpath.read_bytes() == hand_header(HEADER_LEN) + record(b"after", 31, 3)
    if reopen == "destroy":
        j._destroy()
    else:
        j.close()
    j = open_journal(jpath)
    assert contents(j) == [(b"after", 31, 3)]
    j.close()


def test_a_sync_in_flight_on_the_replaced_file_punches_nothing_in_the_new_one(
    jpath: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync thread is in fdatasync on (a dup of) the old file, its sync covering a
    compaction's header write, when the tick thread's next compaction rewrites the file
    without waiting for it. When it returns, the holes it would have freed were the old
    file's: punched in the new file they would zero live records. Its bookkeeping must
    not undo what the rewrite made durable either."""
    j = open_journal(jpath, fsync=True)
    for e in KIB:
        j.add(*e)
    j.sync()
    offsets = record_offsets(jpath)
    monkeypatch.setattr(journal_module, "RUNTIME_REWRITE_BYTES", offsets[150] - HEADER_LEN)
    j.deleteEntriesTo(100)  # below the threshold: its pages wait for the next sync
    old_inode = os.stat(jpath).st_ino
    punched: list[tuple[int, int, int]] = []

    def recording_punch(fd: int, offset: int, length: int) -> None:
        punched.append((os.fstat(fd).st_ino, offset, length))

    monkeypatch.setattr(journal_module, "_punch_hole", recording_punch)
    gated = GatedFdatasync(monkeypatch)
    t = gated.sync_in_background(j)
    live = hand_header(HEADER_LEN) + records(KIB[150:])
    try:
        j.deleteEntriesTo(50)  # reaches the threshold: the rewrite
        assert t.is_alive(), "the rewrite waited for the fdatasync in progress"
        assert jpath.read_bytes() == live
    finally:
        gated.release(t)
    new_inode = os.stat(jpath).st_ino
    assert new_inode != old_inode
    assert gated.inodes == [old_inode]  # that sync was on the old file
    assert punched == []  # and what it covered was the old file's
    assert jpath.read_bytes() == live
    assert not j.dirty and j.synced_seq == j.written_seq and j.durable_index == 200
    assert j.sync() is False
    # The next compaction's holes are the new file's, punched once a sync covers it.
    offsets = record_offsets(jpath)
    j.add(b"after", 201, 2)
    j.deleteEntriesTo(10)
    assert j.durable_index == 200
    j.sync()
    assert j.durable_index == 201
    assert gated.inodes == [old_inode, new_inode]
    upto = offsets[10] // PAGE * PAGE
    assert punched == [(new_inode, PAGE, upto - PAGE)]
    after = hand_header(offsets[10]) + live[HEADER_LEN:] + record(b"after", 201, 2)
    assert jpath.read_bytes() == after  # (the recorded punch freed nothing)
    j._destroy()
    j = open_journal(jpath)
    assert contents(j) == [*KIB[160:], (b"after", 201, 2)]
    j.close()


# -- writes that fail or come up short ---------------------------------------------------------


def broken(real: Callable[..., int], fd: int, how: str) -> Callable[..., int]:
    """``real`` (os.write or os.pwrite) failing on ``fd``: raising ENOSPC (a full disk),
    or writing only the first half of the data and saying so (a short write: the file
    size limit, a disk filling up mid-write). Other descriptors are left alone."""

    def call(target: int, data: bytes, *rest: int) -> int:
        if target != fd:
            return real(target, data, *rest)
        if how == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        assert how == "short"
        return real(target, data[: len(data) // 2], *rest)

    return call


def check_reported(raised: OSError, reported: list[OSError], handler: bool, how: str) -> None:
    """The error raised is the one on_write_failed was given (if it was set)."""
    assert reported == ([raised] if handler else [])
    if how == "short":
        assert raised.errno == errno.EIO and "short write" in str(raised)
    else:
        assert raised.errno == errno.ENOSPC


@pytest.mark.parametrize("handler", [True, False], ids=["on_write_failed", "no-handler"])
@pytest.mark.parametrize("how", ["enospc", "short"])
def test_a_failed_append_is_reported_raised_and_not_kept(
    jpath: Path, monkeypatch: pytest.MonkeyPatch, how: str, handler: bool
) -> None:
    """The entry pysyncobj hands over is not in the file: the node is told (it exits),
    and the journal does not hold it in memory, where it could be acknowledged from.
    A membership entry does not reach the configuration either."""
    j = open_journal(jpath, fsync=True)
    for e in ENTRIES:
        j.add(*e)
    j.sync()
    seq, durable = j.written_seq, j.durable_index
    reported: list[OSError] = []
    if handler:
        j.on_write_failed = reported.append
    config_changes: list[None] = []
    j.on_config_change = lambda: config_changes.append(None)
    with monkeypatch.context() as m:
        m.setattr(os, "write", broken(os.write, j._fd, how))
        with pytest.raises(OSError) as raised:
            j.add(b"\x02a membership change", 4, 2)
    check_reported(raised.value, reported, handler, how)
    assert len(j) == 3 and contents(j) == ENTRIES
    assert j.config_entries() == [] and config_changes == []
    assert j.written_seq == seq and not j.dirty and j.durable_index == durable
    j.close()  # the node exits: what was written of the record is a torn tail
    j = open_journal(jpath)
    assert contents(j) == ENTRIES
    j.close()


@pytest.mark.parametrize("handler", [True, False], ids=["on_write_failed", "no-handler"])
@pytest.mark.parametrize("how", ["enospc", "short"])
def test_a_failed_compaction_header_write_is_reported_raised_and_not_kept(
    jpath: Path, monkeypatch: pytest.MonkeyPatch, how: str, handler: bool
) -> None:
    written(jpath, FOUR)
    j = open_journal(jpath, fsync=True)
    before, seq = jpath.read_bytes(), j.written_seq
    reported: list[OSError] = []
    if handler:
        j.on_write_failed = reported.append
    with monkeypatch.context() as m:
        m.setattr(os, "pwrite", broken(os.pwrite, j._fd, how))
        with pytest.raises(OSError) as raised:
            j.deleteEntriesTo(2)
    check_reported(raised.value, reported, handler, how)
    assert contents(j) == FOUR
    assert j.written_seq == seq and not j.dirty
    if how == "enospc":
        assert jpath.read_bytes() == before
        j.close()
        j = open_journal(jpath)
        assert contents(j) == FOUR
    j.close()


@pytest.mark.parametrize("handler", [True, False], ids=["on_write_failed", "no-handler"])
@pytest.mark.parametrize("op", ["deleteEntriesFrom", "clear"])
def test_a_failed_cut_is_reported_raised_and_not_kept(
    jpath: Path, monkeypatch: pytest.MonkeyPatch, op: str, handler: bool
) -> None:
    """A cut that did not happen leaves the log as it was, in memory and in the file,
    the durable index included; appends go on at the end."""
    written(jpath, FOUR)
    j = open_journal(jpath, fsync=True)
    j.add(b"\x02member", 5, 3)
    j.sync()
    before, seq, durable = jpath.read_bytes(), j.written_seq, j.durable_index
    reported: list[OSError] = []
    if handler:
        j.on_write_failed = reported.append
    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def failing_ftruncate(fd: int, length: int) -> None:
        raise error

    with monkeypatch.context() as m:
        m.setattr(os, "ftruncate", failing_ftruncate)
        with pytest.raises(OSError) as raised:
            j.deleteEntriesFrom(1) if op == "deleteEntriesFrom" else j.clear()
    assert raised.value is error
    assert reported == ([error] if handler else [])
    assert contents(j) == [*FOUR, (b"\x02member", 5, 3)]
    assert j.config_entries() == [(5, b"\x02member")]
    assert j.written_seq == seq and not j.dirty and j.durable_index == durable == 5
    assert jpath.read_bytes() == before
    j.add(b"six", 6, 3)
    j._destroy()
    j = open_journal(jpath)
    assert contents(j) == [*FOUR, (b"\x02member", 5, 3), (b"six", 6, 3)]
    j.close()


@pytest.mark.parametrize("handler", [True, False], ids=["on_write_failed", "no-handler"])
def test_a_failed_runtime_rewrite_is_reported_and_raised(
    jpath: Path, monkeypatch: pytest.MonkeyPatch, handler: bool
) -> None:
    """The rewrite's temporary file cannot be written (a full disk): the journal stays
    in its old file, whose header has moved, which is what the next start reads."""
    written(jpath, FOUR)
    offsets = record_offsets(jpath)
    j = open_journal(jpath, fsync=True)
    reported: list[OSError] = []
    if handler:
        j.on_write_failed = reported.append
    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def failing_write_file_durably(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(journal_module, "RUNTIME_REWRITE_BYTES", 1)
    monkeypatch.setattr(journal_module, "write_file_durably", failing_write_file_durably)
    with pytest.raises(OSError) as raised:
        j.deleteEntriesTo(2)
    assert raised.value is error
    assert reported == ([error] if handler else [])
    assert header_start(jpath.read_bytes()) == offsets[2]
    assert os.fstat(j._fd).st_ino == os.stat(jpath).st_ino
    j.close()
    j = open_journal(jpath)
    assert contents(j) == FOUR[2:]
    j.close()


def test_appends_after_a_short_write_that_did_not_stop_the_node_read_back(
    jpath: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = open_journal(jpath)
    for e in ENTRIES:
        j.add(*e)
    with monkeypatch.context() as m:
        m.setattr(os, "write", broken(os.write, j._fd, "short"))
        with pytest.raises(OSError):
            j.add(b"lost", 4, 2)
    j.add(b"kept", 4, 2)  # the journal's memory says the log ends at 3
    j._destroy()
    j = open_journal(jpath)
    assert contents(j) == [*ENTRIES, (b"kept", 4, 2)]
    j.close()


def capped_pread(cap: int) -> Callable[[int, int, int], bytes]:
    """os.pread returning at most ``cap`` bytes a call, as POSIX allows (Linux returns
    at most 0x7ffff000 bytes a call: a journal whose live log is past 2 GiB)."""
    real = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        return real(fd, min(n, cap), offset)

    return pread


def test_a_live_log_longer_than_one_read_is_read_whole_at_open(
    jpath: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written(jpath, KIB)
    size = os.path.getsize(jpath)
    monkeypatch.setattr(os, "pread", capped_pread(64 << 10))
    j = open_journal(jpath)
    assert os.path.getsize(jpath) == size
    assert contents(j) == KIB
    j.close()


def test_a_live_log_longer_than_one_read_is_rewritten_whole(
    jpath: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = open_journal(jpath)
    for e in KIB:
        j.add(*e)
    monkeypatch.setattr(journal_module, "RUNTIME_REWRITE_BYTES", 1)
    monkeypatch.setattr(os, "pread", capped_pread(64 << 10))
    j.deleteEntriesTo(10)
    assert jpath.read_bytes() == hand_header(HEADER_LEN) + records(KIB[10:])
    j.close()


# -- freeing the dead prefix: best effort -----------------------------------------------------


def test_a_failed_punch_is_logged_and_the_next_compaction_punches_again(
    jpath: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An error freeing the pages (EIO) is not the log's: it is logged, nothing else
    changes, and the next compaction's sync frees them with its own."""
    calls: list[tuple[int, int]] = []

    def flaky_punch(fd: int, offset: int, length: int) -> None:
        calls.append((offset, length))
        if len(calls) == 1:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(journal_module, "_punch_hole", flaky_punch)
    j = open_journal(jpath, fsync=True)
    for e in KIB:
        j.add(*e)
    j.sync()
    offsets = record_offsets(jpath)
    before = jpath.read_bytes()
    j.deleteEntriesTo(100)
    with caplog.at_level(logging.WARNING, logger="coord.raft.journal"):
        assert j.sync() is True
    upto = [off // PAGE * PAGE for off in offsets]
    assert calls == [(PAGE, upto[100] - PAGE)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot free the log prefix a snapshot covers" in warnings[0]
    assert "trying again at the next compaction" in warnings[0]
    assert not j.dirty and j.durable_index == 200
    assert jpath.read_bytes() == hand_header(offsets[100]) + before[HEADER_LEN:]
    j.deleteEntriesTo(50)
    j.sync()
    assert calls[1:] == [(PAGE, upto[150] - PAGE)]  # from where the failed one began
    j.deleteEntriesTo(25)
    j.sync()
    assert calls[2:] == [(upto[150], upto[175] - upto[150])]  # on from there
    j._destroy()
    j = open_journal(jpath)
    assert contents(j) == KIB[175:]
    j.close()


@pytest.mark.parametrize("err", [errno.EOPNOTSUPP, errno.ENOSYS], ids=["EOPNOTSUPP", "ENOSYS"])
def test_a_file_system_without_holes_is_asked_once(
    jpath: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, err: int
) -> None:
    """A file system that cannot punch holes says so once: one warning, and no further
    call for the life of the journal object (the next open's rewrite frees the space)."""
    calls: list[tuple[int, int]] = []

    def unsupported_punch(fd: int, offset: int, length: int) -> None:
        calls.append((offset, length))
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(journal_module, "_punch_hole", unsupported_punch)
    j = open_journal(jpath, fsync=True)
    for e in KIB:
        j.add(*e)
    j.sync()
    with caplog.at_level(logging.WARNING, logger="coord.raft.journal"):
        j.deleteEntriesTo(50)
        assert j.sync() is True
        j.deleteEntriesTo(50)
        assert j.sync() is True
        j.add(b"more", 201, 1)
        j.deleteEntriesTo(50)
        assert j.sync() is True
    assert len(calls) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "the file keeps it until the node restarts" in warnings[0]
    assert contents(j) == [*KIB[150:], (b"more", 201, 1)]
    j._destroy()
    j = open_journal(jpath)
    assert contents(j) == [*KIB[150:], (b"more", 201, 1)]
    j.close()
