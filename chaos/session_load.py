"""Many sessions kept alive by the client library, in a process of their own (as the
processes of a real deployment would each keep theirs): run by chaos.workload.SessionLoad.

``python -m chaos.session_load --name load0 --count 70 --ttl 5 ENDPOINT...`` opens
``count`` sessions (the library's Session, one keepalive stream each, on one client)
named ``<name>-NNN``, prints ``ready`` once all are open, then one line per session the
library reports LOST: ``lost <name> <time.monotonic()> <why>`` (CLOCK_MONOTONIC is one
clock for every process of the machine, so the parent compares these times with its
own). When its stdin closes it closes every session, prints ``closed`` and exits.

A process of its own: 200+ sessions are 800+ threads, and in the test process they would
queue for one interpreter lock with the rest of the workload, which is no fault of the
cluster's.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Callable

from coord import errors
from coord.client import Client, Session, SessionState

_print_lock = threading.Lock()


def say(line: str) -> None:
    with _print_lock:
        print(line, flush=True)


def why_lost(session: Session) -> str:
    """Why a session just reported LOST was lost: with validity left here, the cluster
    answered that it expired; with none, no keepalive was acknowledged within its TTL."""
    if session.valid_for_s() > 0:
        return "the cluster said expired"
    return "no keepalive acknowledged within its TTL"


def on_state(name: str) -> Callable[[Session, SessionState], None]:
    def record(session: Session, state: SessionState) -> None:
        if state is SessionState.LOST:
            say(f"lost {name} {time.monotonic():.6f} {why_lost(session)}")

    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--ttl", type=float, required=True)
    p.add_argument("endpoints", nargs="+")
    args = p.parse_args(argv)
    client = Client(args.endpoints, timeout_s=10.0, attempt_timeout_s=1.0)
    sessions: list[Session] = []
    try:
        for i in range(args.count):
            name = f"{args.name}-{i:03d}"
            sessions.append(client.session(args.ttl, name=name, on_state=on_state(name)).start())
        say("ready")
        sys.stdin.read()  # until the parent closes it
    finally:
        for session in sessions:
            with contextlib.suppress(errors.CoordError):
                session.close()
        client.close()
        say("closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
