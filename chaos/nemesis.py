"""Faults, each a function ``(cluster, rng, ttl_s) -> heal`` that starts a fault and
returns the callable that ends it. The runner alternates fault and heal periods.

Network faults go through Toxiproxy (chaos.cluster); process faults use signals.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from chaos.cluster import ProxiedCluster
from coord.client import Client, masters
from coord.testing import wait_until

Heal = Callable[[], None]
Nemesis = Callable[[ProxiedCluster, random.Random, float], Heal]


def _ids(c: ProxiedCluster) -> list[str]:
    return [n.node_id for n in c.nodes]


def leader_id(c: ProxiedCluster) -> str:
    """The leader a majority of live nodes agree on (waits for one, 20 s at most)."""

    def agreed() -> str | None:
        views = [s.leader_id for s in c.statuses() if s is not None and s.leader_id]
        for nid in set(views):
            if views.count(nid) > len(c.nodes) // 2:
                return nid
        return None

    found: str = wait_until(agreed, 20, "a leader a majority agrees on")
    return found


def isolate_leader(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    lid = leader_id(c)
    undo = c.partition([lid], [n for n in _ids(c) if n != lid])
    return lambda: c.undo(undo)


def isolate_leader_and_its_clients(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    lid = leader_id(c)
    undo = c.partition([lid], [n for n in _ids(c) if n != lid]) + c.cut_clients([lid])
    return lambda: c.undo(undo)


def minority_partition(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """A random minority (the leader in it or not) cut from the rest."""
    ids = _ids(c)
    rng.shuffle(ids)
    k = len(ids) // 2
    undo = c.partition(ids[:k], ids[k:])
    return lambda: c.undo(undo)


def leader_in_majority(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """A follower (or two, of five) cut off; the leader keeps its majority."""
    lid = leader_id(c)
    followers = [n for n in _ids(c) if n != lid]
    rng.shuffle(followers)
    k = len(c.nodes) // 2
    undo = c.partition(followers[:k], [lid, *followers[k:]])
    return lambda: c.undo(undo)


def bridge(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """Two halves that share one node (Jepsen's bridge): the bridge sees everyone."""
    ids = _ids(c)
    rng.shuffle(ids)
    half = len(ids) // 2
    left, middle, right = ids[:half], ids[half], ids[half + 1 :]
    undo = []
    for a in left:
        for b in right:
            undo += c.cut(a, b)
    del middle  # connected to both sides: its links stay up
    return lambda: c.undo(undo)


def one_way_loss(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """The leader's messages to its followers are lost; theirs still arrive."""
    lid = leader_id(c)
    undo = []
    for f in _ids(c):
        if f != lid:
            undo += c.cut(lid, f, direction=f"{lid}->{f}")
    return lambda: c.undo(undo)


def latency(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """50 ms +- 40 ms on every Raft link, each direction."""
    undo = c.toxic_all_raft("latency", {"latency": 50, "jitter": 40}, "lag")
    return lambda: c.undo(undo)


def slow_close(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """Connections take 2 s to close, then the leader's links are reset."""
    undo = c.toxic_all_raft("slow_close", {"delay": 2000}, "slowclose")
    lid = leader_id(c)
    for f in _ids(c):
        if f != lid:
            name = c.raft_proxy(lid, f)
            c.toxi.disable(name)
            c.toxi.enable(name)
    return lambda: c.undo(undo)


def reset_peer(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """Every Raft connection is reset 300 ms after it opens, again and again."""
    undo = c.toxic_all_raft("reset_peer", {"timeout": 300}, "reset")
    return lambda: c.undo(undo)


def isolate_master_client(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """Cut the 1-slot group's master (the client) from every node: its library must
    stop believing before the cluster grants the slot to another (DESIGN.md)."""
    with Client(c.client_endpoints, timeout_s=10) as cl:
        held = wait_until(lambda: masters(cl, "g1"), 20, "a master of g1")
    undo = c.cut_client(f"g1-{held[0].member_id}")
    return lambda: c.undo(undo)


def kill_leader(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    lid = leader_id(c)
    i = _ids(c).index(lid)
    c.kill(i)
    return lambda: c.start(i)


def kill_random(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    i = rng.randrange(len(c.nodes))
    c.kill(i)
    return lambda: c.start(i)


def pause_leader(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """SIGSTOP the leader; the runner keeps it stopped for longer than a session TTL."""
    i = _ids(c).index(leader_id(c))
    c.pause(i)
    return lambda: c.resume(i)


def rolling_restart(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """SIGTERM and restart every node in turn, each once a leader is back."""
    for i in range(len(c.nodes)):
        c.stop(i)
        c.start(i)
        leader_id(c)
    return lambda: None


NEMESES: dict[str, Nemesis] = {
    "isolate-leader": isolate_leader,
    "isolate-leader-and-clients": isolate_leader_and_its_clients,
    "minority-partition": minority_partition,
    "leader-in-majority": leader_in_majority,
    "bridge": bridge,
    "one-way-loss": one_way_loss,
    "latency-jitter": latency,
    "slow-close": slow_close,
    "reset-peer": reset_peer,
    "isolate-master-client": isolate_master_client,
    "kill-leader": kill_leader,
    "kill-random": kill_random,
    "pause-leader": pause_leader,
    "rolling-restart": rolling_restart,
}
