"""Sessions and events on a real cluster: sessions survive a kill -9 of the coordinator's
leader, a paused master learns it lost its session and never claims after its validity
ended, watch replays and compaction, bad input through gRPC, and coordctl session ls/watch.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from coord import errors
from coord.client import Client
from coord.state import limits
from coord.testing import LocalCluster, wait_until
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2

from .members import (
    Members,
    Watcher,
    get_group,
    groups_stub,
    holders,
    list_sessions,
    marker_revision,
)
from .support import coordctl, describe, expect_never, run_threads

TTL_S = 2.0


def wait_candidates(cluster: LocalCluster, group: str, ids: set[str]) -> None:
    def ready() -> bool:
        with cluster.client() as c:
            return ids <= {m.id for m in get_group(c, group).members if m.candidate}

    wait_until(ready, 20, f"members {sorted(ids)} of {group} to campaign")


# -- leader failure under live sessions ----------------------------------------------------


def check_leader_loss_changes_nothing(
    cluster: LocalCluster, members: Members, fail: Callable[[int], None]
) -> None:
    """Members m1 (master) and m2 with TTL 2 s; ``fail(leader index)``; then, once a new
    leader is in charge, for two TTLs: the same sessions, the same master and token, no
    event that releases anything, and no member that noticed anything worse than a pause."""
    g = "survivor"
    with cluster.client() as c:
        c.group(g).create()
    m1 = members.start(g, "m1", priority=10, ttl_s=TTL_S)
    first = m1.elected()
    m2 = members.start(g, "m2", priority=5, ttl_s=TTL_S)
    wait_candidates(cluster, g, {"m2"})
    with cluster.client() as c:
        sessions = sorted(s.id for s in list_sessions(c))
        masters = holders(c, g)
    assert masters == {0: ("m1", first["token"])}
    assert len(sessions) == 2
    marks = {m.id: m.mark() for m in (m1, m2)}

    watcher = Watcher(cluster.endpoints)
    try:
        old = cluster.wait_for_leader()
        fail(old)
        new = cluster.wait_for_leader(exclude=old, timeout=15)
        assert new != old

        def changed() -> str | None:
            with cluster.client(timeout_s=5.0) as c:
                now_sessions = sorted(s.id for s in list_sessions(c))
                now_masters = holders(c, g)
            if now_sessions != sessions or now_masters != masters:
                return f"sessions {now_sessions}, masters {now_masters}"
            return None

        # The measured window: two TTLs with the new leader in charge.
        expect_never(changed, 2 * TTL_S, "a session or master changed after the leader failed")
        assert changed() is None

        last = marker_revision(cluster, "survivor-marker")
        watcher.wait_revision(last, timeout=15)
        moved = [
            (e.revision, e.type, e.member, e.cause)
            for e in watcher.events()
            if e.type
            in ("master_lost", "master_elected", "session_expired", "member_left", "master_revoked")
        ]
        assert moved == [], f"events during the leader change: {moved}"
        revs = [e.revision for e in watcher.events()]
        assert revs == list(range(watcher.from_revision, last + 1)), "watch gap across failover"
        for m in (m1, m2):
            said = [(x["event"], x.get("state")) for x in m.since(marks[m.id])]
            assert ("session", "lost") not in said, f"{m.id}: {said}"
            assert not [e for e, _ in said if e in ("not_master", "elected", "resigned")], said
    finally:
        watcher.stop()


def test_kill9_of_the_coordinator_leader_expires_no_session_and_moves_no_master(
    own_cluster: LocalCluster, own_members: Members
) -> None:
    check_leader_loss_changes_nothing(own_cluster, own_members, own_cluster.kill)


def test_sigstop_of_the_coordinator_leader_expires_no_session_and_moves_no_master(
    own_cluster: LocalCluster, own_members: Members
) -> None:
    try:
        check_leader_loss_changes_nothing(own_cluster, own_members, own_cluster.pause)
    finally:
        for node in own_cluster.nodes:
            own_cluster.resume(node.index)


# -- a paused master -----------------------------------------------------------------------


def test_a_master_paused_past_its_ttl_learns_it_lost_and_never_claims_late(
    cluster: LocalCluster, members: Members
) -> None:
    g = "paused"
    with cluster.client() as c:
        c.group(g).create()
    m1 = members.start(g, "m1", priority=10, ttl_s=TTL_S)
    old = m1.elected()
    old_session = m1.wait_for("session", 1, state="connected")["id"]
    m2 = members.start(g, "m2", priority=5, ttl_s=TTL_S)
    wait_candidates(cluster, g, {"m2"})

    mark = m1.mark()
    stopped_at = m1.pause()
    new = m2.elected(timeout=TTL_S + 10)
    assert new["t"] - stopped_at < TTL_S + 1.5
    assert new["token"] > old["token"]
    # The pause is the measured quantity: twice the TTL.
    time.sleep(max(0.0, stopped_at + 2 * TTL_S - time.monotonic()))
    assert m1.since(mark) == [], "a stopped process printed"
    resumed_at = m1.resume()

    m1.wait_for("not_master", 5, since=mark)
    m1.wait_for("session", 5, since=mark, state="lost")
    after = m1.since(mark)
    assert all(x["t"] >= resumed_at - 0.0001 for x in after), after
    assert after[0]["event"] != "elected", f"first line after resuming is a claim: {after}"
    first_not_master = next(i for i, x in enumerate(after) if x["event"] == "not_master")
    assert not [x for x in after[:first_not_master] if x["event"] == "elected"], after

    # It comes back with a new session, as a standby: m2 keeps the slot.
    back = m1.wait_for("session", 10, since=mark, state="connected")
    assert back["id"] != old_session
    wait_candidates(cluster, g, {"m1"})
    with cluster.client() as c:
        assert holders(c, g) == {0: ("m2", new["token"])}
        assert old_session not in {s.id for s in list_sessions(c)}
    assert not [x for x in m1.since(mark) if x["event"] == "elected"]


# -- watch ---------------------------------------------------------------------------------


def wire(events: list[groups_pb2.Event]) -> list[bytes]:
    return [e.SerializeToString(deterministic=True) for e in events]


def make_changes(cluster: LocalCluster, group: str, tag: str) -> None:
    """A few changes of every kind: KV, sessions, members, masters."""
    with cluster.client() as c:
        c.put(f"{group}/{tag}", tag)
        with c.session(ttl_s=5, name=f"{group}-{tag}") as s:
            a = c.group(group).member(f"{tag}-a", s, priority=2).start()
            b = c.group(group).member(f"{tag}-b", s, priority=1).start()
            b.campaign(timeout_s=5).resign()  # elected, then lost (resign)
            a.campaign(timeout_s=5)  # elected, then lost when the session closes
        c.delete(f"{group}/{tag}")


def test_watch_from_an_old_revision_replays_exactly_what_was_missed(
    cluster: LocalCluster,
) -> None:
    g = "replay"
    live = Watcher(cluster.endpoints)
    filtered = Watcher(
        cluster.endpoints, live.from_revision, groups=[g], types=["master_elected", "master_lost"]
    )
    early = Watcher(cluster.endpoints, live.from_revision)
    resumed: Watcher | None = None
    full: Watcher | None = None
    try:
        with cluster.client() as c:
            c.group(g).create()
        make_changes(cluster, g, "one")
        early.wait_revision(marker_revision(cluster, f"{g}/mark1"))
        early.stop()
        seen_early = early.events()
        missed_from = seen_early[-1].revision + 1

        make_changes(cluster, g, "two")  # early is not watching
        make_changes(cluster, g, "three")
        end = marker_revision(cluster, f"{g}/mark2")

        resumed = Watcher(cluster.endpoints, missed_from)
        full = Watcher(cluster.endpoints, 1)
        for w in (live, resumed, full):
            w.wait_revision(end)
        upto = {w: [e for e in w.events() if e.revision <= end] for w in (live, resumed, full)}

        # The full replay from revision 1 is gap-free and starts at the bootstrap.
        assert [e.revision for e in upto[full]] == list(range(1, end + 1))
        assert upto[full][0].type == "cluster_bootstrapped"
        # What the live watcher saw is that slice of history, byte for byte ...
        assert wire(upto[live]) == wire(upto[full][live.from_revision - 1 :])
        # ... and early + resumed is exactly the same sequence: nothing lost, nothing twice.
        assert wire(seen_early + upto[resumed]) == wire(upto[live])
        assert [e.revision for e in upto[resumed]] == list(range(missed_from, end + 1))
        assert {"session_opened", "member_joined", "master_elected", "master_lost"} <= {
            e.type for e in upto[resumed]
        }

        # Server-side filters pick exactly the matching events of that history.
        want = [
            e
            for e in upto[full][live.from_revision - 1 :]
            if e.group == g and e.type in ("master_elected", "master_lost")
        ]
        assert len(want) >= 6
        filtered.wait_for(lambda e: e.revision == want[-1].revision, 10, "last master event")
        assert wire([e for e in filtered.events() if e.revision <= end]) == wire(want)
    finally:
        for stream in (live, filtered, early, resumed, full):
            if stream is not None:
                stream.stop()


def put_many(cluster: LocalCluster, n: int, threads: int = 6) -> None:
    """``n`` small puts from ``threads`` clients at once."""

    def writer(k: int) -> None:
        with cluster.client(timeout_s=30.0) as c:
            for i in range(k, n, threads):
                c.put(f"fill/{i % 100}", b"x")

    run_threads(threads, writer, timeout_s=150)


def test_watch_from_a_compacted_revision_is_out_of_range(own_cluster: LocalCluster) -> None:
    cluster = own_cluster
    put_many(cluster, limits.EVENT_LOG_ENTRIES + 100)
    with cluster.client() as c:
        # From the leader (a linearizable read), not from whichever node answers Status.
        current = c.range("fill/", prefix=True, limit=1).header.revision
        # Each put is one revision (a retried put may add one more): the log overflowed.
        assert current >= limits.EVENT_LOG_ENTRIES + 100
        oldest = current - limits.EVENT_LOG_ENTRIES + 1

        # The library raises OutOfRange (not retried); the message names the current
        # revision so that the caller can re-list and watch from there.
        with pytest.raises(errors.OutOfRange) as info:
            next(c.watch(from_revision=1))
        assert info.value.message.startswith("coord: ")
        assert str(current) in info.value.message, info.value.message

        # Watch serves each node's own event log: let every node apply up to `current`.
        wait_until(
            lambda: all(c.status(endpoint=ep).revision >= current for ep in cluster.endpoints),
            20,
            f"every node to apply revision {current}",
        )
        for ep in cluster.endpoints:
            stub = election_pb2_grpc.WatchStub(c.channel(ep))
            with pytest.raises(grpc.RpcError) as raw:
                next(iter(stub.Watch(election_pb2.WatchRequest(from_revision=oldest - 1))))
            assert raw.value.code() == grpc.StatusCode.OUT_OF_RANGE, raw.value
            assert (raw.value.details() or "").startswith("coord: "), raw.value.details()
            # The oldest kept revision still replays, from exactly there.
            stream = stub.Watch(election_pb2.WatchRequest(from_revision=oldest), timeout=10)
            try:
                first = next(iter(stream))
            finally:
                stream.cancel()
            assert first.events[0].revision == oldest
            assert first.events[-1].revision == current


def test_watch_replays_events_larger_than_one_message(own_cluster: LocalCluster) -> None:
    value = b"v" * (limits.MAX_VALUE_BYTES - 1024)
    with own_cluster.client(timeout_s=30.0) as c:
        revs = [int(c.put(f"big/{i}", value).kv.mod_revision) for i in range(5)]
        got: list[groups_pb2.Event] = []
        for e in c.watch(revs[0]):
            got.append(e)
            if e.revision >= revs[-1]:
                break
    assert [e.revision for e in got] == revs
    assert all(e.kvs[0].value == value for e in got)


# -- bad input through the API ------------------------------------------------------------


def state_of(c: Client) -> tuple[list[bytes], list[bytes], int]:
    groups = groups_stub(c).List(election_pb2.ListGroupsRequest())
    sessions = election_pb2_grpc.SessionsStub(c.channel(c.leader().leader_api_address))
    listed = sessions.List(election_pb2.ListSessionsRequest(), timeout=5)
    return (
        wire(list(groups.groups)),
        sorted(s.SerializeToString(deterministic=True) for s in listed.sessions),
        max(groups.header.revision, listed.header.revision),
    )


def expect_status(call: Callable[[], Any], code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call()
    err: Any = info.value  # a grpc.Call as well
    assert err.code() == code, f"{err.code()}: {err.details()}"
    assert err.details().startswith("coord: "), err.details()
    md = dict(err.trailing_metadata() or ())
    assert md.get("coord-error") == code.name.lower(), md


E, P = election_pb2, groups_pb2
NF, INV = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT
EX, PRE = grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION


def bad_calls(g: str, other_session: str) -> list[tuple[str, str, Any, grpc.StatusCode]]:
    """(what, Service.Method, request, status). ``Method*`` is a server stream.

    Group ``g`` holds: "a" (master, session 1) and "nf" (nofailover, ``other_session``).
    """

    def reg(**kw: Any) -> E.RegisterRequest:
        fields = {"group": g, "id": "x", "session_id": other_session, **kw}
        return E.RegisterRequest(member=P.Member(**fields))

    def create(name: str, slots: int) -> E.CreateGroupRequest:
        return E.CreateGroupRequest(name=name, policy=P.GroupPolicy(slots=slots))

    return [
        ("unknown group: get", "G.Get", E.GetGroupRequest(name="nope"), NF),
        ("unknown group: masters", "G.Masters", E.MastersRequest(group="nope"), NF),
        ("unknown group: delete", "G.Delete", E.DeleteGroupRequest(name="nope"), NF),
        ("unknown group: register", "G.Register", reg(group="nope"), NF),
        ("unknown group: switchover", "G.Switchover", E.SwitchoverRequest(group="nope"), NF),
        ("unknown group: elect", "G.Campaign*", E.CampaignRequest(group="no", member_id="a"), NF),
        ("unknown member: campaign", "G.Campaign*", E.CampaignRequest(group=g, member_id="zz"), NF),
        ("unknown member: resign", "G.Resign", E.ResignRequest(group=g, member_id="zz"), NF),
        ("unknown member: leave", "G.Unregister", E.UnregisterRequest(group=g, member_id="zz"), NF),
        ("unknown session: register", "G.Register", reg(session_id="s-nope"), NF),
        ("unknown session: close", "S.Close", E.CloseSessionRequest(session_id="s-nope"), NF),
        ("TTL 100 ms", "S.Open", E.OpenSessionRequest(ttl_ms=100), INV),
        ("TTL 0", "S.Open", E.OpenSessionRequest(ttl_ms=0), INV),
        ("TTL 2 h", "S.Open", E.OpenSessionRequest(ttl_ms=2 * 3600 * 1000), INV),
        ("slots 0", "G.Create", create("s0", 0), INV),
        ("slots -1", "G.Create", create("s0", -1), INV),
        ("slots 65", "G.Create", create("s65", limits.MAX_SLOTS + 1), INV),
        ("bad group name", "G.Create", create("-x", 1), INV),
        ("bad member id", "G.Register", reg(id="-x"), INV),
        ("negative weight", "G.Register", reg(weight=-1), INV),
        ("watch from -1", "W.Watch*", E.WatchRequest(from_revision=-1), INV),
        ("existing group", "G.Create", create(g, 1), EX),
        ("member id of another session", "G.Register", reg(id="a"), EX),
        ("resign by a non-holder", "G.Resign", E.ResignRequest(group=g, member_id="nf"), PRE),
        ("nofailover campaign", "G.Campaign*", E.CampaignRequest(group=g, member_id="nf"), PRE),
        ("switchover, none eligible", "G.Switchover", E.SwitchoverRequest(group=g), PRE),
        ("switchover to nofailover", "G.Switchover", E.SwitchoverRequest(group=g, to_member="nf"),
         PRE),
        ("switchover to the master", "G.Switchover", E.SwitchoverRequest(group=g, to_member="a"),
         PRE),
    ]  # fmt: skip


STUBS: dict[str, Callable[[grpc.Channel], Any]] = {
    "G": election_pb2_grpc.GroupsStub,
    "S": election_pb2_grpc.SessionsStub,
    "W": election_pb2_grpc.WatchStub,
}


def call_raw(ch: grpc.Channel, method: str, req: Any) -> Callable[[], Any]:
    svc, name = method.split(".")
    fn = getattr(STUBS[svc](ch), name.rstrip("*"))
    if name.endswith("*"):  # a stream: the error comes instead of the first message
        return lambda: next(iter(fn(req, timeout=5)))
    return lambda: fn(req, timeout=5)


def test_bad_input_gets_the_right_status_and_changes_nothing(cluster: LocalCluster) -> None:
    g = "bad"
    with contextlib.ExitStack() as stack:
        c = stack.enter_context(cluster.client())
        c.group(g).create()
        s1 = stack.enter_context(c.session(ttl_s=30, name="bad-1"))
        s2 = stack.enter_context(c.session(ttl_s=30, name="bad-2"))
        c.group(g).member("a", s1, priority=5).start().campaign(timeout_s=10)
        c.group(g).member("nf", s2, nofailover=True).start()
        before = state_of(c)
        masters = holders(c, g)
        assert [m for m, _ in masters.values()] == ["a"]

        for ep in cluster.endpoints:  # the leader and both followers (which forward writes)
            for what, method, req, code in bad_calls(g, s2.id):
                try:
                    expect_status(call_raw(c.channel(ep), method, req), code)
                except AssertionError as e:
                    raise AssertionError(f"{what} ({method}) on {ep}: {e}") from None

        # A keepalive for an unknown session is answered "expired", not an error.
        leader_ch = c.channel(c.leader().leader_api_address)
        ka = election_pb2_grpc.SessionsStub(leader_ch).KeepAlive(
            iter([election_pb2.KeepAliveRequest(session_id="s-nope", seq=7)]), timeout=5
        )
        (resp,) = list(ka)
        assert resp.expired and resp.seq == 7

        assert state_of(c) == before, "a rejected request changed the state"
        assert holders(c, g) == masters
        assert s1.is_valid() and s2.is_valid()


# -- coordctl ------------------------------------------------------------------------------


def test_coordctl_session_ls(cluster: LocalCluster) -> None:
    with cluster.client() as c, c.session(ttl_s=7, name="ctl-session") as s:
        p = coordctl(cluster.endpoints, "session", "ls")
        assert p.returncode == 0, describe(p)
        header, *rows = p.stdout.strip().splitlines()
        assert header.split() == ["ID", "NAME", "TTL_MS", "CREATED_REVISION"]
        (row,) = [r.split() for r in rows if r.split()[0] == s.id]
        assert row[1:3] == ["ctl-session", "7000"] and int(row[3]) > 0

        p = coordctl(cluster.endpoints, "-o", "json", "session", "ls")
        assert p.returncode == 0, describe(p)
        (mine,) = [x for x in json.loads(p.stdout) if x["id"] == s.id]
        assert (mine["name"], int(mine["ttl_ms"])) == ("ctl-session", 7000)
        assert int(mine["created_revision"]) == int(mine["epoch"])
        sid = s.id
    p = coordctl(cluster.endpoints, "-o", "json", "session", "ls")
    assert p.returncode == 0, describe(p)
    assert sid not in [x["id"] for x in json.loads(p.stdout)], "a closed session is listed"


def test_coordctl_watch_count(cluster: LocalCluster) -> None:
    g = "ctl-watch"
    start = marker_revision(cluster, f"{g}/start") + 1
    with cluster.client() as c:
        c.group(g).create()
    make_changes(cluster, g, "w")
    end = marker_revision(cluster, f"{g}/end")
    with cluster.client() as c:
        history = list(_take(c.watch(start), end - start + 1))

    p = coordctl(cluster.endpoints, "-o", "json", "watch", "--from-revision", str(start),
                 "--count", "4")  # fmt: skip
    assert p.returncode == 0, describe(p)
    lines = [json.loads(x) for x in p.stdout.strip().splitlines()]
    assert [int(x["revision"]) for x in lines] == list(range(start, start + 4))
    assert [x["type"] for x in lines] == [e.type for e in history[:4]]
    assert lines[0]["type"] == "group_created" and lines[0]["group"] == g

    elected = [e for e in history if e.type == "master_elected"]
    p = coordctl(cluster.endpoints, "watch", "--from-revision", str(start), "--group", g,
                 "--type", "master_elected", "--count", "2")  # fmt: skip
    assert p.returncode == 0, describe(p)
    rows = [r.split() for r in p.stdout.strip().splitlines()]
    assert len(rows) == 2
    for row, e in zip(rows, elected[:2], strict=True):
        assert int(row[0]) == e.revision
        assert row[2:5] == ["master_elected", g, e.member]
        assert f"token={e.token}" in row and f"cause={e.cause}" in row

    # Live: a watch from the next revision ends once it has seen that many new events.
    nxt = marker_revision(cluster, f"{g}/before-live") + 1
    proc = coordctl_bg(cluster, "-o", "json", "watch", "--from-revision", str(nxt), "--count", "2")
    try:
        r1 = marker_revision(cluster, f"{g}/live1")
        r2 = marker_revision(cluster, f"{g}/live2")
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    got = [json.loads(x) for x in out.strip().splitlines()]
    assert [int(x["revision"]) for x in got] == [r1, r2]
    assert [x["kvs"][0]["key"] for x in got] == ["Y3RsLXdhdGNoL2xpdmUx", "Y3RsLXdhdGNoL2xpdmUy"]


def coordctl_bg(cluster: LocalCluster, *args: str) -> Any:
    import subprocess

    from .support import COORDCTL

    return subprocess.Popen(
        [COORDCTL, "--endpoints", ",".join(cluster.endpoints), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def _take(it: Iterator[groups_pb2.Event], n: int) -> Iterator[groups_pb2.Event]:
    for i, e in enumerate(it):
        yield e
        if i + 1 >= n:
            return
