"""A node's background tasks (leases, health checks, backups, consistency checks...):
started on the node's event loop, cancelled when it stops."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel(*tasks: asyncio.Task[None] | asyncio.Future[None] | None) -> None:
    """Cancel ``tasks`` (None: never started) and wait until each has finished."""
    live = [t for t in tasks if t is not None]
    for t in live:
        t.cancel()
    for t in live:
        with contextlib.suppress(asyncio.CancelledError):
            await t
