"""The availability ledger on a real cluster: identical on every node, kept across
kill -9 of every node and across snapshots, and reported by ``coordctl report``."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

from coord import errors
from coord.client import Client, Member, Session
from coord.testing import LocalCluster, wait_until
from coord.v1 import availability_pb2

from .members import Members, get_group
from .support import ClusterFactory, coordctl, describe, kill_all_at_once, wait_all_caught_up

TTL_S = 2.0


def fixed(g: availability_pb2.GroupAvailability) -> tuple[object, ...]:
    """The parts of a report that do not depend on the reader's clock."""
    closed = [(o.start_ms, o.end_ms, o.cause, o.slot, o.member) for o in g.timeline if o.end_ms]
    return (
        g.group,
        g.tracking_since_ms,
        g.outage_count_total,
        dict(g.failovers_by_cause_total),
        closed,
        g.outage_open,
        g.budget_ms_30d,
    )


def per_node(cluster: LocalCluster, nodes: list[int]) -> list[tuple[object, ...]]:
    out = []
    for i in nodes:
        with Client([cluster.nodes[i].api], timeout_s=5.0) as c:
            resp = c.availability("db", serializable=True)
        assert resp.header.node_id == cluster.nodes[i].node_id
        (g,) = resp.groups
        out.append(fixed(g))
    return out


def campaign_in_background(m: Member) -> None:
    """Campaign (the call blocks until elected) on a thread; it ends with the session."""

    def run() -> None:
        with contextlib.suppress(errors.CoordError):
            m.campaign(timeout_s=60)

    threading.Thread(target=run, daemon=True).start()


def hand_over(c: Client, standby: str, rounds: int) -> None:
    """``rounds`` times: the master's session closes, the standby takes over, and the
    old master rejoins as the standby. Then every session closes."""
    sessions: dict[str, Session] = {}

    def join(mid: str, prio: int) -> None:
        s = c.session(ttl_s=TTL_S, name=mid).start()
        sessions[mid] = s
        campaign_in_background(c.group("db").member(mid, s, priority=prio).start())
        wait_until(
            lambda: any(m.id == mid and m.candidate for m in get_group(c, "db").members),
            10,
            f"{mid} to campaign",
        )

    join("m0", 10)
    wait_until(lambda: [h.member_id for h in c.group("db").masters()] == ["m0"], 10, "m0 master")
    join(standby, 5)
    current = "m0"
    for r in range(rounds):
        sessions.pop(current).close()  # master_lost (session_closed), standby elected
        nxt = standby if r % 2 == 0 else "m0"
        wait_until(lambda n=nxt: [h.member_id for h in c.group("db").masters()] == [n], 10, nxt)
        join(current, 5)
        current = nxt
    for mid in sorted(sessions, key=lambda m: m == current):  # the standby first
        sessions[mid].close()


def test_ledger_is_identical_on_every_node_and_survives_restarts(
    cluster_factory: ClusterFactory,
) -> None:
    # Small compaction threshold: restarted nodes load the ledger from their snapshot.
    cluster = cluster_factory(3, extra_args=["--log-compaction-entries", "100"])
    cluster.wait_for_leader()
    with cluster.client(timeout_s=15.0) as c:
        c.group("db").create(downtime_budget_ms=60_000)
        hand_over(c, "m1", rounds=3)
        for i in range(120):  # past the compaction threshold
            c.put(f"fill/{i}", b"x")
        resp = c.availability("db")
    (g,) = resp.groups
    # 3 handovers, each a release and a grant in one command: failovers, no outage. The
    # last sessions closed: the slot has no master, one outage, open.
    assert dict(g.failovers_by_cause_total) == {"session_closed": 3}
    assert g.outage_count_total == 1
    assert g.outage_open
    assert [(o.cause, o.end_ms) for o in g.timeline] == [("session_closed", 0)]
    wait_all_caught_up(cluster)
    before = per_node(cluster, [0, 1, 2])
    assert before[0] == before[1] == before[2]
    assert before[0] == fixed(g)
    assert all("raft.dump" in os.listdir(n.data_dir) for n in cluster.nodes), (
        "the test needs snapshots on every node"
    )

    kill_all_at_once(cluster)
    cluster.start()
    cluster.wait_for_leader()
    wait_all_caught_up(cluster)
    after = per_node(cluster, [0, 1, 2])
    assert after == before


def test_coordctl_report_table_and_json(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(3)
    cluster.wait_for_leader()
    with cluster.client(timeout_s=15.0) as c:
        c.group("web").create(downtime_budget_ms=30 * 60_000)
        with c.session(ttl_s=TTL_S, name="a") as s:
            campaign_in_background(c.group("web").member("a", s, priority=1).start())
            wait_until(lambda: bool(c.group("web").masters()), 10, "a master")
        # The session closed: the slot has no master, an outage is open.
        wait_until(lambda: c.availability("web").groups[0].outage_open, 10, "an open outage")
    out = coordctl(cluster.endpoints, "report", "--group", "web", "--window", "1h")
    assert out.returncode == 0, describe(out)
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["GROUP", "WINDOW", "OBSERVED", "DOWNTIME"]
    assert lines[1].split()[:2] == ["web", "1h"]
    assert "web: outages, oldest first (one open)" in out.stdout
    assert "session_closed" in out.stdout

    out = coordctl(cluster.endpoints, "-o", "json", "report", "--window", "24h", "-w", "30d")
    assert out.returncode == 0, describe(out)
    data = json.loads(out.stdout)
    (web,) = [g for g in data["groups"] if g["group"] == "web"]
    assert [w["window_s"] for w in web["windows"]] == [86400, 2592000]
    assert web["outage_open"] is True

    bad = coordctl(cluster.endpoints, "report", "--window", "soon")
    assert bad.returncode != 0 and "not a duration" in bad.stderr
    missing = coordctl(cluster.endpoints, "report", "--group", "nope")
    assert missing.returncode != 0 and "does not exist" in missing.stderr


def test_a_killed_master_is_down_for_about_its_ttl(
    cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    """kill -9 of the master: the outage runs from its session's last renewal (expiry
    minus TTL) to the standby's election, as the master's clients saw it."""
    cluster = cluster_factory(3)
    cluster.wait_for_leader()
    with cluster.client(timeout_s=15.0) as c:
        c.group("kv").create()
    procs = Members(cluster, str(tmp_path))
    try:
        m1 = procs.start("kv", "m1", priority=10, ttl_s=TTL_S)
        m1.elected()
        m2 = procs.start("kv", "m2", priority=5, ttl_s=TTL_S)
        with cluster.client(timeout_s=15.0) as c:
            wait_until(
                lambda: any(m.id == "m2" and m.candidate for m in get_group(c, "kv").members),
                15,
                "m2 to campaign",
            )
        killed = m1.kill()
        m2.elected(timeout=15)
        gap = time.monotonic() - killed
        with cluster.client(timeout_s=15.0) as c:
            (g,) = c.availability("kv").groups
    finally:
        procs.close()
    (o,) = [o for o in g.timeline if o.end_ms]
    duration_s = (o.end_ms - o.start_ms) / 1000
    assert o.cause == "session_expired"
    # Down from the last renewal (at most a keepalive interval, TTL/3, before the kill)
    # until the election (which the test sees a little after it happens).
    assert gap - 0.5 <= duration_s <= gap + TTL_S / 3 + 0.2, (duration_s, gap)
    assert TTL_S - 0.2 <= duration_s <= TTL_S + 1.5, duration_s
