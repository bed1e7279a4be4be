"""The client library's one way in, on a real cluster (issue 15): ``client.session()``,
``client.group()`` and what a Group does; nothing does I/O before ``start()``; the old
free functions and constructor-started objects still work for one release, and warn."""

from __future__ import annotations

import threading
import time

import pytest

from coord import errors
from coord.client import Client, SessionState, create_group, masters
from coord.testing import LocalCluster, free_ports, wait_until

TTL_S = 3.0


def test_constructing_a_session_does_no_io_and_start_fails_clearly() -> None:
    (port,) = free_ports(1)
    endpoint = f"127.0.0.1:{port}"  # nothing listens here
    threads = threading.active_count()
    with Client(endpoint, timeout_s=1.0) as c:
        t0 = time.monotonic()
        s = c.session(ttl_s=TTL_S, name="nowhere")
        m = c.group("g").member("m", s)
        assert time.monotonic() - t0 < 0.1, "constructing did I/O"
        assert s.state is SessionState.NEW and not m.registered
        assert threading.active_count() == threads  # no keepalive thread yet
        t0 = time.monotonic()
        with pytest.raises(errors.Unavailable, match=f"{endpoint}.*unreachable"):
            s.start()
        assert time.monotonic() - t0 < 5
        assert s.state is SessionState.NEW  # not opened: may be started again
        assert threading.active_count() == threads
        s.close()
        assert s.state is SessionState.CLOSED


def test_a_group_from_create_to_campaign(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        g = c.group("api-orders")
        created = g.create(slots=1, failback_hold_ms=1000)
        assert created.name == "api-orders" and created.policy.slots == 1
        assert g.create(slots=1, failback_hold_ms=1000, exist_ok=True).name == "api-orders"
        assert g.get().policy.failback_hold_ms == 1000
        assert g.masters() == []
        start = c.status().revision + 1
        with c.session(ttl_s=TTL_S, name="api") as s:
            assert s.state is SessionState.CONNECTED and s.id
            with g.campaign("o-1", s, timeout_s=10, priority=5) as lead:
                assert lead.is_master() and lead.member.registered
                assert [(h.member_id, h.token) for h in g.masters()] == [("o-1", lead.token)]
                views = g.observe()
                assert [h.member_id for h in next(views)] == ["o-1"]
                views.close()
            wait_until(lambda: g.masters() == [], 10, "the slot given up on leaving the block")
        events = g.watch(start, types=["member_joined", "master_elected", "master_lost"])
        seen = [(next(events).type) for _ in range(3)]
        assert seen == ["member_joined", "master_elected", "master_lost"]
        everything = c.watch(start, groups=["api-orders"])
        assert next(everything).type == "member_joined"


def test_a_members_with_block_registers_and_unregisters(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        g = c.group("api-members")
        g.create()
        with c.session(ttl_s=TTL_S) as s:
            m = g.member("m-1", s, address="10.0.0.9:1", weight=2)
            assert [x.id for x in g.get().members] == []  # not registered until started
            with m:
                got = {x.id: x for x in g.get().members}
                assert got["m-1"].address == "10.0.0.9:1" and got["m-1"].weight == 2
                assert m.update(weight=3).weight == 3
            assert [x.id for x in g.get().members] == []  # unregistered on leaving


def test_the_old_names_still_work_and_warn(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        with pytest.warns(DeprecationWarning, match="create"):
            create_group(c, "api-old", slots=1)
        s = c.session(ttl_s=TTL_S)
        m = c.group("api-old").member("old-1", s)
        try:
            # Sessions and members used to start in their constructors: used before
            # start(), they still start, and say so.
            with pytest.warns(DeprecationWarning) as warned:
                lead = m.campaign(timeout_s=10)
            said = " ".join(str(w.message) for w in warned)
            assert "Member no longer registers" in said and "Session no longer opens" in said
            assert s.state is SessionState.CONNECTED and lead.is_master()
            with pytest.warns(DeprecationWarning, match="masters"):
                assert [h.member_id for h in masters(c, "api-old")] == ["old-1"]
        finally:
            s.close()
