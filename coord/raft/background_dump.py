"""The Raft snapshot (pysyncobj's "full dump") written by a worker thread.

pysyncobj compacts its log by serializing the whole state on its tick thread: at 20,000
keys that is ~0.1 s, at 100,000 ~0.4 s, during which a leader sends no heartbeat and
answers no follower — long enough for an election with short timeouts
(bench/hung_leader.py), and a stall in every client's write meanwhile. Here compaction
takes two steps:

1. on the tick thread, ``capture(raft_data)`` (coord.raft.node) copies the state under
   the apply lock — milliseconds: the records are immutable and shared — and returns a
   :class:`DumpJob`;
2. the node's dump worker thread (one for its life: started per dump, the tick waited
   for it to get the GIL) runs ``job.write(tmp)``, which encodes the copy a chunk at a time
   (the tick thread gets the GIL between chunks) and writes and fsyncs the file; the
   worker then renames it over the dump and fsyncs the directory.

pysyncobj polls :meth:`BackgroundSerializer.checkSerializing` every tick; when the new
dump is durable it deletes the log entries the dump covers, and ``job.installed()`` runs
on the tick thread.

Safety:

- Log entries are deleted only once the dump holding them is on disk (file and directory
  fsynced): a crash at any point leaves the old dump and the whole log.
- While a job runs, followers are still sent the current dump (pysyncobj sends none
  while its serializer's ``__pid`` is not zero; :meth:`getTransmissionData` lifts
  that): it is whole until the new one is renamed over it, and a file opened before
  the rename reads the old one to its end. A leader under writes with a large state
  and a low threshold is writing a dump nearly all the time: it sent no snapshot at
  all (chaos ``isolate-leader-compacting``: a healed follower behind for seconds).
- A new dump waits while a follower is being sent the current one, for at most
  ``defer_entries`` entries: it deletes the entries after the current dump that the
  follower will ask for next, and a follower sent a snapshot again each time a dump
  ends would never catch up under writes (etcd keeps entries behind a snapshot for
  the same reason, ``SnapshotCatchUpEntries``). A finished dump restarts the
  transmissions under way, and none of it is sent before its entries are deleted.
  Only a leader's transmissions hold a dump back: one that stepped down drops its own.
- A snapshot received from the leader and installed supersedes a running job: the
  follower has replaced its dump with the received one and cleared its log to that
  index, so an older dump renamed over it would leave a gap between dump and log at the
  next start. The superseded flag and the rename are under one lock; a superseded job
  ends FAILED and nothing is deleted or folded.
- A received snapshot is checked before it replaces the dump (``check(path)``, the
  node's): one the log already covers (coord.raft.appendfix ``snapshot_is_covered``) is
  dropped and :meth:`take_refused` tells the node not to install it (pysyncobj would
  clear the log to its index); one that does not verify is dropped (the leader sends it
  again), never renamed over a good dump.
- A received snapshot that is installed is durable before pysyncobj clears the log for
  it: the file is fsynced before its rename, the directory after (with the node's
  fsync on). A power loss after the log's clearing must not find the old dump, or a
  new one with unsynced pages, beside an emptied log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

from pysyncobj.serializer import SERIALIZER_STATE, Serializer

from coord.raft.fsutil import fsync_dir

logger = logging.getLogger(__name__)

# pysyncobj's serializer sends no snapshot while its private ``__pid`` is not zero; this
# is our "a worker thread is writing" value (pysyncobj's own are a child pid, -1 and -2).
_WRITING = -3


class DumpJob(Protocol):
    """One snapshot: a copy of the state taken on the tick thread."""

    @property
    def fsync(self) -> bool:
        """Whether to fsync (the node's setting): the directory after the rename too."""

    def write(self, path: str) -> None:
        """Worker thread: write the whole dump to ``path`` (and fsync it)."""

    def installed(self) -> None:
        """Tick thread: the dump replaced the previous one; its entries are deleted."""


class _NoJob:
    fsync = False

    def write(self, path: str) -> None:
        raise AssertionError("never written")

    def installed(self) -> None:
        raise AssertionError("never installed")


_NO_JOB = _NoJob()


class _Run:
    def __init__(self, job: DumpJob, entry_id: int) -> None:
        self.job = job
        self.entry_id = entry_id
        self.outcome: int | None = None  # SERIALIZER_STATE.SUCCESS / FAILED when done
        self.superseded = False
        self.done = threading.Event()


class BackgroundSerializer(Serializer):
    """pysyncobj's file serializer with the dump written by a worker thread.

    ``capture(raft_data)`` gets pysyncobj's ``(last, prev, cluster)`` on the tick thread
    and returns the :class:`DumpJob`; ``deserializer(path)`` loads a dump (unchanged)."""

    def __init__(
        self,
        path: str,
        transmission_batch: int,
        capture: Callable[[Any], DumpJob],
        deserializer: Callable[[str], Any],
        check: Callable[[str], int | None],
        defer_entries: int = 0,
        leading: Callable[[], bool] = lambda: True,
        fsync: bool = True,
    ) -> None:
        super().__init__(path, transmission_batch, False, capture, deserializer, None)
        self._path = path
        self._fsync = fsync  # the node's setting: a received snapshot is synced too
        # How many entries a new dump may wait for snapshots being sent (see above).
        self._defer_entries = defer_entries
        self._deferred_since: int | None = None  # the entry a new dump first waited at
        # Only a leader sends snapshots: pysyncobj leaves the transmissions of a leader
        # that stepped down (or of a removed follower) behind until the next dump.
        self._leading = leading
        self._replacing: int | None = None  # the inode of the dump being replaced
        self._capture = capture
        # A received snapshot (its path): its last index if it must not be installed
        # (the log covers it), None to install it; raises if it does not verify.
        self._check = check
        self._rename_lock = threading.Lock()
        self._running: _Run | None = None
        self._incoming: Any = None  # the snapshot being received from the leader
        self._refused: int | None = None
        # One worker for the node's life, started here: a thread started at each dump
        # made the tick thread wait for the new thread to run (Thread.start waits for
        # it to take the GIL), 122 ms seen on a leader under a write load.
        self._jobs: queue.SimpleQueue[_Run | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._work, name="coord-dump", daemon=True)
        self._worker.start()

    # -- called by pysyncobj on the tick thread -------------------------------------

    def serialize(self, data: Any, id: int) -> None:
        if self._running is not None:
            return
        if self._Serializer__transmissions and not self._leading():
            self._drop_transmissions()  # a deposed leader's: nobody reads them
        if self._Serializer__transmissions:
            if self._deferred_since is None:
                self._deferred_since = id
            if id - self._deferred_since < self._defer_entries:
                return  # pysyncobj asks again next tick
        self._deferred_since = None
        self._replacing = _inode(self._path)
        self._Serializer__pid = _WRITING
        try:
            run = _Run(self._capture(data[1:]), id)
            self._running = run
            self._jobs.put(run)
        except Exception:
            # pysyncobj's own serializer reports a failure as FAILED; an exception here
            # would escape its tick before coord's (no fsync, no acknowledgement).
            logger.exception("cannot start writing the Raft snapshot %s", self._path)
            failed = _Run(_NO_JOB, id)
            failed.outcome = SERIALIZER_STATE.FAILED
            failed.done.set()
            self._running = failed

    def checkSerializing(self) -> tuple[int, int | None]:
        run = self._running
        if run is None:
            return SERIALIZER_STATE.NOT_SERIALIZING, None
        if not run.done.is_set():
            return SERIALIZER_STATE.SERIALIZING, run.entry_id
        self._running = None
        self._Serializer__pid = 0
        if run.outcome == SERIALIZER_STATE.SUCCESS and not run.superseded:
            # A transmission under way sends the old dump, and the entries after it are
            # deleted now: start it again with this one.
            self._drop_transmissions()
            run.job.installed()
            return SERIALIZER_STATE.SUCCESS, run.entry_id
        return SERIALIZER_STATE.FAILED, run.entry_id

    def _drop_transmissions(self) -> None:
        dropped = self._Serializer__transmissions
        self._Serializer__transmissions = {}
        _close_files(dropped.values())

    # pysyncobj drops a transmission (sent whole, failed, cancelled) without closing the
    # dump file it reads from: one file descriptor leaked per snapshot sent. Close them.
    def getTransmissionData(self, transmissionID: Any) -> Any:
        transmissions = self._Serializer__transmissions
        before = dict(transmissions)
        writing = self._Serializer__pid == _WRITING
        if writing and transmissionID not in transmissions:
            current = _inode(self._path)
            # None: no dump yet, the first is being written. Another file: the new dump
            # is in place, its entries not deleted yet (the next tick). pysyncobj takes
            # a snapshot it sends to end where the log begins; the follower's reply says
            # where it really ends (coord.raft.progress), so sending it would be safe,
            # but the entries it lets go are deleted next tick: wait for the tick. (The
            # rename may still land between this check and the open: that safe case.)
            if current is None or current != self._replacing:
                return None
        if writing:
            self._Serializer__pid = 0  # the current dump may be sent (module docstring)
        try:
            return super().getTransmissionData(transmissionID)
        finally:
            if writing:
                self._Serializer__pid = _WRITING
            after = self._Serializer__transmissions
            _close_files(t for k, t in before.items() if after.get(k) is not t)
            if not after:
                self._deferred_since = None

    def cancelTransmisstion(self, id: Any) -> None:  # pysyncobj's spelling
        _close_files([self._Serializer__transmissions.pop(id, {})])
        if not self._Serializer__transmissions:
            self._deferred_since = None

    def setTransmissionData(self, data: Any) -> bool:
        """A chunk of a snapshot from the leader (``(bytes, is_first, is_last)``); True
        once the last one arrived: pysyncobj then installs it (see :meth:`take_refused`).
        pysyncobj's own, for a dump file, plus the refusal before the rename."""
        if data is None:
            return False
        chunk, is_first, is_last = data
        tmp = self._path + ".1.tmp"
        try:
            if is_first:
                if self._incoming is not None:
                    self._incoming.close()
                self._incoming = open(tmp, "wb")  # noqa: SIM115 - spans several calls
            elif self._incoming is None:
                return False
            self._incoming.write(chunk)
            if not is_last:
                return False
            if self._fsync:  # before the rename: pysyncobj then clears the log for it
                self._incoming.flush()
                os.fsync(self._incoming.fileno())
            self._incoming.close()
        except OSError:
            logger.exception("cannot write the snapshot received from the leader")
            self._incoming = None
            return False
        self._incoming = None
        try:
            covered = self._check(tmp)
        except Exception:
            logger.exception("the snapshot received from the leader does not verify: dropped")
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return False
        try:
            if covered is not None:
                os.unlink(tmp)
                self._refused = covered
                return True
            with self._rename_lock:
                if self._running is not None:
                    self._running.superseded = True
                os.replace(tmp, self._path)
                if self._fsync:
                    fsync_dir(os.path.dirname(self._path) or ".")
        except OSError:
            logger.exception("cannot keep the snapshot received from the leader")
            return False
        return True

    def take_refused(self) -> int | None:
        """The last index of the snapshot just received if it was refused, else None
        (once: the flag is cleared)."""
        refused, self._refused = self._refused, None
        return refused

    # -- the worker --------------------------------------------------------------

    def _work(self) -> None:
        while (run := self._jobs.get()) is not None:
            self._write(run)

    def stop_worker(self) -> None:
        """The node stopped: end the worker thread once the write it may be doing ends."""
        self._jobs.put(None)

    def _write(self, run: _Run) -> None:
        tmp = self._path + ".tmp"
        try:
            run.job.write(tmp)
            with self._rename_lock:
                if run.superseded:
                    os.unlink(tmp)
                    run.outcome = SERIALIZER_STATE.FAILED
                    return
                os.replace(tmp, self._path)
                if run.job.fsync:
                    fsync_dir(os.path.dirname(self._path) or ".")
            run.outcome = SERIALIZER_STATE.SUCCESS
        except Exception:
            logger.exception("cannot write the Raft snapshot %s", self._path)
            run.outcome = SERIALIZER_STATE.FAILED
        finally:
            run.done.set()

    def wait(self, timeout: float) -> bool:
        """Wait for a running write to end (a node stopping); whether none runs now."""
        run = self._running
        return run is None or run.done.wait(timeout)

    def abandon(self) -> None:
        """A stopped node's running write must not rename its dump later, under whatever
        then runs in the data dir: it deletes its file instead (its entries are still in
        the journal)."""
        with self._rename_lock:
            if self._running is not None:
                self._running.superseded = True


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _close_files(transmissions: Any) -> None:
    for t in transmissions:
        f = t.get("file")
        if f is not None:
            f.close()
