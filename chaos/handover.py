"""A forced handover of the 1-slot group's master: it can no longer hear the cluster
(its acknowledgements are dropped; its keepalives still arrive, so the leader keeps its
session alive), an operator asks for a switchover, the master never resigns (it never
heard), so the leader revokes it after the group's switchover timeout and must wait out
its session TTL before granting the slot: the old master stops believing when its
validity ends, which the wait-out must cover (docs/design.md, the safety argument, point 7).

The nemeses (chaos.nemesis) start one with :func:`force`, optionally move a clock during
the wait-out, and heal it with :meth:`ForcedHandover.heal`.
"""

from __future__ import annotations

import uuid
from typing import Any

from chaos import membership
from chaos.cluster import ProxiedCluster
from coord import errors
from coord.client import Client
from coord.testing import wait_until
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2

GROUP = "g1"
# The 1-slot group's switchover timeout (chaos.run creates it so): short, so that the
# revoke comes well within the old master's validity, and a wall-clock step during
# the wait-out that follows would let the slot be granted while it still believes.
SWITCHOVER_TIMEOUT_S = 0.5


class ForcedHandover:
    def __init__(self, c: ProxiedCluster, master: str, undo: list[tuple[str, str]]) -> None:
        self.c, self.master, self._undo = c, master, undo

    def heal(self) -> None:
        """The old master's answers flow again (its proxies reset: what they held is gone)."""
        self.c.undo(self._undo)


def force(c: ProxiedCluster, ttl_s: float) -> ForcedHandover:
    """Drop the answers to the master of :data:`GROUP`, ask for a switchover, and return
    once the leader has revoked it (the wait-out of its TTL has begun)."""
    with Client(c.client_endpoints, timeout_s=10, attempt_timeout_s=2.0) as cl:
        held = wait_until(lambda: cl.group(GROUP).masters(), 20, f"a master of {GROUP}")[0]
        undo = c.drop_answers_to(f"{GROUP}-{held.member_id}")
        switchover(cl, GROUP)
        wait_until(
            lambda: _revoked(cl, held),
            SWITCHOVER_TIMEOUT_S + ttl_s + 10,
            f"the leader to revoke {held.member_id} (token {held.token}) after the switchover",
        )
    membership.say(
        f"{held.member_id} (token {held.token}) cannot hear the cluster; switched over and "
        "revoked: its TTL is being waited out"
    )
    return ForcedHandover(c, held.member_id, undo)


def switchover(cl: Client, group: str) -> None:
    """``coordctl group switchover``, with one request id for every retry (a retry
    after a lost answer finds the first attempt's result instead of a second
    switchover). A handover already in progress is this one."""
    req = election_pb2.SwitchoverRequest(group=group, request_id=uuid.uuid4().hex)

    def ask(ch: Any, t: float) -> Any:
        return election_pb2_grpc.GroupsStub(ch).Switchover(req, timeout=t)

    try:
        cl.call(ask)
    except errors.FailedPrecondition as e:
        if "in progress" not in e.message:
            raise


def _revoked(cl: Client, held: groups_pb2.Holding) -> bool:
    now = cl.group(GROUP).masters()
    if not any(h.token == held.token for h in now):
        # Released already (a fast wait-out, or it resigned after all): too late to act
        # during the wait-out; the nemesis goes on, the checkers judge what happened.
        return True
    return any(h.token == held.token and h.revoked for h in now)
