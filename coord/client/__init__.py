"""coord's client library. Imports coord.v1 and coord.errors only, never server code.

The way in is the :class:`Client`: ``client.session(ttl_s)``, ``client.group(name)``
(create, get, masters, observe, watch, member, campaign, balancer) and
``client.watch(...)``. Sessions and members do no I/O when constructed: ``start()``
them or use them as context managers. ``create_group``, ``masters``, ``observe`` and
``watch`` (functions taking the client) are deprecated and warn.
"""

from __future__ import annotations

from coord.client.balancer import Balancer
from coord.client.client import Client, StoppableClient, new_request_id, parse_endpoints
from coord.client.election import (
    FencedResource,
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
from coord.client.group import Group, pause_all, resume_all
from coord.client.session import Session, SessionState

__all__ = [
    "Balancer",
    "Client",
    "FencedResource",
    "Group",
    "Leadership",
    "Member",
    "Session",
    "SessionState",
    "StoppableClient",
    "create_group",
    "grpc_check",
    "http_check",
    "masters",
    "new_request_id",
    "observe",
    "parse_endpoints",
    "pause_all",
    "resume_all",
    "tcp_check",
    "watch",
]
