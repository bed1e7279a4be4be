"""The status page: ``/`` (static HTML, CSS and JS) and ``/api/stream`` (Server-Sent Events).

The page is plain HTML with no build step (``coord/server/http/static``). It loads
``/api/status`` once, then listens on ``/api/stream``, which sends a fresh
status (the same JSON, see ``coord.server.http.server.status_snapshot``) whenever the
replicated state or the Raft leader/term/role changes, and every
``REFRESH_S`` anyway (open outages grow and links change with time alone). If
the stream drops, the page polls ``/api/status`` until the stream is back.

Threads: the Raft tick thread calls :meth:`StatusHub.poke` after every apply
and on every leader/term/role change. It only sets a flag and, for the first
poke of a burst, schedules one wake-up on the loop (``call_soon_threadsafe``):
it never waits for the loop, takes no lock the loop holds for long, and does
nothing while nobody watches. On the loop, one publisher task builds one
snapshot per burst (on the default executor: it takes the apply lock), encodes
it once and hands it to every stream; pokes that arrive meanwhile cause one
more round, at most one per ``MIN_INTERVAL_S``. Each stream keeps only the
newest message, so a slow browser skips states and never holds up the others.

Everything the page shows from the state (member ids, addresses, health
details, group names) comes from clients: the page puts it in the DOM as text
(``textContent``, attribute values), never as markup, and the
Content-Security-Policy allows no inline script.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from importlib import resources
from typing import Any

from aiohttp import web

from coord.raft.node import RaftNode, View
from coord.server.http.server import status_snapshot
from coord.server.runtime import tasks

logger = logging.getLogger(__name__)

# A burst of applies is published at most this often.
MIN_INTERVAL_S = 0.05
# Publish a fresh status at least this often while someone watches.
REFRESH_S = 2.0
# An SSE comment this often keeps proxies from closing an idle stream.
PING_S = 15.0
# Streams served at once, at most (each holds one connection and one message).
MAX_STREAMS = 64
# How long a browser waits before reconnecting a dropped stream (ms, SSE ``retry``).
RETRY_MS = 1000

_STATIC = {
    "/": ("status.html", "text/html; charset=utf-8"),
    "/status.js": ("status.js", "text/javascript; charset=utf-8"),
    "/status.css": ("status.css", "text/css; charset=utf-8"),
}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
HUB: web.AppKey[StatusHub] = web.AppKey("coord_status_hub")


def add_routes(app: web.Application, raft: RaftNode) -> frozenset[str]:
    """Serve the status page and its event stream on ``app`` (before it starts); returns
    the paths anyone may read (the page's own files: no data in them)."""
    hub = StatusHub(raft)
    app[HUB] = hub
    files = resources.files("coord.server.http.static")
    for path, (name, ctype) in _STATIC.items():
        body = files.joinpath(name).read_bytes()
        app.router.add_get(path, _static(body, ctype))
    app.router.add_get("/api/stream", hub.stream)
    app.on_startup.append(hub.on_startup)
    app.on_shutdown.append(hub.on_shutdown)
    return frozenset(_STATIC)


def _static(body: bytes, ctype: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={**_HEADERS, "Content-Type": ctype})

    return handler


class _Stream:
    """One browser's stream: the newest message not yet sent."""

    def __init__(self) -> None:
        self.message: bytes | None = None
        self.ready = asyncio.Event()

    def offer(self, message: bytes) -> None:
        self.message = message
        self.ready.set()

    def take(self) -> bytes | None:
        message, self.message = self.message, None
        self.ready.clear()
        return message


class StatusHub:
    """Builds status snapshots when something changed and fans them out to streams."""

    def __init__(self, raft: RaftNode) -> None:
        self.raft = raft
        self._streams: set[_Stream] = set()
        self._watching = False  # read by the tick thread: poke only while someone watches
        self._lock = threading.Lock()
        self._poked = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dirty: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle (loop) ----------------------------------------------------------

    async def on_startup(self, app: web.Application) -> None:
        self._loop = asyncio.get_running_loop()
        self._dirty = asyncio.Event()
        self.raft.add_apply_listener(self.poke)
        self.raft.add_listener(self._on_view)
        self._task = asyncio.create_task(self._publish())

    async def on_shutdown(self, app: web.Application) -> None:
        """Before the server waits for open requests: end every stream now."""
        with self._lock:
            self._closed = True
        self.raft.remove_listener(self._on_view)
        await tasks.cancel(self._task)
        for s in list(self._streams):
            s.ready.set()

    # -- tick thread ---------------------------------------------------------------

    def _on_view(self, view: View) -> None:
        self.poke()

    def poke(self) -> None:
        """Any thread: the state or the leader changed. Never blocks."""
        if not self._watching:
            return
        with self._lock:
            if self._poked or self._closed or self._loop is None:
                return
            self._poked = True
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody to tell
            self._loop.call_soon_threadsafe(self._wake)

    # -- loop ----------------------------------------------------------------------

    def _wake(self) -> None:
        with self._lock:
            self._poked = False
        if self._dirty is not None:
            self._dirty.set()

    async def _publish(self) -> None:
        assert self._dirty is not None
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), REFRESH_S)
            self._dirty.clear()
            if not self._streams:
                continue
            try:
                message = await loop.run_in_executor(None, self._encode)
            except Exception:
                logger.exception("status page: building the status failed")
            else:
                for s in self._streams:
                    s.offer(message)
            # Coalesce: what changes meanwhile goes out in the next round.
            await asyncio.sleep(MIN_INTERVAL_S)

    def _encode(self) -> bytes:
        """Executor: one SSE message with the status (JSON has no raw newlines)."""
        snap = status_snapshot(self.raft)
        data = json.dumps(snap, separators=(",", ":"))
        return f"event: status\nid: {snap['revision']}\ndata: {data}\n\n".encode()

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/stream``: ``event: status`` messages until the client leaves."""
        if len(self._streams) >= MAX_STREAMS or self._closed:
            raise web.HTTPServiceUnavailable(
                text=f"coord: {MAX_STREAMS} status streams are open already: poll /api/status"
            )
        resp = web.StreamResponse(
            headers={
                **_HEADERS,
                "Content-Type": "text/event-stream",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        s = _Stream()
        self._streams.add(s)
        self._watching = True
        if self._dirty is not None:
            self._dirty.set()  # a fresh status for the newcomer (and the others)
        try:
            await resp.write(f"retry: {RETRY_MS}\n\n".encode())
            while not self._closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(s.ready.wait(), PING_S)
                message = s.take()
                await resp.write(message if message is not None else b": ping\n\n")
        except (ConnectionResetError, ConnectionError):
            pass  # the browser left
        finally:
            self._streams.discard(s)
            self._watching = bool(self._streams)
        return resp
