"""What the benchmark clusters of local server processes (``EtcdCluster``, ``ZkCluster``)
have in common: members in a ``_harness.ProcessGroup``, one client port each, a cached
inspection client per member, started and stopped as a context manager.

A subclass sets ``n``, ``name``, ``start_timeout``, ``group`` and ``client_ports`` in its
``__init__`` and provides ``wait_healthy``, ``leader_index`` and ``_drop_client``.
"""

from __future__ import annotations

from typing import Self

from _harness import LOCALHOST, ProcessGroup, log, wait_for

__all__ = ["ProcessCluster"]


class ProcessCluster:
    """Lifecycle of an N-member cluster of local processes (``_harness.ClusterUnderTest``)."""

    n: int
    name: str
    start_timeout: float
    group: ProcessGroup
    client_ports: list[int]

    # ----- to provide ----------------------------------------------------

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Block until the running members serve (see the subclass)."""
        raise NotImplementedError

    def leader_index(self) -> int | None:
        """Index of the leading member, None if none (see the subclass)."""
        raise NotImplementedError

    def _drop_client(self, i: int) -> None:
        """Close and forget the cached inspection client of member ``i``, if any."""
        raise NotImplementedError

    # ----- lifecycle -----------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start all members and wait until the cluster is healthy."""
        self.group.start_all()
        try:
            self.wait_healthy(self.start_timeout)
        except TimeoutError:
            self._dump_logs()
            raise

    def stop(self) -> None:
        """Kill all members and delete data dirs and logs (see BENCH_KEEP_TMP)."""
        for i in range(self.n):
            self._drop_client(i)
        self.group.cleanup()

    def endpoints(self) -> list[str]:
        """Client endpoints ``127.0.0.1:port``, indexed like the members."""
        return [f"{LOCALHOST}:{p}" for p in self.client_ports]

    def alive(self, i: int) -> bool:
        """True if member ``i``'s process is running (it may be SIGSTOPped)."""
        return self.group.alive(i)

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` (and reap it)."""
        self.group.kill(i)

    def pause(self, i: int) -> None:
        """SIGSTOP member ``i``."""
        self.group.pause(i)

    def resume(self, i: int) -> None:
        """SIGCONT member ``i``."""
        self.group.resume(i)

    # ----- inspection ----------------------------------------------------

    def wait_leader(self, timeout: float = 30.0) -> int:
        """Block until some member leads; returns its index."""
        return wait_for(self.leader_index, timeout, f"{self.name} leader")

    def _dump_logs(self) -> None:
        for i in range(self.n):
            log(f"--- {self.name} member {i} log tail ---\n{self.group.tail_log(i)}")
