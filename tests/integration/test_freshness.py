"""Freshness-aware succession on a real cluster (issue 16, item 4): members report
positions through the client (``Member.report_position``), the group's policy sets
max_lag_on_failover, prefer_most_advanced and a synchronous set, and failover skips the
members it excludes; explain, coordctl and /metrics say why.

One 3-node cluster (fsync off, HTTP on) serves the module; each test has its own group.
Members are the public client's: sessions kept alive, standbys campaigning on threads
(``Member.campaign``). Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from coord import errors
from coord.client import Client
from coord.client.election import Leadership, Member
from coord.client.session import Session
from coord.testing import LocalCluster, wait_until
from coord.v1 import groups_pb2

from .members import holders
from .support import ClusterFactory, ctl, sample, scrape, shown


@pytest.fixture(scope="module")
def cluster(module_cluster_factory: ClusterFactory) -> LocalCluster:
    c = module_cluster_factory(3, fsync=False, http=True)
    c.wait_ready()
    return c


class Standbys:
    """Members on sessions of their own, each campaigning on a thread once it reported
    its position; every session closed at the end (a campaign still waiting ends)."""

    def __init__(self, c: Client, group: str) -> None:
        self.c, self.group = c, group
        self.pool = ThreadPoolExecutor(max_workers=4)
        self.sessions: dict[str, Session] = {}
        self.members: dict[str, Member] = {}
        self.campaigns: dict[str, Future[Leadership]] = {}

    def start(self, member_id: str, priority: int, position: int | None) -> Member:
        s = self.c.session(ttl_s=10, name=member_id).start()
        self.sessions[member_id] = s
        m = self.c.group(self.group).member(member_id, s, priority=priority).start()
        if position is not None:
            assert m.report_position(position).position == position
        self.members[member_id] = m
        return m

    def campaign(self, member_id: str) -> None:
        self.campaigns[member_id] = self.pool.submit(self.members[member_id].campaign, 20.0)

    def close(self) -> None:
        for s in self.sessions.values():
            with contextlib.suppress(errors.CoordError):
                s.close()
        for f in self.campaigns.values():  # each returned, or ends with its session
            with contextlib.suppress(errors.CoordError):
                f.result(timeout=20)
        self.pool.shutdown(wait=True)


@contextlib.contextmanager
def standbys(cluster: LocalCluster, group: str) -> Iterator[tuple[Client, Standbys]]:
    with cluster.client(timeout_s=20.0) as c:
        s = Standbys(c, group)
        try:
            yield c, s
        finally:
            s.close()


def verdicts(c: Client, group: str) -> dict[str, groups_pb2.MemberVerdict]:
    return {v.member_id: v for v in c.group(group).explain().members}


def test_a_lagging_standby_is_skipped_and_the_most_advanced_one_wins(
    cluster: LocalCluster,
) -> None:
    g = "fresh"
    with standbys(cluster, g) as (c, s):
        c.group(g).create(slots=1, max_lag_on_failover=100, prefer_most_advanced=True)
        s.start("m1", priority=1, position=1000)
        assert s.members["m1"].campaign(timeout_s=10).slot == 0
        # m2 outranks everyone by priority but lags; m4 outranks m3 but m3 is ahead.
        for member_id, priority, position in (("m2", 30, 100), ("m3", 10, 990), ("m4", 20, 950)):
            s.start(member_id, priority, position)
            s.campaign(member_id)
        wait_until(
            lambda: all(verdicts(c, g)[m].reason != "not_candidate" for m in ("m2", "m3", "m4")),
            10, "the standbys to campaign",
        )  # fmt: skip
        v = verdicts(c, g)
        assert v["m2"].reason == "lagging" and "behind by 900" in v["m2"].detail, v["m2"]
        assert (v["m3"].rank, v["m4"].rank) == (1, 2) and v["m3"].lag == 10
        with pytest.raises(errors.FailedPrecondition, match="positions only increase"):
            s.members["m3"].report_position(989)

        # What an operator sees: explain, member ls (table and JSON), /metrics.
        r = ctl(cluster, "group", "explain", g)
        assert r.exit_code == 0 and "behind by 900" in r.stdout, shown(r)
        assert "the best reported position is 1000 (m1)" in r.stdout, shown(r)
        r = ctl(cluster, "-o", "json", "member", "ls", g)
        assert r.exit_code == 0, shown(r)
        listed = {m["id"]: m for m in json.loads(r.stdout)}
        assert (listed["m2"]["position"], listed["m2"]["lag"]) == (100, 900)
        r = ctl(cluster, "member", "ls", g)
        header, *rows = r.stdout.strip().splitlines()
        assert header.split()[-2:] == ["POSITION", "LAG"], shown(r)
        assert {row.split()[1]: row.split()[-2:] for row in rows}["m4"] == ["950", "50"]
        lag = sample(scrape(cluster, 0), "coord_member_position_lag", -1, group=g, member="m2")
        assert lag == 900

        s.sessions["m1"].close()  # the master goes away: m2 lags, m3 is the most advanced
        elected = s.campaigns["m3"].result(timeout=10)
        assert elected.member.id == "m3"
        assert holders(c, g) == {0: ("m3", elected.token)}
        assert not s.campaigns["m2"].done() and not s.campaigns["m4"].done()


def test_only_the_synchronous_set_succeeds_and_live_edits_refuse_bad_input(
    cluster: LocalCluster,
) -> None:
    g = "sync"
    with standbys(cluster, g) as (c, s):
        r = ctl(cluster, "group", "create", g)
        assert r.exit_code == 0, shown(r)
        s.start("s1", priority=1, position=None)
        assert s.members["s1"].campaign(timeout_s=10).slot == 0
        for member_id, priority in (("s2", 30), ("s3", 10)):
            s.start(member_id, priority, position=None)
            s.campaign(member_id)
        wait_until(lambda: verdicts(c, g)["s3"].eligible and verdicts(c, g)["s2"].eligible,
                   10, "the standbys to campaign")  # fmt: skip
        before = c.group(g).get().policy
        for args, words in (
            (["--max-lag-on-failover", "-1"], "max_lag_on_failover must be >= 0"),
            (["--synchronous", "s1,s1"], "names 's1' twice"),
            (["--synchronous", ""], "or an empty set to let any member succeed"),
        ):
            r = ctl(cluster, "group", "edit", g, *args)
            assert r.exit_code != 0 and words in r.stderr, shown(r)
        assert c.group(g).get().policy == before  # nothing changed

        # A live edit: s1 (the master) keeps its slot outside the set; s4 registers later.
        r = ctl(cluster, "-o", "json", "group", "edit", g, "--synchronous", "s3,s4")
        assert r.exit_code == 0, shown(r)
        assert json.loads(r.stdout)["policy"]["synchronous"] == ["s3", "s4"]
        r = ctl(cluster, "group", "get", g)
        assert "s3,s4" in r.stdout, shown(r)
        assert holders(c, g)[0][0] == "s1"
        v = verdicts(c, g)
        assert v["s2"].reason == "not_synchronous" and "not in the synchronous set" in (
            v["s2"].detail
        )
        s.sessions["s1"].close()
        elected = s.campaigns["s3"].result(timeout=10)  # not s2, for all its priority
        assert elected.member.id == "s3"
        edited = c.group(g).edit(synchronous=[])  # the Python client's edit: any member
        assert list(edited.policy.synchronous) == []
