"""Local ZooKeeper ensemble on 127.0.0.1 for the benchmarks.

Implements ``_harness.ClusterUnderTest``. ZooKeeper 3.8 comes from Debian
(``apt-get install -y zookeeper``); each member is a JVM started directly on the
Debian install's jars (``/usr/share/java/zookeeper.jar``, whose manifest names its
dependencies in ``/usr/share/java``; ``$ZK_CLASSPATH`` overrides the classpath, ``$JAVA``
the java binary) running ``org.apache.zookeeper.server.quorum.QuorumPeerMain`` on a
generated ``zoo.cfg`` with a ``myid`` file in its data dir (temp dir, deleted at exit
unless ``BENCH_KEEP_TMP=1``). Logs (slf4j-simple, stderr) go to
``<tmp>/logs/zookeeper-<i>.log``.

Configuration, ZooKeeper's defaults unless said:

* fsync on: ``forceSync=yes`` is ZooKeeper's default (the transaction log is fsynced
  before a server acks a proposal), not changed here; ``mntr``'s ``zk_cnt_fsynctime``
  counts the fsyncs (``ZkCluster.fsyncs``);
* ``tickTime=2000``, ``initLimit=10``, ``syncLimit=5`` (Debian's example zoo.cfg);
* ``admin.enableServer=false`` (no Jetty admin server on port 8080 per member);
* ``4lw.commands.whitelist=srvr,stat,mntr``: ``leader_index`` asks each member ``srvr``
  over its client port ("Mode: leader");
* JVM heap ``-Xmx256m`` per member (3 JVMs on a 2-core machine with shared memory; the
  server's default is a quarter of RAM), ``-XX:-UsePerfData`` (no hsperfdata files left
  in /tmp after a kill -9).

Run directly for a quick check: ``python bench/zk_cluster.py [--nodes 3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError

from _harness import LOCALHOST, ProcessGroup, free_ports, log, wait_for, wait_until
from _process_cluster import ProcessCluster
from zk_client import ZkKV, four_letter, new_kazoo, srvr

__all__ = ["ZkCluster", "unavailable", "zk_classpath"]

MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
JAR_DIRS = (Path("/usr/share/java"), Path("/usr/share/zookeeper"), Path("/usr/share/zookeeper/lib"))
HEAP = "-Xmx256m"
HEALTH_ZNODE = "/bench-health"
# Errors of the inspection client that mean "not yet" while members start or elect.
NOT_YET: tuple[type[BaseException], ...] = (KazooException, KazooTimeoutError, OSError)


def java_binary() -> str:
    """Path of the java binary."""
    path = os.environ.get("JAVA") or shutil.which("java") or "/usr/bin/java"
    if not Path(path).exists():
        raise FileNotFoundError("java not found; apt-get install -y zookeeper (pulls a JRE)")
    return path


def zk_classpath() -> str:
    """The server's classpath: ``$ZK_CLASSPATH``, else Debian's ``zookeeper.jar`` (its
    manifest's Class-Path brings netty, jetty, slf4j-api, ...) plus slf4j-simple for logs
    (without an slf4j binding the server logs nothing)."""
    if os.environ.get("ZK_CLASSPATH"):
        return os.environ["ZK_CLASSPATH"]
    jar = next((d / "zookeeper.jar" for d in JAR_DIRS if (d / "zookeeper.jar").exists()), None)
    if jar is None:
        raise FileNotFoundError("ZooKeeper not installed: apt-get install zookeeper")
    parts = [str(jar)]
    binding = jar.parent / "slf4j-simple.jar"
    if binding.exists():
        parts.append(str(binding))
    return ":".join(parts)


def unavailable() -> str | None:
    """Why a ZooKeeper ensemble cannot be started here, or None if it can."""
    try:
        java_binary()
        zk_classpath()
    except FileNotFoundError as exc:
        return str(exc)
    return None


class ZkCluster(ProcessCluster):
    """An N-member ZooKeeper ensemble of local JVMs.

    Typical use::

        with ZkCluster(3) as c:      # start() + stop()
            leader = c.leader_index()
            c.kill(leader); c.restart(leader); c.wait_healthy()
    """

    def __init__(self, n: int = 3, start_timeout: float = 60.0, heap: str = HEAP) -> None:
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n = n
        self.name = f"zookeeper-{n}"
        self.start_timeout = start_timeout
        self.heap = heap
        ports = free_ports(3 * n)
        self.client_ports = ports[:n]
        self.quorum_ports = ports[n : 2 * n]
        self.election_ports = ports[2 * n :]
        self.group = ProcessGroup("zookeeper")
        self._clients: list[Any] = [None] * n
        java, classpath = java_binary(), zk_classpath()
        for i in range(n):
            self.data_dir(i).mkdir(parents=True)
            (self.data_dir(i) / "myid").write_text(f"{i + 1}\n")
            self.config_path(i).write_text(self._config(i))
            argv = [
                java,
                self.heap,
                "-XX:-UsePerfData",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
                "-Dorg.slf4j.simpleLogger.showDateTime=true",
                "-cp", classpath,
                MAIN_CLASS,
                str(self.config_path(i)),
            ]  # fmt: skip
            self.group.add(argv)

    # ----- configuration -------------------------------------------------

    def data_dir(self, i: int) -> Path:
        """Data directory (snapshots and transaction log) of member ``i``."""
        return self.group.root / f"data-{i}"

    def config_path(self, i: int) -> Path:
        """zoo.cfg of member ``i``."""
        return self.group.root / f"zoo-{i}.cfg"

    def _config(self, i: int) -> str:
        servers = [
            f"server.{j + 1}={LOCALHOST}:{self.quorum_ports[j]}:{self.election_ports[j]}"
            for j in range(self.n)
        ]
        lines = [
            "tickTime=2000",
            "initLimit=10",
            "syncLimit=5",
            f"dataDir={self.data_dir(i)}",
            f"clientPort={self.client_ports[i]}",
            f"clientPortAddress={LOCALHOST}",
            "admin.enableServer=false",
            "4lw.commands.whitelist=srvr,stat,mntr",
            *servers,
        ]
        return "\n".join(lines) + "\n"

    # ----- lifecycle -----------------------------------------------------

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` (and reap it), its inspection client closed first."""
        self._drop_client(i)
        super().kill(i)

    def restart(self, i: int) -> None:
        """Restart member ``i`` on its existing data dir (same zoo.cfg and myid)."""
        self._drop_client(i)
        self.group.restart(i)

    # ----- inspection ----------------------------------------------------

    def client(self, i: int) -> Any:
        """Cached blocking ``KazooClient`` bound to member ``i`` only (recreated after a
        kill or restart). Raises a kazoo timeout if it cannot connect in 2 s."""
        c = self._clients[i]
        if c is None:
            c = new_kazoo([self.endpoints()[i]])
            c.start(timeout=2.0)
            self._clients[i] = c
        return c

    def _drop_client(self, i: int) -> None:
        c = self._clients[i]
        if c is not None:
            self._clients[i] = None
            c.stop()
            c.close()

    def modes(self) -> dict[int, Any]:
        """``srvr`` of every running member that is serving (index -> ``SrvrInfo``)."""
        out = {}
        for i in range(self.n):
            if self.alive(i):
                info = srvr(self.endpoints()[i], timeout=0.25)
                if info is not None:
                    out[i] = info
        return out

    def leader_index(self) -> int | None:
        """Index of the member whose ``srvr`` says "Mode: leader" (highest epoch wins)."""
        best: tuple[int, int] | None = None  # (epoch, index)
        for i, info in self.modes().items():
            if info.mode in ("leader", "standalone") and (best is None or info.epoch > best[0]):
                best = (info.epoch, i)
        return None if best is None else best[1]

    def epoch(self) -> int:
        """The highest leader epoch any member reports (one more per leader elected)."""
        return max((info.epoch for info in self.modes().values()), default=0)

    def mntr(self, i: int) -> dict[str, str]:
        """``mntr`` of member ``i`` as a dict (``zk_server_state``, ``zk_cnt_fsynctime``...)."""
        text = four_letter(self.endpoints()[i], "mntr")
        return dict(line.split("\t", 1) for line in text.splitlines() if "\t" in line)

    def fsyncs(self, i: int) -> int:
        """How many times member ``i`` fsynced its transaction log (``mntr``)."""
        return int(self.mntr(i).get("zk_cnt_fsynctime", "0"))

    def _agreed_leader(self) -> int | None:
        """Leader index if every running member serves and exactly one leads."""
        running = [i for i in range(self.n) if self.alive(i)]
        infos = self.modes()
        if not running or set(infos) != set(running):
            return None
        leaders = [i for i, info in infos.items() if info.mode in ("leader", "standalone")]
        return leaders[0] if len(leaders) == 1 else None

    def put(self, i: int, key: str, value: bytes, timeout: float = 1.0) -> int:
        """Blocking set (create if missing) of ``/key`` through member ``i``; the write's zxid."""
        zk = self.client(i)
        path = "/" + key.strip("/")
        try:
            stat = zk.set_async(path, value).get(timeout=timeout)
        except NoNodeError:
            with contextlib.suppress(NodeExistsError):
                zk.create_async(path, value, makepath=True).get(timeout=timeout)
            stat = zk.set_async(path, value).get(timeout=timeout)
        return int(stat.mzxid)

    def get(self, i: int, key: str, timeout: float = 1.0) -> bytes | None:
        """``sync`` then read ``/key`` on member ``i`` (up to date with the leader)."""
        zk = self.client(i)
        path = "/" + key.strip("/")
        zk.sync_async(path).get(timeout=timeout)
        try:
            data, _stat = zk.get_async(path).get(timeout=timeout)
        except NoNodeError:
            return None
        return bytes(data)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Block until all running members serve with one leader and have applied a fresh write."""
        leader = wait_for(self._agreed_leader, timeout, f"{self.name}: members agree on a leader")
        zxid = wait_until(
            lambda: self.put(leader, HEALTH_ZNODE, b"ok", timeout=0.5),
            timeout,
            f"{self.name}: health write",
            ignore=NOT_YET,
        )
        running = [i for i in range(self.n) if self.alive(i)]
        wait_until(
            lambda: all(self._applied(i, zxid) for i in running),
            timeout,
            f"{self.name}: members {running} applied zxid {zxid:#x}",
        )

    def _applied(self, i: int, zxid: int) -> bool:
        info = srvr(self.endpoints()[i], timeout=0.25)
        return info is not None and info.zxid >= zxid

    def make_client(self, first: int = 0, call_timeout: float = 0.1) -> ZkKV:
        """Failover KV client over all endpoints (call inside a running event loop)."""
        return ZkKV(self.endpoints(), call_timeout=call_timeout, first=first)


def _smoke(n: int) -> None:
    with ZkCluster(n) as c:
        leader = c.wait_leader()
        info = srvr(c.endpoints()[leader])
        log(f"{n} members up at {c.endpoints()}, leader = {leader} ({info})")
        c.put(leader, "smoke", b"1")
        other = (leader + 1) % n
        assert c.get(other, "smoke") == b"1", "put on the leader, get (after sync) on another"
        log(f"put/get ok; leader fsyncs so far: {c.fsyncs(leader)}")


def main() -> None:
    """Start an ensemble, check leader and put/get, stop."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--nodes", type=int, default=3)
    args = p.parse_args()
    _smoke(args.nodes)


if __name__ == "__main__":
    main()
