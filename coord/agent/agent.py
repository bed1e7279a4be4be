"""The agent's main loop: keep a session, register, campaign, hold, step down.

One term of mastership, as the loop runs it (``Agent._term``)::

    campaign ──elected──> promoting: pre_promote runs ──exit 0──> master
                                    └─fails──> resign (the next candidate is elected),
                                               wait retry_delay, campaign again
    master: the command starts (run:), on_elected is queued; /master answers 200
      ... until: stop (SIGTERM), a step-down request (switchover, resign, failback),
      the holding revoked or gone, the session's validity ended, the command exited,
      or the validity left fell to stop_grace (keepalives are not being acknowledged)
    demoting: /master 503 at once; the command gets SIGTERM, and SIGKILL at
      min(now + stop_grace, end of validity); then resign (if the session is valid),
      on_demoted is queued (on_lost instead when the session was lost)

Safety: the agent reports master (``/master`` 200, the command running) only while the
client library says the leadership is valid (``Leadership.is_master()``, which accounts
for clock drift; asked on every role request and every 10 ms here), and it stops the
command by the time the session's validity ends (``Session.valid_for_s()``, read from the
library, timed on ``time.monotonic()``). The loop runs on the main thread: the command's
launcher is tied to it (coord.agent.child).

Positions (``position:``, ``position_file:``; coord.agent.position): reported once right
after registering, before the first campaign, then on a thread of their own. A position
that went back ends the registration: the loop closes the session and registers from a
new one (a member elected meanwhile resigns before it acts; a master first finishes its
term).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

from coord import errors
from coord.agent.child import Child
from coord.agent.config import AgentConfig
from coord.agent.hooks import Hooks
from coord.agent.position import Reporter, reader
from coord.agent.report import say
from coord.agent.roles import RoleServer, RoleView
from coord.agent.signals import on_signals
from coord.client import Client, Leadership, Member, Session, SessionState
from coord.client.credentials import Credentials
from coord.v1 import election_pb2

POLL_S = 0.01  # how often a master re-checks its leadership (and its command)
CAMPAIGN_WAIT_S = 2.0  # a campaign is re-sent this often: the loop re-checks in between
DRAIN_S = 5.0  # on exit, how long queued hooks may still run
STOP_SLACK_S = 8.0  # SIGTERM to exit: stop_grace, hooks, resign, close, and this at most


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        creds = Credentials(
            token=os.environ.get("COORD_MEMBER_TOKEN", ""),
            ca_file=cfg.tls.get("cacert", ""),
            cert_file=cfg.tls.get("cert", ""),
            key_file=cfg.tls.get("key", ""),
            server_name=cfg.tls.get("server_name", ""),
        )
        self.client = Client(list(cfg.endpoints), timeout_s=max(5.0, cfg.ttl_s),
                             credentials=creds)  # fmt: skip
        self.hooks = Hooks(cfg.hooks, cfg.hook_timeout_s)
        self.child = Child(cfg.run) if cfg.run else None
        self.position = (
            Reporter(reader(cfg), cfg.position_interval_s) if cfg.reports_position else None
        )
        host, port = cfg.listen_address()
        self.roles = RoleServer(host, port, self.view)  # binds now: OSError if taken
        self.stop = threading.Event()  # SIGTERM/SIGINT/SIGHUP
        self.finished = threading.Event()
        self._stopping = threading.Lock()
        self._lock = threading.Lock()  # the fields below
        self._phase = "starting"
        self._session: Session | None = None
        self._registered = False
        self._lead: Leadership | None = None
        self._lost_holding: Leadership | None = None  # master when the session was lost
        self._stepdown = threading.Event()  # asked to step down: the loop hands over
        self._stepdown_cause = ""
        self._handed_over = threading.Event()  # ... and has stopped acting and resigned
        self._campaigning = False  # the loop's own: "campaigning" said since the last term

    # -- what the role endpoints read ------------------------------------------------

    def view(self) -> RoleView:
        with self._lock:
            phase, session, lead, registered = (
                self._phase, self._session, self._lead, self._registered,
            )  # fmt: skip
        valid = session is not None and session.is_valid()
        master = phase == "master" and lead is not None and lead.is_master()
        role = phase
        if phase == "master" and not master:
            role = "demoting"
        elif not valid and phase != "stopped":
            role = "starting"
        return RoleView(
            role=role, group=self.cfg.group, member=self.cfg.member, master=master,
            standby=valid and registered and phase == "standby", healthy=valid,
            token=lead.token if lead is not None else 0,
            slot=lead.slot if lead is not None else None,
            validity_ms=round(session.valid_for_s() * 1000) if valid and session else 0,
            session=session.state.value if session is not None else "",
            position=self.position.position if self.position is not None else None,
        )  # fmt: skip

    # -- callbacks (on threads of their own) -----------------------------------------

    def on_stop(self, why: str) -> None:
        """Stop: a master stops acting and resigns in the loop; a standby's session is
        closed here (which ends its campaign). Exits within stop_grace + STOP_SLACK_S
        whatever the cluster's state."""
        if not self._stopping.acquire(blocking=False):
            return
        with self._lock:
            self.stop.set()
            holding = self._lead is not None
            session = self._session
        say("stopping", reason=why)
        self.client.timeout_s = min(self.client.timeout_s, 2.0)
        if not holding and session is not None:
            threading.Thread(target=_close, args=(session,), daemon=True).start()
        limit = self.cfg.stop_grace_s + STOP_SLACK_S
        if not self.finished.wait(limit):
            say("exit", clean=False, reason=f"not stopped within {limit:g} s: exiting")
            if self.child is not None:
                self.child.stop(time.monotonic())
            os._exit(1)

    def _on_state(self, _: Session, state: SessionState) -> None:
        say("session", state=state.value)

    def _on_stepdown(self, _: Session, step: election_pb2.StepDown) -> None:
        """Asked to step down while master: the loop stops acting (and the command) and
        resigns; the library resigns anyway after stepdown_grace."""
        say("stepdown_requested", cause=step.cause, to=step.to_member)
        self._stepdown_cause = step.cause or "stepdown"
        self._stepdown.set()
        self._handed_over.wait(self.cfg.stepdown_grace_s)

    # -- the loop --------------------------------------------------------------------

    def run(self) -> int:
        self.roles.start()
        say("listening", address=self.roles.address, group=self.cfg.group,
            member=self.cfg.member)  # fmt: skip
        if self.position is not None:
            self.position.start()
        try:
            while not self.stop.is_set():
                self._session_term()
        finally:
            with self._lock:
                self._phase = "stopped"
            if self.position is not None:
                self.position.close()
            self.hooks.drain(DRAIN_S)
            self.roles.close()
            self.finished.set()
        say("exit", clean=True)
        return 0

    def _session_term(self) -> None:
        """One session: open, register, campaign for as long as it is valid."""
        cfg = self.cfg
        session = self.client.session(
            ttl_s=cfg.ttl_s, name=cfg.member, on_state=self._on_state,
            on_stepdown=self._on_stepdown, stepdown_grace_s=cfg.stepdown_grace_s,
        )  # fmt: skip
        try:
            session.start()
        except errors.CoordError as e:
            if not e.retryable and not isinstance(e, errors.DeadlineExceeded):
                raise  # refused (credentials, a TTL the cluster does not take): fatal
            say("error", doing="opening a session", message=e.message)
            self.stop.wait(1.0)
            return
        with self._lock:
            self._session = session
            self._lost_holding = None
        say("session", state="connected", id=session.id, ttl_s=session.ttl_s)
        try:
            member = self.client.group(cfg.group).member(
                cfg.member, session, address=cfg.address, priority=cfg.priority,
                weight=cfg.weight, nofailover=cfg.nofailover, check=cfg.check, tags=cfg.tags,
            ).start()  # fmt: skip
            self._campaigning = False
            with self._lock:
                self._registered = True
                self._phase = "standby"
            say("registered", group=cfg.group, member=cfg.member)
            if self.position is not None:
                self.position.attach(member)  # the first report, before the campaign
            while session.is_valid() and not self.stop.is_set() and not self._went_back():
                if cfg.nofailover:
                    self.stop.wait(0.05)
                else:
                    self._term(member, session)
            if self._went_back() and not self.stop.is_set():
                say("registering_again", cause="position_went_back", id=session.id)
        except errors.CoordError as e:
            if not self.stop.is_set():
                say("error", doing="registering or campaigning", message=e.message)
                self.stop.wait(min(1.0, cfg.retry_delay_s) if e.retryable else cfg.retry_delay_s)
        finally:
            if self.position is not None:
                self.position.detach()
            lost = session.state is SessionState.LOST or (
                session.state is not SessionState.CLOSED and not session.is_valid()
            )
            with self._lock:
                self._registered = False
                self._phase = "starting"
                self._session = None
                held = self._lost_holding
            _close(session)
            if lost:
                say("session_lost", id=session.id)
                self.hooks.notify("on_lost", {**self._env(held), "COORD_CAUSE": "session_lost"})

    def _term(self, member: Member, session: Session) -> None:
        """Campaign once; if elected: promote, hold, demote."""
        self._stepdown.clear()
        self._handed_over.clear()
        self._stepdown_cause = ""

        def candidate() -> None:  # said once the cluster has the candidacy, not on sending it
            if not self._campaigning:
                self._campaigning = True
                say("campaigning")

        try:
            lead = member.campaign(timeout_s=CAMPAIGN_WAIT_S, on_candidate=candidate)
        except errors.DeadlineExceeded:
            return  # not elected yet: the caller re-checks the session and stop
        candidate()  # elected at once: the log still reads campaigning, then elected
        self._campaigning = False
        with self._lock:
            self._lead = lead
            self._phase = "promoting"
        env = self._env(lead)
        say("elected", token=lead.token, slot=lead.slot)
        if not self._promote(lead, session, env):
            return
        if self.child is not None:
            self.child.start(env)
        self.hooks.notify("on_elected", env)
        self._demote(lead, session, env, self._hold(lead, session))

    def _promote(self, lead: Leadership, session: Session, env: dict[str, str]) -> bool:
        """pre_promote, then master (True); or resign so that the next candidate is
        elected (False)."""

        def still() -> bool:
            return (
                lead.is_master() and not self.stop.is_set() and not self._stepdown.is_set()
                and not self._went_back()
            )  # fmt: skip

        if self.stop.is_set():
            self._release(lead, session, "stop")
            return False
        if self._went_back():  # elected on a position higher than its data's: not master
            say("not_master", cause="position_went_back", token=lead.token)
            self._release(lead, session, "position_went_back")
            return False
        self.hooks.drain(self.cfg.hook_timeout_s)  # an on_demoted still running goes first
        if not self.hooks.run("pre_promote", env, still):
            failed = still()  # else: stopped, asked to step down, or no longer master
            cause = "pre_promote_failed" if failed else "ended_while_promoting"
            say("not_master", cause=cause, token=lead.token)
            self._release(lead, session, cause)
            if failed:
                self.stop.wait(self.cfg.retry_delay_s)
            return False
        with self._lock:
            # With a command to run, only if the validity left covers its stop grace.
            promoted = still() and session.valid_for_s() > self._fence_s()
            if promoted:
                say("master", token=lead.token, slot=lead.slot)  # before /master says so
                self._phase = "master"
        if not promoted:
            say("not_master", cause="ended_while_promoting", token=lead.token)
            self._release(lead, session, "ended_while_promoting")
        return promoted

    def _demote(self, lead: Leadership, session: Session, env: dict[str, str], cause: str) -> None:
        """Stop acting (/master 503, the command stopped by the end of validity), then
        resign and queue the hook."""
        with self._lock:
            self._phase = "demoting"
        left = session.valid_for_s()  # the library's figure: the command is gone by then
        say("not_master", cause=cause, token=lead.token, validity_ms=round(left * 1000))
        if self.child is not None:
            self.child.stop(time.monotonic() + min(self.cfg.stop_grace_s, left))
        self._release(lead, session, cause)
        if cause == "session_lost":
            with self._lock:
                self._lost_holding = lead  # on_lost says which holding was lost
        else:
            self.hooks.notify("on_demoted", {**env, "COORD_CAUSE": cause})
        if cause == "child_exited":
            self.stop.wait(self.cfg.retry_delay_s)

    def _went_back(self) -> bool:
        """The position went back: this registration must end (coord.agent.position)."""
        return self.position is not None and self.position.went_back.is_set()

    def _fence_s(self) -> float:
        """With a command to stop, mastership ends while the validity left still covers
        its stop grace (keepalives not acknowledged: the cluster is away)."""
        return self.cfg.stop_grace_s + 5 * POLL_S if self.child is not None else 0.0

    def _hold(self, lead: Leadership, session: Session) -> str:
        """Act as master until that must end; returns why."""
        fence = self._fence_s()
        while True:
            if self.stop.is_set():
                return "stop"
            if self._stepdown.is_set():
                return self._stepdown_cause or "stepdown"
            if not lead.is_master():
                return "revoked" if session.is_valid() else "session_lost"
            if self.child is not None:
                if self.child.exited() is not None:
                    return "child_exited"
                if session.valid_for_s() <= fence:
                    return "validity_low"
            self.stop.wait(POLL_S)

    def _release(self, lead: Leadership, session: Session, cause: str) -> None:
        """Give the slot up (this process stopped acting already) and hand over."""
        try:
            if session.is_valid():
                lead.resign()  # a no-op once resigned (the library's step-down)
                say("resigned", cause=cause, token=lead.token)
        except errors.CoordError as e:
            # Revoked or released already, or the cluster is away: it revokes the slot or
            # expires the session; this process has stopped acting either way.
            say("resign_failed", cause=cause, token=lead.token, message=e.message)
        finally:
            with self._lock:
                self._lead = None
                if self._phase != "stopped":
                    self._phase = "standby"
            self._handed_over.set()

    def _env(self, lead: Leadership | None) -> dict[str, str]:
        return {
            "COORD_GROUP": self.cfg.group,
            "COORD_MEMBER": self.cfg.member,
            "COORD_TOKEN": str(lead.token) if lead is not None else "",
            "COORD_SLOT": str(lead.slot) if lead is not None else "",
        }


def _close(session: Session) -> None:
    with contextlib.suppress(errors.CoordError):
        session.close()


def serve(agent: Agent) -> int:
    """Run the agent in the foreground until SIGTERM, SIGINT or SIGHUP (main thread)."""
    on_signals(agent.on_stop)
    return agent.run()
