"""Forced handovers on a real cluster: an operator's session close and group delete
revoke the master and grant nothing until its TTL has been waited out, on the
leader's monotonic clock, restarted by a new leader.

A master that hears of its revoke resigns at once (it has stopped acting, so its
slot may move), and one that stops sending keepalives expires: to see the wait-out,
the master here is a :class:`DeafHolder`, whose keepalives arrive but which never
acts on an answer, as a master whose answers are lost would be. ``t`` in a member
process's lines is its ``time.monotonic()``: the same clock as the test's.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from coord.testing import LocalCluster, wait_until
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2

from .members import MemberProc, Members, get_group, groups_stub, sessions_stub
from .support import coordctl, describe

TTL_S = 2.0


class DeafHolder:
    """A session kept alive over raw RPCs (whichever node leads), with one member that
    campaigns and holds a slot, and never acts on what the answers say."""

    def __init__(self, cluster: LocalCluster, group: str, member_id: str, ttl_s: float) -> None:
        self._endpoints = list(cluster.endpoints)
        self._stop = threading.Event()
        with cluster.client() as c:
            opened = sessions_stub(c).Open(
                election_pb2.OpenSessionRequest(ttl_ms=int(ttl_s * 1000), name=member_id)
            )
            self.session_id = opened.session.id
            member = groups_pb2.Member(
                group=group, id=member_id, session_id=self.session_id, priority=100,
                candidate=True,
            )  # fmt: skip
            groups_stub(c).Register(election_pb2.RegisterRequest(member=member))
        self._period_s = ttl_s / 8
        self._thread = threading.Thread(target=self._keep_alive, daemon=True, name="deaf")
        self._thread.start()

    def _requests(self) -> Iterator[election_pb2.KeepAliveRequest]:
        for seq in itertools.count(1):
            if self._stop.wait(0 if seq == 1 else self._period_s):
                return
            yield election_pb2.KeepAliveRequest(session_id=self.session_id, seq=seq)

    def _keep_alive(self) -> None:
        for ep in itertools.cycle(self._endpoints):
            if self._stop.is_set():
                return
            with grpc.insecure_channel(ep) as ch:
                try:
                    for _ in election_pb2_grpc.SessionsStub(ch).KeepAlive(self._requests()):
                        pass
                except grpc.RpcError:
                    self._stop.wait(0.05)  # not the leader, or it went away: the next node

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _deaf_master_and_standby(
    cluster: LocalCluster, members: Members, g: str, ttl_s: float, **policy: int
) -> tuple[DeafHolder, MemberProc]:
    with cluster.client() as c:
        c.group(g).create(**policy)
    deaf = DeafHolder(cluster, g, "m1", ttl_s)
    with cluster.client() as c:
        wait_until(lambda: get_group(c, g).holdings, 20, "m1 to be granted the slot")
    m2 = members.start(g, "m2", priority=5, ttl_s=ttl_s)
    with cluster.client() as c:
        wait_until(
            lambda: any(m.id == "m2" and m.candidate for m in get_group(c, g).members),
            20,
            "m2 to campaign",
        )
    return deaf, m2


def test_an_operators_session_close_revokes_and_grants_only_after_the_ttl(
    cluster: LocalCluster, members: Members
) -> None:
    g = "opclose"
    deaf, m2 = _deaf_master_and_standby(cluster, members, g, TTL_S)
    try:
        mark = m2.mark()
        with cluster.client() as c:
            closed_at = time.monotonic()
            sessions_stub(c).Close(election_pb2.CloseSessionRequest(session_id=deaf.session_id))
            grp = get_group(c, g)
        assert grp.holdings[0].member_id == "m1" and grp.holdings[0].revoked
        new = m2.elected(timeout=TTL_S + 10, since=mark)
        assert new["t"] - closed_at >= TTL_S * 0.95, "m2 was granted before m1's TTL passed"
        with cluster.client() as c:
            sessions = {x.id for x in sessions_stub(c).List(
                election_pb2.ListSessionsRequest()).sessions}  # fmt: skip
        assert deaf.session_id not in sessions  # closed once its slot was released
    finally:
        deaf.close()


def test_deleting_a_group_with_a_master_waits_it_out_and_only_then_frees_the_name(
    cluster: LocalCluster, members: Members
) -> None:
    g = "opdelete"
    deaf, _ = _deaf_master_and_standby(cluster, members, g, TTL_S)
    try:
        deleted_at = time.monotonic()
        p = coordctl(cluster.endpoints, "group", "rm", g)
        assert p.returncode == 0, describe(p)
        with cluster.client() as c:
            grp = get_group(c, g)
            assert grp.deleting and grp.holdings[0].revoked
            again = coordctl(cluster.endpoints, "group", "create", g)
            assert again.returncode != 0 and "being deleted" in again.stderr, describe(again)

            def gone() -> bool:
                return g not in {x.name for x in groups_stub(c).List(
                    election_pb2.ListGroupsRequest()).groups}  # fmt: skip

            wait_until(gone, TTL_S + 10, f"group {g} to be deleted")
        assert time.monotonic() - deleted_at >= TTL_S * 0.95
        p = coordctl(cluster.endpoints, "group", "create", g)
        assert p.returncode == 0, describe(p)
    finally:
        deaf.close()


def test_a_forced_group_delete_is_immediate(cluster: LocalCluster, members: Members) -> None:
    g = "opdeleteforce"
    deaf, _ = _deaf_master_and_standby(cluster, members, g, TTL_S)
    try:
        p = coordctl(cluster.endpoints, "group", "rm", g, "--force")
        assert p.returncode == 0, describe(p)
        p = coordctl(cluster.endpoints, "group", "create", g)
        assert p.returncode == 0, describe(p)
    finally:
        deaf.close()


def test_a_new_leader_restarts_the_wait_out_from_its_takeover(
    cluster_factory: object, tmp_path: Path
) -> None:
    """A switchover the deaf master ignores: revoked at the timeout, then waited out.
    The wait is timed by the leader that applied the revoke; its successor does not
    know how long ago that was (and must not trust a wall-clock stamp), so it waits the
    whole TTL again from its own takeover. (With wall-clock waits, the slot moved at
    the revoke's stamp plus the TTL, whoever led.)"""
    ttl_s = 3.0
    c3: LocalCluster = cluster_factory()  # type: ignore[operator]
    (tmp_path / "members").mkdir()
    members = Members(c3, str(tmp_path / "members"))
    deaf, m2 = _deaf_master_and_standby(c3, members, "restart", ttl_s, switchover_timeout_ms=300)
    try:
        mark = m2.mark()
        leader = c3.wait_for_leader()
        with c3.client() as c:
            groups_stub(c).Switchover(election_pb2.SwitchoverRequest(group="restart"))
            wait_until(lambda: get_group(c, "restart").holdings[0].revoked, 10, "m1 to be revoked")
        time.sleep(1.0)  # the fault's timing: a third of the wait-out has passed
        killed_at = time.monotonic()
        c3.kill(leader)
        new = m2.elected(timeout=ttl_s + 15, since=mark)
        assert new["t"] - killed_at >= ttl_s * 0.95, (
            "the new leader granted before a whole TTL had passed since it took over"
        )
    finally:
        deaf.close()
        members.close()
