"""A node's security wiring: server TLS credentials, the guard, credentials for peers.

Nodes call each other's APIs for a few reads (is there history? was I removed?).
They authenticate with an internal token derived from the cluster secret (every
node has it; it maps to the ``read`` role only), and verify peers' certificates
with ``tls_ca``.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl

import grpc

from coord import errors
from coord.client.credentials import Credentials
from coord.config import NodeConfig
from coord.server.security.auth import ANONYMOUS, READ, Authenticator, Identity, hash_token
from coord.server.security.guard import Guard


def internal_token(cfg: NodeConfig) -> str:
    """The token nodes present to each other ("" without a cluster secret)."""
    if not cfg.cluster_secret:
        return ""
    return hmac.new(
        cfg.cluster_secret.encode(), b"coord internal api v1", hashlib.sha256
    ).hexdigest()


def peer_credentials(cfg: NodeConfig) -> Credentials:
    mutual = cfg.tls_client_auth == "require"
    return Credentials(
        token=internal_token(cfg),
        ca_file=cfg.tls_ca if cfg.tls_cert else "",
        cert_file=cfg.tls_cert if mutual else "",
        key_file=cfg.tls_key if mutual else "",
    )


def build_guard(cfg: NodeConfig, on_reject: object = None) -> Guard:
    tokens: dict[str, Identity] = {}
    certs: dict[str, Identity] = {}
    if cfg.auth_tokens_file:
        auth = Authenticator.from_file(cfg.auth_tokens_file)
        tokens, certs = auth.tokens, auth.certs
    internal = internal_token(cfg)
    if internal:
        tokens[hash_token(internal)] = Identity("coord-node", READ, ())
    if cfg.tls_client_auth == "require":
        # Nodes present their own certificate (CN = node id) to each other's APIs.
        for peer in cfg.peers:
            certs.setdefault(peer.id, Identity("coord-node", READ, ()))
    authenticator = Authenticator(tokens, certs, ANONYMOUS if cfg.anonymous_allowed else None)
    return Guard(
        authenticator,
        rate_per_s=cfg.rate_limit_per_s,
        max_watch_streams=cfg.max_watch_streams,
        on_reject=on_reject,  # type: ignore[arg-type]
    )


def server_credentials(cfg: NodeConfig) -> grpc.ServerCredentials | None:
    if not cfg.tls_cert:
        return None
    try:
        with open(cfg.tls_cert, "rb") as f:
            cert = f.read()
        with open(cfg.tls_key, "rb") as f:
            key = f.read()
        ca = None
        if cfg.tls_ca:
            with open(cfg.tls_ca, "rb") as f:
                ca = f.read()
    except OSError as e:
        raise errors.InvalidArgument(f"cannot read a TLS file: {e}") from e
    require = cfg.tls_client_auth == "require"
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca if require else None, require_client_auth=require
    )


def http_ssl_context(cfg: NodeConfig) -> ssl.SSLContext | None:
    """HTTPS for the HTTP port with the API's certificate, whenever the API has one (a
    bearer token sent to /metrics or the status page must not cross in clear either)."""
    if not cfg.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        if cfg.tls_client_auth == "require":
            # Optional at the handshake (probes carry no certificate); a certificate
            # identity then stands for a token, as on the API.
            ctx.load_verify_locations(cfg.tls_ca)
            ctx.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as e:
        raise errors.InvalidArgument(f"cannot load the TLS files for HTTP: {e}") from e
    return ctx
