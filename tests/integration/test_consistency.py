"""Consistency checks on real clusters: every member hashes its state at one committed
check point (``coordctl consistency``, and the leader every --consistency-check-every).

A replica that diverged is planted the way it happens in the field: its snapshot dump is
rewritten with one value changed and valid checksums (a damaged disk or a bug that the
checksums cannot see), and the node restarted on it.
"""

from __future__ import annotations

import json
import os
import re

from coord.cli.output import EXIT_ERROR, EXIT_UNAVAILABLE
from coord.client import Client
from coord.raft.node import DUMP_FILE
from coord.raft.snapshotfile import read_dump, write_dump
from coord.state.snapshot_format import decode_snapshot, encode_snapshot
from coord.testing import wait_until

from .support import (
    ClusterFactory,
    coordctl,
    describe,
    sample,
    scrape,
    status_of,
    wait_all_acknowledging,
    wait_all_caught_up,
)


def test_replicas_agree_after_a_mixed_workload_and_a_restart(
    cluster_factory: ClusterFactory,
) -> None:
    c = cluster_factory(3, http=True)
    lead = c.wait_for_leader()
    follower = (lead + 1) % 3
    with c.client() as cl:
        cl.group("db").create(slots=1)
        for i in range(40):
            cl.put(f"k/{i}", b"v%d" % i)
        cl.delete("k/1")
        c.kill(follower)
        cl.delete("k/", prefix=True)
        cl.put("after", b"x")
        c.start(follower)
        wait_all_caught_up(c)
        resp = cl.check_consistency()
    assert resp.consistent, resp
    assert {n.node_id for n in resp.nodes} == {"n1", "n2", "n3"}
    assert len({n.hash for n in resp.nodes}) == 1 and all(n.matches for n in resp.nodes)
    assert {n.revision for n in resp.nodes} == {resp.revision}
    p = coordctl(c.endpoints, "--output", "json", "consistency")
    assert p.returncode == 0, describe(p)
    doc = json.loads(p.stdout)
    assert doc["consistent"] is True and len(doc["nodes"]) == 3
    answered_by = c.wait_for_leader()  # the client asks the leader
    assert sample(scrape(c, answered_by), "coord_consistency_checks_total", result="consistent")


def test_a_diverged_replica_is_named_by_the_check_and_the_leader_s_periodic_check(
    cluster_factory: ClusterFactory,
) -> None:
    c = cluster_factory(
        3,
        http=True,
        extra_args=["--log-compaction-entries", "100", "--consistency-check-every", "1s"],
    )
    lead = c.wait_for_leader()
    bad = (lead + 1) % 3
    with c.client() as cl:
        for i in range(250):  # past the compaction threshold: every node writes a dump
            cl.put(f"k/{i:03d}", b"good")
    dump_path = os.path.join(c.nodes[bad].data_dir, DUMP_FILE)
    wait_until(lambda: os.path.exists(dump_path), 30, "the follower's snapshot dump")
    c.kill(bad)
    dump = read_dump(dump_path)
    snap = decode_snapshot(dump.state)
    assert snap.kvs, "the dump holds the keys"
    snap.kvs[0].value = b"evil"  # valid checksums: only a state comparison can tell
    write_dump(
        dump_path,
        encode_snapshot(snap),
        dump.last,
        dump.prev,
        list(dump.node_ids),
        members=dump.members,
    )
    c.start(bad)
    wait_all_caught_up(c)
    bad_id = c.nodes[bad].node_id
    assert status_of(c, bad).applied_index > 0

    with Client(c.endpoints, timeout_s=30) as cl:
        resp = cl.check_consistency()
    assert not resp.consistent, resp
    verdict = {n.node_id: n.matches for n in resp.nodes}
    assert verdict == {n.node_id: n.node_id != bad_id for n in c.nodes}, resp
    assert all(n.hash and n.revision == resp.revision for n in resp.nodes), resp

    p = coordctl(c.endpoints, "consistency")
    assert p.returncode == EXIT_ERROR, describe(p)
    assert f"state diverged on {bad_id}: replace them" in p.stderr, describe(p)
    assert re.search(rf"^{bad_id}\s+\d+\s+[0-9a-f]{{16}}\s+NO\b", p.stdout, re.M), describe(p)

    # The leader's own check, every second, raises the metric the alert rule watches
    # and says in its log what to do.
    lead = c.wait_for_leader()

    def flagged() -> bool:
        return sample(scrape(c, lead), "coord_state_diverged", -1, node=bad_id) == 1.0

    wait_until(flagged, 30, f"the leader's periodic check to flag {bad_id}")
    m = scrape(c, lead)
    assert sample(m, "coord_state_diverged", -1, node=c.nodes[lead].node_id) == 0.0
    assert sample(m, "coord_consistency_checks_total", result="diverged") >= 1
    assert f"node {bad_id}'s state at revision" in c.log(lead)
    assert "it diverged; replace it" in c.log(lead)


def test_a_member_that_is_down_makes_the_check_incomplete(
    cluster_factory: ClusterFactory,
) -> None:
    c = cluster_factory(3, fsync=False)
    lead = c.wait_for_leader()
    wait_all_acknowledging(c)  # else the two left may not make a majority yet
    down = (lead + 2) % 3
    c.kill(down)
    with c.client() as cl:
        cl.put("k", b"v")
        resp = cl.check_consistency()
    assert not resp.consistent
    by_id = {n.node_id: n for n in resp.nodes}
    gone = by_id[c.nodes[down].node_id]
    assert not gone.hash and not gone.matches and "UNAVAILABLE" in gone.error, resp
    assert all(n.matches for nid, n in by_id.items() if nid != gone.node_id), resp
    p = coordctl(c.endpoints, "consistency")
    assert p.returncode == EXIT_UNAVAILABLE, describe(p)
    assert f"no state hash from {gone.node_id}" in p.stderr, describe(p)
