"""Replication by real RaftNodes in one process (tests/inproc/memory_raft.py).

Three production RaftNodes (pysyncobj hardened, CoordTransport, journal on disk)
exchange messages through an in-memory network the test cuts and heals: elections,
commits, a deposed leader's lost write, a follower's catch-up, and convergence under
dropped and delayed messages. Waits are conditions with deadlines; each test takes
about a second or two.
"""

from __future__ import annotations

import pytest

from coord import errors
from coord.raft.node import ROLE_FOLLOWER, ROLE_LEADER
from coord.testing import wait_until
from coord.v1 import kv_pb2, raft_pb2
from tests.inproc.memory_raft import InMemoryNetwork, MemoryCluster

pytestmark = pytest.mark.timeout(60)

# Deadlines, not expectations: elections take well under a second here.
DEADLINE_S = 10.0


def test_three_nodes_elect_one_leader(cluster: MemoryCluster) -> None:
    leader = cluster.wait_leader(DEADLINE_S)

    views = {n: node.view for n, node in cluster.nodes.items()}
    assert cluster.leaders() == [leader]
    assert {n for n, v in views.items() if v.role == ROLE_FOLLOWER} == set(cluster.ids) - {leader}
    assert len({v.term for v in views.values()}) == 1 and views[leader].term >= 1
    for n, v in views.items():
        assert not v.catching_up, f"{n} still a non-voter: {v}"
    # The bootstrap command replicated: every node holds the cluster id.
    for n in cluster.ids:
        assert cluster.nodes[n].read(lambda s: s.cluster_id) == "00c0ffee00c0ffee"
    assert cluster.network.stats["delivered"] > 0


def test_proposal_on_the_leader_commits_on_all_three(cluster: MemoryCluster) -> None:
    leader = cluster.wait_leader(DEADLINE_S)

    result = cluster.put(leader, b"k", b"v").result(DEADLINE_S)

    assert result.put.succeeded
    rev = result.put.kv.mod_revision
    assert rev > 0
    wait_until(
        lambda: all(cluster.get(n, b"k") == b"v" for n in cluster.ids),
        DEADLINE_S,
        "k=v applied on every node",
    )
    for n in cluster.ids:
        kv = cluster.nodes[n].read(lambda s: s.kv.get(b"k"))
        assert (kv.mod_revision, kv.version) == (rev, 1), n
    cluster.wait_converged(DEADLINE_S)


def test_isolated_leader_loses_its_write_and_all_converge_after_heal(
    cluster: MemoryCluster,
) -> None:
    old = cluster.wait_leader(DEADLINE_S)
    old_node = cluster.nodes[old]
    old_term = old_node.view.term
    others = [n for n in cluster.ids if n != old]
    appended_before = old_node.view.log_entries

    cluster.isolate(old)
    lost = cluster.put(old, b"lost", b"x")
    # It reached the old leader's log (it still leads, for a moment) ...
    wait_until(
        lambda: old_node.view.log_entries > appended_before,
        DEADLINE_S,
        "the isolated leader to append the write",
    )
    new = cluster.wait_leader(DEADLINE_S, among=others)
    assert cluster.nodes[new].view.term > old_term
    after = cluster.put(new, b"after", b"y").result(DEADLINE_S)
    assert after.put.succeeded
    # ... but a minority cannot commit it.
    assert not (lost.done() and lost.exception() is None), "a minority leader committed"
    assert all(cluster.get(n, b"lost") is None for n in cluster.ids)
    assert cluster.get(old, b"after") is None  # it hears nothing while isolated

    cluster.heal()

    state = cluster.wait_converged(DEADLINE_S)
    # A node publishes its view (leader, term, role) after the tick that applied: the
    # state can be the same everywhere a moment before every view names the leader.
    assert cluster.wait_leader(DEADLINE_S) == new
    assert old_node.view.role == ROLE_FOLLOWER
    # Failed once the new leader's entries replaced it (pysyncobj's DISCARDED).
    with pytest.raises(errors.Unavailable, match="discarded"):
        lost.result(DEADLINE_S)
    for n in cluster.ids:
        assert cluster.get(n, b"lost") is None, n
        assert cluster.get(n, b"after") == b"y", n
        assert cluster.snapshot(n) == state


def test_follower_that_missed_entries_catches_up_after_heal(cluster: MemoryCluster) -> None:
    leader = cluster.wait_leader(DEADLINE_S)
    term = cluster.nodes[leader].view.term
    behind = next(n for n in cluster.ids if n != leader)

    cluster.isolate(behind)
    for i in range(20):
        assert cluster.put(leader, b"key/%02d" % i, b"%d" % i).result(DEADLINE_S).put.succeeded
    assert all(cluster.get(behind, b"key/%02d" % i) is None for i in range(20))
    assert cluster.nodes[behind].view.applied_index < cluster.nodes[leader].view.applied_index

    cluster.heal()

    cluster.wait_converged(DEADLINE_S)
    for i in range(20):
        assert cluster.get(behind, b"key/%02d" % i) == b"%d" % i
    # PreVote: the rejoining follower's failed campaigns did not depose the leader
    # (its view, published after the tick that caught it up, may lag the state).
    assert cluster.wait_leader(DEADLINE_S) == leader
    assert cluster.nodes[leader].view.term == term


def test_writes_converge_under_dropped_and_delayed_messages(cluster: MemoryCluster) -> None:
    cluster.wait_leader(DEADLINE_S)
    cluster.network.set_faults(drop=0.03, delay=0.3, delay_s=0.02)

    for i in range(30):
        key = b"w/%02d" % i
        cmd = raft_pb2.Command(request_id=f"w{i}", put=kv_pb2.PutRequest(key=key, value=key))

        def written(cmd: raft_pb2.Command = cmd) -> bool:
            # A reset link can cost a leader its quorum: retry on whoever leads now,
            # with the same request id (the state machine applies it once).
            leader = cluster.agreed_leader()
            if leader is None:
                return False
            try:
                return cluster.nodes[leader].propose(cmd).result(2.0).put.succeeded
            except (errors.CoordError, TimeoutError):
                return False

        wait_until(written, DEADLINE_S, f"write {i} to commit")
    cluster.network.set_faults()

    cluster.wait_converged(DEADLINE_S)
    for n in cluster.ids:
        versions = cluster.nodes[n].read(
            lambda s: [kv.version for kv in (s.kv.get(b"w/%02d" % i) for i in range(30)) if kv]
        )
        assert versions == [1] * 30, n  # every write applied, once
    stats = cluster.network.stats
    assert stats["dropped"] > 0 and stats["delayed"] > 0, stats


def test_fault_schedule_is_a_function_of_the_seed() -> None:
    a, b, c = InMemoryNetwork(seed=7), InMemoryNetwork(seed=7), InMemoryNetwork(seed=8)
    for net in (a, b, c):
        net.set_faults(drop=0.1, delay=0.3, delay_s=0.01)

    schedule = a.fates("n1", "n2", 200)

    assert schedule == b.fates("n1", "n2", 200)
    assert schedule != c.fates("n1", "n2", 200)
    assert schedule != a.fates("n2", "n1", 200)  # each directed link has its own
    assert {"drop", "delay", "pass"} <= set(schedule)


def test_a_cut_link_refuses_and_heals(cluster: MemoryCluster) -> None:
    cluster.wait_leader(DEADLINE_S)
    net = cluster.network

    net.partition("n1", "n2")

    wait_until(
        lambda: (
            "n2" not in cluster.nodes["n1"].view.connected
            and "n1" not in cluster.nodes["n2"].view.connected
        ),
        DEADLINE_S,
        "n1 and n2 to see their link down",
    )
    assert net.is_cut("n2", "n1")
    assert "n3" in cluster.nodes["n1"].view.connected
    refused = net.stats["refused"]
    wait_until(lambda: net.stats["refused"] > refused, DEADLINE_S, "a refused redial")

    net.heal()

    wait_until(
        lambda: (
            "n2" in cluster.nodes["n1"].view.connected
            and "n1" in cluster.nodes["n2"].view.connected
        ),
        DEADLINE_S,
        "n1 and n2 to reconnect",
    )
    assert any(v.role == ROLE_LEADER for v in (n.view for n in cluster.nodes.values()))


def test_apply_listeners_run_once_the_ticks_callbacks_have(cluster: MemoryCluster) -> None:
    # A listener wakes the event loop, which then holds the GIL for as long as it runs:
    # called between an apply and the callback that answers its client, it stalled
    # the reply. It runs after the tick's last callback instead.
    leader_id = cluster.wait_leader(DEADLINE_S)
    leader = cluster.nodes[leader_id]
    keys = [b"listen-%d" % i for i in range(30)]
    answered: list[bytes] = []
    seen: list[tuple[int, int]] = []  # (answered, applied) at each listener call

    def applied_here() -> int:
        return leader.read(lambda s: sum(1 for k in keys if s.kv.get(k) is not None))

    leader.add_apply_listener(lambda: seen.append((len(answered), applied_here())))
    for k in keys:
        cmd = raft_pb2.Command(put=kv_pb2.PutRequest(key=k, value=b"v"))
        leader.propose_cb(cmd, lambda res, err, k=k: answered.append(k))
    wait_until(lambda: len(answered) == len(keys), DEADLINE_S, "every put answered")
    wait_until(lambda: seen and seen[-1][1] == len(keys), DEADLINE_S, "a listener after all")
    assert all(n_answered == n_applied for n_answered, n_applied in seen), seen


def test_a_listener_that_raises_stops_neither_the_others_nor_the_tick(
    cluster: MemoryCluster,
) -> None:
    # Listeners run inside pysyncobj's tick (and its snapshot install): an exception
    # there would cut the tick short (or skip the install's log reset).
    leader = cluster.nodes[cluster.wait_leader(DEADLINE_S)]
    calls: list[int] = []

    def broken() -> None:
        raise RuntimeError("a broken listener")

    leader.add_apply_listener(broken)
    leader.add_apply_listener(lambda: calls.append(1))
    for i in range(3):
        cmd = raft_pb2.Command(put=kv_pb2.PutRequest(key=b"raises-%d" % i, value=b"v"))
        leader.propose(cmd).result(DEADLINE_S)
    wait_until(lambda: calls, DEADLINE_S, "the listener after the broken one")
