"""A rolling restart of all three nodes under load, as deploy/ does it.

One node at a time, in a StatefulSet's order (highest ordinal first): the
StatefulSet's own preStop hook (deploy/kubernetes/30-statefulset.yaml, run here as it
is, with ``coordctl`` from this venv) moves leadership away when the node leads; then
SIGTERM, a restart with the same flags and data dir, and a wait for ``/readyz``
(docs/operations.md, "Rolling restart"). Meanwhile a writer puts keys through the
client library and a group ``db`` has a healthy master (a member process) and a
standby. Then: no write failed beyond the client library's own retries, every
acknowledged write is there, and the group's master never changed: the same member
with the same fencing token throughout, and a watcher on the group saw no
master_lost, master_elected, master_revoked or stepdown_requested event.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from coord import errors
from coord.client import Client, StoppableClient
from coord.testing import LocalCluster, wait_until
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2

REPO = Path(__file__).resolve().parents[2]
STATEFULSET = REPO / "deploy" / "kubernetes" / "30-statefulset.yaml"
BIN = Path(sys.executable).parent
# Longer than an election on 2 busy cores by a wide margin: a coord failover must not
# expire a healthy session (operations.md, "Tuning timeouts").
TTL_S = 5.0
MASTER_CHANGES = {"master_lost", "master_elected", "master_revoked", "stepdown_requested"}


def pre_stop_hook() -> list[str]:
    sts = yaml.safe_load(STATEFULSET.read_text())
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    command: list[str] = container["lifecycle"]["preStop"]["exec"]["command"]
    return command


class Writer:
    """Puts keys in a loop through the client library; keeps what was acknowledged."""

    def __init__(self, endpoints: list[str]) -> None:
        self.client = Client(endpoints, timeout_s=20.0)
        self.acked: dict[str, str] = {}
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="writer")
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            key = f"roll/{n:06d}"
            try:
                self.client.put(key, str(n))
                self.acked[key] = str(n)
            except errors.CoordError as e:
                self.failed.append(f"{key}: {e!r}")
            n += 1
            self.stop.wait(0.005)

    def wait_acks(self, more: int, timeout: float = 20.0) -> None:
        target = len(self.acked) + more
        wait_until(lambda: len(self.acked) >= target, timeout, f"{more} more acknowledged writes")

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.client.close()


class GroupWatcher:
    """``coord.client.watch`` on group db, from a revision, on a thread."""

    def __init__(self, endpoints: list[str], from_revision: int) -> None:
        self.client = StoppableClient(endpoints, timeout_s=30.0)
        self.events: list[groups_pb2.Event] = []
        self.error: BaseException | None = None
        self.from_revision = from_revision
        self.thread = threading.Thread(target=self._run, daemon=True, name="watcher")
        self.thread.start()

    def _run(self) -> None:
        try:
            for event in self.client.watch(self.from_revision, groups=["db"]):
                self.events.append(event)
        except BaseException as e:  # checked by finish()
            self.error = e

    def finish(self) -> None:
        self.client.stopped = True
        self.client.close()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the watch thread did not stop"
        assert self.error is None or isinstance(self.error, errors.Internal), self.error


class MemberProc:
    """``python -m coord.member_process`` and its JSON lines."""

    def __init__(self, cluster: LocalCluster, member_id: str, priority: int, log: Path) -> None:
        self.id = member_id
        self.lines: list[dict[str, object]] = []
        cmd = [
            sys.executable, "-m", "coord.member_process", "--endpoints",
            ",".join(cluster.endpoints), "--group", "db", "--id", member_id,
            "--priority", str(priority), "--ttl-s", str(TTL_S),
        ]  # fmt: skip
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True,
                bufsize=1, start_new_session=True,
            )  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.lines.append({"event": "unparsed", "raw": raw})

    def events(self, name: str) -> list[dict[str, object]]:
        return [x for x in list(self.lines) if x.get("event") == name]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def describe(self) -> str:
        return f"--- {self.id} ---\n" + "\n".join(json.dumps(x) for x in list(self.lines))


def ready(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/readyz", timeout=1.0) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def run_pre_stop(cluster: LocalCluster, i: int) -> subprocess.CompletedProcess[str]:
    """The StatefulSet's preStop hook for node i (its POD_INDEX is the digit of nK)."""
    node = cluster.nodes[i]
    env = {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "POD_INDEX": node.node_id.removeprefix("n"),
        "COORDCTL_ENDPOINTS": node.api,
    }
    return subprocess.run(
        pre_stop_hook(), env=env, capture_output=True, text=True, timeout=40, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture
def cluster(cluster_factory: Callable[..., LocalCluster]) -> LocalCluster:
    c = cluster_factory(3, http=True)
    c.wait_for_leader(timeout=45)
    return c


@pytest.fixture
def members(request: pytest.FixtureRequest) -> Iterator[list[MemberProc]]:
    procs: list[MemberProc] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.close()
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            print("\n".join(p.describe() for p in procs))


def test_rolling_restart_keeps_writes_and_the_master(
    cluster: LocalCluster, members: list[MemberProc], tmp_path: Path
) -> None:
    with cluster.client(timeout_s=20.0) as c:
        c.group("db").create(slots=1)
    members.append(MemberProc(cluster, "db-1", 10, tmp_path / "db-1.stderr"))
    wait_until(lambda: members[0].events("elected"), 30, "db-1 elected")
    members.append(MemberProc(cluster, "db-2", 5, tmp_path / "db-2.stderr"))
    with cluster.client(timeout_s=20.0) as c:
        wait_until(lambda: _registered(c) == 2, 30, "db-2 registered as a standby")
        held = [(h.member_id, h.token) for h in c.group("db").masters()]
        revision = c.status().revision
    assert len(held) == 1 and held[0][0] == "db-1", held
    watcher = GroupWatcher(cluster.endpoints, revision + 1)
    writer = Writer(cluster.endpoints)
    transfers = 0
    try:
        writer.wait_acks(20)
        for i in reversed(range(3)):  # a StatefulSet's order: highest ordinal first
            transfers += restart_one(cluster, i, writer)
            with cluster.client(timeout_s=20.0) as c:
                now = [(h.member_id, h.token) for h in c.group("db").masters()]
            assert now == held, f"the master changed when {cluster.nodes[i].node_id} restarted"
        writer.wait_acks(20)
    finally:
        writer.finish()
        watcher.finish()
    assert transfers >= 1, "the leader was never restarted"  # it always is, once at least

    assert not writer.failed, f"writes failed beyond the client's retries: {writer.failed[:5]}"
    with cluster.client(timeout_s=20.0) as c:
        got = {kv.key.decode(): kv.value.decode() for kv in c.range("roll/", prefix=True).kvs}
    missing = sorted(k for k, v in writer.acked.items() if got.get(k) != v)
    assert not missing, f"acknowledged writes missing: {missing[:5]}"
    changes = [e for e in watcher.events if e.type in MASTER_CHANGES]
    assert not changes, f"the group's master changed: {changes}"
    for m in members:
        assert len(m.events("elected")) == (1 if m.id == "db-1" else 0), m.describe()
        assert not m.events("not_master"), m.describe()
        # SUSPENDED (acks overdue for a moment) is allowed; LOST would end mastership.
        assert not [x for x in m.events("session") if x.get("state") == "lost"], m.describe()


def restart_one(cluster: LocalCluster, i: int, writer: Writer) -> int:
    """preStop hook, SIGTERM, start, /readyz. Returns 1 if the node led (and handed over)."""
    node = cluster.nodes[i]
    leader = cluster.wait_for_leader(timeout=20)
    before = cluster.status(leader, timeout=2.0)
    hook = run_pre_stop(cluster, i)
    assert hook.returncode == 0, hook.stdout + hook.stderr
    after = cluster.wait_for_leader(timeout=20)
    if leader == i:
        assert after != i, f"{node.node_id} still leads after its preStop hook:\n{hook.stdout}"
    else:
        st = cluster.status(after, timeout=2.0)
        assert after == leader and st and before and st.term == before.term, (
            f"the hook on follower {node.node_id} disturbed the leader:\n{hook.stdout}"
        )
    cluster.stop(i)  # SIGTERM
    writer.wait_acks(10)  # the two others carry on
    cluster.start(i)
    wait_until(lambda: ready(node.http), 45, f"{node.node_id}: /readyz 200 after the restart")
    writer.wait_acks(10)
    return 1 if leader == i else 0


def _registered(c: Client) -> int:
    req = election_pb2.GetGroupRequest(name="db")
    resp = c.call(lambda ch, t: election_pb2_grpc.GroupsStub(ch).Get(req, timeout=t))
    return len(resp.group.members)


def test_pre_stop_hook_is_quick_when_the_cluster_is_gone(tmp_path: Path) -> None:
    """The hook never fails the stop and never waits long: no node answering, exit 0."""
    env = {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "POD_INDEX": "0",
        "COORDCTL_ENDPOINTS": "127.0.0.1:9",  # discard: nothing listens
    }
    start = time.monotonic()
    p = subprocess.run(
        pre_stop_hook(), env=env, capture_output=True, text=True, timeout=60, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    assert time.monotonic() - start < 20
