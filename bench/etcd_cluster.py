"""Local multi-node etcd cluster on 127.0.0.1 for the benchmarks.

Implements ``_harness.ClusterUnderTest``. Each member runs ``/usr/bin/etcd``
(override with ``$ETCD_BIN``) with its own data dir in a temp dir, fsync on
(etcd's default), and logs to ``<tmp>/logs/etcd-<i>.log``.

Run directly for a quick smoke check: ``python bench/etcd_cluster.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc

from _harness import LOCALHOST, ProcessGroup, free_ports, log, wait_for, wait_until
from _process_cluster import ProcessCluster
from etcd_client import EtcdClient, EtcdKV, is_self_leader, rpc_pb2

__all__ = ["DEFAULT", "TUNED", "EtcdCluster", "EtcdTiming"]


@dataclass(frozen=True)
class EtcdTiming:
    """Raft timing flags, in milliseconds."""

    heartbeat_ms: int
    election_ms: int
    label: str = ""


DEFAULT = EtcdTiming(100, 1000, "default")
TUNED = EtcdTiming(50, 250, "tuned")


def etcd_binary() -> str:
    """Path of the etcd server binary."""
    path = os.environ.get("ETCD_BIN") or shutil.which("etcd") or "/usr/bin/etcd"
    if not Path(path).exists():
        raise FileNotFoundError("etcd not found; apt-get install -y etcd-server etcd-client")
    return path


class EtcdCluster(ProcessCluster):
    """An N-member etcd cluster of local processes.

    Typical use::

        with EtcdCluster(3, TUNED) as c:      # start() + stop()
            leader = c.leader_index()
            c.kill(leader); c.restart(leader); c.wait_healthy()
    """

    def __init__(
        self, n: int = 3, timing: EtcdTiming = DEFAULT, start_timeout: float = 30.0
    ) -> None:
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n = n
        self.timing = timing
        self.name = f"etcd-{timing.label or 'custom'}"
        self.start_timeout = start_timeout
        ports = free_ports(2 * n)
        self.client_ports = ports[:n]
        self.peer_ports = ports[n:]
        self.token = f"bench-{uuid.uuid4().hex[:12]}"
        self.group = ProcessGroup("etcd")
        self._clients: list[EtcdClient | None] = [None] * n
        for i in range(n):
            self.group.add(self._argv(i, "new"))

    # ----- configuration -------------------------------------------------

    def member_name(self, i: int) -> str:
        """etcd --name of member ``i``."""
        return f"m{i}"

    def data_dir(self, i: int) -> Path:
        """Data directory of member ``i``."""
        return self.group.root / f"data-{i}"

    def _initial_cluster(self) -> str:
        return ",".join(
            f"{self.member_name(i)}=http://{LOCALHOST}:{self.peer_ports[i]}" for i in range(self.n)
        )

    def _argv(self, i: int, state: str) -> list[str]:
        client = f"http://{LOCALHOST}:{self.client_ports[i]}"
        peer = f"http://{LOCALHOST}:{self.peer_ports[i]}"
        return [
            etcd_binary(),
            "--name", self.member_name(i),
            "--data-dir", str(self.data_dir(i)),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", self._initial_cluster(),
            "--initial-cluster-token", self.token,
            "--initial-cluster-state", state,
            "--heartbeat-interval", str(self.timing.heartbeat_ms),
            "--election-timeout", str(self.timing.election_ms),
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip

    # ----- lifecycle -----------------------------------------------------

    def restart(self, i: int) -> None:
        """Restart member ``i`` on its existing data dir (``--initial-cluster-state existing``)."""
        self._drop_client(i)
        self.group.restart(i, self._argv(i, "existing"))

    # ----- inspection ----------------------------------------------------

    def client(self, i: int) -> EtcdClient:
        """Cached blocking client for member ``i`` (recreated after restart)."""
        c = self._clients[i]
        if c is None:
            c = self._clients[i] = EtcdClient(self.endpoints()[i])
        return c

    def _drop_client(self, i: int) -> None:
        c = self._clients[i]
        if c is not None:
            c.close()
            self._clients[i] = None

    def statuses(self, timeout: float = 0.25) -> dict[int, rpc_pb2.StatusResponse]:
        """Maintenance.Status of every running member, queried in parallel.

        Maps member index to its ``StatusResponse``; members that did not
        answer in ``timeout`` are left out.
        """
        futures = {i: self.client(i).status_future(timeout) for i in range(self.n) if self.alive(i)}
        out: dict[int, rpc_pb2.StatusResponse] = {}
        for i, fut in futures.items():
            try:
                out[i] = fut.result()
            except grpc.RpcError:
                continue
        return out

    def leader_index(self) -> int | None:
        """Index of the member whose Status says it is the leader (highest term wins)."""
        best: tuple[int, int] | None = None  # (raftTerm, index)
        for i, st in self.statuses().items():
            if is_self_leader(st) and (best is None or st.raftTerm > best[0]):
                best = (st.raftTerm, i)
        return None if best is None else best[1]

    def _agreed_leader(self) -> int | None:
        """Leader index if every running member answers and names the same leader."""
        sts = self.statuses()
        running = [i for i in range(self.n) if self.alive(i)]
        if not running or set(sts) != set(running):
            return None
        leaders = {st.leader for st in sts.values()}
        if len(leaders) != 1 or 0 in leaders:
            return None
        (lid,) = leaders
        for i, st in sts.items():
            if st.header.member_id == lid:
                return i
        return None

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Block until all running members agree on a leader and have applied a fresh write."""
        leader = wait_for(self._agreed_leader, timeout, f"{self.name}: members agree on a leader")
        rev = wait_until(
            lambda: self.client(leader).put("bench/health", "ok", timeout=0.5),
            timeout,
            f"{self.name}: health write",
            ignore=(grpc.RpcError,),
        )
        running = [i for i in range(self.n) if self.alive(i)]
        wait_until(
            lambda: all(self._applied(i, rev) for i in running),
            timeout,
            f"{self.name}: members {running} applied revision {rev}",
            ignore=(grpc.RpcError,),
        )

    def _applied(self, i: int, rev: int) -> bool:
        kv = self.client(i).get_kv("bench/health", serializable=True, timeout=0.5)
        return kv is not None and kv.mod_revision >= rev

    def make_client(self, first: int = 0, call_timeout: float = 0.1) -> EtcdKV:
        """Failover KV client over all endpoints (call inside a running event loop)."""
        return EtcdKV(self.endpoints(), call_timeout=call_timeout, first=first)


def _smoke(n: int, timing: EtcdTiming) -> None:
    with EtcdCluster(n, timing) as c:
        leader = c.wait_leader()
        log(f"{n} members up at {c.endpoints()}, leader = {leader}")
        c.client(leader).put("smoke", "1")
        assert c.client((leader + 1) % n).get("smoke") == b"1"
        log("put/get ok")


def main() -> None:
    """Start a cluster, check leader and put/get, stop."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--tuned", action="store_true", help="heartbeat 50 ms / election 250 ms")
    args = p.parse_args()
    _smoke(args.nodes, TUNED if args.tuned else DEFAULT)


if __name__ == "__main__":
    main()
