"""The node's HTTP port: /metrics, /healthz, /readyz, and the status page's data.

- ``/metrics``: Prometheus text format (coord.server.http.metrics).
- ``/healthz``: 200 while the process serves and its Raft thread ticks.
- ``/readyz``: 200 when the node can serve linearizable requests soon: it knows
  a leader it can reach (or is it), it is not catching up, it has applied what
  it knows to be committed, and it was not removed. 503 otherwise, with why.
- ``/api/status``: JSON for the status page (nodes, leader, groups, members,
  recent events, availability per group).

Who may read it: like the API. Where the API requires credentials, everything but
``/healthz``, ``/readyz`` and the status page's static files (no data in them) requires
``Authorization: Bearer <token>`` or, with ``--tls-client-auth require``, a client
certificate mapped in the tokens file (any role); failed attempts are slowed per client
host as on the API. With a TLS certificate (``--tls-cert``) the port serves HTTPS with it.

Runs on the node's asyncio loop (aiohttp), beside the gRPC server.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from google.protobuf.json_format import MessageToDict
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from coord import errors
from coord.raft.node import ROLE_LEADER, RaftNode
from coord.server.http.metrics import WINDOWS, NodeMetrics
from coord.server.security.guard import Guard
from coord.state import ledger, spread

# A node this far behind what it knows to be committed is not ready.
READY_MAX_LAG = 1000
# A Raft thread silent for this long is not healthy.
TICK_STALL_S = 5.0
RECENT_EVENTS = 50
# Paths anyone may GET: the probes (and what ``extra_routes`` declares open).
PROBES = frozenset({"/healthz", "/readyz"})


class HttpServer:
    def __init__(
        self,
        raft: RaftNode,
        metrics: NodeMetrics,
        address: str,
        extra_routes: Callable[[web.Application], frozenset[str]] | None = None,
        guard: Guard | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.raft = raft
        self.metrics = metrics
        self.address = address
        self.guard = guard
        self.ssl_context = ssl_context
        self.app = web.Application(middlewares=[self._authenticate] if guard else [])
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/api/status", self._status)
        self.open_paths = PROBES
        if extra_routes is not None:
            self.open_paths |= extra_routes(self.app)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        host, _, port = self.address.rpartition(":")
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            host.strip("[]"),
            int(port),
            reuse_address=True,
            ssl_context=self.ssl_context,
        )
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- handlers ----------------------------------------------------------------

    @web.middleware
    async def _authenticate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in self.open_paths or self.guard is None:
            return await handler(request)
        try:
            self.guard.identify_http(
                request.headers.get("Authorization", ""), _cert_cn(request), _host(request)
            )
        except errors.ResourceExhausted as e:
            return web.json_response({"error": e.message}, status=429)
        except errors.Unauthenticated as e:
            return web.json_response(
                {"error": f"{e.message} (HTTP: the header 'Authorization: Bearer <token>')"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="coord"'},
            )
        return await handler(request)

    async def _metrics(self, request: web.Request) -> web.Response:
        self.metrics.flush_leaderless()
        loop = asyncio.get_running_loop()
        # The state collector takes the apply lock: not on the loop thread.
        body = await loop.run_in_executor(None, generate_latest, self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        stalled = time.monotonic() - self.raft.last_tick
        if stalled > TICK_STALL_S:
            return web.json_response(
                {"ok": False, "why": f"the Raft thread has not ticked for {stalled:.1f} s"},
                status=503,
            )
        return web.json_response({"ok": True})

    async def _readyz(self, request: web.Request) -> web.Response:
        why = not_ready_reason(self.raft)
        if why:
            return web.json_response({"ready": False, "why": why}, status=503)
        return web.json_response({"ready": True, "leader": self.raft.view.leader_id})

    async def _status(self, request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(None, status_snapshot, self.raft)
        return web.json_response(body)


def _host(request: web.Request) -> str:
    return request.remote or "unknown"


def _cert_cn(request: web.Request) -> str:
    """The common name of the client's verified certificate ("" without one)."""
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def not_ready_reason(raft: RaftNode) -> str:
    view = raft.view
    me = raft.cfg.node_id
    if view.removed:
        return "this node was removed from the cluster"
    if view.catching_up:
        return "catching up with the leader's log (no vote yet)"
    if not view.leader_id:
        return "no leader"
    if view.leader_id != me and view.leader_id not in view.connected:
        return f"no link to the leader {view.leader_id}"
    if view.commit_index - view.applied_index > READY_MAX_LAG:
        return f"applying: {view.commit_index - view.applied_index} committed entries behind"
    return ""


def _dict(msg: Any) -> dict[str, Any]:
    out: dict[str, Any] = MessageToDict(msg, preserving_proto_field_name=True)
    return out


def status_snapshot(raft: RaftNode) -> dict[str, Any]:
    """Everything the status page shows, as JSON-able data (any thread)."""
    view = raft.view
    now_ms = int(time.time() * 1000)
    nodes = [
        {
            "id": nid,
            "api": addr.api,
            "raft": addr.raft,
            "leader": nid == view.leader_id,
            "connected": nid == raft.cfg.node_id or nid in view.connected,
            "self": nid == raft.cfg.node_id,
        }
        for nid, addr in sorted(raft.members().items())
    ]
    body: dict[str, Any] = raft.read(lambda state: _state_snapshot(state, now_ms))
    body.update(
        node=raft.cfg.node_id,
        leader=view.leader_id,
        term=view.term,
        role="leader" if view.role == ROLE_LEADER else "follower",
        nodes=nodes,
        now_ms=now_ms,
    )
    return body


def _state_snapshot(state: Any, now_ms: int) -> dict[str, Any]:
    """The replicated part (under the node's lock): groups, members, recent events."""
    groups = []
    per_value = spread.all_counts(state.groups.groups)  # each spread family counted once
    for name, g in sorted(state.groups.groups.items()):
        book = state.ledger.groups.get(name)
        avail = _dict(ledger.report(book, now_ms, WINDOWS.values())) if book is not None else {}
        pause = _dict(g.pause) if g.pause is not None else None
        groups.append(
            {"name": name, "slots": g.policy.slots, "members": _members(g), "availability": avail,
             "paused": pause, "breaker": _breaker(g), "spread": _spread(g, per_value.get(name)),
             "scheduled": [_dict(g.scheduled[i]) for i in sorted(g.scheduled)]}
        )  # fmt: skip
    events = [_dict(e) for e in state.events.last(RECENT_EVENTS)]
    return {"revision": state.revision, "groups": groups, "events": events}


def _breaker(g: Any) -> dict[str, Any] | None:
    """The failover breaker of a group (None: off): its rule, whether it is open, and
    the failovers it counts."""
    p = g.policy
    if not p.breaker_failovers:
        return None
    return {
        "failovers": p.breaker_failovers,
        "window_ms": p.breaker_window_ms,
        "open": bool(g.pause is not None and g.pause.breaker),
        "counted": len(g.breaker_failovers),
    }


def _spread(g: Any, per: dict[str, int] | None) -> dict[str, Any] | None:
    """A group's spread rule (None: none): its masters per tag value over its family
    (``per``: coord.state.spread's count) and how many are beyond the limit."""
    p = g.policy
    if per is None:
        return None
    return {
        "rule": spread.describe(p),
        "tag": p.spread_tag,
        "max": p.spread_max,
        "family": p.spread_family,
        "masters": [{"value": v, "masters": per[v]} for v in sorted(per)],
        "excess": spread.excess(per, p.spread_max),
    }


def _members(g: Any) -> list[dict[str, Any]]:
    """A group's members, best first (priority, then id), with their holding if any."""
    masters = {
        h.member_id: {"slot": s, "token": h.token, "revoked": h.revoked}
        for s, h in sorted(g.holdings.items())
    }
    best = max((m.position for m in g.members.values() if m.HasField("position")), default=0)
    return [
        {
            "id": m.id,
            "address": m.address,
            "priority": m.priority,
            "healthy": m.healthy,
            "health_detail": m.health_detail,
            # The reported position and how far behind the group's best (None: none).
            "position": m.position if m.HasField("position") else None,
            "lag": best - m.position if m.HasField("position") else None,
            "role": "master" if m.id in masters else "standby",
            **({"master": masters[m.id]} if m.id in masters else {}),
        }
        for m in sorted(g.members.values(), key=lambda m: (-m.priority, m.id))
    ]
