"""The member's position, for freshness-aware succession (docs/design.md, "Freshness-aware
succession"): read every ``position_interval`` from a command (``position:``, whose stdout
is one integer >= 0, such as a WAL LSN) or a file (``position_file:``), and reported
through the client library (``Member.report_position``) when it moved.

- **Reading.** A command runs like a hook: no shell, COORD_GROUP and COORD_MEMBER in its
  environment, a session of its own, killed (its process group) at ``position_timeout``.
  What it prints on stdout, or what the file holds, must be one integer from 0 to
  2**63-1, white space around it allowed. A read that fails (the command cannot start,
  exits non-zero or times out; the file cannot be read) or gives anything else is logged
  — a ``position`` event with state ``failed``, the reason and the command's output — and
  nothing is reported: the last position reported stands. A failure is logged when it
  starts and when its kind changes, not every interval; ``recovered`` says when reads
  work again.
- **Reporting.** The first position is reported as soon as the member is registered,
  before it campaigns (with ``max_lag_on_failover``, a member that never reported is not
  eligible). After that, only a higher position is reported: an equal one changes
  nothing (one replicated write per change). A report the cluster does not answer is
  logged (``report_failed``) and sent again at the next interval.
- **A lower position is never sent.** The cluster refuses one (FAILED_PRECONDITION,
  ``check_position`` in coord/state/group_table.py: positions only increase, and a member
  whose data went back must register again from a new session, so that its record — its
  position included — starts over). The agent does exactly that: it logs ``went_back``
  (the position read and the highest one sent) and sets :attr:`Reporter.went_back`; the
  agent's loop (coord.agent.agent) then closes its session and registers again from a
  new one, and the lower position is the new record's first. A standby does so at once
  (within one campaign round, 2 s at most); a member elected meanwhile resigns before it
  acts as master; a master keeps its slot (freshness rules never revoke a master, and
  neither does the agent) and registers again once its mastership ends. Until then the
  cluster keeps the higher position, and a report resumes only above it.

"Sent" counts a report whose outcome is unknown (the cluster did not answer): it may
have been applied, so a later position below it is treated as going back too.
Positions are compared only within one registration: a new one starts over.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from typing import Protocol

from coord import errors
from coord.agent.config import AgentConfig, Command
from coord.agent.report import say
from coord.v1 import groups_pb2

MAX_POSITION = 2**63 - 1  # Member.position is an int64
MAX_OUTPUT = 4096  # characters of a command's output (or a file) logged, at most
KILL_WAIT_S = 1.0  # after a timeout's SIGKILL, how long to wait for its output
_NUMBER = re.compile(r"[0-9]+")


class PositionError(Exception):
    """A read that gave no position: ``kind`` (cannot_start, exit, timeout, unreadable,
    not_a_position), a reason, and what the command printed (or the file held)."""

    def __init__(self, kind: str, reason: str, output: str = "") -> None:
        super().__init__(reason)
        self.kind, self.reason, self.output = kind, reason, output


class Reports(Protocol):
    """What the reporter needs of a member (coord.client.Member)."""

    def report_position(self, position: int) -> groups_pb2.Member: ...


def parse(text: str) -> int:
    """One integer from 0 to 2**63-1, white space around it allowed (PositionError)."""
    word = text.strip()
    if not _NUMBER.fullmatch(word):
        shown = repr(word[:80]) if word else "nothing"
        raise PositionError("not_a_position", f"gave {shown}, not one integer >= 0", text)
    value = int(word)
    if value > MAX_POSITION:
        raise PositionError("not_a_position", f"gave {word[:80]}, more than 2**63-1", text)
    return value


def run_command(argv: Command, timeout_s: float, env: Mapping[str, str]) -> int:
    """Run ``argv`` and parse its stdout (PositionError on anything but exit 0 and one
    integer). Its process group is killed at the timeout."""
    try:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env={**os.environ, **env}, start_new_session=True,
        )  # fmt: skip
    except OSError as e:
        why = f"cannot start {argv[0]!r}: {e.strerror or e}"
        raise PositionError("cannot_start", why) from None
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=KILL_WAIT_S)
        except subprocess.TimeoutExpired:  # something of its own, in another session,
            out, err = b"", b""  # holds the pipes open: do not wait for it
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            proc.wait()
        why = f"timed out after {timeout_s:g} s"
        raise PositionError("timeout", why, _shown(out, err)) from None
    if proc.returncode != 0:
        raise PositionError("exit", f"exited {proc.returncode}", _shown(out, err))
    try:
        return parse(out.decode("utf-8", "replace"))
    except PositionError as e:
        raise PositionError(e.kind, e.reason, _shown(out, err)) from None


def _shown(out: bytes, err: bytes) -> str:
    """A command's output as logged: stdout, then stderr, the last MAX_OUTPUT characters."""
    text = (out + err).decode("utf-8", "replace").strip()
    return text[-MAX_OUTPUT:]


def read_file(path: str) -> int:
    """The position a file holds (PositionError if it cannot be read or holds anything
    else). Write it atomically (a temporary file renamed over it): a reader may see a
    file being rewritten in place half written."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_OUTPUT + 1)
    except OSError as e:
        raise PositionError("unreadable", f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > MAX_OUTPUT:
        raise PositionError("not_a_position", f"{path} holds more than {MAX_OUTPUT} bytes")
    return parse(data.decode("utf-8", "replace"))


def reader(cfg: AgentConfig) -> Callable[[], int]:
    """How this config reads its position (``position:`` or ``position_file:``)."""
    if cfg.position:
        env = {"COORD_GROUP": cfg.group, "COORD_MEMBER": cfg.member}
        return lambda: run_command(cfg.position, cfg.position_timeout_s, env)
    path = cfg.position_file
    return lambda: read_file(path)


class Reporter:
    """Reads the position every ``interval_s`` (on a thread of its own) and reports it
    for the member :meth:`attach` named, as the module says."""

    def __init__(self, read: Callable[[], int], interval_s: float) -> None:
        self.read = read
        self.interval_s = interval_s
        self.went_back = threading.Event()  # this registration must start over
        self._lock = threading.Lock()  # the fields below
        self._tick_lock = threading.Lock()  # one read and report at a time
        self._member: Reports | None = None
        self._generation = 0  # a registration: its reports' outcomes land only in it
        self._acked: int | None = None  # the member's position, as the cluster answered
        self._sent: int | None = None  # the highest position sent (maybe applied)
        self._failing = ""  # the kind of failure in progress ("": none)
        self._failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def position(self) -> int | None:
        """The position the cluster holds for this registration (None: none yet)."""
        with self._lock:
            return self._acked

    def attach(self, member: Reports) -> None:
        """A new registration: positions start over. Reads and reports once now (so the
        first report comes before the campaign), then every interval."""
        with self._lock:
            self._member = member
            self._generation += 1
            self._acked = self._sent = None
            self.went_back.clear()
        self.tick()

    def detach(self) -> None:
        """The registration ended: nothing more is reported for it."""
        with self._lock:
            self._member = None
            self._generation += 1

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="position")
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except Exception as e:  # a bug here must not end the reports
                say("position", state="error", message=f"{type(e).__name__}: {e}")

    def tick(self) -> None:
        """Read the position once and report it if it moved up (as the module says)."""
        with self._tick_lock:
            with self._lock:
                member, generation = self._member, self._generation
            if member is None:
                return
            try:
                value = self.read()
            except PositionError as e:
                self._failed("failed", e.kind, reason=e.reason, output=e.output[-MAX_OUTPUT:])
                return
            self._recovered(value, "failed")  # a read failure ends with a good read
            with self._lock:
                if generation != self._generation:
                    return
                sent, acked = self._sent, self._acked
                if sent is not None and value < sent:
                    if not self.went_back.is_set():
                        self.went_back.set()
                        say("position", state="went_back", position=value, reported=sent,
                            action="registering again from a new session")  # fmt: skip
                    return
                if acked is not None and value <= acked:
                    self._recovered(value, "report_failed")
                    return
                self._sent = value if sent is None else max(sent, value)
            try:
                reply = member.report_position(value)
            except errors.CoordError as e:
                with self._lock:
                    ended = generation != self._generation  # its session is being closed
                if not ended:
                    self._failed("report_failed", type(e).__name__, position=value,
                                 message=e.message)  # fmt: skip
                return
            with self._lock:
                if generation != self._generation:
                    return
                first = self._acked is None
                self._acked = reply.position if reply.HasField("position") else value
            if first:
                say("position", state="reported", position=value)
            self._recovered(value, "report_failed")  # ... a report failure, with a report

    def _failed(self, state: str, kind: str, **fields: object) -> None:
        """Log a failure when one starts or its kind changes, not every interval."""
        key = f"{state}:{kind}"
        self._failures += 1
        if key != self._failing:
            self._failing = key
            say("position", state=state, kind=kind, **fields)

    def _recovered(self, value: int, state: str) -> None:
        if self._failing.startswith(f"{state}:"):
            say("position", state="recovered", position=value, failures=self._failures)
            self._failing, self._failures = "", 0
