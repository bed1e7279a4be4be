"""LocalCluster: a cluster of real ``coord serve`` processes on 127.0.0.1.

Used by ``coord dev``, by coord's own integration tests and benchmarks, and
by other projects' tests::

    with LocalCluster(3) as c:
        c.wait_for_leader()
        c.client().put("k", "v")
        c.kill(c.leader_index())

Each node is a subprocess with its own data dir and log file. Waits have
deadlines and say what they waited for.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from coord import errors
from coord.client import Client
from coord.client.credentials import Credentials
from coord.config import format_peer
from coord.v1 import cluster_pb2

T = TypeVar("T")


# Test clusters listen on ports below the kernel's ephemeral range (32768-60999 by
# default): a port from that range, free when picked, can be taken by any process's
# outgoing connection before the node binds it (a chaos run lost a node that way).
TEST_PORTS = range(20000, 32768)
# Ports handed out lately, by any call: a port picked is free but not yet bound (the
# node that will listen on it starts later), so the next call could pick it again: a
# cluster's proxy on one of its nodes' ports (a chaos test lost its cluster that way).
_RECENT_PORTS: collections.deque[int] = collections.deque(maxlen=4096)
_recent_lock = threading.Lock()


def free_ports(n: int) -> list[int]:
    """Distinct TCP ports on 127.0.0.1, outside the ephemeral range, free when picked
    (each is bound once, all at the same time, then released), and none of the last
    4,096 handed out in this process."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    rng = random.Random()
    with _recent_lock:
        recent = set(_RECENT_PORTS)
    try:
        for _ in range(64 * n):  # bounded: a taken port is skipped
            if len(ports) == n:
                break
            port = rng.choice(TEST_PORTS)
            if port in recent:
                continue
            recent.add(port)
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            ports.append(port)
    finally:
        for s in socks:
            s.close()
    if len(ports) < n:
        raise RuntimeError(f"found only {len(ports)} of {n} free ports in {TEST_PORTS}")
    with _recent_lock:
        _RECENT_PORTS.extend(ports)
    return ports


def phase_failed(node: Any) -> bool:
    """True when a pytest item's setup or call phase failed (an xfail is not a failure);
    the reports are set by the ``rep_<phase>`` hook in tests/conftest.py."""
    return any(
        (rep := getattr(node, f"rep_{when}", None)) is not None and rep.failed
        for when in ("setup", "call")
    )


def wait_until(
    pred: Callable[[], T | None], timeout: float, what: str, interval: float = 0.01
) -> T:
    """Poll ``pred`` until it returns a truthy value; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except Exception as e:  # a probe failing is just "not yet"
            last_exc = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}{detail}")
        time.sleep(interval)


@dataclass
class NodeProc:
    """One node: its id, addresses, data dir, and process (None when down)."""

    index: int
    node_id: str
    api: str
    raft: str
    data_dir: str
    log_path: str
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    extra_args: list[str] = field(default_factory=list)
    # A node added after bootstrap (``add_node``): the cluster id and members it was
    # told to start with (``coordctl node add`` prints them).
    joined_cluster_id: str = ""
    # The HTTP (metrics, status page) address, when the cluster serves HTTP.
    http: str = ""
    join_peers: list[str] = field(default_factory=list)
    # Environment for this node only, over the cluster's (e.g. a clock shim per node).
    env: dict[str, str] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class LocalCluster:
    """N ``coord serve`` processes on 127.0.0.1 free ports (or from ``base_port``)."""

    def __init__(
        self,
        n: int = 3,
        base_dir: str | None = None,
        base_port: int | None = None,
        fsync: bool = True,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        token: str | None = None,
        http: bool = False,
    ) -> None:
        if n not in (1, 3, 5):
            raise errors.InvalidArgument(f"a local cluster has 1, 3 or 5 nodes, not {n}")
        self._own_dir = base_dir is None
        self.base_dir = base_dir or tempfile.mkdtemp(prefix="coord-cluster-")
        os.makedirs(self.base_dir, exist_ok=True)
        ports = (
            [base_port + i for i in range(2 * n)] if base_port is not None else free_ports(2 * n)
        )
        self.token = token or f"local-{os.path.basename(self.base_dir)}"
        self.fsync = fsync
        self.extra_args = list(extra_args)
        self.env = {**os.environ, **(env or {})}
        self.bootstrap_size = n
        self.nodes = [
            NodeProc(
                index=i,
                node_id=f"n{i + 1}",
                api=f"127.0.0.1:{ports[2 * i]}",
                raft=f"127.0.0.1:{ports[2 * i + 1]}",
                data_dir=os.path.join(self.base_dir, f"n{i + 1}"),
                log_path=os.path.join(self.base_dir, f"n{i + 1}.log"),
            )
            for i in range(n)
        ]
        self.http = http
        # How the harness's own clients authenticate (a cluster started with TLS or
        # a tokens file in its extra_args).
        self.credentials: Credentials | None = None
        if http:
            http_ports = (
                [base_port + 2 * n + i for i in range(n)]
                if base_port is not None
                else free_ports(n)
            )
            for node, port in zip(self.nodes, http_ports, strict=True):
                node.http = f"127.0.0.1:{port}"

    # -- lifecycle -------------------------------------------------------------

    def command(self, i: int, state: str = "new") -> list[str]:
        node = self.nodes[i]
        cmd = [
            sys.executable,
            "-m",
            "coord.cli.coord_main",
            "serve",
            "--node-id",
            node.node_id,
            "--data-dir",
            node.data_dir,
            "--cluster-token",
            self.token,
        ]
        if node.joined_cluster_id:
            # As an operator would: the flags `coordctl node add` printed, kept.
            cmd += ["--initial-cluster-state", "existing"]
            cmd += ["--cluster-id", node.joined_cluster_id]
            for spec in node.join_peers:
                cmd += ["--peer", spec]
        else:
            # Bootstrap members keep their bootstrap flags; the data dir knows the
            # membership changes since.
            cmd += ["--initial-cluster-state", state]
            for p in self.nodes[: self.bootstrap_size]:
                cmd += ["--peer", f"{p.node_id}={p.raft},{p.api}"]
        if node.http:
            cmd += ["--listen-http", node.http]
        if not self.fsync:
            cmd.append("--no-fsync")
        return cmd + self.extra_args + node.extra_args

    def start(self, i: int | None = None, state: str = "new") -> None:
        """Start every node (or node ``i``)."""
        for node in self.nodes if i is None else [self.nodes[i]]:
            if node.running:
                continue
            log = open(node.log_path, "ab")  # noqa: SIM115 (owned by the process)
            node.proc = subprocess.Popen(
                self.command(node.index, state),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self.env, **node.env},
                start_new_session=True,
            )
            log.close()
            node.paused = False

    def new_node(self) -> NodeProc:
        """Allocate a further node (ports, data dir), not yet a member nor started."""
        api, raft = free_ports(2)
        k = len(self.nodes)
        node = NodeProc(
            http=f"127.0.0.1:{free_ports(1)[0]}" if self.http else "",
            index=k,
            node_id=f"n{k + 1}",
            api=f"127.0.0.1:{api}",
            raft=f"127.0.0.1:{raft}",
            data_dir=os.path.join(self.base_dir, f"n{k + 1}"),
            log_path=os.path.join(self.base_dir, f"n{k + 1}.log"),
        )
        self.nodes.append(node)
        return node

    def add_node(self, client: Client) -> NodeProc:
        """``coordctl node add`` + start: a new member, joined with the printed flags."""
        node = self.new_node()
        resp = client.add_node(node.node_id, node.raft, node.api)
        node.joined_cluster_id = resp.cluster_id
        node.join_peers = [
            format_peer(n.id, n.raft_address, n.api_address, n.learner) for n in resp.nodes
        ]
        self.start(node.index)
        return node

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (default kill -9) to node ``i`` and reap it."""
        node = self.nodes[i]
        if node.proc is None:
            return
        if node.paused:
            node.proc.send_signal(signal.SIGCONT)
        with contextlib.suppress(ProcessLookupError):
            node.proc.send_signal(sig)
        try:
            node.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait(timeout=5)
        node.proc = None
        node.paused = False

    def stop(self, i: int) -> None:
        """Graceful stop (SIGTERM)."""
        self.kill(i, signal.SIGTERM)

    def restart(self, i: int, state: str = "new") -> None:
        self.kill(i)
        self.start(i, state)

    def pause(self, i: int) -> None:
        """SIGSTOP node ``i`` (a hung process: sockets stay open)."""
        node = self.nodes[i]
        if node.proc is not None:
            node.proc.send_signal(signal.SIGSTOP)
            node.paused = True

    def resume(self, i: int) -> None:
        node = self.nodes[i]
        if node.proc is not None and node.paused:
            node.proc.send_signal(signal.SIGCONT)
            node.paused = False

    def close(self) -> None:
        for node in self.nodes:
            self.kill(node.index, signal.SIGKILL)
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- observation -----------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        return [n.api for n in self.nodes]

    def client(self, **kwargs: Any) -> Client:
        kwargs.setdefault("credentials", self.credentials)
        return Client(self.endpoints, **kwargs)

    def status(self, i: int, timeout: float = 0.5) -> cluster_pb2.StatusResponse | None:
        """Node ``i``'s status, or None when it does not answer."""
        if not self.nodes[i].running or self.nodes[i].paused:
            return None
        try:
            with Client(
                [self.nodes[i].api],
                timeout_s=timeout,
                attempt_timeout_s=timeout,
                credentials=self.credentials,
            ) as c:
                return c.status(endpoint=self.nodes[i].api)
        except errors.CoordError:
            return None

    def statuses(self) -> list[cluster_pb2.StatusResponse | None]:
        return [self.status(i) for i in range(len(self.nodes))]

    def leader_index(
        self, statuses: Sequence[cluster_pb2.StatusResponse | None] | None = None
    ) -> int | None:
        """Index of the node that says it leads and that every live node agrees on."""
        sts = [s for s in (self.statuses() if statuses is None else statuses) if s is not None]
        leaders = {s.node_id for s in sts if s.role == cluster_pb2.ROLE_LEADER}
        if len(leaders) != 1:
            return None
        (lid,) = leaders
        if any(s.leader_id != lid for s in sts):
            return None
        return next(n.index for n in self.nodes if n.node_id == lid)

    def wait_for_leader(self, timeout: float = 20.0, exclude: int | None = None) -> int:
        """Wait until all live nodes agree on one leader (other than ``exclude``)."""

        def agreed() -> int | None:
            # Every running node must answer: one still starting (slow imports on a busy
            # machine) would otherwise be taken for a down one.
            sts = self.statuses()
            if any(
                n.running and not n.paused and st is None
                for n, st in zip(self.nodes, sts, strict=True)
            ):
                return None
            i = self.leader_index(sts)
            return None if i is None or i == exclude else i + 1  # +1: index 0 is falsy

        return wait_until(agreed, timeout, "one leader that every live node agrees on") - 1

    def wait_ready(self, timeout: float = 30.0) -> int:
        """Wait for one agreed leader and until every running node acknowledges appends
        (Status.catching_up false); return the leader's index.

        A node that started blank acknowledges nothing until it has learned the term from
        enough peers (coord.raft.gate). A test that kills or hangs a member right after
        the cluster started must wait for this first, or the members left may not make a
        majority that acknowledges (nor, in a cluster of three, elect anyone)."""
        deadline = time.monotonic() + timeout
        leader = self.wait_for_leader(timeout=timeout)
        running = [n.index for n in self.nodes if n.running and not n.paused]

        def all_acknowledge() -> bool:
            views = [self.status(i, timeout=2.0) for i in running]
            return all(v is not None and not v.catching_up for v in views)

        wait_until(
            all_acknowledge,
            max(0.0, deadline - time.monotonic()),
            "every member to acknowledge appends",
        )
        return leader

    def wait_applied(
        self, index: int, timeout: float = 20.0, nodes: Sequence[int] | None = None
    ) -> None:
        """Wait until the given nodes (default: all running) applied at least ``index``."""
        targets = list(nodes) if nodes is not None else [n.index for n in self.nodes if n.running]

        def caught_up() -> bool:
            sts = [self.status(i) for i in targets]
            return all(s is not None and s.applied_index >= index for s in sts)

        wait_until(caught_up, timeout, f"nodes {targets} to apply index {index}")

    def log(self, i: int) -> str:
        try:
            with open(self.nodes[i].log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def logs(self) -> str:
        return "\n".join(
            f"----- {n.node_id} ({n.log_path}) -----\n{self.log(n.index)}" for n in self.nodes
        )
