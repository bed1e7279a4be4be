"""What the agent says: one JSON line per event on stdout (journald, a log shipper and the
tests read the same lines)::

    {"t": 12.345, "event": "master", "token": 42, "slot": 0}
    {"t": 12.346, "event": "hook", "hook": "on_elected", "state": "done", "rc": 0, "ms": 31}
    {"t": 12.347, "event": "hook_output", "hook": "on_elected", "line": "promoted"}

``t`` is the agent's monotonic clock (``time.monotonic()``: on Linux the same clock in
every process of the host, so lines of several agents compare directly).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

_lock = threading.Lock()


def say(event: str, **fields: Any) -> None:
    line = json.dumps({"t": round(time.monotonic(), 4), "event": event, **fields})
    with _lock:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):  # stdout closed (a reader gone): keep running
            pass
