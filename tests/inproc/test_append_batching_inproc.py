"""How many append-entries a leader sends under load (coord.raft.syncobj_adapter).

Real RaftNodes over the in-memory network; the leader's transport records what it
sends, tick by tick. Heartbeats are slowed out of the picture (0.5 s), so every
append-entries counted is one the commit path sent.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coord.config import RaftTimings
from coord.raft.syncobj_adapter import raft_clock
from tests.inproc.memory_raft import MemoryCluster

pytestmark = pytest.mark.timeout(60)

SLOW_HEARTBEATS = RaftTimings(
    heartbeat_s=0.5,
    election_timeout_min_s=2.0,
    election_timeout_max_s=2.5,
    connection_timeout_s=10.0,
    leader_fallback_timeout_s=8.0,
)


class SentLog:
    """The append-entries a leader sends, by (tick, follower): ``what(message)`` of each.
    ``tick`` counts the leader's ticks (its tick callbacks run at the end of each)."""

    def __init__(self, node: Any, what: Any) -> None:
        self.tick = 0
        self.sent: dict[tuple[int, str], list[Any]] = defaultdict(list)
        self._transport = node._raft.transport
        self._wire = self._transport.send

        def recorded(peer: Any, message: Any) -> Any:
            if isinstance(message, dict) and message.get("type") == "append_entries":
                self.sent[(self.tick, peer.id)].append(what(message))
            return self._wire(peer, message)

        self._transport.send = recorded
        node._raft.add_tick_callback(self._next_tick)

    def _next_tick(self) -> None:
        self.tick += 1

    def stop(self) -> None:
        self._transport.send = self._wire


@contextlib.contextmanager
def leading(
    tmp_path: Path, timings: RaftTimings | None = None
) -> Iterator[tuple[MemoryCluster, int]]:
    """A started in-memory cluster and its leader's index; closed on the way out."""
    cluster = MemoryCluster(tmp_path)
    if timings is not None:
        cluster.timings = timings
    cluster.start_all()
    try:
        yield cluster, cluster.wait_leader(timeout=20)
    finally:
        cluster.close()


def entries(message: Any) -> int:
    return len(message.get("entries") or ())


def test_a_commit_and_the_commands_queued_behind_it_go_out_in_one_append_entries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """pysyncobj sends an append-entries to every follower after each apply (to carry
    the new commit index); under load the queued commands' append-entries follows in
    the same tick. Two messages, two replies and two follower ticks per follower where
    one carries both: per-message costs are most of the Raft side's CPU per put
    (bench/profile_leader.py). (A tick that found no command queued sends the commit
    index before its apply; commands proposed meanwhile follow in their own.)"""
    with leading(tmp_path, SLOW_HEARTBEATS) as (cluster, leader):
        node = cluster.nodes[leader]
        # (tick, follower) -> entries carried by each append-entries sent in that tick
        log = SentLog(node, entries)
        # Ticks whose commit index went out before the apply (nothing was queued then):
        # commands proposed during that apply go out in a message of their own.
        so: Any = node._raft._so
        told_first: set[int] = set()
        tell = so._coord_tell_commit_first

        def recorded_tell(last_applied: int) -> bool:
            told = bool(tell(last_applied))
            if told:
                told_first.add(log.tick)
            return told

        so._coord_tell_commit_first = recorded_tell

        errors: list[BaseException] = []

        def writer(w: int) -> None:
            try:
                for i in range(40):
                    cluster.put(leader, b"w%d/%d" % (w, i), b"v").result(10)
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        log.stop()
        assert not errors, errors[:3]
        # A tick that raises is abandoned halfway (pysyncobj logs it and sleeps): its
        # second send never happens either, for the wrong reason.
        failed = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert not failed, failed[:3]
        sent = log.sent
        commit_then_entries = [
            (k, counts)
            for k, counts in sent.items()
            if len(counts) >= 2 and counts[0] == 0 and any(counts[1:]) and k[0] not in told_first
        ]
        assert sum(map(len, sent.values())) > 0
        assert not commit_then_entries, (
            f"{len(commit_then_entries)} of {len(sent)} (tick, follower) pairs sent a "
            f"commit-only append-entries and then the commands: {commit_then_entries[:5]}"
        )
        cluster.wait_converged(20)


def test_a_heartbeat_due_at_an_apply_is_the_only_append_entries_it_needs(
    tmp_path: Path,
) -> None:
    """When the heartbeat is due in a tick that applies something, pysyncobj sends it
    with the new commit index: the drain must not send the commit index again when no
    command is queued (two identical empty append-entries per follower)."""
    with leading(tmp_path) as (cluster, leader):
        node = cluster.nodes[leader]
        so: Any = node._raft._so
        log = SentLog(node, entries)

        def heartbeat_due() -> None:
            so._SyncObj__newAppendEntriesTime = 0.0

        node._raft.add_tick_callback(heartbeat_due)
        for i in range(30):  # one client: the queue is empty when its put is applied
            cluster.put(leader, b"k%d" % i, b"v").result(10)
        log.stop()
        twice = [(k, counts) for k, counts in log.sent.items() if counts.count(0) >= 2]
        assert sum(map(len, log.sent.values())) > 0
        assert not twice, f"{len(twice)} (tick, follower) pairs sent two empty: {twice[:5]}"


def test_with_one_client_followers_hear_each_commit_before_the_leader_applies_it(
    tmp_path: Path,
) -> None:
    """Nothing queued when a put commits (its client waits for the answer): the leader
    sends the commit index first, so followers apply, and their watchers hear, while
    it applies and answers. (A heartbeat due at the apply carries the commit index
    after it: those ticks are left out.)"""
    with leading(tmp_path, SLOW_HEARTBEATS) as (cluster, leader):
        node = cluster.nodes[leader]
        so: Any = node._raft._so
        # (tick, follower) -> (commit index, leader's last applied) per append-entries
        log = SentLog(node, lambda message: (message["commit_index"], so.raftLastApplied))
        heartbeat_due: set[int] = set()
        tell = so._coord_tell_commit_first

        def recorded_tell(last_applied: int) -> bool:
            told = bool(tell(last_applied))
            if not told and raft_clock() > so._SyncObj__newAppendEntriesTime:
                heartbeat_due.add(log.tick)
            return told

        so._coord_tell_commit_first = recorded_tell
        for i in range(20):
            cluster.put(leader, b"k%d" % i, b"v").result(10)
        log.stop()
        announced: dict[str, int] = {}  # follower -> highest commit index sent (the first: a base)
        news: list[tuple[int, int]] = []  # (commit index, last applied) of each new one
        for (t, peer), msgs in sorted(log.sent.items()):
            for commit, applied in msgs:
                if t not in heartbeat_due and peer in announced and commit > announced[peer]:
                    news.append((commit, applied))
                announced[peer] = max(announced.get(peer, commit), commit)
            # The commit index alone, then (if the client's next put was proposed during
            # the apply) that put's entries: never the commit index twice.
            assert len(msgs) <= 2, f"tick {t} sent {peer} {len(msgs)} append-entries"
        assert len(news) >= 30, log.sent  # ~20 puts' commits to each of 2 followers
        late = [n for n in news if n[0] <= n[1]]
        assert not late, f"{len(late)} of {len(news)} commits sent after the apply: {late[:5]}"
        cluster.wait_converged(20)
