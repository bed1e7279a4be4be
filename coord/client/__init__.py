"""coord's client library. Imports coord.v1 and coord.errors only, never server code."""

from __future__ import annotations

from coord.client.client import Client, parse_endpoints
from coord.client.election import (
    FencedResource,
    Leadership,
    Member,
    create_group,
    masters,
    observe,
    watch,
)
from coord.client.session import Session, SessionState

__all__ = [
    "Client",
    "FencedResource",
    "Leadership",
    "Member",
    "Session",
    "SessionState",
    "create_group",
    "masters",
    "observe",
    "parse_endpoints",
    "watch",
]
