"""How a client proves who it is and checks who it talks to: TLS and a bearer token.

``Credentials(ca_file=...)`` verifies the server's certificate against that CA;
with ``cert_file``/``key_file`` the client also presents a certificate (mutual
TLS); ``token`` is sent as ``authorization: Bearer <token>`` on every call.
``server_name`` overrides the name checked in the server's certificate (when
connecting by IP to a certificate issued for a host name).

A token is never sent in plaintext beyond loopback: a server that takes tokens off
loopback must serve TLS (coord serve refuses to start otherwise), so a plaintext
endpoint there is a misconfiguration or an impostor, and the token would cross the
network readable by anyone on the path.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from coord import errors


@dataclass(frozen=True)
class Credentials:
    token: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""

    @property
    def tls(self) -> bool:
        return bool(self.ca_file or self.cert_file)

    def _ssl(self) -> grpc.ChannelCredentials:
        if bool(self.cert_file) != bool(self.key_file):
            raise errors.InvalidArgument("a client certificate needs both its cert and key files")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file) if self.ca_file else None,
            private_key=_read(self.key_file) if self.key_file else None,
            certificate_chain=_read(self.cert_file) if self.cert_file else None,
        )

    def _options(self, options: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
        out = list(options)
        if self.server_name:
            out.append(("grpc.ssl_target_name_override", self.server_name))
        return out

    def check_endpoint(self, endpoint: str) -> None:
        """Raise InvalidArgument if a call to ``endpoint`` would expose the token."""
        if not self.token or self.tls:
            return
        from coord.config import is_loopback  # not at the top: it imports yaml (start-up time)

        if not is_loopback(endpoint):
            raise errors.InvalidArgument(
                f"refusing to send a bearer token in plaintext to {endpoint}: give the "
                "cluster's CA (coordctl --cacert, Credentials(ca_file=...)) so the token "
                "travels over TLS; plaintext tokens are allowed only on loopback"
            )

    def channel(self, endpoint: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        """A channel to ``endpoint`` (TLS if configured) that sends the token, if any."""
        self.check_endpoint(endpoint)
        opts = self._options(options)
        ch = (
            grpc.secure_channel(endpoint, self._ssl(), options=opts)
            if self.tls
            else grpc.insecure_channel(endpoint, options=opts)
        )
        if self.token:
            ch = grpc.intercept_channel(ch, _TokenInterceptor(self.token))
        return ch

    def aio_channel(
        self, endpoint: str, options: Sequence[tuple[str, Any]] = ()
    ) -> grpc.aio.Channel:
        """The asyncio flavour (used by nodes calling each other's APIs)."""
        self.check_endpoint(endpoint)
        opts = self._options(options)
        interceptors = [_AioTokenInterceptor(self.token)] if self.token else None
        if self.tls:
            return grpc.aio.secure_channel(
                endpoint, self._ssl(), options=opts, interceptors=interceptors
            )
        return grpc.aio.insecure_channel(endpoint, options=opts, interceptors=interceptors)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise errors.InvalidArgument(f"cannot read {path}: {e.strerror}") from e


class _Details(
    collections.namedtuple(
        "_Details",
        ["method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"],
    ),
    grpc.ClientCallDetails,
):
    pass


class _TokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, token: str) -> None:
        self._md = ("authorization", f"Bearer {token}")

    def _details(self, d: Any) -> Any:
        md = [*(d.metadata or ()), self._md]
        return _Details(
            d.method, d.timeout, md, d.credentials,
            getattr(d, "wait_for_ready", None), getattr(d, "compression", None),
        )  # fmt: skip

    def intercept_unary_unary(self, cont: Any, details: Any, request: Any) -> Any:
        return cont(self._details(details), request)

    def intercept_unary_stream(self, cont: Any, details: Any, request: Any) -> Any:
        return cont(self._details(details), request)

    def intercept_stream_unary(self, cont: Any, details: Any, requests: Any) -> Any:
        return cont(self._details(details), requests)

    def intercept_stream_stream(self, cont: Any, details: Any, requests: Any) -> Any:
        return cont(self._details(details), requests)


class _AioTokenInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._md = ("authorization", f"Bearer {token}")

    async def intercept_unary_unary(self, cont: Any, details: Any, request: Any) -> Any:
        md = grpc.aio.Metadata(*(details.metadata or ()), self._md)
        new = grpc.aio.ClientCallDetails(
            details.method, details.timeout, md, details.credentials, details.wait_for_ready
        )
        return await cont(new, request)
