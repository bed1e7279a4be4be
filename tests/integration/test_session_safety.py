"""Sessions are never declared expired while alive (docs/design.md, the safety argument, point 8).

Regression (issue 13, hole 4): a keepalive answered by a node that had stopped leading
while the keepalive waited on its acknowledgement barrier (a leadership transfer), or
by a new leader that had not yet applied what the old one committed, said
``expired=true``, and the client made it final. Measured before the fix: 50 sessions
at TTL 1 s, five leader transfers in a row: 1 to 4 sessions LOST; 150 at TTL 3 s: up
to 15. Now only a leader that has applied the expiry says so; any other node answers
NOT_LEADER and the client reconnects to the leader.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from coord.client import Client, Session, SessionState
from coord.testing import LocalCluster, wait_until
from coord.v1 import election_pb2, election_pb2_grpc

from .support import ClusterFactory, wait_all_caught_up

# Transfers: 150 keepalives a second, as 50 sessions at TTL 1 s send (the rate that
# exposed the false expiries), with a TTL that a busy 2-core machine does not outlast.
TRANSFER_FLEET = (150, 3.0)
# A rolling restart starts three Python processes (seconds each on a loaded machine):
# fewer sessions, and a TTL that outlasts the CPU starvation a start causes.
RESTART_FLEET = (50, 6.0)


@pytest.fixture
def own_cluster(cluster_factory: ClusterFactory) -> LocalCluster:
    c = cluster_factory(3, fsync=False)
    c.wait_for_leader()
    return c


def live_session_ids(client: Client) -> set[str]:
    """The sessions the leader's applied state holds (a linearizable List)."""
    resp = client.call(
        lambda ch, t: election_pb2_grpc.SessionsStub(ch).List(
            election_pb2.ListSessionsRequest(), timeout=t
        )
    )
    return {s.id for s in resp.sessions}


class Fleet:
    """``n`` sessions at ``ttl_s`` kept alive by one client; remembers which were LOST."""

    def __init__(self, client: Client, n: int, ttl_s: float) -> None:
        self.lost: list[str] = []
        self._lock = threading.Lock()
        self.sessions = [
            client.session(ttl_s=ttl_s, name=f"fleet-{i}", on_state=self._on_state).start()
            for i in range(n)
        ]
        self.ids = {s.id for s in self.sessions}

    def _on_state(self, s: Session, state: SessionState) -> None:
        if state is SessionState.LOST:
            with self._lock:
                self.lost.append(s.id)

    def wait_settled(self, what: str) -> None:
        """Until no session is SUSPENDED: each is acknowledged again (or was lost)."""
        wait_until(
            lambda: not any(s.state is SessionState.SUSPENDED for s in self.sessions), 10, what
        )

    def close(self) -> None:
        for s in self.sessions:
            s.close()


@contextmanager
def fleet(cluster: LocalCluster, n: int, ttl_s: float) -> Iterator[tuple[Client, Fleet]]:
    with cluster.client() as c:
        f = Fleet(c, n, ttl_s)
        try:
            wait_until(
                lambda: all(s.state is SessionState.CONNECTED for s in f.sessions),
                10,
                "every session to be acknowledged",
            )
            yield c, f
        finally:
            f.close()


def check_nothing_lost(c: Client, f: Fleet, after: str) -> None:
    assert f.lost == [], f"{len(f.lost)} of {len(f.ids)} sessions LOST across {after}"
    missing = f.ids - live_session_ids(c)
    assert not missing, f"sessions expired on the cluster across {after}: {sorted(missing)}"


def test_graceful_leader_transfers_lose_no_session(own_cluster: LocalCluster) -> None:
    with fleet(own_cluster, *TRANSFER_FLEET) as (c, f):
        leaders = []
        for _ in range(5):
            leaders.append(c.transfer_leader().leader_id)
            f.wait_settled("every session to reconnect to the new leader (or be lost)")
        assert len(set(leaders)) > 1, f"leadership never moved: {leaders}"
        check_nothing_lost(c, f, "five leader transfers")


def test_a_rolling_restart_loses_no_session(own_cluster: LocalCluster) -> None:
    """Each node in turn stops gracefully (a leader hands over first) and comes back."""
    with fleet(own_cluster, *RESTART_FLEET) as (c, f):
        for node in own_cluster.nodes:
            own_cluster.stop(node.index)
            own_cluster.start(node.index)
            own_cluster.wait_for_leader()
            wait_all_caught_up(own_cluster)  # before the next node stops
            f.wait_settled(f"every session to be acknowledged after {node.node_id} restarted")
        check_nothing_lost(c, f, "a rolling restart")
