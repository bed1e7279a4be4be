"""JournalSyncer: the journal's fdatasync on a thread of its own (coord.raft.journal_sync)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from coord.raft.journal import DurableJournal
from coord.raft.journal_sync import JournalSyncer
from coord.testing import wait_until


def test_it_syncs_what_was_written_on_its_own_thread_then_wakes_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = DurableJournal(str(tmp_path / "j"), fsync=True)
    threads: list[str] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        threads.append(threading.current_thread().name)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    woken = threading.Event()
    syncer = JournalSyncer(j, woken.set, _unexpected)
    try:
        j.add(b"a", 1, 1)
        j.add(b"b", 2, 1)
        syncer.request()
        assert woken.wait(10)
        wait_until(lambda: not j.dirty, 10, "the journal synced")
        assert j.durable_index == 2
        assert threads and set(threads) == {"coord-journal-sync"}
        n = len(threads)
        woken.clear()
        syncer.request()  # nothing new written: no sync
        j.add(b"c", 3, 1)
        syncer.request()
        assert woken.wait(10)
        wait_until(lambda: j.durable_index == 3, 10, "entry 3 synced")
        assert len(threads) == n + 1
    finally:
        syncer.close()
        syncer.close()  # idempotent
    j.close()


def test_destroying_the_journal_stops_the_thread_and_syncs_the_rest(tmp_path: Path) -> None:
    j = DurableJournal(str(tmp_path / "j"), fsync=True)
    syncer = JournalSyncer(j, lambda: None, _unexpected)
    j.on_destroy = syncer.close
    j.add(b"a", 1, 1)
    j._destroy()  # pysyncobj's close, on the tick thread
    assert not syncer._thread.is_alive()
    assert not j.dirty and j.durable_index == 1  # the rest was synced on the way out


def test_a_failed_fdatasync_is_reported_once_and_claims_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = DurableJournal(str(tmp_path / "j"), fsync=True)

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    failures: list[OSError] = []
    syncer = JournalSyncer(j, lambda: None, failures.append)
    j.add(b"a", 1, 1)
    syncer.request()
    syncer._thread.join(10)
    assert not syncer._thread.is_alive()  # no retry over pages the kernel may have dropped
    assert [e.errno for e in failures] == [5]
    assert j.dirty and j.durable_index == 0  # nothing claimed durable
    syncer.request()  # the node exits on the report; a request meanwhile does nothing
    assert len(failures) == 1
    syncer.close()
    monkeypatch.undo()
    j.close()


def _unexpected(error: OSError) -> None:
    raise AssertionError(f"fdatasync failed: {error}")
