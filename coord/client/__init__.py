"""coord's client library. Imports coord.v1 and coord.errors only, never server code.

The way in is the :class:`Client`: ``client.session(ttl_s)``, ``client.group(name)``
(create, get, masters, observe, watch, member, campaign, balancer) and
``client.watch(...)``. Sessions and members do no I/O when constructed: ``start()``
them or use them as context managers. ``create_group``, ``masters``, ``observe`` and
``watch`` (functions taking the client) are deprecated and warn. Fenced calls
(``fenced_channel``, ``FencedHTTP``, ``FencedAuth``; ``FencedResource`` on the
resource's side) are in :mod:`coord.client.fencing`.
"""

from __future__ import annotations

from coord.client.balancer import Balancer
from coord.client.client import Client, StoppableClient, new_request_id, parse_endpoints
from coord.client.election import (
    Leadership,
    Member,
    create_group,
    grpc_check,
    http_check,
    masters,
    observe,
    tcp_check,
    watch,
)
from coord.client.fencing import (
    FencedAuth,
    FencedHTTP,
    FencedResource,
    StaticFence,
    fenced_channel,
)
from coord.client.group import Group, pause_all, resume_all, scheduled_switchovers
from coord.client.session import Session, SessionState

__all__ = [
    "Balancer",
    "Client",
    "FencedAuth",
    "FencedHTTP",
    "FencedResource",
    "Group",
    "Leadership",
    "Member",
    "Session",
    "SessionState",
    "StaticFence",
    "StoppableClient",
    "create_group",
    "fenced_channel",
    "grpc_check",
    "http_check",
    "masters",
    "new_request_id",
    "observe",
    "parse_endpoints",
    "pause_all",
    "resume_all",
    "scheduled_switchovers",
    "tcp_check",
    "watch",
]
