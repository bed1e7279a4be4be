"""Leadership transfer (Raft thesis 3.10), driven by the leader's tick.

The leader waits until the target's log matches its own, then tells it to
campaign at once (pysyncobj's ``transferLeadership`` sends ``timeout_now``; such
an election skips PreVote). While the target is close behind, new proposals wait
in the queue (:meth:`LeadershipTransfer.holding`): under a steady load it would
otherwise never match. They go to the new leader once this node follows.

Threads: :meth:`LeadershipTransfer.start` from any thread; the rest on the tick thread.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from coord import errors
from coord.raft.syncobj_adapter import ROLE_LEADER, SyncObjAdapter
from coord.raft.view import View

logger = logging.getLogger(__name__)

# A transfer target at most this many entries behind: new proposals wait for it.
TRANSFER_HOLD_LAG = 64


@dataclass
class _Transfer:
    target: str | None
    deadline: float
    fut: Future[str]
    next_try: float = 0.0
    hold: bool = False


class LeadershipTransfer:
    def __init__(self, me: str, retry_s: float) -> None:
        """``me``: this node's id; ``retry_s``: how long an unanswered ``timeout_now``
        waits before it is sent again (a lost message, a dead target)."""
        self._me = me
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self._transfer: _Transfer | None = None

    def start(
        self, target: str | None, timeout_s: float, view: View, members: frozenset[str]
    ) -> Future[str]:
        """Hand leadership to ``target`` (or the most caught-up member); resolves with
        the new leader's id once this node sees it lead."""
        fut: Future[str] = Future()
        if view.role != ROLE_LEADER:
            fut.set_exception(errors.NotLeader("leadership transfer runs on the leader"))
            return fut
        if target is not None:
            if target == self._me:
                fut.set_result(target)
                return fut
            if target not in members:
                fut.set_exception(
                    errors.NotFound(f"node {target!r} is not a member (members: {sorted(members)})")
                )
                return fut
        with self._lock:
            if self._transfer is not None and not self._transfer.fut.done():
                fut.set_exception(
                    errors.FailedPrecondition("a leadership transfer is already in progress")
                )
                return fut
            self._transfer = _Transfer(target, time.monotonic() + timeout_s, fut)
        return fut

    def holding(self, view: View) -> bool:
        """Whether new proposals wait: a transfer whose target is close behind."""
        t = self._transfer
        return (
            t is not None
            and t.hold
            and not t.fut.done()
            and time.monotonic() < t.deadline
            and view.role == ROLE_LEADER
        )

    def drive(self, view: View, raft: SyncObjAdapter) -> None:
        """Once per tick: finish, fail, or move the transfer in progress along."""
        t = self._transfer
        if t is None or t.fut.done() or self._finished(t, view):
            return
        now = time.monotonic()
        if view.role != ROLE_LEADER or now < t.next_try:
            return
        last_index = raft.last_log_index
        connected = raft.connected_nodes
        candidates = [
            (idx, node.id, node)
            for node, idx in raft.match_indexes()
            if node in connected and (t.target is None or node.id == t.target)
        ]
        # Close enough: hold new proposals so that the target can match (see
        # coord.raft.syncobj_adapter._SyncObj._checkCommandsToApply); a far-behind
        # target catches up with writes flowing.
        t.hold = any(c[0] >= last_index - TRANSFER_HOLD_LAG for c in candidates)
        ready = [c for c in candidates if c[0] == last_index]
        if not ready:
            return  # wait for the target to catch up (appends go out every heartbeat)
        node = max(ready)[2]
        logger.info("transferring leadership to %s (term %d)", node.id, view.term)
        raft.transfer_leadership(node)
        # Not answered within an election timeout (a lost message, a dead target): again.
        t.next_try = now + self._retry_s

    def _finished(self, t: _Transfer, view: View) -> bool:
        """Resolve ``t`` if another node leads now or its time ran out."""
        if view.leader_id and view.leader_id != self._me:
            if t.target is None or view.leader_id == t.target:
                t.fut.set_result(view.leader_id)
            else:
                t.fut.set_exception(
                    errors.Unavailable(
                        f"leadership went to {view.leader_id}, not {t.target}: retry the transfer"
                    )
                )
            return True
        if time.monotonic() > t.deadline:
            t.fut.set_exception(
                errors.Unavailable(
                    "the leadership transfer did not complete in time (target down or "
                    "lagging?): the leader is unchanged, retry"
                )
            )
            return True
        return False
