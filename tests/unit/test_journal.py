"""DurableJournal: pysyncobj's Journal interface over an append-only, checksummed file.

Record layout: ``len u32 | crc32 u32 | idx u64 | term u64 | command`` after an
8-byte magic; term/vote/commit index live in ``<path>.meta`` (JSON).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coord.raft.journal import MAGIC, DurableJournal, JournalCorrupt

REC = struct.Struct("<IIQQ")
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


# -- torn tails and corruption ---------------------------------------------------------------


def test_a_torn_tail_is_cut_at_load(jpath: Path) -> None:
    written(jpath, ENTRIES)
    full = jpath.read_bytes()
    last = record_offsets(jpath)[-1]
    for size in range(last + 1, len(full)):  # every cut inside the last record
        jpath.write_bytes(full[:size])
        j = open_journal(jpath)
        assert contents(j) == ENTRIES[:-1], size
        assert os.path.getsize(jpath) == last, size
        assert j.sync() is True  # the cut itself is made durable
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


def test_a_last_record_failing_its_checksum_is_cut(jpath: Path) -> None:
    written(jpath, ENTRIES)
    data = bytearray(jpath.read_bytes())
    data[-1] ^= 0x01
    jpath.write_bytes(bytes(data))
    j = open_journal(jpath)
    assert contents(j) == ENTRIES[:-1]
    j.close()


@pytest.mark.parametrize("field", ["crc", "idx", "term", "command"])
def test_a_corrupt_record_in_the_middle_refuses_the_start(jpath: Path, field: str) -> None:
    written(jpath, ENTRIES)
    first = record_offsets(jpath)[0]
    pos = first + {"crc": 4, "idx": 8, "term": 16, "command": REC.size + 2}[field]
    data = bytearray(jpath.read_bytes())
    data[pos] ^= 0x10
    jpath.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match=rf"record at offset {first} fails its checksum"):
        open_journal(jpath)
    assert jpath.read_bytes() == bytes(data)  # evidence left untouched


def test_the_corrupt_message_says_what_to_do(jpath: Path) -> None:
    written(jpath, ENTRIES)
    data = bytearray(jpath.read_bytes())
    data[record_offsets(jpath)[1] + 5] ^= 0xFF
    jpath.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match="restore this node's data dir from a peer"):
        open_journal(jpath)


@pytest.mark.xfail(
    strict=True,
    reason="BUG: a corrupt length field in a middle record that points past EOF is taken "
    "for a torn tail: every later (acknowledged) entry is silently truncated away",
)
def test_a_corrupt_length_in_the_middle_refuses_the_start(jpath: Path) -> None:
    written(jpath, ENTRIES)
    size = os.path.getsize(jpath)
    data = bytearray(jpath.read_bytes())
    struct.pack_into("<I", data, record_offsets(jpath)[0], 0x7FFF_FFFF)
    jpath.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt):
        open_journal(jpath).close()
    assert os.path.getsize(jpath) == size  # the evidence is left in place


@pytest.mark.xfail(
    strict=True,
    reason="BUG: an unsynced tail longer than one record header that is not a valid record "
    "(zeros after a power loss, or garbage) refuses the start instead of being cut",
)
@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b"\x00" * 64, id="zero-filled"),
        pytest.param(struct.pack("<I", 1) + b"\xab" * 60, id="garbage"),
    ],
)
def test_an_unsynced_garbage_tail_is_cut(jpath: Path, tail: bytes) -> None:
    written(jpath, ENTRIES)
    with open(jpath, "ab") as f:
        f.write(tail)
    j = open_journal(jpath)
    assert contents(j) == ENTRIES
    j.close()


def test_a_file_that_is_not_a_journal_is_refused(jpath: Path) -> None:
    jpath.write_bytes(b"NOTAJOURNAL, just some file")
    with pytest.raises(JournalCorrupt, match="not a coord journal"):
        open_journal(jpath)


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


def test_commit_index_is_persisted_by_the_one_second_timer(jpath: Path) -> None:
    j = open_journal(jpath)
    j.setRaftCommitIndex(7)
    assert j.getRaftCommitIndex() == 7
    j.close()  # before the timer fired: lost (Raft recomputes it)
    j = open_journal(jpath)
    assert j.getRaftCommitIndex() == 1
    j.setRaftCommitIndex(7)
    j.onOneSecondTimer()
    j.close()
    j = open_journal(jpath)
    assert j.getRaftCommitIndex() == 7
    j.close()


def test_the_timer_writes_meta_only_when_it_changed(jpath: Path) -> None:
    meta = Path(str(jpath) + ".meta")
    j = open_journal(jpath)
    j.onOneSecondTimer()
    assert not meta.exists()
    j.setRaftCommitIndex(3)
    j.onOneSecondTimer()
    assert json.loads(meta.read_text())["commit_index"] == 3
    meta.write_text(json.dumps({"commit_index": 3, "marker": True}))
    j.setRaftCommitIndex(3)  # unchanged: nothing to write
    j.onOneSecondTimer()
    assert json.loads(meta.read_text())["marker"] is True
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
    assert j.dirty  # the magic was just written
    assert j.sync() is True
    assert j.sync() is False
    assert not j.dirty
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
        j._destroy()
        j = open_journal(path)
        assert contents(j) == model
        j.close()
