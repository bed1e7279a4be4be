"""The command run only while master (``run:``, ``--run-while-master``), like
``consul lock`` or ``etcdctl lock``: started when this member becomes master, stopped
when mastership ends.

Stopping is SIGTERM to the command's process group, then SIGKILL at a deadline the agent
sets: ``stop_grace`` later, and never later than the end of the session's validity (the
safety rule: the old master's command is gone before the cluster may grant the slot to
anyone else). Deadlines are on ``time.monotonic()``.

The command is started through a small launcher that asks the kernel to SIGKILL it when
the agent dies (``PR_SET_PDEATHSIG``, Linux), then execs it: an agent killed by -9 does
not leave a master's command running without a lease. A process the command forks into
another session escapes that; the agent's process-group kills still reach the rest. A
stopped agent (SIGSTOP) cannot stop its command: fencing tokens (COORD_TOKEN) are the
resource's protection against that.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

from coord.agent.config import Command
from coord.agent.report import say

POLL_S = 0.005

# Run by ``python -S -c``: die with the agent (its pid in argv[1]), then exec the command.
_LAUNCHER = """
import ctypes, os, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
except (OSError, AttributeError):
    pass  # not Linux: the agent's own stop is all there is
if os.getppid() != int(sys.argv[1]):
    sys.exit(70)  # the agent died before the signal was armed
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as e:
    print(f"coord agent: cannot run {sys.argv[2]!r}: {e}", file=sys.stderr)
    sys.exit(127)
"""


class Child:
    """One command, started and stopped any number of times (one run at a time)."""

    def __init__(self, argv: Command) -> None:
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, env: Mapping[str, str]) -> None:
        launcher = [sys.executable, "-S", "-c", _LAUNCHER, str(os.getpid())]
        self.proc = subprocess.Popen(
            [*launcher, *self.argv], stdin=subprocess.DEVNULL, env={**os.environ, **env},
            start_new_session=True,
        )  # fmt: skip
        say("child", state="started", pid=self.proc.pid, argv=list(self.argv))

    def exited(self) -> int | None:
        """Its exit code once it has exited by itself (None while running or not started)."""
        return None if self.proc is None else self.proc.poll()

    def stop(self, deadline: float) -> None:
        """SIGTERM now, SIGKILL at ``deadline`` (monotonic) if still running; returns
        once it has exited. Whatever else is left in its process group is killed then."""
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is not None:
            say("child", state="exited", rc=proc.returncode)
            _signal_group(proc, signal.SIGKILL)
            return
        _signal_group(proc, signal.SIGTERM)
        how = "SIGTERM"
        while proc.poll() is None:
            if time.monotonic() >= deadline:
                _signal_group(proc, signal.SIGKILL)
                how = "SIGKILL"
                proc.wait()
                break
            time.sleep(POLL_S)
        _signal_group(proc, signal.SIGKILL)  # what it left behind in its group
        say("child", state="stopped", rc=proc.returncode, by=how)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
