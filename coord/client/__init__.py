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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# The names below are imported from their module on first use (PEP 562), so that
# `from coord.client import Client` (coordctl's commands) does not import elections,
# fencing (urllib), sessions and the balancer too: start-up time (issue 18).
_HOMES = {
    "Balancer": "balancer",
    "Client": "client",
    "StoppableClient": "client",
    "new_request_id": "client",
    "parse_endpoints": "client",
    "Leadership": "election",
    "Member": "election",
    "create_group": "election",
    "grpc_check": "election",
    "http_check": "election",
    "masters": "election",
    "observe": "election",
    "tcp_check": "election",
    "watch": "election",
    "FencedAuth": "fencing",
    "FencedHTTP": "fencing",
    "FencedResource": "fencing",
    "StaticFence": "fencing",
    "fenced_channel": "fencing",
    "Group": "group",
    "pause_all": "group",
    "resume_all": "group",
    "scheduled_switchovers": "group",
    "Session": "session",
    "SessionState": "session",
}

if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        home = _HOMES.get(name)
        if home is None:
            try:  # a submodule, as `coord.client.session` worked after `import coord.client`
                return importlib.import_module(f"{__name__}.{name}")
            except ModuleNotFoundError as e:
                if e.name != f"{__name__}.{name}":
                    raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


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
