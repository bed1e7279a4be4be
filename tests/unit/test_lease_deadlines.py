"""A session's deadline on the leader never moves back.

The KeepAlive handler touches a session a second time after the ack barrier, with the
keepalive's arrival, when the session was unknown at arrival (a new leader that had not
applied its Open). A later keepalive on another stream may have set a later deadline
meanwhile; the re-touch once lowered it, and the leader expired the session while the
client still believed (until s_B + TTL x (1 - drift)). The leader's state is a stand-in
here (a read() over plain tables): LeaseKeeper's own code runs as it is.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from coord.raft.node import ROLE_LEADER, View
from coord.server.duties.leases import LeaseKeeper
from coord.v1 import groups_pb2

TTL_S = 5.0
DRIFT = 0.02


class FakeRaft:
    def __init__(self) -> None:
        self.state = SimpleNamespace(groups=SimpleNamespace(sessions={}, sessions_version=object()))
        self.view = View(role=ROLE_LEADER, term=3)
        self.proposed: list[Any] = []

    def read(self, fn: Any) -> Any:
        return fn(self.state)

    def propose(self, cmd: Any) -> None:
        self.proposed.append(cmd)


def test_a_late_retouch_never_lowers_a_deadline_set_by_a_later_keepalive() -> None:
    raft = FakeRaft()
    keeper = LeaseKeeper(raft)  # type: ignore[arg-type]
    keeper._term = 3  # duties started in this term (as _duty does at takeover)
    session = groups_pb2.Session(id="s1", ttl_ms=int(TTL_S * 1000), epoch=7)

    # Keepalive A (stream 1) reaches a new leader that has not applied the Open yet.
    a_A = 100.0
    known = keeper.touch("s1", a_A)
    assert not known
    # The Open (committed before the takeover) is applied meanwhile.
    raft.state.groups.sessions["s1"] = session
    # The client gave up on stream 1 (no ack for TTL/2) and sent B on a new stream,
    # which is acknowledged: the client now believes until s_B + TTL*(1-drift).
    s_B = a_B = 102.6
    assert keeper.touch("s1", a_B)
    # A's barrier finally completes: the handler re-touches with A's arrival.
    keeper.touch("s1", a_A)

    client_believes_until = s_B + TTL_S * (1 - DRIFT)
    keeper._expire_due(a_A + TTL_S + 0.001)
    expired = [c for c in raft.proposed if c.HasField("expire_session")]
    assert keeper.deadlines["s1"][0] >= a_B + TTL_S, (
        f"deadline lowered to {keeper.deadlines['s1'][0]} < {a_B + TTL_S}"
    )
    assert not expired, (
        f"leader expires the session at {a_A + TTL_S:.3f} while the client believes "
        f"until {client_believes_until:.3f}"
    )
