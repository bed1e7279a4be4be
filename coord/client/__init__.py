"""coord's client library. Imports coord.v1 and coord.errors only, never server code."""

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
from coord.client.session import Session, SessionState

__all__ = [
    "Balancer",
    "Client",
    "FencedResource",
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
    "tcp_check",
    "watch",
]
