"""Health checks the cluster runs against members: real HTTP, TCP and gRPC servers in
this process, checked by a real 3-node cluster's leader.

Timing is bounded from both sides: a transition needs ``fall`` (``rise``) results in a
row, so it cannot come before ``fall - 1`` intervals after the change, and must come
within a few intervals after that.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from coord import errors
from coord.client import grpc_check, http_check, tcp_check
from coord.testing import LocalCluster, wait_until
from coord.v1 import election_pb2, groups_pb2

from .members import Watcher, get_group, groups_stub
from .support import ClusterFactory, TcpListener, coordctl, describe

INTERVAL_S = 0.2
TTL_S = 2.0


class HttpMember:
    """A real HTTP server whose answer the test sets: a status, or alternate per request."""

    def __init__(self) -> None:
        self.status = 200
        self.alternate = False
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                status = outer.status
                if outer.alternate:
                    status = 200 if outer.requests % 2 else 503
                body = b"ok: ready" if status == 200 else b"not ready"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/healthz"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_member() -> Iterator[HttpMember]:
    m = HttpMember()
    yield m
    m.close()


@pytest.fixture
def tcp_members() -> Iterator[list[TcpListener]]:
    made = [TcpListener(), TcpListener()]
    yield made
    for m in made:
        m.close()


def health_events(w: Watcher, member: str) -> list[tuple[float, str]]:
    return [
        (seen, e.type)
        for seen, e in w.items
        if e.member == member and e.type in ("member_healthy", "member_unhealthy")
    ]


def test_http_member_unhealthy_after_fall_failures_and_healthy_after_rise(
    cluster: LocalCluster, http_member: HttpMember
) -> None:
    g = "http-health"
    check = http_check(
        http_member.url, body_contains="ready", interval_s=INTERVAL_S, rise=2, fall=3
    )
    with cluster.client() as c, c.session(ttl_s=TTL_S) as s:
        c.group(g).create()
        c.group(g).member("web-1", s, check=check).start()
        w = Watcher(cluster.endpoints, groups=[g], types=["member_healthy", "member_unhealthy"])
        try:
            # Healthy to start with: let a few checks pass, then break it.
            wait_until(lambda: http_member.requests >= 2, 10, "the first checks")
            broken_at = time.monotonic()
            http_member.status = 503
            seen, e = w.wait_for(lambda e: e.type == "member_unhealthy", 10, "unhealthy")
            assert seen - broken_at >= 2 * INTERVAL_S * 0.9, "unhealthy before 3 failures"
            assert seen - broken_at <= 3 * INTERVAL_S + 2.0
            assert "HTTP 503" in e.member_record.health_detail
            assert not get_group(c, g).members[0].healthy
            fixed_at = time.monotonic()
            http_member.status = 200
            seen, e = w.wait_for(lambda e: e.type == "member_healthy", 10, "healthy again")
            assert seen - fixed_at >= 1 * INTERVAL_S * 0.9, "healthy before 2 successes"
            assert seen - fixed_at <= 2 * INTERVAL_S + 2.0
            assert get_group(c, g).members[0].healthy
            assert [t for _, t in health_events(w, "web-1")] == [
                "member_unhealthy",
                "member_healthy",
            ]
        finally:
            w.stop()


def test_an_unhealthy_master_fails_over_after_its_ttl(
    cluster: LocalCluster, tcp_members: list[TcpListener]
) -> None:
    g = "tcp-failover"
    a, b = tcp_members
    with cluster.client() as c, c.session(ttl_s=TTL_S) as s1, c.session(ttl_s=TTL_S) as s2:
        c.group(g).create(failover_on_unhealthy=True)
        m1 = c.group(g).member("m1", s1, address=a.address, priority=10,
                               check=tcp_check(interval_s=INTERVAL_S, fall=2)).start()  # fmt: skip
        lead = m1.campaign(timeout_s=10)
        m2 = c.group(g).member("m2", s2, address=b.address, priority=5,
                               check=tcp_check(interval_s=INTERVAL_S, fall=2)).start()  # fmt: skip
        w = Watcher(cluster.endpoints, groups=[g])
        try:
            a.close()  # m1's service dies; its session stays alive
            _, revoked = w.wait_for(lambda e: e.type == "master_revoked", 10, "m1 revoked")
            assert (revoked.member, revoked.cause) == ("m1", "unhealthy")
            # m1's library stops claiming once it hears of the revoke (its keepalive).
            wait_until(lambda: not lead.is_master(), TTL_S, "m1 to stop claiming")
            new = m2.campaign(timeout_s=TTL_S + 5)
            assert new.token > lead.token
            w.wait_for(lambda e: e.type == "master_elected", 10, "the watcher to see m2")
            elected = [e for e in w.events() if e.type == "master_elected"]
            assert [(e.member, e.cause) for e in elected] == [("m2", "unhealthy")]
            # m1 comes back healthy: no failback (the group's failback is off).
            a.open()
            w.wait_for(lambda e: e.type == "member_healthy" and e.member == "m1", 10, "m1 healthy")
            assert [h.member_id for h in get_group(c, g).holdings] == ["m2"]
        finally:
            w.stop()


def test_a_flapping_member_causes_no_failover(
    cluster: LocalCluster, http_member: HttpMember
) -> None:
    g = "flapping"
    http_member.alternate = True  # ok, fail, ok, fail...: never 2 failures in a row
    check = http_check(http_member.url, interval_s=0.1, rise=2, fall=2)
    with cluster.client() as c, c.session(ttl_s=TTL_S) as s1, c.session(ttl_s=TTL_S) as s2:
        c.group(g).create(failover_on_unhealthy=True)
        m1 = c.group(g).member("m1", s1, priority=10, check=check).start()
        m1.campaign(timeout_s=10)
        c.group(g).member("m2", s2, priority=5).start()
        w = Watcher(cluster.endpoints, groups=[g])
        try:
            wait_until(lambda: http_member.requests >= 30, 15, "30 flapping checks")
            changes = [e.type for e in w.events() if e.type.startswith(("member_", "master_"))]
            assert "master_revoked" not in changes and "member_unhealthy" not in changes
            assert [h.member_id for h in get_group(c, g).holdings] == ["m1"]
        finally:
            w.stop()


def test_grpc_health_protocol_check(cluster: LocalCluster) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.set("app", health_pb2.HealthCheckResponse.SERVING)
    g = "grpc-health"
    try:
        with cluster.client() as c, c.session(ttl_s=TTL_S) as s:
            c.group(g).create()
            check = grpc_check(service="app", interval_s=INTERVAL_S, fall=2, rise=1)
            c.group(g).member("svc", s, address=f"127.0.0.1:{port}", check=check).start()
            w = Watcher(cluster.endpoints, groups=[g])
            try:
                servicer.set("app", health_pb2.HealthCheckResponse.NOT_SERVING)
                _, e = w.wait_for(lambda e: e.type == "member_unhealthy", 10, "unhealthy")
                assert "NOT_SERVING" in e.member_record.health_detail
                servicer.set("app", health_pb2.HealthCheckResponse.SERVING)
                w.wait_for(lambda e: e.type == "member_healthy", 10, "healthy again")
            finally:
                w.stop()
    finally:
        server.stop(None)


BAD_CHECKS = [
    (groups_pb2.HealthCheck(), "no type"),
    (http_check("ftp://example/x"), "is invalid"),
    (http_check("http://"), "is invalid"),
    (http_check("http://127.0.0.1:8080/x", expect_status=[42]), "not an HTTP status"),
    (tcp_check(interval_s=-1), "out of bounds"),
    (tcp_check(interval_s=1, timeout_s=2), "must be"),
    (tcp_check(rise=500), "rise must be"),
    (tcp_check(), "host:port"),  # no address in the check, none on the member
    (tcp_check(address="nohost"), "host:port"),
]


@pytest.mark.parametrize(("check", "says"), BAD_CHECKS, ids=[b[1] for b in BAD_CHECKS])
def test_a_bad_check_spec_is_refused_at_registration(
    cluster: LocalCluster, check: groups_pb2.HealthCheck, says: str
) -> None:
    g = "badchecks"
    with cluster.client() as c, c.session(ttl_s=TTL_S) as s:
        with contextlib.suppress(errors.AlreadyExists):
            c.group(g).create()
        before = get_group(c, g)
        with pytest.raises(errors.InvalidArgument) as info:
            c.group(g).member("m", s, check=check).start()
        assert says in info.value.message
        assert get_group(c, g) == before  # nothing stored


def test_coordctl_member_ls_shows_health_and_check_runs_once(
    cluster: LocalCluster, http_member: HttpMember
) -> None:
    g = "ctl-health"
    with cluster.client() as c, c.session(ttl_s=TTL_S) as s:
        c.group(g).create()
        c.group(g).member(
            "web", s, check=http_check(http_member.url, interval_s=INTERVAL_S)
        ).start()
        wait_until(lambda: http_member.requests >= 2, 10, "checks to run")
        p = coordctl(cluster.endpoints, "member", "ls", g)
        assert p.returncode == 0, describe(p)
        assert "HTTP 200" in p.stdout and "web" in p.stdout
        p = coordctl(cluster.endpoints, "--output", "json", "check", g, "web")
        assert p.returncode == 0, describe(p)
        assert '"ok": true' in p.stdout
        http_member.status = 500
        p = coordctl(cluster.endpoints, "check", g, "web")
        assert p.returncode != 0, describe(p)
        assert "HTTP 500" in p.stdout + p.stderr


def test_health_status_is_served_by_the_leader(
    cluster: LocalCluster, http_member: HttpMember
) -> None:
    g = "status-health"
    with cluster.client() as c, c.session(ttl_s=TTL_S) as s:
        c.group(g).create()
        c.group(g).member(
            "web", s, check=http_check(http_member.url, interval_s=INTERVAL_S)
        ).start()
        wait_until(lambda: http_member.requests >= 1, 10, "a check")

        def status() -> election_pb2.MemberHealth | None:
            resp = groups_stub(c).HealthStatus(election_pb2.HealthStatusRequest(group=g))
            row = resp.members[0]
            return row if row.checked else None

        row = wait_until(status, 10, "a checked row")
        assert row.last_ok and row.last_detail == "HTTP 200" and row.last_latency_ms > 0


def test_a_new_leader_resumes_from_the_replicated_health(
    cluster_factory: ClusterFactory, tcp_members: list[TcpListener]
) -> None:
    """Kill the leader while a member is unhealthy: the new leader neither flips it back
    (it needs `rise` successes first) nor re-announces it; it recovers after `rise`."""
    c3 = cluster_factory(3)
    c3.wait_for_leader()
    g = "resume"
    down = tcp_members[0]
    with c3.client() as c, c.session(ttl_s=10) as s:
        c.group(g).create()
        check = tcp_check(interval_s=INTERVAL_S, fall=2, rise=3)
        c.group(g).member("m", s, address=down.address, check=check).start()
        w = Watcher(c3.endpoints, groups=[g], types=["member_healthy", "member_unhealthy"])
        try:
            down.close()
            w.wait_for(lambda e: e.type == "member_unhealthy", 10, "unhealthy")
            old = c3.leader_index()
            assert old is not None
            c3.kill(old)
            c3.wait_for_leader(exclude=old)

            # The new leader's checker has failed it several times: still one transition.
            def failing_streak() -> bool:
                rows = groups_stub(c).HealthStatus(election_pb2.HealthStatusRequest(group=g))
                row = rows.members[0]
                return row.checked and not row.last_ok and row.streak >= 4

            wait_until(failing_streak, 10, "the new leader to fail the member 4 times")
            assert [x.type for x in w.events()] == ["member_unhealthy"]
            assert not get_group(c, g).members[0].healthy
            down.open()
            w.wait_for(lambda e: e.type == "member_healthy", 10, "healthy")
            assert [x.type for x in w.events()] == ["member_unhealthy", "member_healthy"]
        finally:
            w.stop()
