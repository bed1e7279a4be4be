"""A Raft journal that is durable when it says so.

pysyncobj's FileJournal writes through an mmap and never syncs; its term/vote
file is renamed without fsync. This journal implements the same interface
(``pysyncobj.journal.Journal``) with:

- append-only records ``len u32 | crc32 u32 | idx u64 | term u64 | command``
  (the crc covers length, idx, term and command) written with ``os.write``
  (page cache) and made durable by :meth:`sync` (group commit: one fdatasync
  covers every write before it). The node calls it on its sync thread
  (``coord.raft.journal_sync``), not on the tick thread, and lets an
  acknowledgement leave only once :attr:`synced_seq` covers the writes before it
  (:attr:`written_seq`); a leader counts its own log only up to
  :attr:`durable_index`;
- term and vote stored synchronously with fsync of the file and its directory
  before any vote can be sent (Raft §5: they must survive a crash);
- a damaged record is a torn tail (a crash before the tick's fsync: one or
  many partial records, zeros, garbage) when no valid record follows it; the
  tail is cut off at load. If a valid record follows, the damage is in the
  middle, where acknowledged entries lived: the start is refused.

Threads: the Raft tick thread calls everything; :meth:`sync` and the
properties that say what is durable may also be called from one other thread
(the sync thread). ``_lock`` guards the counters; ``_fd_lock`` keeps the file
descriptor from being closed or replaced while the sync thread dups it.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

from coord.raft.fsutil import fsync_dir, write_file_durably

logger = logging.getLogger(__name__)

MAGIC = b"COORDJ02"
_REC = struct.Struct("<IIQQ")  # payload length, crc32(length|idx|term|command), idx, term
_LEN_IDX_TERM = struct.Struct("<IQQ")
_CONFIG_TAG = b"\x02"  # pysyncobj's membership command type (coord.raft.membership)
# Log indices are consecutive; a later record claiming an index this far past
# the last good one is not taken as evidence of mid-file damage.
_MAX_IDX_GAP = 1 << 32

Entry = tuple[bytes, int, int]  # (command, idx, term), pysyncobj's shape


class JournalCorrupt(Exception):
    """The journal holds a damaged record before its tail: refuse to start on it."""


class DurableJournal:
    """pysyncobj Journal with fsync group commit. ``fsync=False`` keeps the format, skips syncs."""

    def __init__(self, path: str, fsync: bool = True) -> None:
        self._path = path
        self._meta_path = path + ".meta"
        self._fsync = fsync
        self._entries: list[Entry] = []
        self._offsets: list[int] = []  # file offset of each entry's record
        # Durability bookkeeping. Every change to the file (an append, a cut, the
        # magic) bumps _written; a sync that began when it was N sets _synced to N.
        # _durable_index: the last log index that a sync covered (lowered by a cut).
        self._lock = threading.Lock()
        self._fd_lock = threading.Lock()
        self._written = 0
        self._synced = 0
        self._cuts = 0  # cuts so far: a sync that saw fewer may not raise _durable_index
        self._durable_index = 0
        # Membership entries (coord.raft.membership) in the log, (idx, command) in
        # order, and who to tell when that list changes.
        self._config: list[tuple[int, bytes]] = []
        self.on_config_change: Callable[[], None] | None = None
        self.on_sync_latency: Callable[[float], None] | None = None  # metrics
        self.on_destroy: Callable[[], None] | None = None  # stops the sync thread
        self._meta: dict[str, Any] = self._load_meta()
        self._fd = self._open_and_load()
        # What was read back may be in the page cache only (a process killed before
        # its sync): make it durable before anything is acknowledged from it.
        self._written += 1
        self.sync()

    # -- loading ---------------------------------------------------------------

    def _load_meta(self) -> dict[str, Any]:
        try:
            with open(self._meta_path, "rb") as f:
                meta: dict[str, Any] = json.loads(f.read())
                return meta
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise JournalCorrupt(f"{self._meta_path} does not decode ({e})") from e

    def _open_and_load(self) -> int:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        size = os.fstat(fd).st_size
        if size == 0:
            os.write(fd, MAGIC)
            self._written += 1
            return fd
        data = os.pread(fd, size, 0)
        if data[: len(MAGIC)] != MAGIC:
            os.close(fd)
            hint = (
                "it was written by an older coord (format 1): wipe this node's data dir and "
                "let it catch up from the leader"
                if data[:8] == b"COORDJ01"
                else "it is not a coord journal"
            )
            raise JournalCorrupt(f"{self._path}: bad magic, {hint}")
        try:
            end = self._parse(data)
        except JournalCorrupt:
            os.close(fd)
            raise
        if end < size:
            logger.warning("journal %s: cutting a torn tail of %d bytes", self._path, size - end)
            os.ftruncate(fd, end)
            self._written += 1
        os.lseek(fd, end, os.SEEK_SET)
        return fd

    def _parse(self, data: bytes) -> int:
        off = len(MAGIC)
        while off < len(data):
            rec = _decode_at(data, off)
            if rec is None:
                last = self._entries[-1][1] if self._entries else None
                later = _find_valid_record(data, off + 1, last)
                if later is not None:
                    raise JournalCorrupt(
                        f"{self._path}: the record at offset {off} is damaged but a valid record "
                        f"follows at offset {later}: acknowledged entries may be lost; restore "
                        "this node's data dir from a backup, or wipe it so that it catches up "
                        "from the leader"
                    )
                break  # torn tail
            entry, end = rec
            self._entries.append(entry)
            if entry[0][:1] == _CONFIG_TAG:
                self._config.append((entry[1], entry[0]))
            self._offsets.append(off)
            off = end
        return off

    # -- pysyncobj Journal interface ------------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        command = bytes(command)
        off = os.lseek(self._fd, 0, os.SEEK_CUR)
        os.write(self._fd, _encode(command, idx, term))
        self._entries.append((command, idx, term))
        self._offsets.append(off)
        with self._lock:
            self._written += 1
        if command[:1] == _CONFIG_TAG:
            self._config.append((idx, command))
            self._config_changed()

    def clear(self) -> None:
        self._truncate_at(0)

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        self._truncate_at(entryFrom)

    def _truncate_at(self, pos: int) -> None:
        if pos >= len(self._entries):
            return
        off = self._offsets[pos]
        first_gone = self._entries[pos][1]
        os.ftruncate(self._fd, off)
        os.lseek(self._fd, off, os.SEEK_SET)
        del self._entries[pos:]
        del self._offsets[pos:]
        with self._lock:
            self._written += 1
            self._cuts += 1
            self._durable_index = min(self._durable_index, first_gone - 1)
        if self._config and self._config[-1][0] >= first_gone:
            self._config = [c for c in self._config if c[0] < first_gone]
            self._config_changed()

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop the prefix covered by a snapshot: rewrite the file atomically."""
        # The snapshot's rename must be durable before the entries it replaces go.
        if self._fsync:
            fsync_dir(os.path.dirname(self._path) or ".")
        keep = self._entries[entryTo:]
        tmp = self._path + ".tmp"
        chunks = [MAGIC]
        offsets = []
        off = len(MAGIC)
        for command, idx, term in keep:
            rec = _encode(command, idx, term)
            offsets.append(off)
            off += len(rec)
            chunks.append(rec)
        write_file_durably(tmp, b"".join(chunks), self._path, fsync=self._fsync)
        with self._fd_lock:  # not while the sync thread dups the old one
            os.close(self._fd)
            self._fd = os.open(self._path, os.O_RDWR)
        os.lseek(self._fd, off, os.SEEK_SET)
        self._entries = keep
        self._offsets = offsets
        # The new file was synced whole: it holds every entry the log has.
        self._mark_synced(self._written, self._last_index(), self._cuts)
        # Entries folded into the snapshot are in its configuration (the node
        # moved its base there before compacting): nothing to report.
        first = keep[0][1] if keep else None
        self._config = [c for c in self._config if first is not None and c[0] >= first]

    def config_entries(self) -> list[tuple[int, bytes]]:
        """The membership entries in the log, ``(idx, command)`` in log order."""
        return list(self._config)

    def _config_changed(self) -> None:
        if self.on_config_change is not None:
            self.on_config_change()

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        """pysyncobj's close, on the tick thread as it stops: stop the sync thread,
        then sync, store the term/vote file and close."""
        if self.on_destroy is not None:
            self.on_destroy()
        self.sync()
        self._store_meta()
        os.close(self._fd)

    def close(self) -> None:
        """Close without writing anything (read-only inspection)."""
        if self.on_destroy is not None:
            self.on_destroy()
        os.close(self._fd)

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        # Kept in memory; stored with the next term or vote, and at close. Not by
        # pysyncobj's one-second timer: that is two fsyncs (file, directory) on the
        # tick thread every second under writes, and a slow disk then stops a leader's
        # heartbeats (the chaos nemesis slow-disk-leader moved leadership every fault).
        # A restart with an older commit index is safe: the leader's next append-entries
        # brings the current one, and a dump's entries are applied from the dump.
        self._meta["commit_index"] = raftCommitIndex

    def getRaftCommitIndex(self) -> int:
        return int(self._meta.get("commit_index", 1))

    def setCurrentTerm(self, term: int, votedForNodeId: str | None) -> None:
        self._meta["term"] = term
        self._meta["voted_for"] = votedForNodeId
        self._store_meta()

    def getCurrentTerm(self) -> int:
        return int(self._meta.get("term", 0))

    def getVotedForNodeId(self) -> str | None:
        voted: str | None = self._meta.get("voted_for")
        return voted

    def onOneSecondTimer(self) -> None:
        """pysyncobj's hook to store the commit index: see :meth:`setRaftCommitIndex`."""

    # -- durability ------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """Whether some write is not yet covered by a sync."""
        return self._synced != self._written

    @property
    def written_seq(self) -> int:
        """A number that grows with every write to the file (append or cut)."""
        return self._written

    @property
    def synced_seq(self) -> int:
        """Every write up to this :attr:`written_seq` is durable."""
        return self._synced

    @property
    def durable_index(self) -> int:
        """Every entry of the log up to this index is durable."""
        return self._durable_index

    def sync(self) -> bool:
        """Make every write so far durable (one fdatasync). Returns True if it synced.
        Safe from the sync thread while the tick thread writes: writes made during
        the fdatasync are left for the next call."""
        with self._lock:
            if self._synced == self._written:
                return False
            seq, index, cuts = self._written, self._last_index(), self._cuts
        if self._fsync:
            t0 = time.perf_counter()
            # A descriptor of its own: the tick thread may replace self._fd (a prefix
            # rewrite) meanwhile without waiting for this fdatasync. Syncing the file
            # it replaced is harmless: the new one was synced whole.
            with self._fd_lock:
                fd = os.dup(self._fd)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
            if self.on_sync_latency is not None:
                self.on_sync_latency(time.perf_counter() - t0)
        self._mark_synced(seq, index, cuts)
        return True

    def _mark_synced(self, seq: int, index: int, cuts: int) -> None:
        """A sync that began at ``seq`` (log ending at ``index``, ``cuts`` cuts made)
        has finished. A cut made since then may have replaced entries up to ``index``:
        the durable index stays as the cut left it, and the next sync raises it."""
        with self._lock:
            self._synced = max(self._synced, seq)
            if cuts == self._cuts:
                self._durable_index = max(self._durable_index, index)

    def _last_index(self) -> int:
        return self._entries[-1][1] if self._entries else 0

    def _store_meta(self) -> None:
        data = json.dumps(self._meta, sort_keys=True).encode()
        write_file_durably(self._meta_path + ".tmp", data, self._meta_path, fsync=self._fsync)


def _encode(command: bytes, idx: int, term: int) -> bytes:
    crc = zlib.crc32(command, zlib.crc32(_LEN_IDX_TERM.pack(len(command), idx, term)))
    return _REC.pack(len(command), crc, idx, term) + command


def _decode_at(data: bytes, off: int) -> tuple[Entry, int] | None:
    """The valid record at ``off`` and the offset after it, or None."""
    if off + _REC.size > len(data):
        return None
    length, crc, idx, term = _REC.unpack_from(data, off)
    end = off + _REC.size + length
    if end > len(data):
        return None
    command = data[off + _REC.size : end]
    if zlib.crc32(command, zlib.crc32(_LEN_IDX_TERM.pack(length, idx, term))) != crc:
        return None
    return (command, idx, term), end


def _find_valid_record(data: bytes, start: int, last_idx: int | None) -> int | None:
    """Offset of a valid record at or after ``start`` that could follow ``last_idx``."""
    limit = len(data) - _REC.size
    for off in range(start, limit + 1):
        _, _, idx, _ = _REC.unpack_from(data, off)
        if last_idx is not None and not last_idx < idx <= last_idx + _MAX_IDX_GAP:
            continue
        if _decode_at(data, off) is not None:
            return off
    return None
