"""A leader's read barriers confirmed by heartbeats (coord.raft.read_index), real RaftNodes
over the in-memory network (tests/inproc/memory_raft.py).

A leader's barrier appends nothing to the log and still sees every committed write; a
leader cut off from its followers never confirms a barrier with their late replies to
its earlier heartbeats while the majority elects a new leader and commits without it;
followers that do not echo (an older coord) leave the leader on no-op barriers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from coord import errors
from coord.raft.node import RaftNode
from coord.raft.transport import CoordTransport
from coord.testing import wait_until
from tests.inproc.memory_raft import MemoryCluster

pytestmark = pytest.mark.timeout(60)

DEADLINE_S = 10.0


def _log_entries(cluster: MemoryCluster, node_id: str) -> int:
    return cluster.nodes[node_id].view.log_entries


def _leader_on_rounds(cluster: MemoryCluster, value: bytes) -> tuple[str, RaftNode]:
    """The leader, once it put k=``value`` and its followers number their replies."""
    leader = cluster.wait_leader(DEADLINE_S)
    node = cluster.nodes[leader]
    cluster.put(leader, b"k", value).result(DEADLINE_S)
    wait_until(node._read_index.usable, DEADLINE_S, "the followers to echo")
    return leader, node


def test_a_leaders_barriers_append_nothing_and_see_every_committed_write(
    cluster: MemoryCluster,
) -> None:
    leader, node = _leader_on_rounds(cluster, b"v1")
    entries = _log_entries(cluster, leader)
    rounds = node._read_index.rounds
    for i in range(20):
        node.barrier().result(DEADLINE_S)
        assert cluster.get(leader, b"k") == b"v1", i
    assert node._read_index.rounds > rounds
    assert _log_entries(cluster, leader) == entries  # no no-op entry
    # A write through a follower (forwarded), then a barrier on the leader: it is there.
    follower = next(n for n in cluster.ids if n != leader)
    cluster.put(follower, b"k", b"v2").result(DEADLINE_S)
    node.barrier().result(DEADLINE_S)
    assert cluster.get(leader, b"k") == b"v2"


def test_a_cut_off_leader_never_confirms_a_barrier_with_late_replies(
    cluster: MemoryCluster,
) -> None:
    old, old_node = _leader_on_rounds(cluster, b"before")
    old_node.barrier().result(DEADLINE_S)

    # The followers' replies reach the old leader 0.4 s late, and nothing it sends
    # arrives any more (its links stay up: no reset). It keeps receiving replies, in
    # its term, to heartbeats it sent before it was cut off (which also keep it leading
    # past its 0.8 s fallback timeout): only their numbers tell them from answers to
    # its barrier's heartbeats, which never arrive.
    others = [n for n in cluster.ids if n != old]
    for f in others:
        cluster.network.slow_down(f, old, 0.4)
    sent = dict(old_node._read_index._sent)
    wait_until(  # replies to these are on their way, late
        lambda: all(old_node._read_index._sent[f] >= sent[f] + 2 for f in others),
        DEADLINE_S,
        "two more heartbeats to each follower",
    )
    for f in others:
        cluster.network.silence(old, f)
    stale = old_node.barrier()
    new = cluster.wait_leader(DEADLINE_S, among=others)
    cluster.put(new, b"k", b"after").result(DEADLINE_S)
    # A barrier that succeeded on the old leader before it heard of "after" would let
    # a linearizable read return "before" after "after" was acknowledged.
    with pytest.raises(errors.CoordError):
        stale.result(old_node.cfg.request_timeout_s + DEADLINE_S)
    assert cluster.network.stats["lost"] > 0


def test_followers_that_do_not_echo_leave_the_leader_on_no_op_barriers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = CoordTransport._onMessageReceived

    def as_an_older_coord(self: CoordTransport, node: Any, message: Any) -> None:
        if isinstance(message, dict) and message.get("type") == "append_entries":
            message = {k: v for k, v in message.items() if k != "coord_seq"}
        handle(self, node, message)

    monkeypatch.setattr(CoordTransport, "_onMessageReceived", as_an_older_coord)
    cluster = MemoryCluster(tmp_path)
    cluster.start_all()
    try:
        leader = cluster.wait_leader(DEADLINE_S)
        node = cluster.nodes[leader]
        cluster.put(leader, b"k", b"v").result(DEADLINE_S)
        entries = _log_entries(cluster, leader)
        for _ in range(3):
            node.barrier().result(DEADLINE_S)
        assert not node._read_index.usable()
        assert node._read_index.rounds == 0
        assert _log_entries(cluster, leader) == entries + 3  # one no-op each
    finally:
        cluster.close()
