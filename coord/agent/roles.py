"""Role endpoints for load balancers, as Patroni's REST API serves them.

======================  ==============================================================
``/master``             200 only while this member is master: it holds the slot, its
(``/primary``)          ``pre_promote`` hook succeeded, and the client library says the
                        leadership is valid (``Leadership.is_master()``, asked on every
                        request); 503 otherwise
``/standby``            200 while this member is registered, its session valid, and it
(``/replica``)          holds no slot (it is campaigning, or ``nofailover``); 503 otherwise
``/health``             200 while the session is valid; 503 otherwise
``/role``               200, JSON: role, group, member, token, slot, validity left (ms),
                        the position reported (null: none, or no ``position:``)
======================  ==============================================================

GET, HEAD and OPTIONS are answered alike (HAProxy's ``option httpchk`` sends OPTIONS
unless told otherwise); every answer carries the same small JSON body. A load balancer
that checks ``/master`` (deploy/haproxy/haproxy.cfg) routes to the master with no code of
its own; between two of its checks it can lag by its check interval, which is why a
protected resource checks fencing tokens too (coord.client.fencing).
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class RoleView:
    """The agent's role, read at the moment of a request."""

    role: str  # master | promoting | demoting | standby | starting | stopped
    group: str
    member: str
    master: bool
    standby: bool
    healthy: bool
    token: int = 0
    slot: int | None = None
    validity_ms: int = 0
    session: str = ""  # the session's state: connected, suspended, lost, ...
    position: int | None = None  # the position the cluster holds (position:, position_file:)


_ROUTES: dict[str, Callable[[RoleView], bool]] = {
    "/master": lambda v: v.master,
    "/primary": lambda v: v.master,
    "/standby": lambda v: v.standby,
    "/replica": lambda v: v.standby,
    "/health": lambda v: v.healthy,
    "/role": lambda v: True,
}


class RoleServer:
    """The endpoints on ``(host, port)`` (port 0: any free one), on threads of their own."""

    def __init__(self, host: str, port: int, view: Callable[[], RoleView]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            server_version = "coord-agent"

            def _answer(self, body_too: bool = True) -> None:
                ok_for = _ROUTES.get(self.path.split("?", 1)[0].rstrip("/") or "/")
                if ok_for is None:
                    status, body = 404, b'{"error": "not found"}\n'
                else:
                    v = view()
                    status = 200 if ok_for(v) else 503
                    body = (json.dumps(asdict(v)) + "\n").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if body_too:
                    self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer()

            def do_OPTIONS(self) -> None:
                self._answer()

            def do_HEAD(self) -> None:
                self._answer(body_too=False)

            def log_message(self, *args: object) -> None:
                pass  # a load balancer checks every few hundred ms: no line per check

        server_class = _Server6 if ":" in host else http.server.ThreadingHTTPServer
        self.httpd = server_class((host, port), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
            name="role-endpoints",
        )  # fmt: skip

    @property
    def address(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> RoleServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Server6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
