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
- a header after the magic, ``start u64 | crc32(start) u32 | 0 u32``: the offset of
  the first live record. Dropping the prefix a snapshot covers (log compaction)
  moves it with one 8-byte write, made durable by the next group-commit sync like
  any append; once that sync has returned, the dead prefix's pages are freed with
  ``fallocate(PUNCH_HOLE)``. No rewrite and no fsync of its own on the tick thread
  (the rewrite it replaces was three fsyncs there, a leader's missed heartbeats
  under load). The header lies within the first 512-byte sector and is written in
  place, relying on a sector write being atomic as PostgreSQL's ``pg_control``
  does. The file's size only grows: at open, a dead prefix past
  :data:`REWRITE_DEAD_BYTES` is rewritten away (as is a format-2 file, which has no
  header), and a node that runs long enough to pile up :data:`RUNTIME_REWRITE_BYTES`
  rewrites it at a compaction (tick thread; once in hundreds of GiB written). The
  snapshot must be durable before its prefix goes: the node's own dump is renamed
  and its directory synced before pysyncobj compacts, and a dump found at start is
  synced before the prefix it covers is dropped;
- term and vote stored synchronously with fsync of the file and its directory
  before any vote can be sent (Raft §5: they must survive a crash);
- a damaged record is a torn tail (a crash before the tick's fsync: one or
  many partial records, zeros, garbage) when no valid record follows it; the
  tail is cut off at load. If a valid record follows, the damage is in the
  middle, where acknowledged entries lived: the start is refused.

- a write that fails or comes up short (a full disk, the file size limit) calls
  ``on_write_failed`` (the node exits, as on a failed fdatasync): the entry must not
  be acknowledged from memory.

Threads: the Raft tick thread calls everything; :meth:`sync` and the
properties that say what is durable may also be called from one other thread
(the sync thread). ``_lock`` guards the counters and the holes to punch;
``_fd_lock`` keeps the file descriptor from being closed or replaced (a rewrite)
while the sync thread dups it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

from coord.raft.fsutil import write_file_durably

logger = logging.getLogger(__name__)

MAGIC = b"COORDJ03"
_MAGIC_V2 = b"COORDJ02"  # no header: records from offset 8 (read, then rewritten at open)
_HEADER = struct.Struct("<QII")  # start offset, crc32(start), reserved (0)
HEADER_LEN = len(MAGIC) + _HEADER.size  # the first record of a new journal is here
REWRITE_DEAD_BYTES = 64 << 20  # at open, a dead prefix this long is rewritten away
RUNTIME_REWRITE_BYTES = 256 << 30  # ... and at a compaction (ext4's file limit: 16 TiB)
_PAGE = 4096  # holes are punched in whole pages, never in the first (the header)
_REC = struct.Struct("<IIQQ")  # payload length, crc32(length|idx|term|command), idx, term
_LEN_IDX_TERM = struct.Struct("<IQQ")
_CONFIG_TAG = b"\x02"  # pysyncobj's membership command type (coord.raft.membership)
# Log indices are consecutive; a later record claiming an index this far past
# the last good one is not taken as evidence of mid-file damage.
_MAX_IDX_GAP = 1 << 32

Entry = tuple[bytes, int, int]  # (command, idx, term), pysyncobj's shape


class JournalCorrupt(Exception):
    """The journal holds a damaged record before its tail: refuse to start on it."""


def header(start: int) -> bytes:
    """The magic and the header saying the live records begin at ``start``."""
    return MAGIC + _HEADER.pack(start, zlib.crc32(struct.pack("<Q", start)), 0)


class DurableJournal:
    """pysyncobj Journal with fsync group commit. ``fsync=False`` keeps the format, skips syncs.

    ``inspect``: open only to read (``coord.raft.datadir``): an old-format file or a
    long dead prefix is not rewritten."""

    def __init__(self, path: str, fsync: bool = True, inspect: bool = False) -> None:
        self._path = path
        self._meta_path = path + ".meta"
        self._fsync = fsync
        self._inspect = inspect
        self._entries: list[Entry] = []
        self._offsets: list[int] = []  # file offset of each entry's record
        self._start = HEADER_LEN  # offset of the first live record (the header's)
        # Dead prefixes to free once a sync covers the header that moved past them:
        # (written_seq of that header write, its start); and how far holes go so far.
        self._to_punch: list[tuple[int, int]] = []
        self._punched = _PAGE
        self._can_punch = True
        self.on_write_failed: Callable[[OSError], None] | None = None  # the node exits
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
        try:
            if not inspect and self._needs_rewrite(REWRITE_DEAD_BYTES):
                self._rewrite()
            # What was read back may be in the page cache only (a process killed before
            # its sync): make it durable before anything is acknowledged from it.
            self._written += 1
            self.sync()
        except BaseException:
            os.close(self._fd)
            raise

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
        try:
            return self._load(fd)
        except BaseException:
            os.close(fd)
            raise

    def _load(self, fd: int) -> int:
        size = os.fstat(fd).st_size
        if size == 0:
            if not self._inspect:
                os.write(fd, header(HEADER_LEN))
                self._written += 1
            return fd
        start = self._read_header(fd, size)
        if start > size:
            # The header reached the disk before the appends it skips (writeback has no
            # order); the dump holds them. Appends go at the end: the header says so.
            logger.warning(
                "journal %s: the log begins at offset %d, past the end of the file (%d bytes): "
                "a compaction's header was written, the entries before it were not (the "
                "snapshot holds them); the log is empty", self._path, start, size,
            )  # fmt: skip
            start = size
            if not self._inspect:
                os.pwrite(fd, header(start), 0)
                self._written += 1
        self._start = start
        end = start + self._parse(_pread_all(fd, size - start, start), start)
        if end < size and not self._inspect:
            logger.warning("journal %s: cutting a torn tail of %d bytes", self._path, size - end)
            os.ftruncate(fd, end)
            self._written += 1
        os.lseek(fd, end, os.SEEK_SET)
        return fd

    def _read_header(self, fd: int, size: int) -> int:
        """Where the live records begin, from the header (format 2: after the magic)."""
        head = os.pread(fd, HEADER_LEN, 0)
        magic = head[: len(MAGIC)]
        if magic == _MAGIC_V2:
            return len(_MAGIC_V2)
        if magic != MAGIC:
            hint = (
                "it was written by an older coord (format 1): wipe this node's data dir and "
                "let it catch up from the leader"
                if magic == b"COORDJ01"
                else "it is not a coord journal"
            )
            raise JournalCorrupt(f"{self._path}: bad magic, {hint}")
        if len(head) < HEADER_LEN:
            raise JournalCorrupt(
                f"{self._path}: the header is cut short ({size} bytes); restore this node's "
                "data dir from a backup, or wipe it so that it catches up from the leader"
            )
        start, crc, _ = _HEADER.unpack_from(head, len(MAGIC))
        if crc != zlib.crc32(struct.pack("<Q", start)) or start < HEADER_LEN:
            raise JournalCorrupt(
                f"{self._path}: the header (where the log begins) is damaged; restore this "
                "node's data dir from a backup, or wipe it so that it catches up from the leader"
            )
        return int(start)

    def _parse(self, data: bytes, base: int) -> int:
        """Read the records in ``data`` (the file from offset ``base``); returns how
        many bytes of it are whole records."""
        off = 0
        while off < len(data):
            rec = _decode_at(data, off)
            if rec is None:
                last = self._entries[-1][1] if self._entries else None
                later = _find_valid_record(data, off + 1, last)
                if later is not None:
                    raise JournalCorrupt(
                        f"{self._path}: the record at offset {base + off} is damaged but a valid "
                        f"record follows at offset {base + later}: acknowledged entries may be "
                        "lost; restore this node's data dir from a backup, or wipe it so that it "
                        "catches up from the leader"
                    )
                break  # torn tail
            entry, end = rec
            self._entries.append(entry)
            if entry[0][:1] == _CONFIG_TAG:
                self._config.append((entry[1], entry[0]))
            self._offsets.append(base + off)
            off = end
        return off

    def _needs_rewrite(self, dead_bytes: int) -> bool:
        """A format-2 file (no header), or a dead prefix of ``dead_bytes`` or more."""
        old_format = os.pread(self._fd, len(MAGIC), 0) == _MAGIC_V2
        return old_format or self._start - HEADER_LEN >= dead_bytes

    def _rewrite(self) -> None:
        """Replace the file with one holding the header and the live records: synced,
        renamed over the old one, directory synced (a crash leaves one or the other).
        The new file holds every entry, synced."""
        old_format = os.pread(self._fd, len(MAGIC), 0) == _MAGIC_V2
        end = os.lseek(self._fd, 0, os.SEEK_CUR)
        live = _pread_all(self._fd, end - self._start, self._start)
        write_file_durably(
            self._path + ".tmp", header(HEADER_LEN) + live, self._path, fsync=self._fsync
        )
        fd = os.open(self._path, os.O_RDWR)
        # Not while the sync thread dups the old descriptor or punches holes in it: the
        # holes asked for were the old file's.
        with self._fd_lock:
            os.close(self._fd)
            self._fd = fd
            self._punched = _PAGE
            with self._lock:
                self._to_punch.clear()
        os.lseek(fd, HEADER_LEN + len(live), os.SEEK_SET)
        shift = self._start - HEADER_LEN
        self._offsets = [off - shift for off in self._offsets]
        self._start = HEADER_LEN
        self._mark_synced(self._written, self._last_index(), self._cuts)
        logger.info(
            "journal %s: rewritten %s (%d live bytes)", self._path,
            "in format 3" if old_format else f"without its dead prefix of {shift} bytes",
            len(live),
        )  # fmt: skip

    # -- pysyncobj Journal interface ------------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        command = bytes(command)
        off = os.lseek(self._fd, 0, os.SEEK_CUR)
        try:
            self._write(_encode(command, idx, term), None)
        except OSError:
            with contextlib.suppress(OSError):  # no partial record before the next append
                os.ftruncate(self._fd, off)
                os.lseek(self._fd, off, os.SEEK_SET)
            raise
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
        try:
            os.ftruncate(self._fd, off)
        except OSError as e:
            self._failed(e)
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
        """Drop the prefix covered by a snapshot (durable by now, see the module's
        docstring): the header moves past it; its pages are freed after the next sync."""
        if entryTo <= 0:
            return
        if entryTo < len(self._offsets):
            start = self._offsets[entryTo]
        else:
            start = os.lseek(self._fd, 0, os.SEEK_CUR)  # the whole log: appends go here
        self._write(header(start), 0)
        del self._entries[:entryTo]
        del self._offsets[:entryTo]
        self._start = start
        with self._lock:
            self._written += 1
            self._to_punch.append((self._written, start))
        if self._needs_rewrite(RUNTIME_REWRITE_BYTES):
            try:
                self._rewrite()
            except OSError as e:
                self._failed(e)
        # Entries folded into the snapshot are in its configuration (the node
        # moved its base there before compacting): nothing to report.
        first = self._entries[0][1] if self._entries else None
        self._config = [c for c in self._config if first is not None and c[0] >= first]

    def _write(self, data: bytes, offset: int | None) -> None:
        """Write ``data`` at the file position (``offset`` None) or at ``offset``, whole."""
        try:
            n = os.write(self._fd, data) if offset is None else os.pwrite(self._fd, data, offset)
            if n != len(data):
                raise OSError(errno.EIO, f"short write: {n} of {len(data)} bytes")
        except OSError as e:
            self._failed(e)

    def _failed(self, error: OSError) -> None:
        """A write to the file failed: what is in memory can no longer be vouched for."""
        if self.on_write_failed is not None:
            self.on_write_failed(error)  # does not return in a node
        raise error

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
            # A descriptor of its own: the tick thread may replace self._fd (a rewrite)
            # meanwhile. Syncing the file it replaced is harmless: the new one was synced
            # whole.
            with self._fd_lock:
                fd = os.dup(self._fd)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
            if self.on_sync_latency is not None:
                self.on_sync_latency(time.perf_counter() - t0)
        self._mark_synced(seq, index, cuts)
        self._punch_dead_prefix(seq)
        return True

    def _punch_dead_prefix(self, synced: int) -> None:
        """Free the pages before a start that a sync covered (the header on disk says
        the log begins after them). A file system without holes keeps them until the
        next open rewrites the file."""
        with self._fd_lock:  # the file the holes were asked for (see _rewrite)
            self._punch_locked(synced)

    def _punch_locked(self, synced: int) -> None:
        with self._lock:
            done = [start for seq, start in self._to_punch if seq <= synced]
            if not done:
                return
            self._to_punch = [(seq, start) for seq, start in self._to_punch if seq > synced]
        upto = max(done) // _PAGE * _PAGE
        if upto <= self._punched or not self._can_punch:
            return
        try:
            _punch_hole(self._fd, self._punched, upto - self._punched)
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.ENOSYS):  # the file system has no holes
                self._can_punch = False
            logger.warning(
                "journal %s: cannot free the log prefix a snapshot covers (%s): %s",
                self._path, os.strerror(e.errno or 0),
                "the file keeps it until the node restarts" if not self._can_punch
                else "trying again at the next compaction",
            )  # fmt: skip
            return
        self._punched = upto

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


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    """``length`` bytes at ``offset``, or fewer at the end of the file (one pread returns
    at most about 2 GiB on Linux)."""
    parts, got = [], 0
    while got < length:
        part = os.pread(fd, length - got, offset + got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate ``length`` bytes at ``offset`` (they read as zeros; the size stays)."""
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


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
