"""A leader's journal fsync, on a thread of its own.

An fdatasync takes a few milliseconds on a quiet disk and hundreds on a busy one
(246 ms seen under a benchmark's load). On the Raft tick thread that is a leader
that sends no heartbeat meanwhile: followers start elections. Here a leader's tick
thread only asks (:meth:`JournalSyncer.request`, once per tick: group commit)
and goes on polling; this thread syncs whatever was written by then and wakes
the tick thread (``on_synced``), which then releases the acknowledgements held
for those writes and lets the leader count its own log up to what is durable
(``DurableJournal.synced_seq`` / ``durable_index``). Nothing is acknowledged,
and no entry counted by its own leader, before its fdatasync returned: the same
promise as a sync on the tick thread, without the stall.

etcd's raft does the same (the leader appends to its own disk in parallel with
sending to followers, Raft thesis §10.2.1). Followers sync on their tick thread
(coord.raft.node ``_on_tick``): their acks are on the commit path, and a hand-off
to this thread and back costs two wake-ups there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from coord.raft.journal import DurableJournal

logger = logging.getLogger(__name__)


class JournalSyncer:
    """One thread that fdatasyncs ``journal`` when asked, then calls ``on_synced``.

    A failed fdatasync calls ``on_failed`` (the node exits) and ends the thread: after
    an fsync error the kernel may have dropped the dirty pages and marked them clean,
    so a retry could "succeed" over lost writes (PostgreSQL's fsyncgate)."""

    def __init__(
        self,
        journal: DurableJournal,
        on_synced: Callable[[], None],
        on_failed: Callable[[OSError], None],
    ) -> None:
        self._journal = journal
        self._on_synced = on_synced
        self._on_failed = on_failed
        self._cond = threading.Condition()
        self._wanted = 0  # the journal's written_seq the latest request asked for
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="coord-journal-sync", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Tick thread: make every write so far durable, soon."""
        seq = self._journal.written_seq
        if seq <= self._journal.synced_seq:
            return
        with self._cond:
            if seq > self._wanted:
                self._wanted = seq
                self._cond.notify()

    def close(self) -> None:
        """Stop the thread (after the fdatasync it may be in). Idempotent."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        journal = self._journal
        while True:
            with self._cond:
                while not self._stopping and self._wanted <= journal.synced_seq:
                    self._cond.wait()
                if self._stopping:
                    return
            try:
                journal.sync()
            except OSError as e:
                self._on_failed(e)
                return
            self._wake()

    def _wake(self) -> None:
        try:
            self._on_synced()
        except Exception:  # the tick thread's notifier closed as the node stops
            logger.debug("waking the tick thread after a sync failed", exc_info=True)
