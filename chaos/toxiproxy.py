"""The real Toxiproxy server, driven through toxiproxy-python with timeouts and checks.

toxiproxy-python 0.1.1 calls ``requests`` without a timeout and lets every status but
400/404/409 through, so a heal that the server refused (HTTP 500) would pass silently.
:class:`Toxiproxy` patches its API module to add a timeout and raise on any non-2xx
answer, and reads the proxy back after every change to check it took effect.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
import toxiproxy.api as _api
from toxiproxy import Toxiproxy as _Client
from toxiproxy.proxy import Proxy

from coord.testing import free_ports

API_TIMEOUT_S = 5.0
ROOT = Path(__file__).resolve().parent.parent


class ToxiproxyError(RuntimeError):
    """The Toxiproxy API refused a request or did not do what it said."""


class _CheckedRequests:
    """Stands in for ``requests`` inside toxiproxy.api: a timeout on every call."""

    def __init__(self) -> None:
        self._session = requests.Session()

    def get(self, url: str, **kw: Any) -> requests.Response:
        return self._session.get(url, timeout=API_TIMEOUT_S, **kw)

    def post(self, url: str, **kw: Any) -> requests.Response:
        return self._session.post(url, timeout=API_TIMEOUT_S, **kw)

    def delete(self, url: str, **kw: Any) -> requests.Response:
        return self._session.delete(url, timeout=API_TIMEOUT_S, **kw)


_original_validate = _api.validate_response


def _validate(response: requests.Response) -> requests.Response:
    _original_validate(response)  # the library's own 400/404/409 exceptions
    if not 200 <= response.status_code < 300:
        raise ToxiproxyError(
            f"toxiproxy {response.request.method} {response.url}: HTTP "
            f"{response.status_code} {response.text[:200]}"
        )
    return response


def server_binary() -> str:
    """The pinned server scripts/bootstrap builds (or ``$TOXIPROXY_SERVER``)."""
    env = os.environ.get("TOXIPROXY_SERVER")
    if env:
        return env
    built = ROOT / ".venv" / "toxiproxy" / "bin" / "server"
    if built.exists():
        return str(built)
    found = shutil.which("toxiproxy-server")
    if found:
        return found
    raise ToxiproxyError("no Toxiproxy server: run scripts/bootstrap (it builds v2.12.0)")


class Toxiproxy:
    """A Toxiproxy server on 127.0.0.1 (started here) and checked operations on it."""

    def __init__(self, log_path: str | None = None) -> None:
        self.port = free_ports(1)[0]
        self._log = open(log_path or os.devnull, "ab")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [server_binary(), "-host", "127.0.0.1", "-port", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        _api.requests = _CheckedRequests()
        _api.validate_response = _validate
        _api.APIConsumer.host, _api.APIConsumer.port = "127.0.0.1", self.port
        self.client = _Client()
        deadline = time.monotonic() + 10
        while not self.client.running():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise ToxiproxyError(f"toxiproxy server did not start (rc={self.proc.poll()})")
            time.sleep(0.02)  # polling the port, with a deadline
        self.proxies: dict[str, Proxy] = {}

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()

    def __enter__(self) -> Toxiproxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- proxies ---------------------------------------------------------------

    def create(self, name: str, upstream: str, listen_port: int | None = None) -> Proxy:
        port = listen_port or free_ports(1)[0]
        p = self.client.create(upstream=upstream, name=name, listen=f"127.0.0.1:{port}")
        self.proxies[name] = p
        self._expect(name, enabled=True, toxics=set())
        return p

    def destroy(self, name: str) -> None:
        self.proxies.pop(name).destroy()
        if name in self.client.proxies():
            raise ToxiproxyError(f"proxy {name} still exists after it was destroyed")

    def listen(self, name: str) -> str:
        return str(self.proxies[name].listen)

    def set_upstream(self, name: str, upstream: str) -> None:
        """Point an existing proxy at another upstream (its listen address stays; its
        open connections are closed). Read back: the proxy is enabled, with that upstream."""
        _api.APIConsumer.post(f"/proxies/{name}", json={"upstream": upstream})
        info = self.state(name)
        if info["upstream"] != upstream or not info["enabled"]:
            raise ToxiproxyError(
                f"proxy {name}: upstream {info['upstream']} enabled={info['enabled']} after "
                f"setting upstream {upstream}"
            )
        self.proxies[name].upstream = upstream

    def state(self, name: str) -> dict[str, Any]:
        info: dict[str, Any] = _api.APIConsumer.get(f"/proxies/{name}").json()
        return info

    def _expect(
        self, name: str, enabled: bool | None = None, toxics: set[str] | None = None
    ) -> None:
        info = self.state(name)
        if enabled is not None and info["enabled"] != enabled:
            raise ToxiproxyError(f"proxy {name}: enabled={info['enabled']}, expected {enabled}")
        if toxics is not None:
            have = {t["name"] for t in info.get("toxics") or []}
            if have != toxics:
                raise ToxiproxyError(
                    f"proxy {name}: toxics {sorted(have)}, expected {sorted(toxics)}"
                )

    def toxic_names(self, name: str) -> set[str]:
        return {t["name"] for t in self.state(name).get("toxics") or []}

    def add_toxic(
        self, proxy: str, kind: str, stream: str, attributes: dict[str, Any], tag: str = ""
    ) -> str:
        """Add a toxic (stream: "upstream" = client -> server, "downstream" = back)."""
        toxic = f"{tag or kind}_{stream}"
        before = self.toxic_names(proxy)
        self.proxies[proxy].add_toxic(
            type=kind, stream=stream, name=toxic, toxicity=1.0, attributes=attributes
        )
        self._expect(proxy, toxics=before | {toxic})
        return toxic

    def remove_toxic(self, proxy: str, toxic: str) -> None:
        before = self.toxic_names(proxy)
        self.proxies[proxy].destroy_toxic(toxic)
        self._expect(proxy, toxics=before - {toxic})

    def disable(self, proxy: str) -> None:
        """Refuse connections and drop the open ones (a crash-like cut)."""
        self.proxies[proxy].disable()
        self._expect(proxy, enabled=False)

    def enable(self, proxy: str) -> None:
        self.proxies[proxy].enable()
        self._expect(proxy, enabled=True)

    def heal(self) -> None:
        """Every proxy enabled, no toxic left; checked proxy by proxy."""
        _api.APIConsumer.post("/reset")
        for name in self.proxies:
            self._expect(name, enabled=True, toxics=set())

    @contextmanager
    def toxic(
        self, proxy: str, kind: str, stream: str, attributes: dict[str, Any]
    ) -> Iterator[str]:
        name = self.add_toxic(proxy, kind, stream, attributes)
        try:
            yield name
        finally:
            self.remove_toxic(proxy, name)
