"""Webhook notifications (``--notify-webhook``) against a real receiver on 127.0.0.1.

- a failover (kill -9 of the master) and a switchover are posted by the leader, in revision
  order, exactly the failover events a watcher sees (not the first election), each with
  the documented fields and an ``Idempotency-Key``;
- spending a group's downtime budget posts ``budget_burning_fast`` and ``budget_spent``;
- a receiver that answers 500 a few times still gets every event, in order (retries);
- a receiver that is down leaves a bounded queue (the oldest dropped, counted in
  /metrics), and deliveries resume when it is back;
- after a leader change the new leader posts what happens after it took over;
- a bad URL is refused at start with a clear error.

One cluster serves the module; each test has its own group and looks at its posts only.
The nodes' webhook queue holds ``QUEUE_MAX`` notifications (``COORD_WEBHOOK_QUEUE_MAX``).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from coord.cli.output import EXIT_CONFIG
from coord.errors import InvalidArgument
from coord.server.duties.webhook import check_url, wanted
from coord.testing import LocalCluster, free_ports, wait_until
from coord.v1 import election_pb2, groups_pb2

from .members import Members, Watcher, groups_stub, list_sessions
from .support import COORD, ClusterFactory, describe, run, sample, scrape

QUEUE_MAX = 5
TTL_S = 2.0
FIELDS = {
    "schema", "id", "type", "group", "member", "slot", "token", "cause", "revision", "term",
    "time_ms", "time", "cluster_id", "node_id",
}  # fmt: skip


class Post:
    def __init__(self, headers: dict[str, str], body: dict[str, Any], status: int) -> None:
        self.at = time.monotonic()
        self.headers = headers
        self.body = body
        self.status = status  # what the receiver answered


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers 200, or what
    ``fail_next`` scripted for the post's group. ``stop()``/``start()`` take it down and
    back on the same port."""

    def __init__(self) -> None:
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}/hooks/coord"
        self.posts: list[Post] = []
        # Per group: an earlier test's late event (a session expiring after its test
        # ended) must not spend the failures scripted for this test's group.
        self.script: dict[str, deque[int]] = {}
        self.cond = threading.Condition()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.cond:
                    script = receiver.script.get(body.get("group", ""))
                    status = script.popleft() if script else 200
                    receiver.posts.append(Post(dict(self.headers), body, status))
                    receiver.cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def fail_next(self, group: str, n: int, status: int = 500) -> None:
        """Answer the next ``n`` posts about ``group`` with ``status``."""
        with self.cond:
            self.script.setdefault(group, deque()).extend([status] * n)

    def of(self, group: str) -> list[Post]:
        with self.cond:
            return [p for p in self.posts if p.body.get("group") == group]

    def delivered(self, group: str) -> list[dict[str, Any]]:
        """Bodies answered 2xx, in arrival order."""
        return [p.body for p in self.of(group) if p.status == 200]

    def wait_delivered(self, group: str, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(got := self.delivered(group)) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"the receiver got {len(got)} of {n} posts for {group} within "
                        f"{timeout} s: {[(b['type'], b['revision']) for b in got]}"
                    )
                self.cond.wait(left)
            return got


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="module")
def cluster(module_cluster_factory: ClusterFactory, receiver: Receiver) -> LocalCluster:
    c = module_cluster_factory(
        3,
        http=True,
        extra_args=["--notify-webhook", receiver.url],
        env={"COORD_WEBHOOK_QUEUE_MAX": str(QUEUE_MAX)},
    )
    c.wait_for_leader()
    return c


@pytest.fixture(autouse=True)
def settled(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test on the shared cluster: no session left (none can expire during
    the next test) and the leader's queue empty (every post delivered). The tests share
    one receiver and one leader's queue; a post that one test's end caused (a session
    closed or expiring, a master resigning) must not reach the next one, whose
    receiver scripts and drop counts assume only its own posts (CI, stop 23: an earlier
    test's late master_lost took the 500s scripted for another group)."""
    yield
    if "cluster" not in request.fixturenames:
        return
    cluster: LocalCluster = request.getfixturevalue("cluster")
    if not any(n.running for n in cluster.nodes):
        return

    def quiet() -> bool:
        with cluster.client() as c:
            if list_sessions(c):
                return False
            revision = c.range(b"-").header.revision  # linearizable: the leader's
        m = scrape(cluster, cluster.wait_for_leader())
        # Every event up to now read by the webhook (a closed session's master_lost is
        # queued after its apply), and nothing left to post.
        scanned = sample(m, "coord_webhook_scanned_revision", default=-1)
        return scanned >= revision and sample(m, "coord_webhook_queue_length", default=-1) == 0

    wait_until(quiet, 30, "no session left and every webhook post delivered")


class Pair:
    """Two in-test members of a group that hand the master slot back and forth:
    each ``flip()`` is a resign and a new election, two failover events."""

    def __init__(self, cluster: LocalCluster, group: str, **policy: Any) -> None:
        self.client = cluster.client(timeout_s=20.0)
        self.client.group(group).create(**policy)
        self.sessions = [self.client.session(ttl_s=5.0, name=f"{group}-{x}").start() for x in "ab"]
        self.members = [
            self.client.group(group).member(f"{group}-{x}", s).start()
            for s, x in zip(self.sessions, "ab", strict=True)
        ]
        self.members[0].campaign(timeout_s=10)
        self.holder = 0

    def resign(self) -> None:
        self.members[self.holder].resign()

    def elect_other(self) -> None:
        self.holder = 1 - self.holder
        self.members[self.holder].campaign(timeout_s=10)

    def flip(self) -> None:
        self.resign()
        self.elect_other()

    def close(self) -> None:
        for s in self.sessions:
            s.close()
        self.client.close()


@contextlib.contextmanager
def pair(cluster: LocalCluster, group: str, **policy: Any) -> Iterator[Pair]:
    p = Pair(cluster, group, **policy)
    try:
        yield p
    finally:
        p.close()


def watched(watcher: Watcher, group: str) -> list[groups_pb2.Event]:
    return [e for e in watcher.events() if e.group == group and wanted(e)]


def expected(e: groups_pb2.Event) -> tuple[Any, ...]:
    return (e.revision, e.type, e.member, e.slot, e.token, e.cause, e.term, e.time_ms)


def got(body: dict[str, Any]) -> tuple[Any, ...]:
    b = body
    return (b["revision"], b["type"], b["member"], b["slot"], b["token"], b["cause"], b["term"],
            b["time_ms"])  # fmt: skip


def leader_of(cluster: LocalCluster) -> tuple[int, str]:
    i = cluster.wait_for_leader()
    return i, cluster.nodes[i].node_id


def test_a_failover_and_a_switchover_are_posted_in_order(
    cluster: LocalCluster, receiver: Receiver, members: Members
) -> None:
    g = "wh-failover"
    watcher = Watcher(cluster.endpoints, groups=[g])
    try:
        with cluster.client() as c:
            c.group(g).create()
        m1 = members.start(g, "m1", priority=30, ttl_s=TTL_S)
        m1.elected()
        m2 = members.start(g, "m2", priority=20, ttl_s=TTL_S)
        m3 = members.start(g, "m3", priority=10, ttl_s=TTL_S)
        wait_until(
            lambda: {"m2", "m3"} <= {m.id for m in _group(cluster, g).members if m.candidate},
            20,
            "m2 and m3 to campaign",
        )
        m1.kill()
        m2.elected(timeout=TTL_S + 10)
        with cluster.client() as c:
            groups_stub(c).Switchover(election_pb2.SwitchoverRequest(group=g, to_member="m3"))
        m3.elected(timeout=10)
        watcher.wait_for(
            lambda e: e.type == "master_elected" and e.member == "m3", 10, "m3 elected"
        )
        events = watched(watcher, g)
    finally:
        watcher.stop()
    kinds = [(e.type, e.member, e.cause) for e in events]
    assert kinds == [
        ("master_lost", "m1", "session_expired"),
        ("master_elected", "m2", "session_expired"),
        ("stepdown_requested", "m2", "switchover"),
        ("master_lost", "m2", "switchover"),
        ("master_elected", "m3", "switchover"),
    ], kinds

    posts = receiver.wait_delivered(g, len(events))
    assert [got(b) for b in posts] == [expected(e) for e in events]
    st = cluster.status(cluster.wait_for_leader())
    assert st is not None
    for b, p in zip(posts, receiver.of(g), strict=True):
        assert set(b) == FIELDS, sorted(set(b) ^ FIELDS)
        assert b["schema"] == 1 and b["group"] == g
        assert b["id"] == f"{st.header.cluster_id}-{b['revision']}-{b['type']}"
        assert b["cluster_id"] == st.header.cluster_id
        assert b["node_id"] == st.leader_id, "only the leader posts"
        assert b["time"].endswith("Z") and b["time"][:4] == time.strftime("%Y", time.gmtime())
        assert p.headers["Idempotency-Key"] == b["id"]
        assert p.headers["Content-Type"] == "application/json"
        assert p.headers["X-Coord-Attempt"] == "1"
    assert len(receiver.of(g)) == len(posts), "each delivered exactly once here"


def _group(cluster: LocalCluster, g: str) -> groups_pb2.Group:
    with cluster.client() as c:
        resp = groups_stub(c).Get(election_pb2.GetGroupRequest(name=g))
    return resp.group  # type: ignore[no-any-return]


def test_spending_the_downtime_budget_is_posted(cluster: LocalCluster, receiver: Receiver) -> None:
    g = "wh-budget"
    budget_ms = 300  # per 30 days: burning fast past 30 ms in an hour, spent past 300 ms
    with pair(cluster, g, downtime_budget_ms=budget_ms) as p:
        p.resign()  # nobody else campaigns: the group is down until elect_other()
        i, _ = leader_of(cluster)

        def downtime_ms() -> float:
            with urllib.request.urlopen(f"http://{cluster.nodes[i].http}/api/status") as r:
                (grp,) = [x for x in json.load(r)["groups"] if x["name"] == g]
            return float(grp["availability"].get("downtime_ms_total", 0))

        wait_until(lambda: downtime_ms() > 1.5 * budget_ms, 10, "the outage to outlast the budget")
        p.elect_other()
        posts = receiver.wait_delivered(g, 4)
    # The budget events come when the leader looks: during the outage (every few
    # seconds) or when it ends (with the election).
    kinds = [b["type"] for b in posts]
    assert kinds[0] == "master_lost" and sorted(kinds[1:]) == [
        "budget_burning_fast",
        "budget_spent",
        "master_elected",
    ], kinds
    lost = posts[0]
    budget = {b["type"]: b for b in posts if b["type"].startswith("budget_")}
    for b in budget.values():
        # About the outage that spent it: its opening event's revision, member and cause.
        assert (b["revision"], b["member"], b["cause"]) == (
            lost["revision"],
            lost["member"],
            "resign",
        )
        assert b["id"] == f"{lost['cluster_id']}-{lost['revision']}-{b['type']}"
        assert set(FIELDS) <= set(b) and b["token"] == 0
        assert b["budget"]["budget_ms"] == budget_ms
        assert b["budget"]["remaining_ms"] == budget_ms - b["budget"]["downtime_ms"]
        assert b["window_downtime_ms"] == b["budget"]["downtime_ms"]  # all in the last hour
    assert budget["budget_spent"]["budget"]["remaining_ms"] < 0
    assert budget["budget_burning_fast"]["window_downtime_ms"] > budget_ms / 10


def test_a_receiver_answering_500_still_gets_every_event(
    cluster: LocalCluster, receiver: Receiver
) -> None:
    g = "wh-retry"
    i, _ = leader_of(cluster)
    before = scrape(cluster, i)
    watcher = Watcher(cluster.endpoints, groups=[g])
    try:
        with pair(cluster, g) as p:
            receiver.fail_next(g, 3)
            p.flip()
            p.flip()
            watcher.wait_for(lambda e: len(watched(watcher, g)) >= 4, 10, "two flips")
            events = watched(watcher, g)
            posts = receiver.wait_delivered(g, 4)
            seen = receiver.of(g)  # (closing the pair's sessions makes more)
    finally:
        watcher.stop()
    assert [got(b) for b in posts] == [expected(e) for e in events]
    tries = [(p.body["revision"], p.headers["X-Coord-Attempt"], p.status) for p in seen]
    first = events[0].revision
    assert tries[:4] == [(first, "1", 500), (first, "2", 500), (first, "3", 500), (first, "4", 200)]
    assert [t[1:] for t in tries[4:]] == [("1", 200)] * 3
    ids = {p.headers["Idempotency-Key"] for p in seen if p.body["revision"] == first}
    assert len(ids) == 1, "a retry carries the same id"
    after = scrape(cluster, i)
    assert (
        sample(after, "coord_webhook_failed_total", reason="http_500")
        - sample(before, "coord_webhook_failed_total", reason="http_500")
        == 3
    )
    assert (
        sample(after, "coord_webhook_posted_total") - sample(before, "coord_webhook_posted_total")
        >= 4
    )


def test_a_receiver_that_is_down_leaves_a_bounded_queue_then_gets_the_newest(
    cluster: LocalCluster, receiver: Receiver
) -> None:
    g = "wh-down"
    i, _ = leader_of(cluster)
    flips = 6  # 12 events into a queue of QUEUE_MAX
    before = scrape(cluster, i)
    watcher = Watcher(cluster.endpoints, groups=[g])
    try:
        with pair(cluster, g) as p:
            receiver.stop()
            try:
                for _ in range(flips):
                    p.flip()
                watcher.wait_for(
                    lambda e: len(watched(watcher, g)) >= 2 * flips, 10, f"{flips} flips"
                )
                events = watched(watcher, g)

                def full() -> dict[Any, float] | None:
                    m = scrape(cluster, i)
                    dropped = sample(m, "coord_webhook_dropped_total", reason="queue_full")
                    drops = dropped - sample(
                        before, "coord_webhook_dropped_total", reason="queue_full"
                    )
                    return m if drops >= len(events) - QUEUE_MAX else None

                m = wait_until(full, 10, "the queue to overflow")
                assert sample(m, "coord_webhook_queue_length") == QUEUE_MAX
                assert (
                    sample(m, "coord_webhook_dropped_total", reason="queue_full")
                    - sample(before, "coord_webhook_dropped_total", reason="queue_full")
                    == len(events) - QUEUE_MAX
                )
                assert sample(m, "coord_webhook_failed_total", reason="connection") > sample(
                    before, "coord_webhook_failed_total", reason="connection"
                )
                assert receiver.of(g) == []
            finally:
                receiver.start()
            # Back: the newest QUEUE_MAX arrive in order, then what happens next.
            posts = receiver.wait_delivered(g, QUEUE_MAX, timeout=15)
            assert [got(b) for b in posts] == [expected(e) for e in events[-QUEUE_MAX:]]
            p.flip()
            posts = receiver.wait_delivered(g, QUEUE_MAX + 2)
    finally:
        watcher.stop()
    assert [b["type"] for b in posts[QUEUE_MAX:]] == ["master_lost", "master_elected"]
    wait_until(
        lambda: sample(scrape(cluster, i), "coord_webhook_queue_length") == 0, 5, "an empty queue"
    )


def test_a_new_leader_posts_what_happens_after_it_took_over(
    cluster: LocalCluster, receiver: Receiver
) -> None:
    g = "wh-leader"
    with pair(cluster, g) as p:
        p.flip()
        old_i, old = leader_of(cluster)
        assert {b["node_id"] for b in receiver.wait_delivered(g, 2)} == {old}
        cluster.kill(old_i)
        try:
            _, new = leader_of(cluster)
            p.flip()
            posts = receiver.wait_delivered(g, 4)
        finally:
            cluster.start(old_i)
    assert [(b["type"], b["node_id"]) for b in posts[2:]] == [
        ("master_lost", new),
        ("master_elected", new),
    ]
    assert len({b["id"] for b in posts}) == 4
    cluster.wait_for_leader()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://127.0.0.1/hook", "is not an http:// or https:// URL"),
        ("http://", "is not an http:// or https:// URL"),
        ("hooks.example/coord", "is not an http:// or https:// URL"),
    ],
)
def test_a_bad_url_is_refused_at_start(tmp_path: Path, url: str, why: str) -> None:
    raft, api = free_ports(2)
    peer = f"n1=127.0.0.1:{raft},127.0.0.1:{api}"
    data = str(tmp_path / "n1")
    args = ["serve", "--node-id", "n1", "--data-dir", data, "--peer", peer]
    p = run([COORD, *args, "--notify-webhook", url], timeout=20)
    assert p.returncode == EXIT_CONFIG, describe(p)
    assert f"notify webhook {url!r} {why}" in p.stderr, describe(p)
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "n1").exists() or not any((tmp_path / "n1").iterdir())


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/x", "http://h:port/x", "https://:80/"])
def test_the_notifier_refuses_what_the_scheme_check_lets_through(url: str) -> None:
    with pytest.raises(InvalidArgument, match="notify webhook"):
        check_url(url)
