"""A member process: what a service that wants mastership runs, as a program.

``python -m coord.member_process --endpoints A,B,C --group db --id db-1 --priority 10``
opens a session, registers, campaigns, and then holds mastership while its
session is valid; it resigns when asked to step down, and campaigns again
when it loses mastership. Every change is one JSON line on stdout::

    {"t": 12.345, "event": "elected", "token": 42, "slot": 0}
    {"t": 15.001, "event": "stepped_down", "cause": "switchover"}
    {"t": 19.870, "event": "session", "state": "lost"}

With ``--report-validity``, also one line each time the session's validity is
extended (``valid_until``: the newest acknowledged keepalive's send time
``sent`` + TTL x (1 - drift), on the same clock; bench/failover_validity.py)::

    {"t": 13.012, "event": "validity", "valid_until": 14.968, "sent": 13.008}

``t`` is this process's monotonic clock. ``coord dev`` runs three of these for
its demo group, and the integration tests use them as real member processes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import Any

from coord import errors
from coord.client import Client, Member, Session, SessionState
from coord.client.credentials import Credentials
from coord.v1 import election_pb2

_lock = threading.Lock()


def say(event: str, **fields: Any) -> None:
    with _lock:
        print(json.dumps({"t": round(time.monotonic(), 4), "event": event, **fields}), flush=True)


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    stepdown = threading.Event()
    creds = Credentials(
        token=os.environ.get("COORD_MEMBER_TOKEN", ""),
        ca_file=args.cacert,
        cert_file=args.cert,
        key_file=args.key,
        server_name=args.server_name,
    )
    client = Client(args.endpoints, timeout_s=30, credentials=creds)
    current: list[Session] = []
    holding = threading.Event()

    def on_signal(*_: object) -> None:
        stop.set()
        if not holding.is_set():
            # A standby waits in its campaign: closing the session ends it. (A master
            # resigns in the loop below instead, so the handover says "resign".)
            for s in list(current):
                threading.Thread(target=s.close, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    _report_validity(args.report_validity, stop, current)

    def on_state(_: Session, state: SessionState) -> None:
        say("session", state=state.value)

    def on_stepdown(_: Session, step: election_pb2.StepDown) -> None:
        if not stepdown.is_set():
            say("stepdown_requested", cause=step.cause, to=step.to_member)
            stepdown.set()

    while not stop.is_set():
        session = Session(client, ttl_s=args.ttl_s, name=args.id, on_state=on_state,
                          on_stepdown=on_stepdown)  # fmt: skip
        current[:] = [session]
        say("session", state="connected", id=session.id)
        try:
            member = Member(client, session, args.group, args.id, address=args.address,
                            priority=args.priority, nofailover=args.nofailover)  # fmt: skip
            if args.nofailover:
                stop.wait()
            while session.is_valid() and not stop.is_set():
                stepdown.clear()
                lead = member.campaign()
                holding.set()
                say("elected", token=lead.token, slot=lead.slot)
                while lead.is_master() and not stop.is_set() and not stepdown.is_set():
                    stop.wait(0.01)
                holding.clear()
                if stop.is_set() or stepdown.is_set():
                    why = "stepdown" if stepdown.is_set() else "stop"
                    say("not_master", reason=f"stepping down ({why})")  # stops acting first
                    lead.resign()
                    say("resigned", cause=why)
                elif not session.is_valid():
                    say("not_master", reason="session validity ended")
                else:
                    say("not_master", reason="the cluster no longer lists this holding")
        except errors.CoordError as e:
            if not stop.is_set():
                say("error", message=e.message)
                stop.wait(0.2)
        finally:
            session.close()  # a lost session is already gone; an error: retry afresh
    return 0


def _report_validity(enabled: bool, stop: threading.Event, current: list[Session]) -> None:
    """With ``--report-validity``: a thread prints a ``validity`` line whenever the live
    session's validity end moves (polled every millisecond: a kill -9 lands between an
    ack and its line at most that often)."""

    def poll() -> None:
        last: tuple[str, float] | None = None
        while not stop.wait(0.001):
            for s in list(current):
                seen = (s.id, s._valid_until)  # the Session's own figure (is_valid() uses it)
                if seen != last:
                    last = seen
                    sent = seen[1] - s.ttl_s * (1 - s.drift)
                    say("validity", id=s.id, valid_until=round(seen[1], 6), sent=round(sent, 6))

    if enabled:
        threading.Thread(target=poll, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoints", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--address", default="")
    p.add_argument("--ttl-s", type=float, default=2.0)
    p.add_argument("--nofailover", action="store_true")
    p.add_argument(
        "--report-validity",
        action="store_true",
        help="print a 'validity' line each time the session's validity is extended",
    )
    # A secured cluster: TLS files, and the bearer token in COORD_MEMBER_TOKEN (not a
    # flag: flags show in `ps`).
    p.add_argument("--cacert", default="")
    p.add_argument("--cert", default="")
    p.add_argument("--key", default="")
    p.add_argument("--server-name", default="")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
