"""DurableJournal: pysyncobj's Journal interface over an append-only, checksummed file.

Record layout: ``len u32 | crc32 u32 | idx u64 | term u64 | command`` after the
8-byte magic ``COORDJ02``; the crc32 covers ``len | idx | term | command``.
Term/vote/commit index live in ``<path>.meta`` (JSON).

A damaged record is a torn tail (cut at load) unless a valid record with an index in
``(last good idx, last good idx + 2**32]`` follows it somewhere later in the file: then
the damage is in the middle, where acknowledged entries lived, and the start is refused.
"""

from __future__ import annotations

import os
import struct
import tempfile
import threading
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coord.raft.journal import MAGIC, DurableJournal, JournalCorrupt

REC = struct.Struct("<IIQQ")
LEN_IDX_TERM = struct.Struct("<IQQ")
Entry = tuple[bytes, int, int]

ENTRIES: list[Entry] = [(b"first", 1, 1), (b"", 2, 1), (b"\x00third\xff" * 10, 3, 2)]


def open_journal(path: Path, fsync: bool = False) -> DurableJournal:
    return DurableJournal(str(path), fsync=fsync)


def contents(j: DurableJournal) -> list[Entry]:
    return [j[i] for i in range(len(j))]


def written(path: Path, entries: list[Entry], fsync: bool = False) -> Path:
    """A journal file holding ``entries``, closed the way pysyncobj closes it."""
    j = open_journal(path, fsync)
    for e in entries:
        j.add(*e)
    j._destroy()
    return path


def record(command: bytes, idx: int, term: int) -> bytes:
    """One record built by hand from the documented layout (not with the journal's code)."""
    crc = zlib.crc32(LEN_IDX_TERM.pack(len(command), idx, term) + command)
    return REC.pack(len(command), crc, idx, term) + command


def file_size(entries: list[Entry]) -> int:
    return len(MAGIC) + sum(REC.size + len(command) for command, _, _ in entries)


def record_offsets(path: Path) -> list[int]:
    data = path.read_bytes()
    off, out = len(MAGIC), []
    while off < len(data):
        out.append(off)
        off += REC.size + REC.unpack_from(data, off)[0]
    return out


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


def test_a_new_journal_is_empty_and_starts_with_the_magic(jpath: Path) -> None:
    j = open_journal(jpath)
    assert len(j) == 0
    assert jpath.read_bytes() == MAGIC
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


def test_delete_entries_to_everything(jpath: Path) -> None:
    j = open_journal(written(jpath, ENTRIES), fsync=True)
    j.deleteEntriesTo(10)
    assert len(j) == 0
    assert jpath.read_bytes() == MAGIC
    j.add(b"x", 4, 2)
    j._destroy()
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
    assert jpath.read_bytes() == MAGIC
    j.add(b"again", 10, 4)
    j._destroy()
    j = open_journal(jpath)
    assert contents(j) == [(b"again", 10, 4)]
    j.close()


# -- the on-disk format ----------------------------------------------------------------------


def test_the_magic_names_format_2() -> None:
    assert MAGIC == b"COORDJ02"


def test_records_have_the_documented_layout(jpath: Path) -> None:
    written(jpath, ENTRIES)
    assert jpath.read_bytes() == MAGIC + b"".join(record(*e) for e in ENTRIES)


def test_hand_built_records_read_back(jpath: Path) -> None:
    jpath.write_bytes(MAGIC + b"".join(record(*e) for e in ENTRIES))
    j = open_journal(jpath)
    assert contents(j) == ENTRIES
    j.close()


def test_the_checksum_covers_the_length(jpath: Path) -> None:
    """A format-1 record (crc over idx | term | command only) does not pass for a valid one."""
    command, idx, term = ENTRIES[2]
    v1_crc = zlib.crc32(struct.pack("<QQ", idx, term) + command)
    v1_record = REC.pack(len(command), v1_crc, idx, term) + command
    jpath.write_bytes(MAGIC + record(*ENTRIES[0]) + record(*ENTRIES[1]) + v1_record)
    j = open_journal(jpath)
    assert contents(j) == ENTRIES[:2]  # the last record fails its checksum: a torn tail
    j.close()


def test_a_format_1_journal_is_refused_untouched(jpath: Path) -> None:
    written(jpath, ENTRIES)
    old = b"COORDJ01" + jpath.read_bytes()[len(MAGIC) :]
    jpath.write_bytes(old)
    with pytest.raises(JournalCorrupt, match=r"bad magic, it was written by an older coord"):
        open_journal(jpath)
    assert jpath.read_bytes() == old


# -- torn tails: cut at load -----------------------------------------------------------------

# Four records, none with an empty command, so that every field of every record can be hit.
FOUR: list[Entry] = [(b"first", 1, 1), (b"second", 2, 1), (b"third" * 10, 3, 2), (b"4th", 4, 2)]
# Offsets of a record's fields: length, crc, idx, term, then a byte inside the command.
FIELDS = {"length": 0, "crc": 4, "idx": 8, "term": 16, "command": REC.size + 2}


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


@pytest.mark.parametrize("field", list(FIELDS))
def test_any_corrupt_field_of_the_last_record_is_cut(jpath: Path, field: str) -> None:
    written(jpath, FOUR)
    last = record_offsets(jpath)[-1]
    flip(jpath, last + FIELDS[field])
    j = open_journal(jpath)
    assert contents(j) == FOUR[:-1]
    assert os.path.getsize(jpath) == last
    j.close()


# -- damage in the middle: refused -------------------------------------------------------------


@pytest.mark.parametrize("victim", [0, 1, 2], ids=["first", "second", "third"])
@pytest.mark.parametrize("field", list(FIELDS))
def test_a_corrupt_record_in_the_middle_refuses_the_start(
    jpath: Path, field: str, victim: int
) -> None:
    written(jpath, FOUR)
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


def test_without_a_good_record_any_valid_later_record_is_evidence(jpath: Path) -> None:
    jpath.write_bytes(MAGIC + b"\x00" * 30 + record(b"x", 1, 1))
    with pytest.raises(JournalCorrupt, match=damaged_message(len(MAGIC), len(MAGIC) + 30)):
        open_journal(jpath)


@settings(max_examples=200, deadline=None)
@given(commands=st.lists(st.binary(max_size=30), min_size=2, max_size=6), data=st.data())
def test_any_damaged_byte_is_refused_in_the_middle_and_cut_at_the_tail(
    commands: list[bytes], data: st.DataObject
) -> None:
    entries = [(c, i + 1, 1 + i // 2) for i, c in enumerate(commands)]
    with tempfile.TemporaryDirectory() as d:
        path = written(Path(d) / "j", entries)
        offsets = record_offsets(path)
        pos = data.draw(st.integers(len(MAGIC), os.path.getsize(path) - 1), label="pos")
        damaged = flip(path, pos, data.draw(st.integers(1, 255), label="mask"))
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
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(JournalCorrupt):
            open_journal(jpath)
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_a_journal_refused_for_its_magic_leaves_no_file_open(jpath: Path) -> None:
    jpath.write_bytes(b"NOTAJOURNAL, just some file")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(JournalCorrupt):
            open_journal(jpath)
    assert len(os.listdir("/proc/self/fd")) == before


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
    j._destroy()
    j = open_journal(jpath, fsync=fsync)
    assert j.sync() is False  # a clean reopen has nothing to sync
    j.close()


# -- random histories vs a list model ----------------------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.binary(max_size=40), st.integers(0, 3)),
        st.tuples(st.just("from"), st.integers(0, 12)),
        st.tuples(st.just("to"), st.integers(0, 12)),
        st.tuples(st.just("clear")),
        st.tuples(st.just("reopen"), st.sampled_from(["destroy", "close", "sync-close"])),
    ),
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(OPS)
def test_random_histories_match_a_list_model(ops: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as d:
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
            elif kind == "clear":
                j.clear()
                model.clear()
            else:
                if op[1] == "destroy":
                    j._destroy()
                elif op[1] == "sync-close":
                    j.sync()
                    j.close()
                else:
                    j.close()
                j = open_journal(path)
                assert not j.dirty
            assert contents(j) == model
            assert os.path.getsize(path) == file_size(model)  # no stray bytes left behind
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
    j.deleteEntriesTo(1)  # the prefix rewrite syncs the whole file
    assert not j.dirty and j.durable_index == 3
    j._destroy()
    j = open_journal(jpath, fsync=True)
    assert not j.dirty and j.durable_index == 3  # what was read back was synced at open
    j.close()


def test_a_sync_begun_before_a_cut_does_not_vouch_for_entries_written_after_it(
    jpath: Path,
) -> None:
    """The sync thread captures what it covers, then waits for the file descriptor;
    meanwhile the tick thread cuts the log and appends other entries at the same
    indexes. The sync's end must not call those durable."""
    j = open_journal(jpath, fsync=True)
    for e in ENTRIES:
        j.add(*e)
    j.sync()
    j.add(b"old4", 4, 2)
    j.add(b"old5", 5, 2)
    captured = j.written_seq
    started = threading.Event()
    real = os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        started.set()
        gate.wait(10)
        real(fd)

    gate = threading.Event()
    os_fdatasync, os.fdatasync = os.fdatasync, slow_fdatasync
    try:
        t = threading.Thread(target=j.sync)
        t.start()
        assert started.wait(10)
        j.deleteEntriesFrom(3)  # drops 4 and 5 (positions 3, 4)
        j.add(b"new4", 4, 3)
        j.add(b"new5", 5, 3)
        gate.set()
        t.join(10)
    finally:
        os.fdatasync = os_fdatasync
        gate.set()
    assert j.synced_seq == captured  # the writes before the sync began are durable
    assert j.durable_index == 3  # but not the new 4 and 5
    assert j.dirty
    j.sync()
    assert j.durable_index == 5
    j.close()


def test_the_file_descriptor_is_not_replaced_while_a_sync_uses_it(jpath: Path) -> None:
    j = open_journal(jpath, fsync=True)
    for e in ENTRIES:
        j.add(*e)
    with j._fd_lock:  # as the sync thread holds it during fdatasync
        t = threading.Thread(target=j.deleteEntriesTo, args=(1,))
        t.start()
        t.join(0.2)
        assert t.is_alive(), "the prefix rewrite swapped the descriptor under a sync"
    t.join(10)
    assert contents(j) == ENTRIES[1:]
    j.close()
