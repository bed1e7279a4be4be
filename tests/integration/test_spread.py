"""Spreading masters across hosts on a real cluster (issue 16, item 7): a sharded service,
two groups in one spread family (at most one master per host), three hosts each running
one member process of every shard (tests/integration/tagged_member.py: tagged
``host=hN``). Hosts die at random (kill -9 of their member processes): the spread holds
while two hosts live; with one left both masters share it (availability first) and the
violation shows in explain, the master_elected event, ``coordctl group get``, the gauge
``coord_group_spread_violations`` and the status page's data; ``coordctl rebalance``
refuses while nothing can improve it, and once a host returns it runs the one
switchover that restores the spread.

One 3-node cluster (fsync off, HTTP on) for the module; coordctl runs in-process.
"""

from __future__ import annotations

import json
import os
import random
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from coord.client import Client
from coord.testing import LocalCluster, wait_until

from .jsonlines import JsonLinesProcess
from .support import ClusterFactory, ctl, sample, scrape, shown

SHARDS = ("s0", "s1")
HOSTS = {"h1": 3, "h2": 2, "h3": 1}  # host -> its members' priority
TTL_S = 1.0
MEMBER = str(Path(__file__).with_name("tagged_member.py"))


@pytest.fixture(scope="module")
def cluster(module_cluster_factory: ClusterFactory) -> LocalCluster:
    c = module_cluster_factory(3, fsync=False, http=True)
    c.wait_ready()
    return c


class Hosts:
    """The member processes of each host (one per shard); kill -9 kills a host."""

    def __init__(self, cluster: LocalCluster, log_dir: Path) -> None:
        self.cluster, self.log_dir = cluster, log_dir
        self.procs: dict[str, list[JsonLinesProcess]] = {}
        self.started = 0

    def start(self, host: str) -> None:
        procs = []
        for shard in SHARDS:
            self.started += 1
            cmd = [sys.executable, MEMBER, "--endpoints", ",".join(self.cluster.endpoints),
                   "--group", shard, "--id", f"{shard}-{host}", "--priority", str(HOSTS[host]),
                   "--ttl-s", str(TTL_S), "--tag", f"host={host}"]  # fmt: skip
            err = str(self.log_dir / f"{shard}-{host}.{self.started}.stderr")
            procs.append(JsonLinesProcess(f"member {shard}-{host}", cmd, err))
        self.procs[host] = procs
        for p in procs:
            p.wait_for("registered", 20)

    def kill(self, host: str) -> None:
        for p in self.procs.pop(host):
            p.kill()
            p.close_streams()

    def close(self) -> None:
        for host in list(self.procs):
            self.kill(host)

    def describe(self) -> str:
        return "\n".join(p.describe() for ps in self.procs.values() for p in ps)


@pytest.fixture
def hosts(cluster: LocalCluster, tmp_path: Path) -> Iterator[Hosts]:
    h = Hosts(cluster, tmp_path)
    try:
        yield h
    finally:
        h.close()


def masters(c: Client) -> dict[str, str]:
    """shard -> the host of its serving master."""
    out = {}
    for shard in SHARDS:
        held = [m for m in c.group(shard).masters() if not m.revoked]
        if held:
            out[shard] = held[0].member_id.split("-")[1]
    return out


def members_on(c: Client, host: str) -> list[str]:
    """The members of the shards registered from ``host`` (their sessions live)."""
    return [m.id for shard in SHARDS for m in c.group(shard).get().members
            if m.tags.get("host") == host]  # fmt: skip


def violations(cluster: LocalCluster) -> float:
    return sample(scrape(cluster, 0), "coord_group_spread_violations", -1.0, group="s1")


def test_the_spread_holds_after_random_host_kills_and_rebalance_restores_it(
    cluster: LocalCluster, hosts: Hosts
) -> None:
    rng = random.Random(int(os.environ.get("SPREAD_SEED", "7")))
    with cluster.client(timeout_s=20.0) as c:
        for shard in SHARDS:
            c.group(shard).create(slots=1, spread_tag="host", spread_max=1,
                                  spread_family="shards", switchover_timeout_ms=3000)  # fmt: skip
            c.group(shard).pause(reason="placing the shards once every host is up")
        for host in HOSTS:
            hosts.start(host)
        r = ctl(cluster, "group", "resume", *SHARDS)  # both shards fill in one command
        assert r.exit_code == 0, shown(r)
        wait_until(lambda: len(masters(c)) == 2, 10, "a master for each shard")
        assert len(set(masters(c).values())) == 2, masters(c)  # two hosts: the spread holds
        assert violations(cluster) == 0

        alive = set(HOSTS)
        for round_ in (1, 2):  # kill a host that has a master, chosen at random
            victim = rng.choice(sorted(set(masters(c).values())))
            mark = c.status().revision
            hosts.kill(victim)
            alive.discard(victim)
            wait_until(lambda v=victim: len(masters(c)) == 2 and v not in masters(c).values()
                       and not members_on(c, v), 15,
                       f"both shards to fail over from {victim}, its members gone")  # fmt: skip
            if round_ == 1:  # two hosts left for two shards: the spread holds
                assert len(set(masters(c).values())) == 2, masters(c)
                assert not c.group("s0").spread().violated
        # One host left: both masters share it, and everything says so.
        [left] = alive
        assert set(masters(c).values()) == {left}
        rule = c.group("s0").spread()
        assert rule.violated and rule.excess == 1 and list(rule.plan) == [] and rule.stuck
        # The failover that broke it (the one grant since the second kill) says so.
        grant = next(iter(c.watch(mark, types=["master_elected"])))
        assert grant.spread_violated == f"host={left} has 2 masters, at most 1", grant
        wait_until(lambda: violations(cluster) == 1, 5, "the gauge to count the violation")
        page = _status(cluster)
        assert {g["name"]: g["spread"]["excess"] for g in page["groups"]
                if g["name"] in SHARDS} == {"s0": 1, "s1": 1}  # fmt: skip
        r = ctl(cluster, "group", "get", "s1")
        assert r.exit_code == 0 and "VIOLATED (1 beyond the limit)" in r.stdout, shown(r)
        r = ctl(cluster, "rebalance", "--family", "shards")
        assert r.exit_code == 6, shown(r)
        assert "no switchover can improve it now" in r.stderr, shown(r)

        # A host comes back: its members are standbys; nothing moves by itself.
        back = sorted(set(HOSTS) - alive)[0]
        hosts.start(back)
        assert violations(cluster) == 1 and set(masters(c).values()) == {left}
        r = ctl(cluster, "-o", "json", "rebalance", "--family", "shards", "--dry-run")
        assert r.exit_code == 0, shown(r)
        [move] = json.loads(r.stdout)["plan"]
        assert move["to_member"].endswith(f"-{back}") and move["from_value"] == left, move
        r = ctl(cluster, "rebalance", "s0")  # a group of the family: the family
        assert r.exit_code == 0, shown(r)
        assert "the spread holds now" in r.stderr and move["to_member"] in r.stdout, shown(r)
        assert sorted(masters(c).values()) == sorted([left, back])
        wait_until(lambda: violations(cluster) == 0, 5, "the gauge back at 0")
        r = ctl(cluster, "rebalance")
        assert r.exit_code == 0 and "the spread holds: nothing to rebalance" in r.stdout, shown(r)


def _status(cluster: LocalCluster) -> dict[str, object]:
    with urllib.request.urlopen(f"http://{cluster.nodes[0].http}/api/status", timeout=5) as r:
        data: dict[str, object] = json.loads(r.read())
    return data
