"""Backups end to end, through the real commands (``coordctl snapshot save``, ``coordctl
backup diff``, ``coord restore``, ``coord serve``).

One source cluster (module fixture) is backed up while it serves: groups with masters
and standbys, sessions, key-value writes from four threads. A snapshot at R is saved
under that load, then a diff (taken under load too) and a second diff after more
changes (a master resigns, a member updates its tags, keys are deleted, a session
expires and its master is lost) up to R2. Every replica's state at R2 is recorded and
the whole cluster is destroyed. The tests then restore new clusters from those files
and compare field by field, not counts.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from coord import errors
from coord.client import Client
from coord.state import backupfile, replay
from coord.state.snapshot_format import decode_snapshot
from coord.testing import LocalCluster, wait_until
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2, raft_pb2

from .support import (
    COORD,
    Ack,
    ClusterFactory,
    coordctl,
    describe,
    local_kvs,
    run,
    wait_all_caught_up,
)

SHORT_TTL_MS = 4000  # the session nobody keeps alive
LONG_TTL_MS = 600_000
# Fields a restored node has of its own: the new cluster's id and members, its terms,
# and the clock (every no-op advances it, without a revision).
OWN_FIELDS = ("cluster_id", "node_ids", "last_term", "last_time_ms")


# -- helpers ----------------------------------------------------------------------------


def groups_stub(c: Client, call: str, req: object) -> object:
    return c.call(lambda ch, t: getattr(election_pb2_grpc.GroupsStub(ch), call)(req, timeout=t))


def open_session(c: Client, ttl_ms: int, name: str) -> str:
    resp = c.call(
        lambda ch, t: election_pb2_grpc.SessionsStub(ch).Open(
            election_pb2.OpenSessionRequest(ttl_ms=ttl_ms, name=name), timeout=t
        )
    )
    return str(resp.session.id)


def register(c: Client, group: str, member_id: str, session: str, **fields: object) -> None:
    m = groups_pb2.Member(group=group, id=member_id, session_id=session, candidate=True)
    for name, value in fields.items():
        if isinstance(value, dict):
            getattr(m, name).update(value)
        else:
            setattr(m, name, value)
    groups_stub(c, "Register", election_pb2.RegisterRequest(member=m))


def node_state(cluster: LocalCluster, i: int) -> raft_pb2.StateSnapshot:
    """Node ``i``'s own state (a serializable snapshot from its endpoint)."""
    api = cluster.nodes[i].api
    with Client([api], timeout_s=10.0) as c:
        header, data = c.snapshot(serializable=True, endpoint=api)
    assert header.node_id == cluster.nodes[i].node_id and header.serializable
    state = backupfile.decode(data).state
    assert state is not None
    return state


def assert_same_state(
    got: raft_pb2.StateSnapshot, want: raft_pb2.StateSnapshot, what: str, ignore: tuple[str, ...]
) -> None:
    diffs = replay.differences(got, want, ignore=ignore)
    assert not diffs, f"{what} differs from the expected state:\n" + "\n".join(diffs)


def restore_cluster(
    factory: ClusterFactory, token: str, snapshot: str, diffs: tuple[str, ...] = (), n: int = 3
) -> LocalCluster:
    """A new cluster whose nodes were built by ``coord restore`` with exactly the flags
    ``coord serve`` then gets (LocalCluster's own), and started."""
    cluster = factory(n, fsync=False, start=False, token=token)
    for i in range(n):
        serve_flags = cluster.command(i)[4:]  # [python, -m, coord.cli.coord_main, serve, ...]
        args = [COORD, "restore", "--snapshot", snapshot, *_diff_args(diffs), *serve_flags]
        p = run(args)
        assert p.returncode == 0, describe(p)
        assert "restored into" in p.stdout, describe(p)
    cluster.start()
    wait_until(lambda: all(cluster.statuses()), 30, "every restored node to answer")
    cluster.wait_for_leader()
    return cluster


def _diff_args(diffs: tuple[str, ...]) -> list[str]:
    return [a for d in diffs for a in ("--diff", d)]


class Load:
    """Threads putting ``load/w{n}/{seq}`` (and ``load/w{n}/last``) until stopped, recording
    every put whose call returned, with the time it returned."""

    def __init__(self, endpoints: list[str], writers: int = 4) -> None:
        self.acks: list[tuple[float, Ack]] = []
        self.failures: list[BaseException] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(endpoints, w), daemon=True)
            for w in range(writers)
        ]
        for t in self._threads:
            t.start()

    def _run(self, endpoints: list[str], w: int) -> None:
        try:
            with Client(endpoints, timeout_s=10.0) as c:
                for i in range(1_000_000):
                    if self._stop.is_set():
                        return
                    key, value = f"load/w{w}/{i:05d}", f"{w}-{i}"
                    rev = c.put(key, value).kv.mod_revision
                    ack = (time.monotonic(), Ack(key.encode(), value.encode(), rev))
                    with self._lock:
                        self.acks.append(ack)
                    c.put(f"load/w{w}/last", str(i))  # a key with many versions
        except BaseException as e:  # an acknowledged-write test must see every failure
            self.failures.append(e)

    def count(self) -> int:
        with self._lock:
            return len(self.acks)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        assert not self.failures, self.failures


@dataclass
class Source:
    """The backed-up cluster, after it was destroyed: its files and what it answered."""

    dir: Path
    token: str
    snapshot: str
    diff1: str
    diff2: str
    revision: int  # R: the snapshot's
    revision2: int  # R2: the second diff's
    acks: list[tuple[float, Ack]]
    save_started: float  # monotonic time the save command started
    short_session: str
    snapshot_state: raft_pb2.StateSnapshot
    replicas_at_r2: list[raft_pb2.StateSnapshot] = field(default_factory=list)


def populate(c: Client) -> tuple[str, str]:
    """Groups with masters and standbys, two long sessions, a few keys."""
    c.group("db").create(slots=1)
    c.group("web").create(slots=2, failover_on_unhealthy=True)
    c.group("short").create(slots=1)
    s1, s2 = open_session(c, LONG_TTL_MS, "host-1"), open_session(c, LONG_TTL_MS, "host-2")
    register(c, "db", "m1", s1, priority=2, address="10.0.0.1:5432", tags={"zone": "a"},
             metadata={"role": "primary"})  # fmt: skip
    register(c, "db", "m2", s2, priority=1, address="10.0.0.2:5432", tags={"zone": "b"})
    for i, s in enumerate([s1, s2, s2]):
        register(c, "web", f"w{i}", s, weight=i + 1, nofailover=i == 2)
    for k in ("cfg/a", "cfg/b", "cfg/c"):
        c.put(k, k.upper())
    return s1, s2


def change_after_r(c: Client, s1: str, s2: str) -> None:
    """A master resigns (its standby takes over), tags change, a member joins, a key goes."""
    groups_stub(c, "Resign", election_pb2.ResignRequest(group="db", member_id="m1", session_id=s1))
    update = groups_pb2.UpdateMember(group="web", member_id="w2", session_id=s2, tags={"zone": "c"})
    groups_stub(c, "UpdateMember", election_pb2.UpdateMemberRequest(update=update))
    register(c, "db", "m3", s1, priority=3)
    c.delete("cfg/b")


def session_ids(c: Client) -> set[str]:
    resp = c.call(
        lambda ch, t: election_pb2_grpc.SessionsStub(ch).List(
            election_pb2.ListSessionsRequest(), timeout=t
        )
    )
    return {s.id for s in resp.sessions}


def ctl_ok(endpoints: list[str], *args: str) -> None:
    p = coordctl(endpoints, *args)
    assert p.returncode == 0, describe(p)


@pytest.fixture(scope="module")
def source(
    module_cluster_factory: ClusterFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Source]:
    out = tmp_path_factory.mktemp("backups")
    snap, d1, d2 = (str(out / f"{n}.coordbak") for n in ("snapshot", "diff1", "diff2"))
    cluster = module_cluster_factory(3, fsync=False)
    cluster.wait_for_leader()
    eps = cluster.endpoints
    with cluster.client(timeout_s=15.0) as c:
        s1, s2 = populate(c)
        load = Load(eps)
        try:
            wait_until(lambda: load.count() >= 150, 30, "150 acknowledged writes")
            short = open_session(c, SHORT_TTL_MS, "nobody-keeps-me")
            register(c, "short", "lonely", short)
            save_started = time.monotonic()
            ctl_ok(eps, "snapshot", "save", snap)
            wait_until(lambda: load.count() >= 300, 30, "300 acknowledged writes")
            change_after_r(c, s1, s2)
            ctl_ok(eps, "backup", "diff", "--since", snap, d1)  # under load too
            wait_until(lambda: load.count() >= 450, 30, "450 acknowledged writes")
        finally:
            load.stop()
        wait_until(lambda: short not in session_ids(c), SHORT_TTL_MS / 1000 + 10,
                   "the unattended session to expire")  # fmt: skip
        unregister = election_pb2.UnregisterRequest(group="web", member_id="w0", session_id=s1)
        groups_stub(c, "Unregister", unregister)
    ctl_ok(eps, "backup", "diff", "--since", d1, d2)
    full = backupfile.read(snap)
    assert full.state is not None
    r2 = backupfile.read(d2).header.revision
    wait_all_caught_up(cluster)
    replicas = [node_state(cluster, i) for i in range(3)]
    for node, st in zip(cluster.nodes, replicas, strict=True):
        assert st.revision == r2, f"{node.node_id} moved past R2 ({st.revision} > {r2})"
    for node in cluster.nodes:  # destroy the whole cluster: processes and data
        cluster.kill(node.index)
        shutil.rmtree(node.data_dir)
    yield Source(
        dir=out, token=cluster.token, snapshot=snap, diff1=d1, diff2=d2,
        revision=full.header.revision, revision2=r2, acks=load.acks, save_started=save_started,
        short_session=short, snapshot_state=full.state, replicas_at_r2=replicas,
    )  # fmt: skip


# -- snapshot, restore ------------------------------------------------------------------


def test_a_snapshot_saved_under_load_holds_every_acknowledged_write(source: Source) -> None:
    kvs = {kv.key: kv for kv in source.snapshot_state.kvs}
    r = source.revision
    assert r == source.snapshot_state.revision
    upto = [a for _, a in source.acks if a.mod_revision <= r]
    before = [a for t, a in source.acks if t < source.save_started]
    assert len(before) >= 150 and len(upto) >= len(before)
    # Linearizable: a write acknowledged before the save started is in the snapshot.
    assert all(a.mod_revision <= r for a in before), "an acked write is newer than the snapshot"
    for a in upto:
        got = kvs.get(a.key)
        assert got is not None, f"acknowledged write {a} (<= R={r}) missing"
        assert (got.value, got.mod_revision) == (a.value, a.mod_revision), a
    assert not [a for _, a in source.acks if a.mod_revision > r and a.key in kvs]
    holders = {g.name: [h.member_id for h in g.holdings] for g in source.snapshot_state.groups}
    assert holders == {"db": ["m1"], "web": ["w0", "w1"], "short": ["lonely"]}


def test_restore_into_a_new_cluster_gives_the_state_at_r(
    source: Source, cluster_factory: ClusterFactory
) -> None:
    cluster = restore_cluster(cluster_factory, "restored-from-r", source.snapshot)
    cluster.wait_for_leader()
    want = source.snapshot_state
    for i, node in enumerate(cluster.nodes):
        got = node_state(cluster, i)
        # Everything: key-value records (revisions, versions), sessions, groups with their
        # policies, members, holdings and tokens, handovers, the event history, dedupe.
        assert_same_state(got, want, f"restored {node.node_id}", ignore=OWN_FIELDS)
        assert got.cluster_id != want.cluster_id
        assert list(got.node_ids) == ["n1", "n2", "n3"]
        # Through the KV API too: every write acknowledged up to R, as acknowledged.
        kvs = local_kvs(cluster, i, b"load/")
        for _, a in source.acks:
            if a.mod_revision <= source.revision:
                assert (kvs[a.key].value, kvs[a.key].mod_revision) == (a.value, a.mod_revision)
    with cluster.client() as c:
        assert c.status().header.cluster_id == got.cluster_id
        assert [h.member_id for h in c.group("db").masters()] == ["m1"]
        assert [h.member_id for h in c.group("web").masters()] == ["w0", "w1"]
        # The new cluster serves, with revisions after the restored ones.
        assert c.put("after-restore", "1").kv.mod_revision > source.revision


def test_a_restored_session_gets_a_fresh_ttl(
    source: Source, cluster_factory: ClusterFactory
) -> None:
    """The unattended session was in the snapshot, more than its TTL ago: the restored
    cluster must not expire it at once, and must expire it one TTL after it started."""
    taken_ms = backupfile.read(source.snapshot).header.created_unix_ms
    wait_until(lambda: time.time() * 1000 - taken_ms > SHORT_TTL_MS + 500, SHORT_TTL_MS / 1000,
               "the snapshot to be older than the session's TTL")  # fmt: skip
    cluster = restore_cluster(cluster_factory, "restored-ttl", source.snapshot, n=1)
    cluster.wait_for_leader()
    led = time.monotonic()
    with cluster.client() as c:

        def sessions() -> set[str]:
            resp = c.call(lambda ch, t: election_pb2_grpc.SessionsStub(ch).List(
                election_pb2.ListSessionsRequest(), timeout=t))  # fmt: skip
            return {s.id for s in resp.sessions}

        assert source.short_session in sessions(), "a restored session expired at start"
        wait_until(lambda: source.short_session not in sessions(), SHORT_TTL_MS / 1000 + 10,
                   "the restored session to expire")  # fmt: skip
        lived = time.monotonic() - led
        resp = c.call(lambda ch, t: election_pb2_grpc.GroupsStub(ch).Masters(
            election_pb2.MastersRequest(group="short"), timeout=t))  # fmt: skip
    assert lived >= 0.8 * SHORT_TTL_MS / 1000, f"expired {lived:.2f} s after the start"
    assert not resp.masters, "its master must be released with it"


# -- diffs ------------------------------------------------------------------------------


def test_snapshot_and_diffs_give_the_replicas_state_at_r2(
    source: Source, cluster_factory: ClusterFactory
) -> None:
    full = backupfile.read(source.snapshot)
    diffs = [backupfile.read(source.diff1), backupfile.read(source.diff2)]
    assert diffs[0].header.base_revision == source.revision
    assert diffs[1].header.base_revision == diffs[0].header.revision
    rebuilt = decode_snapshot(replay.rebuild(full, diffs).snapshot())
    assert rebuilt.revision == source.revision2
    for i, replica in enumerate(source.replicas_at_r2):
        assert_same_state(rebuilt, replica, f"snapshot + 2 diffs vs replica n{i + 1}",
                          ignore=("last_time_ms",))  # fmt: skip
    # The changes between R and R2 are in there.
    groups = {g.name: g for g in rebuilt.groups}
    assert [h.member_id for h in groups["db"].holdings] == ["m2"]  # m1 resigned
    assert not groups["short"].holdings and not groups["short"].members
    assert "w0" not in {m.id for m in groups["web"].members}

    cluster = restore_cluster(
        cluster_factory, "restored-from-r2", source.snapshot, (source.diff1, source.diff2)
    )
    cluster.wait_for_leader()
    for i, node in enumerate(cluster.nodes):
        what = f"restored {node.node_id} (snapshot + diffs)"
        assert_same_state(node_state(cluster, i), source.replicas_at_r2[0], what, OWN_FIELDS)


# -- refusals ---------------------------------------------------------------------------


def _corrupt(src: str, dst: Path, how: str) -> str:
    data = bytearray(Path(src).read_bytes())
    if how == "flipped":
        data[len(data) // 2] ^= 0x40
    elif how == "truncated":
        data = data[: len(data) - 100]
    elif how == "foreign-version":
        data[8:12] = (backupfile.FORMAT_VERSION + 1).to_bytes(4, "little")
    elif how == "not-a-backup":
        data = bytearray(b"etcd snapshot? " * 10)
    dst.write_bytes(bytes(data))
    return str(dst)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("flipped", "sha256 checksum mismatch"),
        ("truncated", "truncated"),
        ("foreign-version", "backup format version 2"),
        ("not-a-backup", "not a coord backup file"),
    ],
)
def test_damaged_files_are_refused_and_nothing_starts(
    source: Source, cluster_factory: ClusterFactory, tmp_path: Path, how: str, message: str
) -> None:
    bad = _corrupt(source.snapshot, tmp_path / "bad.coordbak", how)
    p = coordctl("127.0.0.1:1", "snapshot", "status", bad)
    assert p.returncode != 0 and message in p.stderr, describe(p)
    cluster = cluster_factory(1, fsync=False, start=False, token=f"bad-{how}")
    p = run([COORD, "restore", "--snapshot", bad, *cluster.command(0)[4:]])
    assert p.returncode != 0 and message in p.stderr, describe(p)
    assert not os.path.exists(cluster.nodes[0].data_dir), "a refused restore wrote files"
    bad_diff = _corrupt(source.diff1, tmp_path / "bad-diff.coordbak", how)
    p = run([COORD, "restore", "--snapshot", source.snapshot, "--diff", bad_diff,
             *cluster.command(0)[4:]])  # fmt: skip
    assert p.returncode != 0 and message in p.stderr, describe(p)
    assert not os.path.exists(cluster.nodes[0].data_dir)


def test_wrong_kinds_orders_and_targets_are_refused(
    source: Source, cluster_factory: ClusterFactory
) -> None:
    cluster = cluster_factory(1, fsync=False, start=False, token="refusals")
    flags = cluster.command(0)[4:]
    cases = [
        (["--snapshot", source.diff1], "is a diff"),
        (["--snapshot", source.snapshot, "--diff", source.snapshot], "not a diff"),
        (["--snapshot", source.snapshot, "--diff", source.diff2, "--diff", source.diff1],
         "give the diffs in the order they were taken"),
        (["--snapshot", source.snapshot, "--diff", source.diff2], "applies to revision"),
    ]  # fmt: skip
    for args, message in cases:
        p = run([COORD, "restore", *args, *flags])
        assert p.returncode != 0 and message in p.stderr, describe(p)
    assert not os.path.exists(cluster.nodes[0].data_dir)
    # The old cluster's token and member ids give the old cluster's id: refused.
    same = cluster_factory(3, fsync=False, start=False, token=source.token)
    p = run([COORD, "restore", "--snapshot", source.snapshot, *same.command(0)[4:]])
    assert p.returncode != 0 and "choose a new --cluster-token" in p.stderr, describe(p)
    assert not os.path.exists(same.nodes[0].data_dir)
    # A data dir that is not empty.
    os.makedirs(cluster.nodes[0].data_dir)
    Path(cluster.nodes[0].data_dir, "something").write_text("mine")
    p = run([COORD, "restore", "--snapshot", source.snapshot, *flags])
    assert p.returncode != 0 and "is not empty" in p.stderr, describe(p)
    assert os.listdir(cluster.nodes[0].data_dir) == ["something"]


def test_a_diff_past_the_compacted_event_log_asks_for_a_full_snapshot(
    cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    """The event log keeps at most 64 MiB of events: 70 puts of 1 MiB push the snapshot's
    revision out of it. The diff is refused with OUT_OF_RANGE, saying what to do, and
    nothing is written."""
    cluster = cluster_factory(1, fsync=False)
    cluster.wait_for_leader()
    snap, out = str(tmp_path / "snap.coordbak"), str(tmp_path / "diff.coordbak")
    ctl_ok(cluster.endpoints, "snapshot", "save", snap)
    with cluster.client(timeout_s=30.0) as c:
        for i in range(70):
            c.put(f"big/{i}", bytes(1024 * 1024 - 64))
    p = coordctl(cluster.endpoints, "backup", "diff", "--since", snap, out)
    assert p.returncode != 0, describe(p)
    assert "compacted" in p.stderr and "take a full snapshot" in p.stderr, describe(p)
    assert not os.path.exists(out)
    with cluster.client() as c:
        try:
            c.diff(backupfile.read(snap).header.revision)
        except errors.OutOfRange:
            pass
        else:
            raise AssertionError("a diff of compacted events must be OUT_OF_RANGE")
