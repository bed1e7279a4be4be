"""After every heal, how soon each member's commit index passes the leader's.

The runner starts a :class:`ConvergenceProbe` the moment a heal returns (each cycle's,
and the final one) and joins it before the next fault: the heal period lasts at least
until every member has been judged. The probe fills a :class:`chaos.records.HealSample`;
the ``converged`` checker (chaos.checkers) says whether every member passed the
leader's heal-time commit index within :data:`CONVERGE_S` of its window's start.

Sampling: the target is the highest commit index any member reports in the first
round after the heal (all members asked at once); then one thread per member asks its
own status (real API port, as the harness's other probes) every :data:`PACE_S` until
its commit index reaches the target or its window is over. A member's window starts
at the heal if it answered in the first round, else when it first answers (a process
the heal restarted is still importing its modules: its start-up is not Raft's delay);
one that never answers within :data:`START_S` is judged too. The time a member
passed is when the status request that showed it was sent: its commit index had
passed by the time the node answered, at most one request's latency later.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from chaos.checkers import CONVERGE_S
from chaos.cluster import ProxiedCluster
from chaos.records import HealSample, RunRecord
from coord.testing import NodeProc
from coord.v1 import cluster_pb2

START_S = 20.0  # a member not answering at the heal must answer within this
PACE_S = 0.05  # between one member's status requests
STATUS_TIMEOUT_S = 0.5


class ConvergenceProbe:
    """Samples every member's commit index after one heal, into ``record.heals``."""

    def __init__(
        self,
        c: ProxiedCluster,
        record: RunRecord,
        bound_s: float = CONVERGE_S,
        start_s: float = START_S,
    ) -> None:
        self._c = c
        self._bound = bound_s
        self._start = start_s
        self.sample = HealSample(at=time.monotonic(), members=list(c.member_ids))
        record.heals.append(self.sample)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="convergence", daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join(timeout=self._start + self._bound + 30.0)

    def _status(self, node: NodeProc) -> tuple[float, cluster_pb2.StatusResponse | None]:
        sent = time.monotonic()
        return sent, self._c.status(node.index, timeout=STATUS_TIMEOUT_S)

    def _run(self) -> None:
        s = self.sample
        nodes = [n for n in (self._c.node(m) for m in s.members) if n is not None]
        if not nodes:
            return
        with ThreadPoolExecutor(len(nodes)) as pool:
            first = list(pool.map(self._status, nodes))
            while not any(st for _, st in first) and time.monotonic() - s.at < self._start:
                time.sleep(PACE_S)  # sampling pace: nobody answers yet
                first = list(pool.map(self._status, nodes))
            views = {n.node_id: st for n, (_, st) in zip(nodes, first, strict=True) if st}
            if not views:
                s.sampled_until = time.monotonic()
                return
            s.leader = max(
                views,
                key=lambda n: (views[n].commit_index, views[n].role == cluster_pb2.ROLE_LEADER),
            )
            s.target = views[s.leader].commit_index
            for node, (sent, st) in zip(nodes, first, strict=True):
                if st is not None:
                    self._note(node.node_id, sent, st, at_heal=True)
            list(pool.map(self._follow, nodes))

    def _note(
        self, nid: str, sent: float, st: cluster_pb2.StatusResponse, at_heal: bool = False
    ) -> None:
        s = self.sample
        with self._lock:
            s.answered.setdefault(nid, s.at if at_heal else sent)
            s.last_commit[nid] = st.commit_index
            if st.commit_index >= s.target:
                s.passed.setdefault(nid, sent)
            s.sampled_until = max(s.sampled_until, time.monotonic())

    def _follow(self, node: NodeProc) -> None:
        s, nid = self.sample, node.node_id
        while nid not in s.passed:
            start = s.answered.get(nid)
            now = time.monotonic()
            if start is None and now - s.at > self._start:
                return
            if start is not None and now - start > self._bound + 2 * PACE_S:
                return
            time.sleep(PACE_S)  # sampling pace
            sent, st = self._status(node)
            if st is not None:
                self._note(nid, sent, st)
