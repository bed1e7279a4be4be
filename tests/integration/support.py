"""Helpers shared by the integration tests: CLI runners, per-node reads, crash helpers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from click.testing import CliRunner, Result
from prometheus_client.parser import text_string_to_metric_families

from coord.cli import coordctl as coordctl_cli
from coord.client import Client
from coord.testing import LocalCluster, wait_until
from coord.v1 import cluster_pb2, kv_pb2

# ``cluster_factory`` / ``module_cluster_factory`` (tests/conftest.py):
# ``make(n=3, fsync=True, start=True, **LocalCluster kwargs) -> LocalCluster``.
ClusterFactory = Callable[..., LocalCluster]

# The venv's console scripts (``.venv/bin/coord``, ``.venv/bin/coordctl``): the real
# entry points an operator runs, not ``python -m``.
BIN_DIR = os.path.dirname(sys.executable)
COORD = os.path.join(BIN_DIR, "coord")
COORDCTL = os.path.join(BIN_DIR, "coordctl")


def run(cmd: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; stdout and stderr are kept apart."""
    return subprocess.run(
        list(cmd),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def coordctl(
    endpoints: Sequence[str] | str, *args: str, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    eps = endpoints if isinstance(endpoints, str) else ",".join(endpoints)
    return run([COORDCTL, "--endpoints", eps, *args], timeout=timeout)


def describe(p: subprocess.CompletedProcess[str]) -> str:
    return f"exit {p.returncode}\n--- stdout ---\n{p.stdout}\n--- stderr ---\n{p.stderr}"


def node_client(cluster: LocalCluster, i: int, timeout_s: float = 5.0) -> Client:
    """A client that talks to node ``i`` only."""
    return Client([cluster.nodes[i].api], timeout_s=timeout_s, attempt_timeout_s=1.0)


def local_kvs(cluster: LocalCluster, i: int, prefix: bytes = b"") -> dict[bytes, kv_pb2.KeyValue]:
    """Node ``i``'s local state (a serializable read at its endpoint), key -> record."""
    with node_client(cluster, i) as c:
        resp = c.range(prefix, prefix=True, serializable=True)
    assert resp.header.serializable, "a serializable read must say so in its header"
    assert resp.header.node_id == cluster.nodes[i].node_id, (
        f"asked node {cluster.nodes[i].node_id} but {resp.header.node_id} answered"
    )
    assert not resp.more, "more keys than one range returns: raise the limit in the test"
    return {kv.key: kv for kv in resp.kvs}


def status_of(cluster: LocalCluster, i: int) -> cluster_pb2.StatusResponse:
    st = cluster.status(i, timeout=2.0)
    assert st is not None, f"node {cluster.nodes[i].node_id} does not answer Status"
    return st


def leader_commit_index(cluster: LocalCluster) -> int:
    """The commit index of the leader every live node agrees on."""
    leader = cluster.wait_for_leader()
    return status_of(cluster, leader).commit_index


def wait_all_acknowledging(cluster: LocalCluster, timeout: float = 30.0) -> None:
    """Wait until every running node acknowledges appends (see LocalCluster.wait_ready)."""
    cluster.wait_ready(timeout)


def wait_all_caught_up(cluster: LocalCluster, timeout: float = 30.0) -> int:
    """Wait until every running node applied the leader's commit index; return that index.

    A linearizable read first: the leader's Status commit index is its view at the end
    of its last tick, which can name the entry before a write it already acknowledged;
    the read's barrier (a heartbeat round that takes the commit index as its read index,
    or a no-op entry) ends in a later tick than the one it began in, so the index read
    after it covers every write acknowledged before this call.
    """
    with cluster.client(timeout_s=timeout) as c:
        c.range("", prefix=True, keys_only=True, limit=1)
    index = leader_commit_index(cluster)
    cluster.wait_applied(index, timeout=timeout)
    return index


def kill_all_at_once(cluster: LocalCluster) -> None:
    """SIGKILL every running node before reaping any (a simultaneous crash)."""
    for node in cluster.nodes:
        if node.proc is not None and node.proc.poll() is None:
            if node.paused:
                node.proc.send_signal(signal.SIGCONT)
            node.proc.send_signal(signal.SIGKILL)
    for node in cluster.nodes:
        cluster.kill(node.index)


def expect_never(pred: Callable[[], object], seconds: float, what: str) -> None:
    """Poll ``pred`` for ``seconds``; fail as soon as it returns something truthy.

    For properties that must hold over a window ("no leader is elected"): the
    window is the measurement, not a synchronisation sleep.
    """
    try:
        seen = wait_until(pred, seconds, what)
    except TimeoutError:
        return
    raise AssertionError(f"{what}: {seen}")


def wait_no_leader_for(cluster: LocalCluster, seconds: float, nodes: Sequence[int]) -> None:
    """Assert that no leader is elected among ``nodes`` during ``seconds``: none of them
    leads or follows one of them. (A node may still name a dead leader for a moment.)"""
    ids = {cluster.nodes[i].node_id for i in nodes}

    def leader_seen() -> str | None:
        for i in nodes:
            st = cluster.status(i)
            if st is not None and (st.leader_id in ids or st.role == cluster_pb2.ROLE_LEADER):
                return f"{st.node_id}: leader={st.leader_id!r} role={st.role} term={st.term}"
        return None

    expect_never(leader_seen, seconds, "a leader was elected when none may be")


@dataclass(frozen=True)
class Ack:
    """One acknowledged put: what was written and what the cluster answered."""

    key: bytes
    value: bytes
    mod_revision: int


def write_keys(cluster: LocalCluster, prefix: str, n: int = 20) -> dict[bytes, bytes]:
    """Put ``prefix/000`` ... through the client; return what was acknowledged."""
    out = {}
    with cluster.client(timeout_s=15.0) as c:
        for i in range(n):
            k, v = f"{prefix}/{i:03d}".encode(), f"{prefix}-{i}".encode()
            assert c.put(k, v).succeeded
            out[k] = v
    return out


class TcpListener:
    """A listening TCP socket (a member's service) that a test closes and reopens on
    the same port."""

    def __init__(self) -> None:
        self.port = 0
        self.sock: socket.socket | None = None
        self.open()

    def open(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        self.sock = s

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


# -- /metrics ----------------------------------------------------------------------------

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def scrape(cluster: LocalCluster, i: int) -> Samples:
    """Node i's /metrics (plain HTTP: a node without TLS or credentials)."""
    with urllib.request.urlopen(f"http://{cluster.nodes[i].http}/metrics", timeout=5) as r:
        return parse_metrics(r.read().decode())


def sample(m: Samples, name: str, default: float = 0.0, **labels: str) -> float:
    """One sample of ``m`` (``default`` when the series is absent)."""
    return m.get((name, tuple(sorted(labels.items()))), default)


def ctl(cluster: LocalCluster, *args: str, stdin: str | None = None) -> Result:
    """coordctl in-process (the console script's code, without an interpreter start),
    against ``cluster``; ``COORDCTL_ENDPOINTS`` from the environment is ignored."""
    return CliRunner().invoke(
        coordctl_cli.main, ["--endpoints", ",".join(cluster.endpoints), *args], input=stdin,
        env={"COORDCTL_ENDPOINTS": None},
    )  # fmt: skip


def shown(r: Result) -> str:
    """A coordctl result for an assertion message: exit code, stdout, stderr."""
    return f"exit {r.exit_code}\n--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}"


def run_threads(n: int, body: Callable[[int], None], timeout_s: float = 120.0) -> None:
    """``body(i)`` on ``n`` threads started together; re-raises the first failure."""
    failures: list[BaseException] = []
    start = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            start.wait(timeout=30)
            body(i)
        except BaseException as e:  # reported below
            failures.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=timeout_s)
        assert not th.is_alive(), "a thread hung"
    if failures:
        raise failures[0]
