"""Wiring for one node: data dir checks, Raft, the gRPC server, health, shutdown.

Start-up decides whether this node may vote (docs/design.md, "Membership and wiped
nodes": never a blank node that votes): a node with Raft history votes; a blank node
joins as a catching-up node when told ``existing``, or when told ``new`` but a peer
already reports a cluster with history (a wiped node restarted with its bootstrap
flags, or a node that was simply late to the bootstrap).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from coord import errors
from coord.config import NodeConfig
from coord.errors import Unavailable
from coord.raft import datadir
from coord.raft.gate import CATCH_UP, NEW_BLANK, VOTER
from coord.raft.node import ROLE_LEADER, RaftNode, View
from coord.server.api.availability import AvailabilityService
from coord.server.api.cluster import ClusterService
from coord.server.api.context import NodeContext
from coord.server.api.groups import GroupsService
from coord.server.api.handlers import add_service
from coord.server.api.kv import KVService
from coord.server.api.maintenance import MaintenanceService
from coord.server.api.sessions import SessionsService
from coord.server.api.watch import WatchService
from coord.server.duties.backups import BackupScheduler
from coord.server.duties.consistency import ConsistencyChecker
from coord.server.duties.leases import LeaseKeeper
from coord.server.duties.member_checks import MemberChecker
from coord.server.duties.probes import probe
from coord.server.duties.removal import watch_for_removal
from coord.server.duties.webhook import WebhookNotifier
from coord.server.http.metrics import NodeMetrics
from coord.server.http.server import HttpServer
from coord.server.http.status_page import add_routes as add_status_page
from coord.server.runtime.notify import StateNotifier
from coord.server.security.wiring import (
    build_guard,
    http_ssl_context,
    peer_credentials,
    server_credentials,
)
from coord.state.machine import StateMachine
from coord.v1 import (
    availability_pb2,
    cluster_pb2,
    cluster_pb2_grpc,
    election_pb2,
    kv_pb2,
    maintenance_pb2,
)

logger = logging.getLogger(__name__)


def _grpc_server() -> grpc.aio.Server:
    return grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            # Clients ping every second to notice a hung node: allow it.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 500),
            ("grpc.http2.max_ping_strikes", 0),
        ]
    )


MAX_MESSAGE_BYTES = 4 * 1024 * 1024
SERVICES = (
    kv_pb2.DESCRIPTOR.services_by_name["KV"].full_name,
    cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name,
    maintenance_pb2.DESCRIPTOR.services_by_name["Maintenance"].full_name,
    availability_pb2.DESCRIPTOR.services_by_name["Availability"].full_name,
    *(s.full_name for s in election_pb2.DESCRIPTOR.services_by_name.values()),
)


def probe_peers_for_history(cfg: NodeConfig, timeout_s: float = 0.7) -> str | None:
    """Ask the other members' APIs whether the cluster already has Raft history.

    Returns a description of the first peer that does (same cluster id, term > 0).
    """
    others = [p for p in cfg.peers if p.id != cfg.node_id]

    def ask(peer_id: str, address: str) -> str | None:
        try:
            with peer_credentials(cfg).channel(address) as ch:
                st = cluster_pb2_grpc.ClusterStub(ch).Status(
                    cluster_pb2.StatusRequest(), timeout=timeout_s
                )
        except grpc.RpcError:
            return None
        if st.header.cluster_id == cfg.cluster_id and (st.revision > 0 or st.term > 0):
            return f"peer {peer_id} at term {st.term}, applied index {st.applied_index}"
        return None

    if not others:
        return None
    with ThreadPoolExecutor(len(others)) as pool:
        answers = list(pool.map(lambda p: ask(p.id, p.api_address), others))
    return next((a for a in answers if a), None)


def decide_voting(cfg: NodeConfig, blank: bool) -> str:
    """The voting mode this node starts in (see coord.raft.gate)."""
    if not blank:
        return VOTER
    if cfg.initial_cluster_state == "existing":
        logger.info("blank data dir joining an existing cluster: no vote until caught up")
        return CATCH_UP
    seen = probe_peers_for_history(cfg)
    if seen:
        logger.warning(
            "data dir %s is blank but cluster %s already has history (%s): catching up, "
            "no vote until this node holds the leader's log",
            cfg.data_dir,
            cfg.cluster_id,
            seen,
        )
        return CATCH_UP
    logger.info(
        "bootstrapping new cluster %s with %s (blank: votes only for blank candidates until "
        "it holds a leader's log)",
        cfg.cluster_id,
        [p.id for p in cfg.peers],
    )
    return NEW_BLANK


class NodeServer:
    """A running node: Raft member plus gRPC API."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        blank = datadir.prepare(cfg)
        self.raft = RaftNode(cfg, StateMachine(), voting=decide_voting(cfg, blank))
        self.ctx = NodeContext(cfg, self.raft, on_reject=self._count_rejected)
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self.keeper: LeaseKeeper | None = None
        self.checker: MemberChecker | None = None
        self.consistency: ConsistencyChecker | None = None
        self.backups: BackupScheduler | None = None
        self.metrics = NodeMetrics(self.raft)
        self.guard = build_guard(cfg, on_reject=self._count_rejected)
        self.http: HttpServer | None = None
        self.webhook: WebhookNotifier | None = None
        # Set once this node's removal from the cluster committed: it then exits.
        self.removed = asyncio.Event()

    def _count_rejected(self, why: str) -> None:
        self.metrics.rejected.labels(why).inc()

    async def start(self) -> None:
        """Start the leader's duties, the gRPC API, the HTTP port, and the watches on
        this node's own role and membership."""
        loop = asyncio.get_running_loop()
        self._start_duties(loop)
        server = _grpc_server()
        self._add_services(server)
        await self._serve_api(server)
        if self.cfg.backup_dir:
            self.backups = BackupScheduler(self.raft, self.cfg)
            self.backups.start()
        if self.cfg.notify_webhook:
            self.webhook = WebhookNotifier(self.raft, self.cfg.notify_webhook, self.metrics)
            await self.webhook.start()
        if self.cfg.listen_http:
            await self._serve_http()

        def on_change(view: View) -> None:  # tick thread
            loop.call_soon_threadsafe(self._set_health, view)

        self.raft.add_listener(on_change)
        self._set_health(self.raft.view)
        watch = asyncio.ensure_future(
            watch_for_removal(self.raft, self.cfg.cluster_id, peer_credentials(self.cfg))
        )
        self._tasks.add(watch)
        watch.add_done_callback(self._tasks.discard)
        logger.info(
            "node %s serving the API on %s, raft on %s (cluster %s)",
            self.cfg.node_id,
            self.cfg.bind_api,
            self.cfg.bind_raft,
            self.cfg.cluster_id,
        )

    def _start_duties(self, loop: asyncio.AbstractEventLoop) -> None:
        """What the leader runs on its clock (each acts only while this node leads)."""
        self.notifier = StateNotifier(loop)
        self.raft.add_apply_listener(self.notifier.applied)
        self.keeper = LeaseKeeper(self.raft)
        self.keeper.start()
        self.checker = MemberChecker(self.raft, self.cfg.health_check_concurrency)
        self.checker.start()
        self.consistency = ConsistencyChecker(self.ctx, self.metrics.record_consistency)
        self.consistency.start()

    def _add_services(self, server: grpc.aio.Server) -> None:
        """Every coord service behind the handler wrapper, plus gRPC health and reflection.
        Servicers get the duties as ports (coord.server.api.leader_ports)."""
        assert self.notifier and self.keeper and self.checker and self.consistency
        services = election_pb2.DESCRIPTOR.services_by_name
        for servicer, descriptor in (
            (SessionsService(self.ctx, self.notifier, self.keeper), services["Sessions"]),
            (
                GroupsService(self.ctx, self.notifier, self.keeper, self.checker, probe),
                services["Groups"],
            ),
            (WatchService(self.ctx, self.notifier), services["Watch"]),
            (
                KVService(self.ctx, self.guard, self.metrics.observe_rpc),
                kv_pb2.DESCRIPTOR.services_by_name["KV"],
            ),
            (ClusterService(self.ctx), cluster_pb2.DESCRIPTOR.services_by_name["Cluster"]),
            (
                MaintenanceService(self.ctx, self.consistency.check),
                maintenance_pb2.DESCRIPTOR.services_by_name["Maintenance"],
            ),
            (
                AvailabilityService(self.ctx),
                availability_pb2.DESCRIPTOR.services_by_name["Availability"],
            ),
        ):
            add_service(
                server, servicer, descriptor, self.ctx.leader_hint, self.metrics.observe_rpc,
                self.guard,
            )  # fmt: skip
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                *SERVICES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )

    async def _serve_api(self, server: grpc.aio.Server) -> None:
        try:
            creds = server_credentials(self.cfg)
            if creds is None:
                server.add_insecure_port(self.cfg.bind_api)
            else:
                server.add_secure_port(self.cfg.bind_api, creds)
        except RuntimeError as e:
            raise Unavailable(
                f"cannot listen on {self.cfg.bind_api} for the client API ({e}): is another "
                "process using the port?"
            ) from e
        await server.start()
        self.server = server

    async def _serve_http(self) -> None:
        self.http = HttpServer(
            self.raft,
            self.metrics,
            self.cfg.listen_http,
            extra_routes=lambda app: add_status_page(app, self.raft),
            guard=self.guard,
            ssl_context=http_ssl_context(self.cfg),
        )
        try:
            await self.http.start()
        except OSError as e:
            raise Unavailable(
                f"cannot listen on {self.cfg.listen_http} for HTTP ({e.strerror}): is "
                "another process using the port?"
            ) from e

    async def _hand_over_leadership(self, timeout_s: float = 2.0) -> None:
        """A leader that stops hands leadership to the most caught-up member first, so
        that the cluster does not wait out an election timeout (like etcd on SIGTERM)."""
        view = self.raft.view
        if view.role != ROLE_LEADER or not view.connected or view.removed:
            return
        try:
            new = await asyncio.wait_for(
                asyncio.wrap_future(self.raft.transfer_leadership(None, timeout_s)), timeout_s
            )
            logger.info("stopping: handed leadership to %s", new)
        except (errors.CoordError, TimeoutError) as e:
            logger.warning("stopping: could not hand leadership over (%s)", e)

    def _set_health(self, view: View) -> None:
        if view.removed:
            self.removed.set()
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if view.leader_id and not view.removed
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICES):
            task = asyncio.ensure_future(self.health.set(name, status))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        await self._hand_over_leadership()
        for task in list(self._tasks):
            task.cancel()
        if self.keeper is not None:
            await self.keeper.stop()
        if self.checker is not None:
            await self.checker.stop()
        if self.consistency is not None:
            await self.consistency.stop()
        if self.backups is not None:
            await self.backups.stop()
        if self.webhook is not None:
            await self.webhook.stop()
        if self.http is not None:
            await self.http.stop()
        if self.server is not None:
            await self.server.stop(grace=1.0)
        await asyncio.get_running_loop().run_in_executor(None, self.raft.close)


async def _run(cfg: NodeConfig) -> None:
    node = NodeServer(cfg)
    await node.start()
    freeze_startup_objects()  # the process's, not an in-process server's (tests)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(node.removed.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    if node.removed.is_set():
        logger.warning("node %s was removed from the cluster: exiting", cfg.node_id)
    logger.info("stopping node %s", cfg.node_id)
    await node.stop()


def freeze_startup_objects() -> None:
    """Move what start-up built (modules, classes, functions: ~58,000 objects, most of
    what a node's cyclic collector tracks) out of its full collections. Those hold the
    GIL, and with it the Raft tick thread: under writes they came every few seconds and
    took 20-60 ms each after the dedupe table left them, 30-225 ms before."""
    gc.collect()
    gc.freeze()


def serve(cfg: NodeConfig) -> None:
    """Run a node until SIGINT/SIGTERM."""
    # Two busy threads share the GIL (asyncio/gRPC and the Raft tick thread). A
    # thread returning from a syscall waits up to the switch interval for the
    # GIL; the 5 ms default puts that wait on every hop of a write's path.
    sys.setswitchinterval(float(os.environ.get("COORD_GIL_SWITCH_S", "0.0005")))
    asyncio.run(_run(cfg))
