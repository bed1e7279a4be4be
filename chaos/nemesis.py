"""Faults, each a function ``(cluster, rng, ttl_s) -> heal`` that starts a fault and
returns the callable that ends it. The runner alternates fault and heal periods.

Network faults go through Toxiproxy (chaos.cluster); process faults use signals;
membership changes use the cluster API as an operator would (chaos.membership); clock
faults move a node's wall clock through the clock shim (chaos.clocks; the scenario's
cluster runs with clocks); disk faults slow a node's fsync/fdatasync through the disk
shim (chaos.disks; the scenario's cluster runs with disks); a forced handover is
chaos.handover; lost answers are chaos.lost_answers.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable

from chaos import handover, membership
from chaos.cluster import ProxiedCluster
from chaos.lost_answers import AnswerDropper
from coord.client import Client
from coord.testing import wait_until

Heal = Callable[[], None]
Nemesis = Callable[[ProxiedCluster, random.Random, float], Heal]

# How far past a session TTL a clock fault moves a wall clock: any wait measured on the
# moved clock (a TTL wait-out, a switchover timeout) is over at once, or lasts seconds.
CLOCK_FAULT_S = 5.0


def _ids(c: ProxiedCluster) -> list[str]:
    return c.member_ids


def leader_id(c: ProxiedCluster) -> str:
    """The leader a majority of members agree on (waits for one, 20 s at most)."""
    return c.agreed_leader(20)


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
    k = len(c.members) // 2
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


LATE_REPLY_MS = 2000


def cut_off_leader_late_replies(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """The followers' messages reach the leader 2 s late; 2 s later the leader's to them
    are lost. For 2 s more it hears, in its term, answers to heartbeats it sent before it
    was cut off, while the others elect a new leader and commit (the scenario runs with
    STALE_LEADER_ARGS: the old leader keeps leading). A read index round must not count
    those answers (coord.raft.read_index): a read it confirmed with them would be stale."""
    lid = leader_id(c)
    followers = [f for f in _ids(c) if f != lid]
    undo = []
    for f in followers:
        undo += c.slow(f, lid, LATE_REPLY_MS)
    time.sleep(LATE_REPLY_MS / 1000)  # first phase: answers to every heartbeat in flight
    for f in followers:
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
    stop believing before the cluster grants the slot to another (docs/design.md)."""
    with Client(c.client_endpoints, timeout_s=10) as cl:
        held = wait_until(lambda: cl.group("g1").masters(), 20, "a master of g1")
    undo = c.cut_client(f"g1-{held[0].member_id}")
    return lambda: c.undo(undo)


def kill_leader(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    lid = leader_id(c)
    i = c.index(lid)
    c.kill(i)
    return lambda: c.start(i)


def kill_random(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    i = c.index(rng.choice(_ids(c)))
    c.kill(i)
    return lambda: c.start(i)


# The wipe-with-stale-leader scenario's timings: a leader cut off from every other
# member keeps leading for 30 s (it steps down once it heard from no majority for the
# fallback timeout, which may not exceed the connection timeout), longer than the
# nemesis needs to wipe and restart a follower beside it.
STALE_LEADER_ARGS = ("--connection-timeout-s", "30", "--leader-fallback-timeout-s", "30")
STALE_SETUP_S = 20.0  # the majority electing, the wiped follower up beside the stale leader


def wipe_with_stale_leader(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """The leader L1 is cut off from every other member; once they elect L2, a follower
    W other than L2 is killed -9, its data dir wiped, and restarted where only L1
    reaches it (W cut from everyone else). L1 still leads its older term (the scenario
    runs with STALE_LEADER_ARGS) with entries it could not commit at indexes L2 has
    committed: had the blank W acknowledged them, L1 and W would be a majority of three
    for a second history (coord.raft.gate). Heal: every link back."""
    old = leader_id(c)
    others = [n for n in _ids(c) if n != old]
    cuts = {n: c.cut(old, n) for n in others}

    def new_leader() -> str | None:
        leaders = [st.leader_id if (st := c.status(c.index(n))) else "" for n in others]
        return leaders[0] if leaders[0] in others and len(set(leaders)) == 1 else None

    new: str = wait_until(new_leader, STALE_SETUP_S, f"a leader among {others}")
    wiped = rng.choice([n for n in others if n != new])
    node = c.node(wiped)
    assert node is not None
    c.kill(node.index)
    shutil.rmtree(node.data_dir)
    undo = [t for n, u in cuts.items() if n != wiped for t in u]
    for n in others:
        if n != wiped:
            undo += c.cut(wiped, n)
    c.undo(cuts[wiped])
    c.start(node.index)

    def beside_the_stale_leader() -> bool:
        st = c.status(node.index)
        return st is not None and st.leader_id == old

    try:
        wait_until(beside_the_stale_leader, STALE_SETUP_S, f"the wiped {wiped} hearing {old}")
        membership.say(f"{wiped} wiped and restarted beside the stale leader {old} (new: {new})")
    except TimeoutError:
        membership.say(f"{wiped} wiped and restarted, but does not hear {old} (new: {new})")
    return lambda: c.undo(undo)


def pause_leader(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """SIGSTOP the leader; the runner keeps it stopped for longer than a session TTL."""
    i = c.index(leader_id(c))
    c.pause(i)
    return lambda: c.resume(i)


def rolling_restart(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """SIGTERM (a leader hands leadership on first) and restart every node in turn,
    the next one only once the restarted node has rejoined: it follows the leader a
    majority agrees on and has applied what that leader had."""
    for node in list(c.members):
        c.stop(node.index)
        c.start(node.index)
        membership.caught_up(c, node, time.monotonic() + membership.STEP_S)
        membership.say(f"{node.node_id} restarted (SIGTERM) and rejoined")
    return lambda: None


# -- clocks (the scenario's cluster runs with clocks) ---------------------------------


def clock_skew(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """The wall clock of the leader (or, drawn half the time, of a random member)
    skewed by +-(TTL + 5 s) for the fault period, then set right (a step back)."""
    target = leader_id(c) if rng.random() < 0.5 else rng.choice(_ids(c))
    offset = rng.choice((-1.0, 1.0)) * (ttl_s + CLOCK_FAULT_S)
    clock = c.wall_clock(target)
    clock.set(offset)
    membership.say(f"{target}'s wall clock {offset:+.1f} s")
    return lambda: clock.set(0.0)


def clock_step_leader_during_revoke(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """A forced handover of the 1-slot group's master (chaos.handover: it hears nothing,
    so it is revoked and its TTL waited out), and during that wait-out the leader's wall
    clock steps forward by TTL + 5 s. A wait timed on the wall clock ends at once and
    the slot is granted while the old master still believes (two masters); on the
    leader's monotonic clock the step changes nothing.

    Heal: the old master's answers flow again, and every other member's wall clock steps
    forward to the leader's (all agree again, ahead of real time). Not back: the
    cluster's time never goes backwards (each command's stamp is at least the last), so
    after a step back every stamp would stay at the high-water mark for TTL + 5 s, and
    the next cycle's switchover would not time out for that long."""
    forced = handover.force(c, ttl_s)
    lid = leader_id(c)
    ahead = max(c.wall_clock(n).offset_s for n in _ids(c)) + ttl_s + CLOCK_FAULT_S
    c.wall_clock(lid).set(ahead)
    membership.say(f"the leader {lid}'s wall clock stepped to {ahead:+.1f} s")

    def heal() -> None:
        forced.heal()
        for nid in _ids(c):
            c.wall_clock(nid).set(ahead)

    return heal


# -- disks (the scenario's cluster runs with disks) ------------------------------------

# How slow a slowed disk's flushes are (each fsync/fdatasync sleeps this long first):
# the leader's, about what a busy disk took under a benchmark's load (246 ms seen), each
# more than a heartbeat period and near an election timeout (0.3-0.6 s): a leader that
# flushed on its tick thread would miss heartbeats; a follower's, longer still.
SLOW_LEADER_DISK_S = (0.15, 0.40)
SLOW_FOLLOWER_DISK_S = (0.30, 0.80)


def _slow_disks(c: ProxiedCluster, delays: dict[str, float], who: str) -> Heal:
    """Delay each node's flushes by its own delay (at once, while it runs); the heal sets
    every delay back to 0 and says how many flushes the fault delayed."""
    before = {nid: c.disk_delay(nid).delayed for nid in delays}
    for nid, delay_s in delays.items():
        c.disk_delay(nid).set(delay_s)
    membership.say(
        "fsync/fdatasync slowed: "
        + ", ".join(f"{nid} ({who}) +{1000 * d:.0f} ms" for nid, d in delays.items())
    )

    def heal() -> None:
        for nid in delays:
            c.disk_delay(nid).set(0.0)
        membership.say(
            "disks healed; flushes delayed: "
            + ", ".join(f"{nid} {c.disk_delay(nid).delayed - before[nid]}" for nid in delays)
        )

    return heal


def slow_disk_leader(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """The leader's fsync/fdatasync each delayed by 150-400 ms (drawn per fault) for the
    fault period, while the workload writes: its journal syncs (on their own thread)
    must hold up neither heartbeats nor anything but the acknowledgements waiting for
    them, and nothing may be acknowledged before its sync returned. Heal: delay 0."""
    lid = leader_id(c)
    return _slow_disks(c, {lid: rng.uniform(*SLOW_LEADER_DISK_S)}, "leader")


def slow_disk_minority(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """A random minority of followers (one of 3, two of 5), each flush delayed by
    300-800 ms (drawn per node): the leader commits with the fast majority, the slow
    followers fall behind and must catch up after the heal (delay 0)."""
    lid = leader_id(c)
    followers = [n for n in _ids(c) if n != lid]
    slow = rng.sample(followers, len(c.members) // 2)
    return _slow_disks(c, {n: rng.uniform(*SLOW_FOLLOWER_DISK_S) for n in slow}, "follower")


# -- answers lost --------------------------------------------------------------------


def forced_handover(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """One-way loss of the 1-slot group's master client during a forced handover: its
    answers dropped (its keepalives still arrive), then a switchover it never hears of;
    it must stop believing before the successor is granted."""
    return handover.force(c, ttl_s).heal


def lost_answers(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """Bursts of lost answers on every API proxy (chaos.lost_answers) for the fault
    period: writes applied whose answers never came back, retried by the library."""
    dropper = AnswerDropper(c, rng)
    return dropper.stop


# -- membership changes under load ------------------------------------------------


def member_replace(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """Remove a random follower, alive (it must notice and exit by itself; odd cycles)
    or first killed -9 (removing a dead node; even cycles); the cluster runs one member
    short for the fault period. Heal: a fresh node (new id, empty data dir) joins and
    catches up, then a random member is killed -9 and restarted with the flags it was
    first started with."""
    lid = leader_id(c)
    victim = rng.choice([n for n in _ids(c) if n != lid])
    if len(c.retired) % 2 == 1:
        c.kill(c.index(victim))
        membership.say(f"killed -9 {victim} (to remove a dead node)")
    membership.remove(c, victim)

    def heal() -> None:
        membership.add(c)
        nid = rng.choice(_ids(c))
        c.restart(c.index(nid))
        membership.say(f"killed -9 and restarted {nid}")
        leader_id(c)

    return heal


def leader_transfer(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """Leadership handed to a follower named at random; heal: handed on again with no
    target (to the most caught-up other member)."""
    lid = leader_id(c)
    membership.transfer(c, rng.choice([n for n in _ids(c) if n != lid]))

    def heal() -> None:
        membership.transfer(c)

    return heal


def grow_shrink(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """3 -> 5: two fresh nodes join, one after the other (each caught up first). Heal:
    5 -> 3, two members drawn at random removed (the leader too, when drawn: leadership
    is handed away first)."""
    start = len(c.members)
    membership.add(c)
    membership.add(c)

    def heal() -> None:
        for nid in rng.sample(_ids(c), len(c.members) - start):
            membership.remove(c, nid)

    return heal


def change_with_kill(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """kill -9 of a minority during a change: a fresh node's addition is proposed, and
    the leader (or a random follower) is killed -9 the moment the leader's log holds the
    new configuration, before, at or just after its commit. The node is added as a
    learner, so the quorum stays 2 of 3 voters: the two live voters keep committing
    (and elect a new leader if the leader died). The heal restarts the killed node; then
    the addition completes (or is proposed again if it died with the leader), the new
    node starts, catches up and is promoted, and a random other member is removed
    (back to 3)."""
    lid = leader_id(c)
    victim = lid if rng.random() < 0.5 else rng.choice([n for n in _ids(c) if n != lid])
    node = c.new_node()
    proposal = membership.propose_add(c, node)
    shown = membership.wait_shown(c, lid, lambda members: node.node_id in members, 3.0)
    c.kill(c.index(victim))
    membership.say(
        f"killed -9 {victim}{' (the leader)' if victim == lid else ''} "
        f"{'with' if shown else 'before'} the addition of {node.node_id} in the leader's log"
    )

    def heal() -> None:
        proposal.join()
        c.start(c.index(victim))
        membership.join(c, node)
        membership.remove(c, rng.choice([n for n in _ids(c) if n != node.node_id]))

    return heal


def change_with_partition(c: ProxiedCluster, rng: random.Random, ttl_s: float) -> Heal:
    """A partition during a change: a follower's removal is proposed and, once the
    leader's log holds it, a random minority (the leader in it or not, the removed node
    in it or not) is cut off. Heal: the partition ends, the removal completes (or is
    proposed again if it was lost), the removed node exits by itself, and a fresh node
    joins (back to the size before)."""
    lid = leader_id(c)
    victim = rng.choice([n for n in _ids(c) if n != lid])
    ids = _ids(c)
    rng.shuffle(ids)
    k = len(ids) // 2
    proposal = membership.propose_remove(c, victim)
    shown = membership.wait_shown(c, lid, lambda members: victim not in members, 3.0)
    undo = c.partition(ids[:k], ids[k:])
    membership.say(
        f"partitioned {sorted(ids[:k])} | {sorted(ids[k:])} (leader {lid}) "
        f"{'with' if shown else 'before'} the removal of {victim} in the leader's log"
    )

    def heal() -> None:
        c.undo(undo)
        proposal.join()
        membership.remove(c, victim)
        membership.add(c)

    return heal


NEMESES: dict[str, Nemesis] = {
    "isolate-leader": isolate_leader,
    "isolate-leader-and-clients": isolate_leader_and_its_clients,
    "minority-partition": minority_partition,
    "leader-in-majority": leader_in_majority,
    "bridge": bridge,
    "one-way-loss": one_way_loss,
    "cut-off-leader-late-replies": cut_off_leader_late_replies,
    "latency-jitter": latency,
    "slow-close": slow_close,
    "reset-peer": reset_peer,
    "isolate-master-client": isolate_master_client,
    "kill-leader": kill_leader,
    "kill-random": kill_random,
    "wipe-with-stale-leader": wipe_with_stale_leader,
    "pause-leader": pause_leader,
    "rolling-restart": rolling_restart,
    "clock-skew": clock_skew,
    "clock-step-leader-during-revoke": clock_step_leader_during_revoke,
    "slow-disk-leader": slow_disk_leader,
    "slow-disk-minority": slow_disk_minority,
    "forced-handover": forced_handover,
    "lost-answers": lost_answers,
    "member-replace": member_replace,
    "leader-transfer": leader_transfer,
    "grow-shrink": grow_shrink,
    "change-with-kill": change_with_kill,
    "change-with-partition": change_with_partition,
}
