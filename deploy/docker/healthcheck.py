#!/usr/bin/env python3
"""Container health check: does this node's gRPC health service (grpc.health.v1) say SERVING?

The image installs this as ``coord-healthcheck``; its HEALTHCHECK (and the compose
files' ``healthcheck``) run it inside the container. ``grpc_health_probe`` is not in
the image, and a ``python -c`` one-liner could not follow the node's TLS settings, so
this reads the node's own configuration the way ``coord serve`` does (the YAML file
named by COORD_CONFIG, then the COORD_* variables) and cannot drift from it:

- it dials this node's API: its ``listen_api`` (127.0.0.1 when that is a wildcard
  address such as 0.0.0.0), else its own entry in ``peers``;
- with TLS when the node serves TLS: verified against ``tls_ca``, checking the name
  the node's certificate is issued for (the host of its API address in ``peers``),
  and presenting the node's own certificate when ``tls_client_auth`` is ``require``;
- no token: the health service is not behind auth.

SERVING means the node knows a leader (and was not removed from the cluster): exit 0.
NOT_SERVING, no answer within HEALTHCHECK_TIMEOUT_S (3 s) or a bad configuration:
exit 1, with the reason on stdout (``docker inspect`` shows it).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coord import config
from coord.errors import CoordError

_WILDCARDS = ("", "0.0.0.0", "::", "*")


def node_settings(env: dict[str, str]) -> dict[str, Any]:
    """The node's settings, merged as ``coord serve`` merges them (YAML < COORD_*)."""
    merged: dict[str, Any] = {}
    path = env.get("COORD_CONFIG", "")
    if path:
        merged.update(config.load_yaml(path))
    merged.update(config.from_env(env))
    return merged


def target(settings: dict[str, Any]) -> tuple[str, str]:
    """(address to dial, name to check in the node's certificate)."""
    node_id = settings.get("node_id", "")
    me = next((p for p in settings.get("peers") or () if p.id == node_id), None)
    if me is None:
        raise CoordError(f"node id {node_id!r} is not among the configured peers")
    bind = str(settings.get("listen_api") or me.api_address)
    host, _, port = bind.rpartition(":")
    dial = f"127.0.0.1:{port}" if host.strip("[]") in _WILDCARDS else bind
    return dial, me.api_address.rpartition(":")[0].strip("[]")


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def channel(settings: dict[str, Any], dial: str, name: str) -> grpc.Channel:
    if not settings.get("tls_cert"):
        return grpc.insecure_channel(dial)
    ca = str(settings.get("tls_ca") or "")
    mutual = settings.get("tls_client_auth") == "require"
    creds = grpc.ssl_channel_credentials(
        root_certificates=_read(ca) if ca else None,  # None: the system's roots
        private_key=_read(str(settings["tls_key"])) if mutual else None,
        certificate_chain=_read(str(settings["tls_cert"])) if mutual else None,
    )
    return grpc.secure_channel(dial, creds, options=[("grpc.ssl_target_name_override", name)])


def check(env: dict[str, str]) -> tuple[bool, str]:
    """(serving?, what to print)."""
    timeout = float(env.get("HEALTHCHECK_TIMEOUT_S", "3"))
    try:
        settings = node_settings(env)
        dial, name = target(settings)
        ch = channel(settings, dial, name)
    except (CoordError, OSError, ValueError) as e:
        return False, f"cannot check: {getattr(e, 'message', None) or e}"
    with ch:
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError as e:
            return False, f"{dial}: no health answer ({e.code().name}: {e.details()})"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    if resp.status == health_pb2.HealthCheckResponse.SERVING:
        return True, f"{dial}: {status}"
    return False, f"{dial}: {status} (no known leader, or removed from the cluster)"


def main() -> int:
    ok, message = check(dict(os.environ))
    print(message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
