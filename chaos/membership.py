"""Membership changes as an operator makes them, for the nemeses (chaos.nemesis).

Every step is safe to repeat: a timeout, a leader change or a fault in progress can
hide a commit (or lose an uncommitted change with its leader), so each step reads the
leader's configuration and acts only while the change is not in it yet. Actions go
through the clients' proxied endpoints, as ``coordctl`` would; observations use the
nodes' real API ports, as the harness's other probes do.

Each step has a deadline. A step that cannot finish in time after the faults healed
raises :class:`MembershipError`, which the runner reports as a violation: coord
promises that one change at a time completes once a majority of the new configuration
is up, that a removed node exits by itself, and that a new node catches up.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from chaos.cluster import ProxiedCluster
from coord import errors
from coord.client import Client
from coord.testing import NodeProc, wait_until
from coord.v1 import cluster_pb2, cluster_pb2_grpc

STEP_S = 30.0  # one step: a change committed, a node caught up, a leader handed over
# A removed node asks its peers after 3 s without a leader, once a second: it should be
# gone well within this.
EXIT_S = 15.0
PACE_S = 0.1  # between attempts of a refused or failed step


class MembershipError(RuntimeError):
    """A membership step did not do what it should within its deadline."""


def admin(c: ProxiedCluster, timeout_s: float = 10.0) -> Client:
    """The operator's client, with coordctl's timeouts (10 s a command, 2 s an attempt),
    on every advertised (proxied) endpoint."""
    return Client(c.client_endpoints, timeout_s=timeout_s, attempt_timeout_s=2.0)


def say(what: str) -> None:
    """A step done, on stderr beside the runner's progress lines."""
    print(f"[chaos]   {what}", file=sys.stderr, flush=True)


# -- observing -----------------------------------------------------------------


def list_nodes(node: NodeProc) -> cluster_pb2.ListNodesResponse | None:
    """One node's own ListNodes (its latest configuration), or None if it does not answer."""
    if not node.running or node.paused:
        return None
    req = cluster_pb2.ListNodesRequest()

    def ask(ch: Any, t: float) -> cluster_pb2.ListNodesResponse:
        resp: cluster_pb2.ListNodesResponse = cluster_pb2_grpc.ClusterStub(ch).ListNodes(
            req, timeout=t
        )
        return resp

    try:
        with Client([node.api], timeout_s=0.5, attempt_timeout_s=0.5) as cl:
            return cl.call(ask, endpoint=node.api)
    except errors.CoordError:
        return None


def leader_view(c: ProxiedCluster) -> cluster_pb2.ListNodesResponse | None:
    """The configuration as the leader of the highest term among members sees it."""
    best: cluster_pb2.ListNodesResponse | None = None
    for node in c.members:
        resp = list_nodes(node)
        if resp is None:
            continue
        me = resp.header.node_id
        if not any(n.id == me and n.is_leader for n in resp.nodes):
            continue
        if best is None or resp.header.term > best.header.term:
            best = resp
    return best


def settled(c: ProxiedCluster, deadline: float) -> cluster_pb2.ListNodesResponse:
    """The leader's configuration once no change is pending (it is then committed)."""

    def ready() -> cluster_pb2.ListNodesResponse | None:
        view = leader_view(c)
        return view if view is not None and not view.change_pending else None

    view: cluster_pb2.ListNodesResponse = _by(
        deadline, ready, "a leader with no membership change pending"
    )
    return view


def ids(view: cluster_pb2.ListNodesResponse) -> set[str]:
    return {n.id for n in view.nodes}


def wait_shown(c: ProxiedCluster, leader: str, pred: Callable[[set[str]], bool], s: float) -> bool:
    """Wait (``s`` at most) until ``leader``'s latest configuration satisfies ``pred``: a
    proposed change is in its log (committed or not). False if it never showed."""
    node = c.node(leader)
    if node is None:
        return False
    try:
        wait_until(lambda: (r := list_nodes(node)) is not None and pred(ids(r)), s, "a change")
    except TimeoutError:
        return False
    return True


# -- acting ----------------------------------------------------------------------

# What a step may meet and try again: no leader yet, a leader change, a change still
# pending ("one change at a time"), an outcome hidden by a timeout.
_AGAIN = (errors.Unavailable, errors.DeadlineExceeded, errors.FailedPrecondition)


def add(c: ProxiedCluster, within_s: float = STEP_S) -> NodeProc:
    """A fresh node (new id, empty data dir) joins: ``node add`` (a learner, the
    default), started with the flags it printed, caught up, then ``node promote``.
    Returns it."""
    node = c.new_node()
    join(c, node, within_s)
    return node


def join(c: ProxiedCluster, node: NodeProc, within_s: float = STEP_S) -> None:
    """``node add`` (as a learner) for an allocated node until it answers (the add is
    idempotent: a retry after a hidden commit answers once committed), then start it,
    wait until it follows the leader and applied what the leader had applied, and
    promote it to a voter."""
    deadline = time.monotonic() + within_s
    last: Exception | None = None
    with admin(c) as cl:
        while True:
            try:
                resp = cl.add_node(
                    node.node_id, node.raft, c.advertised[node.node_id], learner=True
                )
                break
            except _AGAIN as e:
                last = e
            _pace(deadline, f"adding {node.node_id}", last)
    c.start_joined(node, resp)
    caught_up(c, node, deadline)
    say(f"{node.node_id} joined as a learner ({len(resp.nodes)} members) and caught up")
    promote(c, node.node_id, time.monotonic() + within_s)


def promote(c: ProxiedCluster, nid: str, deadline: float) -> None:
    """``node promote`` until the leader's committed configuration has ``nid`` as a
    voter (refusals while it is behind, or while a change is pending, are retried)."""
    last: Exception | None = None
    with admin(c) as cl:
        while True:
            view = settled(c, deadline)
            member = next((n for n in view.nodes if n.id == nid), None)
            if member is None:
                raise MembershipError(f"{nid} is no member to promote: {sorted(ids(view))}")
            if not member.learner:
                break
            try:
                cl.promote_node(nid)
                continue  # read the outcome back
            except _AGAIN as e:
                last = e
            _pace(deadline, f"promoting {nid}", last)
    say(f"{nid} promoted to a voter")


def caught_up(c: ProxiedCluster, node: NodeProc, deadline: float) -> None:
    """``node`` applied what the leader had applied, and follows the leader a majority
    agrees on *now* (an election meanwhile, under load, moves the leader: the node must
    follow the new one, not the one there was when the wait began)."""
    target = settled(c, deadline).header.applied_index

    def done() -> bool:
        st = c.status(node.index)
        return (
            st is not None and st.applied_index >= target and st.leader_id == c.agreed_leader(1.0)
        )

    _by(deadline, done, f"{node.node_id} to follow the agreed leader and apply index {target}")


def remove(c: ProxiedCluster, nid: str, within_s: float = STEP_S) -> None:
    """Remove member ``nid`` (handing leadership away first if it leads), until the
    leader's committed configuration lacks it; then it must exit by itself."""
    deadline = time.monotonic() + within_s
    last: Exception | None = None
    with admin(c) as cl:
        while True:
            view = settled(c, deadline)
            if nid not in ids(view):
                break
            try:
                if view.header.node_id == nid:
                    cl.transfer_leader()  # the most caught-up other member
                else:
                    cl.remove_node(nid)
                continue  # read the outcome back
            except errors.NotFound:
                continue  # a retry after a hidden commit: read back
            except _AGAIN as e:
                last = e
            _pace(deadline, f"removing {nid}", last)
    c.retire(nid)
    node = c.node(nid)
    how = "it was down"
    if node is not None and node.proc is not None:
        how = "it exited by itself"
        try:
            wait_until(lambda: not node.running, EXIT_S, f"{nid} to exit")
        except TimeoutError:
            c.kill(node.index)
            raise MembershipError(
                f"{nid} still running {EXIT_S:.0f} s after its removal committed"
            ) from None
    say(f"{nid} removed ({len(c.members)} members left); {how}")


def transfer(c: ProxiedCluster, to: str = "", within_s: float = STEP_S) -> str:
    """Hand leadership to ``to`` (or, with "", to the most caught-up other member);
    then a majority of members must agree on the new leader (the runner's recovery
    check asks all of them after the heal). Returns it."""
    deadline = time.monotonic() + within_s
    before = _by(deadline, lambda: c.agreed_leader(1.0), "an agreed leader")
    last: Exception | None = None
    with admin(c) as cl:
        while True:
            try:
                new = cl.transfer_leader(to).leader_id
                break
            except _AGAIN as e:
                last = e
            _pace(deadline, f"transferring leadership to {to or 'any'}", last)
    if to and new != to:
        raise MembershipError(f"transfer to {to} answered with leader {new}")
    if not to and new == before and last is None:  # (a retry may hand it back)
        raise MembershipError(f"transfer from {before} (no target) left it the leader")
    _by(deadline, lambda: c.agreed_leader(1.0) == new, f"members to agree {new} leads")
    say(f"leadership {before} -> {new} ({'to ' + to if to else 'no target'})")
    return new


class Background:
    """One attempt of an action on its own thread (its client's timeout bounds it), so
    that a fault can land while it is in flight. Its outcome does not matter: the
    step that follows reads the configuration back."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except errors.CoordError as e:
            self.error = e

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise MembershipError(f"a membership request still running after {timeout} s")


def propose_add(c: ProxiedCluster, node: NodeProc) -> Background:
    def go() -> None:
        with admin(c, timeout_s=3.0) as cl:
            cl.add_node(node.node_id, node.raft, c.advertised[node.node_id], learner=True)

    return Background(go)


def propose_remove(c: ProxiedCluster, nid: str) -> Background:
    def go() -> None:
        with admin(c, timeout_s=3.0) as cl:
            cl.remove_node(nid)

    return Background(go)


# -- deadlines -------------------------------------------------------------------


def _by(deadline: float, pred: Callable[[], Any], what: str) -> Any:
    try:
        return wait_until(pred, max(0.0, deadline - time.monotonic()), what)
    except TimeoutError as e:
        raise MembershipError(str(e)) from None


def _pace(deadline: float, what: str, last: Exception | None) -> None:
    if time.monotonic() >= deadline:
        raise MembershipError(f"{what}: not done in time (last error: {last})")
    time.sleep(PACE_S)  # retry pacing
