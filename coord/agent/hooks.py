"""Hooks: commands the agent runs when its role changes, with a timeout, output logged.

- ``pre_promote`` runs when this member is granted the slot, before it reports itself
  master: the agent waits for it (:meth:`Hooks.run`). Exit 0 lets it become master;
  anything else (a failure, the timeout, or mastership ending while it runs — then it is
  killed) makes the agent resign, so the next candidate is elected.
- ``on_elected``, ``on_demoted`` and ``on_lost`` are notifications (:meth:`Hooks.notify`):
  they run one at a time, in the order of the changes, on a thread of their own, so a
  slow hook never delays the agent's reaction to the next change.

Each runs with COORD_GROUP, COORD_MEMBER, COORD_TOKEN and COORD_SLOT (empty when no
slot is held), COORD_HOOK (its name) and, for ``on_demoted`` and ``on_lost``, COORD_CAUSE;
in a session of its own, so that a timeout kills what it started too. Every line it
prints (stdout and stderr) is logged as a ``hook_output`` event.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping

from coord.agent.config import Command
from coord.agent.report import say

POLL_S = 0.01
MAX_LINE = 4096


class Hooks:
    def __init__(self, commands: Mapping[str, Command], timeout_s: float) -> None:
        self.commands = dict(commands)
        self.timeout_s = timeout_s
        self._queue: queue.Queue[tuple[str, dict[str, str]] | None] = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def run(
        self, name: str, env: Mapping[str, str], still: Callable[[], bool] | None = None
    ) -> bool:
        """Run hook ``name`` now and wait: True if it is not configured or exited 0.
        ``still`` is polled while it runs: once it returns False the hook is killed
        (and has failed)."""
        argv = self.commands.get(name)
        if not argv:
            return True
        started = time.monotonic()
        say("hook", hook=name, state="started", argv=list(argv))
        try:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env={**os.environ, **env, "COORD_HOOK": name},
                start_new_session=True,
            )  # fmt: skip
        except OSError as e:
            say("hook", hook=name, state="failed", error=f"cannot start {argv[0]!r}: {e}")
            return False
        reader = threading.Thread(target=_log_lines, args=(name, proc), daemon=True)
        reader.start()
        deadline = started + self.timeout_s
        why = ""
        while proc.poll() is None:
            if time.monotonic() >= deadline:
                why = f"timed out after {self.timeout_s:g} s"
            elif still is not None and not still():
                why = "mastership ended while it ran"
            if why:
                _kill_group(proc)
                break
            time.sleep(POLL_S)
        rc = proc.wait()
        reader.join(timeout=1.0)  # a grandchild may hold the pipe open: do not wait on it
        ms = round((time.monotonic() - started) * 1000)
        if why:
            say("hook", hook=name, state="killed", reason=why, ms=ms)
            return False
        say("hook", hook=name, state="done", rc=rc, ms=ms)
        return rc == 0

    def notify(self, name: str, env: Mapping[str, str]) -> None:
        """Queue hook ``name`` (if configured) behind the earlier ones."""
        if not self.commands.get(name):
            return
        with self._lock:
            self._pending += 1
            self._idle.clear()
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, daemon=True, name="hooks")
                self._thread.start()
        self._queue.put((name, dict(env)))

    def drain(self, timeout_s: float) -> bool:
        """Wait until every queued hook has run (True), at most ``timeout_s``."""
        return self._idle.wait(timeout_s)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self.run(*item)
            finally:
                with self._lock:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.set()


def _log_lines(name: str, proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    with proc.stdout:
        for raw in proc.stdout:
            say("hook_output", hook=name, line=raw[:MAX_LINE].decode("utf-8", "replace").rstrip())


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
