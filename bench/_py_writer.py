"""The Python side of bench/go_failover.py's write probe: the Go probe's writer mode
(clients/go/internal/failoverprobe) with coord's Python client library.

``python bench/_py_writer.py A,B,C`` reads ``put KEY`` lines on stdin; each is one
``Client.put`` (the library's own discovery, retries and request id; 30 s for the whole
call), then prints ``{"event": "put", "key": KEY, "ok": true, "t": ...}`` (or ``"ok":
false`` with ``"error"``), ``t`` on the monotonic clock (CLOCK_MONOTONIC, as the Go
probe's).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from coord.client import Client


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


def main() -> None:
    with Client(sys.argv[1], timeout_s=30.0) as c:
        say("ready")
        for line in sys.stdin:
            cmd, _, key = line.strip().partition(" ")
            if cmd != "put" or not key:
                continue
            try:
                c.put(key, "v")
            except Exception as e:  # reported, not raised: the driver judges
                say("put", key=key, ok=False, error=repr(e))
            else:
                say("put", key=key, ok=True)


if __name__ == "__main__":
    main()
