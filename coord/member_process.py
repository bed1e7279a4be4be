"""A member process: what a service that wants mastership runs, as a program.

``python -m coord.member_process --endpoints A,B,C --group db --id db-1 --priority 10``
(or ``COORDCTL_ENDPOINTS=A,B,C``; ``--help`` lists every option) opens a session,
registers, campaigns, and then holds mastership while its session is valid; it
resigns when asked to step down, and campaigns again when it loses mastership.
SIGTERM, SIGINT or SIGHUP: it resigns and closes its session if the cluster answers,
and exits within ``--stop-timeout-s`` (3 s) whatever. Every change is one JSON line
on stdout::

    {"t": 12.345, "event": "elected", "token": 42, "slot": 0}
    {"t": 15.001, "event": "stepped_down", "cause": "switchover"}
    {"t": 19.870, "event": "session", "state": "lost"}
    {"t": 21.002, "event": "stopping", "reason": "SIGTERM"}

With ``--report-validity``, also one line each time the session's validity is
extended (``valid_until``: the newest acknowledged keepalive's send time
``sent`` + TTL x (1 - drift), on the same clock; bench/failover_validity.py)::

    {"t": 13.012, "event": "validity", "valid_until": 14.968, "sent": 13.008}

``t`` is this process's monotonic clock. ``coord dev`` runs three of these for
its demo group, and the integration tests use them as real member processes. What a
host deploys is ``coord agent`` (coord.agent): the same loop with a config file, role
endpoints for load balancers, hooks and a command run only while master.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from coord import errors
from coord.agent.signals import on_signals as _on_signals
from coord.client import Client, Member, Session, SessionState
from coord.client.credentials import Credentials
from coord.v1 import election_pb2

_lock = threading.Lock()


def say(event: str, **fields: Any) -> None:
    with _lock:
        print(json.dumps({"t": round(time.monotonic(), 4), "event": event, **fields}), flush=True)


class MemberProcess:
    """The member: its stop and step-down events, and the session/campaign loop."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop = threading.Event()  # SIGTERM/SIGINT/SIGHUP, or the parent died
        self.finished = threading.Event()  # run() is returning
        self.stepdown = threading.Event()  # asked to step down: the loop hands over
        self.handed_over = threading.Event()  # ... and has resigned
        self.holding = threading.Event()  # from elected until resigned or no longer master
        self._roles = threading.Lock()  # holding vs stop
        self.current: list[Session] = []
        self._stopping = threading.Lock()
        creds = Credentials(
            token=os.environ.get("COORD_MEMBER_TOKEN", ""),
            ca_file=args.cacert,
            cert_file=args.cert,
            key_file=args.key,
            server_name=args.server_name,
        )
        self.client = Client(args.endpoints, timeout_s=30, credentials=creds)

    def on_stop(self, why: str) -> None:
        """Stop (on a thread of its own): resign and close if the cluster answers in
        time, and exit within --stop-timeout-s whatever its state."""
        if not self._stopping.acquire(blocking=False):
            return
        with self._roles:  # a master resigns in its loop; decide which we are, atomically
            self.stop.set()
            standby = not self.holding.is_set()
        say("stopping", reason=why)
        timeout = self.args.stop_timeout_s
        # Every call from now on (resign, close, a campaign's retries) gets a short
        # deadline: a cluster that is gone must not hold the exit up.
        self.client.timeout_s = min(self.client.timeout_s, max(0.1, timeout / 3))
        if standby:
            # A standby waits in its campaign: closing the session ends it. (A master
            # resigns in the loop instead, so the handover says "resign".)
            for s in list(self.current):
                threading.Thread(target=s.close, daemon=True).start()
        if not self.finished.wait(timeout):
            say(
                "exit",
                clean=False,
                reason=f"not stopped within {timeout:g} s (the cluster did not answer): "
                "exiting; the cluster ends the session after its TTL",
            )
            os._exit(1)

    def on_state(self, _: Session, state: SessionState) -> None:
        say("session", state=state.value)

    def on_stepdown(self, _: Session, step: election_pb2.StepDown) -> None:
        """Called by the library (on a thread of its own) while this member is still
        master: the loop stops acting and resigns; the library resigns anyway once
        this returns, after --stepdown-grace-s at the latest."""
        say("stepdown_requested", cause=step.cause, to=step.to_member)
        self.stepdown.set()
        self.handed_over.wait(self.args.stepdown_grace_s)

    def run(self) -> int:
        try:
            while not self.stop.is_set():
                self._session()
        finally:
            self.finished.set()
        return 0

    def _session(self) -> None:
        args = self.args
        session = self.client.session(ttl_s=args.ttl_s, name=args.id, on_state=self.on_state,
                                      on_stepdown=self.on_stepdown,
                                      stepdown_grace_s=args.stepdown_grace_s).start()  # fmt: skip
        self.current[:] = [session]
        say("session", state="connected", id=session.id)
        try:
            member = self.client.group(args.group).member(
                args.id, session, address=args.address, priority=args.priority,
                nofailover=args.nofailover,
            ).start()  # fmt: skip
            if args.nofailover:
                self.stop.wait()
            while session.is_valid() and not self.stop.is_set():
                self._hold(member, session)
        except errors.CoordError as e:
            if not self.stop.is_set():
                say("error", message=e.message)
                self.stop.wait(0.2)
        finally:
            session.close()  # a lost session is already gone; an error: retry afresh

    def _hold(self, member: Member, session: Session) -> None:
        """Campaign, then act as master until that ends; resign if asked or stopped."""
        self.stepdown.clear()
        self.handed_over.clear()
        lead = member.campaign()
        with self._roles:
            self.holding.set()
        try:
            say("elected", token=lead.token, slot=lead.slot)
            while lead.is_master() and not self.stop.is_set() and not self.stepdown.is_set():
                self.stop.wait(0.01)
            if self.stop.is_set() or self.stepdown.is_set():
                why = "stepdown" if self.stepdown.is_set() else "stop"
                say("not_master", reason=f"stepping down ({why})")  # stops acting first
                lead.resign()
                self.handed_over.set()
                say("resigned", cause=why)
            elif not session.is_valid():
                say("not_master", reason="session validity ended")
            else:
                say("not_master", reason="the cluster no longer lists this holding")
        finally:
            with self._roles:
                self.holding.clear()


def run(args: argparse.Namespace) -> int:
    member = MemberProcess(args)
    _on_signals(member.on_stop)
    if args.exit_with_parent:
        _watch_parent(args.exit_with_parent, member.stop, member.on_stop)
    _report_validity(args.report_validity, member.stop, member.current)
    return member.run()


def _watch_parent(pid: int, stop: threading.Event, on_stop: Callable[[str], None]) -> None:
    """Stop when the process ``pid`` (our parent, e.g. ``coord dev``) is no longer our
    parent: it died, even by kill -9, and we were handed to init or a subreaper."""

    def watch() -> None:
        while not stop.wait(0.2):
            if os.getppid() != pid:
                on_stop(f"parent process {pid} exited")
                return

    threading.Thread(target=watch, daemon=True, name="parent").start()


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
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except errors.InvalidArgument as e:  # e.g. a TTL out of bounds: say so, no traceback
        print(f"member_process: {e.message}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m coord.member_process",
        description=__doc__.split("\n\n")[0],
        epilog="SIGTERM, SIGINT or SIGHUP: resign (a master) and close the session, then "
        "exit; within --stop-timeout-s whatever the cluster's state. Prints one JSON line "
        "per change on stdout.",
    )
    endpoints = os.environ.get("COORDCTL_ENDPOINTS", "")
    p.add_argument(
        "--endpoints",
        default=endpoints or None,
        required=not endpoints,
        help="comma-separated client API addresses of the cluster's nodes (default: "
        "$COORDCTL_ENDPOINTS)",
    )
    p.add_argument("--group", required=True, help="the group to join (it must exist)")
    p.add_argument("--id", required=True, help="this member's id in the group")
    p.add_argument(
        "--priority", type=int, default=0, help="higher is preferred for mastership (default 0)"
    )
    p.add_argument("--address", default="", help="where clients reach this member")
    p.add_argument(
        "--ttl-s", type=float, default=2.0, help="the session's TTL in seconds (default 2)"
    )
    p.add_argument(
        "--nofailover",
        action="store_true",
        help="register without campaigning: never made master",
    )
    p.add_argument(
        "--stepdown-grace-s",
        type=float,
        default=2.0,
        help="asked to step down, the longest this member takes to stop acting and resign "
        "before the library resigns for it (default 2)",
    )
    p.add_argument(
        "--stop-timeout-s",
        type=float,
        default=3.0,
        help="on SIGTERM/SIGINT/SIGHUP, exit within this many seconds even if the cluster "
        "does not answer (default 3)",
    )
    p.add_argument(
        "--exit-with-parent",
        type=int,
        default=int(os.environ.get("COORD_EXIT_WITH_PARENT", "0") or 0),
        metavar="PID",
        help="stop as on SIGTERM once process PID is no longer this process's parent "
        "(default: $COORD_EXIT_WITH_PARENT; `coord dev` sets it)",
    )
    p.add_argument(
        "--report-validity",
        action="store_true",
        help="print a 'validity' line each time the session's validity is extended",
    )
    # A secured cluster: TLS files, and the bearer token in COORD_MEMBER_TOKEN (not a
    # flag: flags show in `ps`).
    p.add_argument("--cacert", default="", help="CA (PEM) to verify the nodes (TLS)")
    p.add_argument("--cert", default="", help="client certificate (PEM), for mutual TLS")
    p.add_argument("--key", default="", help="its private key (PEM)")
    p.add_argument(
        "--server-name", default="", help="the name to verify in the nodes' certificates"
    )
    return p


if __name__ == "__main__":
    sys.exit(main())
