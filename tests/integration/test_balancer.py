"""The client Balancer on a real 3-node cluster: members registered by this process
(``Session`` + ``Member``) or by real member processes (for kill -9), the table kept
current by the balancer's watch stream.

A pick is checked only once the event it depends on has reached the balancer: the
test learns the event's revision (a response header, a holding's token, or a
``Watcher``) and waits with ``Balancer.wait_revision``; picks after that are exact.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time

import pytest

from coord import errors
from coord.client import Balancer, Client, Leadership, Member, tcp_check
from coord.testing import LocalCluster, wait_until
from coord.v1 import election_pb2, groups_pb2

from .members import Members, Watcher, get_group, groups_stub
from .support import TcpListener

TTL_S = 2.0
KILL_TTL_S = 1.0  # the killed member process's session TTL: the balancer drops it after it


def ids(ms: list[groups_pb2.Member]) -> list[str]:
    return [m.id for m in ms]


def picks(lb: Balancer, n: int) -> list[str]:
    return [lb.pick().id for _ in range(n)]


def joined_revision(c: Client, group: str) -> int:
    """The revision of the group's latest registration (the balancer must reach it)."""
    return max(m.registered_revision for m in get_group(c, group).members)


def wait_event(w: Watcher, kind: str, member: str, what: str) -> groups_pb2.Event:
    _, e = w.wait_for(lambda e: e.type == kind and e.member == member, 15, what)
    return e  # type: ignore[no-any-return]


# -- weighted ------------------------------------------------------------------------------


def test_weighted_shares_follow_the_registered_weights_and_their_updates(
    cluster: LocalCluster,
) -> None:
    g = "lb-weighted"
    with cluster.client() as c, c.session(ttl_s=TTL_S) as s:
        c.group(g).create()
        ms = {
            mid: c.group(g).member(mid, s, weight=w).start()
            for mid, w in (("a", 1), ("b", 2), ("c", 3))
        }
        with Balancer(c, g, policy="weighted") as lb:
            lb.wait_ready()
            lb.wait_revision(joined_revision(c, g))
            seq = picks(lb, 600)
            assert collections.Counter(seq) == {"a": 100, "b": 200, "c": 300}
            # Smooth: every cycle of 6 already has the shares.
            for i in range(0, 600, 6):
                assert collections.Counter(seq[i : i + 6]) == {"a": 1, "b": 2, "c": 3}, seq[i:]

            # a: 1 -> 3, with the update's response header giving the event's revision.
            update = groups_pb2.UpdateMember(group=g, member_id="a", session_id=s.id, weight=3)
            resp = groups_stub(c).UpdateMember(election_pb2.UpdateMemberRequest(update=update))
            assert resp.member.weight == 3
            lb.wait_revision(resp.header.revision)
            assert {m.id: m.weight for m in lb.candidates()} == {"a": 3, "b": 2, "c": 3}
            got = collections.Counter(picks(lb, 800))  # whole cycles of 8
            assert got == {"a": 300, "b": 200, "c": 300}

            # c: 3 -> 1 through Member.update (no revision returned): wait for the table.
            assert ms["c"].update(weight=1).weight == 1
            wait_until(
                lambda: {m.id: m.weight for m in lb.candidates()} == {"a": 3, "b": 2, "c": 1},
                10, "the balancer to see c's new weight",
            )  # fmt: skip
            got = collections.Counter(picks(lb, 600))  # whole cycles of 6
            assert got == {"a": 300, "b": 200, "c": 100}

            # Weight 0: never picked.
            ms["b"].update(weight=0)
            wait_until(lambda: [m.weight for m in lb.candidates()] == [3, 0, 1], 10, "b at 0")
            got = collections.Counter(picks(lb, 400))
            assert got == {"a": 300, "c": 100}


# -- least load ----------------------------------------------------------------------------


def test_least_load_follows_reported_loads_and_requests_in_flight(cluster: LocalCluster) -> None:
    g = "lb-least-load"
    with (
        cluster.client() as c,
        c.session(ttl_s=TTL_S) as sa,
        c.session(ttl_s=TTL_S) as sb,
        c.session(ttl_s=TTL_S) as sc,
    ):
        c.group(g).create()
        for mid, s in (("a", sa), ("b", sb), ("c", sc)):
            c.group(g).member(mid, s).start()
        with Balancer(c, g, policy="least_load") as lb:
            lb.wait_ready()
            lb.wait_revision(joined_revision(c, g))
            # No load reported yet: all tie at 0, and ties go in turn.
            assert collections.Counter(picks(lb, 30)) == {"a": 10, "b": 10, "c": 10}

            w = Watcher(cluster.endpoints, types=["loads_reported"])
            try:
                want = {sa.id: 5.0, sb.id: 1.0, sc.id: 3.0}
                sa.report_load(5)
                sb.report_load(1)
                sc.report_load(3)

                def reported() -> int | None:
                    """The revision by which every load was reported, once it was."""
                    seen: dict[str, float] = {}
                    for e in w.events():
                        seen.update((x.session_id, x.load) for x in e.loads)
                        if all(seen.get(k) == v for k, v in want.items()):
                            return int(e.revision)
                    return None

                rev = wait_until(reported, 10, "loads 5, 1, 3 to be reported")
            finally:
                w.stop()
            lb.wait_revision(rev)
            assert picks(lb, 50) == ["b"] * 50

            # A score is the load plus this balancer's requests in flight (a 5, b 1, c 3).
            with lb.request() as r1, lb.request() as r2:
                assert (r1.id, r2.id) == ("b", "b")  # b 1 -> 2 -> 3
                with lb.request() as r3, lb.request() as r4:
                    # b and c tie at 3: one of them, then the other (at 3 < 4).
                    assert {r3.id, r4.id} == {"b", "c"}
                    # b and c tie at 4, a at 5: a is never picked, the tie goes in turn.
                    assert collections.Counter(picks(lb, 20)) == {"b": 10, "c": 10}
                    with lb.request() as r5, lb.request() as r6:
                        assert {r5.id, r6.id} == {"b", "c"}
                        # b, c and a all at 5: all three in turn.
                        assert collections.Counter(picks(lb, 30)) == {"a": 10, "b": 10, "c": 10}
                    assert lb.picker.inflight == {"b": 3, "c": 1}  # r1 to r4
                # b and c back at 3 (b's two requests), a at 5.
                assert collections.Counter(picks(lb, 20)) == {"b": 10, "c": 10}
            # All requests done: b is at 1 again and alone the lowest.
            assert picks(lb, 20) == ["b"] * 20
            assert lb.picker.inflight == {"b": 0, "c": 0}

        # A balancer started now reads the loads from the session table.
        with Balancer(c, g, policy="least_load") as lb2:
            lb2.wait_ready()
            assert picks(lb2, 10) == ["b"] * 10


# -- a member process killed -----------------------------------------------------------------


def test_a_killed_member_is_never_picked_once_its_member_left_arrived(
    cluster: LocalCluster, members: Members
) -> None:
    g = "lb-kill9"
    with cluster.client() as c:
        c.group(g).create()
    p1 = members.start(g, "p1", ttl_s=KILL_TTL_S)
    p1.elected()  # the master is the one killed
    for mid in ("p2", "p3"):
        members.start(g, mid, ttl_s=KILL_TTL_S)
    with cluster.client() as c, Balancer(c, g) as lb:
        lb.wait_ready()
        # p2 and p3 register in either order.
        wait_until(lambda: set(ids(lb.candidates())) == {"p1", "p2", "p3"}, 15, "all members")
        w = Watcher(cluster.endpoints, groups=[g], types=["member_left"])
        stop = threading.Event()
        record: list[tuple[float, int, str]] = []  # (time, balancer revision before, pick)

        def keep_picking() -> None:
            while not stop.is_set():
                rev = lb.revision  # never decreases: the pick below is at least this late
                record.append((time.monotonic(), rev, lb.pick().id))
                stop.wait(0.001)  # pacing, not synchronisation

        picker = threading.Thread(target=keep_picking, daemon=True)
        picker.start()
        try:
            wait_until(lambda: len(record) >= 100, 10, "picks before the kill")
            killed_at = p1.kill()
            left = wait_event(w, "member_left", "p1", "p1's member_left")
            lb.wait_revision(left.revision)
            applied_seen = time.monotonic()
            wait_until(
                lambda: any(rev >= left.revision for _, rev, _ in record[-5:]),
                5, "picks after the event",
            )  # fmt: skip
        finally:
            stop.set()
            picker.join(timeout=5)
            w.stop()
        assert not picker.is_alive()
        assert left.cause == "session_expired"

        after = [mid for _, rev, mid in record if rev >= left.revision]
        assert after and "p1" not in after, "p1 picked after its member_left was applied"
        before_kill = [mid for t, _, mid in record if t < killed_at]
        assert set(before_kill) == {"p1", "p2", "p3"}
        last_p1 = max(t for t, _, mid in record if mid == "p1")
        dropped = last_p1 - killed_at
        print(
            f"\nkill -9 -> member_left applied by the balancer within "
            f"{applied_seen - killed_at:.3f} s; last pick of the dead member "
            f"{dropped:.3f} s after the kill (session TTL {KILL_TTL_S} s)"
        )
        assert dropped < KILL_TTL_S + 3.0, f"the dead member was picked {dropped:.2f} s on"
        assert dropped > KILL_TTL_S * 0.5, "dropped before its session could have expired"
        # Many picks now: the survivors in turn, never the dead member.
        got = collections.Counter(picks(lb, 3000))
        assert got == {"p2": 1500, "p3": 1500}


# -- health --------------------------------------------------------------------------------


def test_an_unhealthy_member_is_not_picked_until_healthy_again(cluster: LocalCluster) -> None:
    g = "lb-health"
    listener = TcpListener()
    try:
        with cluster.client() as c, c.session(ttl_s=TTL_S) as s:
            c.group(g).create()
            check = tcp_check(interval_s=0.2, fall=2, rise=2)
            c.group(g).member("svc", s, address=listener.address, check=check).start()
            c.group(g).member("other", s).start()
            with Balancer(c, g) as lb:
                lb.wait_ready()
                lb.wait_revision(joined_revision(c, g))
                assert collections.Counter(picks(lb, 20)) == {"svc": 10, "other": 10}
                w = Watcher(
                    cluster.endpoints, groups=[g], types=["member_healthy", "member_unhealthy"]
                )
                try:
                    listener.close()
                    down = wait_event(w, "member_unhealthy", "svc", "svc unhealthy")
                    assert not down.member_record.healthy
                    assert "(2 in a row)" in down.member_record.health_detail
                    lb.wait_revision(down.revision)
                    assert ids(lb.candidates()) == ["other"]
                    assert picks(lb, 500) == ["other"] * 500
                    listener.open()
                    up = wait_event(w, "member_healthy", "svc", "svc healthy again")
                    lb.wait_revision(up.revision)
                    assert ids(lb.candidates()) == ["svc", "other"]
                    assert collections.Counter(picks(lb, 500)) == {"svc": 250, "other": 250}
                finally:
                    w.stop()
    finally:
        listener.close()


# -- role ----------------------------------------------------------------------------------


def campaign_in_thread(m: Member) -> tuple[threading.Thread, list[Leadership]]:
    """Campaign on a thread; the holding lands in the list (nothing if the campaign failed)."""
    won: list[Leadership] = []

    def run() -> None:
        with contextlib.suppress(errors.CoordError):
            won.append(m.campaign(timeout_s=20))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, won


def wait_candidate(c: Client, g: str, mid: str) -> None:
    wait_until(
        lambda: any(m.id == mid and m.candidate for m in get_group(c, g).members),
        10, f"{mid} to campaign",
    )  # fmt: skip


def test_role_master_follows_resign_and_failover(cluster: LocalCluster) -> None:
    g = "lb-role"
    with cluster.client() as c, c.session(ttl_s=TTL_S) as s1:
        s2 = c.session(ttl_s=TTL_S).start()
        try:
            c.group(g).create()
            m1 = c.group(g).member("m1", s1, priority=10).start()
            m2 = c.group(g).member("m2", s2, priority=5).start()
            lead1 = m1.campaign(timeout_s=10)
            with (
                Balancer(c, g, role="master") as master,
                Balancer(c, g, role="standby") as standby,
                Balancer(c, g, role="any") as anyone,
            ):
                for lb in (master, standby, anyone):
                    lb.wait_ready()
                    lb.wait_revision(lead1.token)
                assert set(picks(master, 10)) == {"m1"}
                assert set(picks(standby, 10)) == {"m2"}
                assert set(picks(anyone, 10)) == {"m1", "m2"}

                # Resign with no other candidate: no master to pick.
                w = Watcher(cluster.endpoints, groups=[g], types=["master_lost"])
                try:
                    lead1.resign()
                    lost = wait_event(w, "master_lost", "m1", "m1's master_lost")
                finally:
                    w.stop()
                master.wait_revision(lost.revision)
                with pytest.raises(errors.Unavailable) as info:
                    master.pick()
                assert f"group '{g}'" in info.value.message and "master" in info.value.message
                standby.wait_revision(lost.revision)
                assert set(picks(standby, 10)) == {"m1", "m2"}

                # m2 campaigns and is elected: the holding's token is its event's revision.
                lead2 = m2.campaign(timeout_s=10)
                master.wait_revision(lead2.token)
                standby.wait_revision(lead2.token)
                assert set(picks(master, 20)) == {"m2"}
                assert set(picks(standby, 20)) == {"m1"}

                # Failover: m1 campaigns again, m2's session ends; m1 takes over.
                t, won = campaign_in_thread(m1)
                wait_candidate(c, g, "m1")
                s2.close()
                t.join(timeout=20)
                assert won, "m1 was not elected after m2's session closed"
                master.wait_revision(won[0].token)
                assert set(picks(master, 20)) == {"m1"}
                assert ids(master.candidates()) == ["m1"]
                anyone.wait_revision(won[0].token)
                assert set(picks(anyone, 20)) == {"m1"}  # m2 left with its session
                standby.wait_revision(won[0].token)
                with pytest.raises(errors.Unavailable):
                    standby.pick()
            # close() ended every balancer's watch thread, and none had failed.
            assert not [t for t in threading.enumerate() if t.name == f"balancer-{g}"]
            assert (master.error, standby.error, anyone.error) == (None, None, None)
        finally:
            s2.close()


# -- wait_revision ---------------------------------------------------------------------------


def test_wait_revision_returns_for_an_event_of_the_group_the_balancer_does_not_follow(
    cluster: LocalCluster,
) -> None:
    g = "lb-wait-revision"
    with cluster.client() as c, c.session(ttl_s=TTL_S) as s1, c.session(ttl_s=TTL_S) as s2:
        c.group(g).create(switchover_timeout_ms=60_000)  # no revoke during the test
        lead = c.group(g).member("m1", s1, priority=10).start().campaign(timeout_s=10)
        t, won = campaign_in_thread(c.group(g).member("m2", s2, priority=5).start())
        try:
            wait_candidate(c, g, "m2")
            with Balancer(c, g) as lb:
                lb.wait_ready()
                lb.wait_revision(joined_revision(c, g))
                resp = groups_stub(c).Switchover(election_pb2.SwitchoverRequest(group=g))
                # Nothing in the table changed: m1 is still master until it steps down.
                assert ids(lb.candidates()) == ["m1", "m2"]
                lb.wait_revision(resp.header.revision, timeout=2.0)
        finally:
            lead.resign()  # hands over to m2: its campaign thread ends
            t.join(timeout=10)
        assert won and won[0].member.id == "m2"
