"""Real ``coord agent`` processes for the integration tests.

:class:`AgentProc` runs ``coord agent --config FILE`` (the config written from a dict),
reads its JSON lines on a thread (``wait_for(event, ...)`` with a deadline) and asks its
role endpoints (``status("/master")``). :class:`Agents` starts them for one test and
stops them all afterwards, printing their output when the test failed.

Times: an agent prints ``t`` from its monotonic clock, on Linux the same clock as this
process's ``time.monotonic()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from coord.testing import free_ports, phase_failed, wait_until

from .support import COORD

Line = dict[str, Any]


class AgentProc:
    def __init__(self, name: str, config: dict[str, Any], workdir: Path) -> None:
        self.name = name
        if "listen" not in config:
            config = {**config, "listen": f"127.0.0.1:{free_ports(1)[0]}"}
        self.config = config
        self.listen = config["listen"]
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.stderr_path = workdir / f"{name}.stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [COORD, "agent", "--config", str(path)], stdout=subprocess.PIPE, stderr=err,
                stdin=subprocess.DEVNULL, text=True, bufsize=1, start_new_session=True,
            )  # fmt: skip
        self.lines: list[Line] = []
        self._eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"agent-{name}")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                line: Line = json.loads(raw)
            except ValueError:
                line = {"event": "unparsed", "raw": raw.rstrip("\n")}
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def events(self, event: str, since: int = 0, **fields: Any) -> list[Line]:
        with self._cond:
            return [
                x for x in self.lines[since:]
                if x.get("event") == event and all(x.get(k) == v for k, v in fields.items())
            ]  # fmt: skip

    def wait_for(self, event: str, timeout: float, since: int = 0, **fields: Any) -> Line:
        """The first line from index ``since`` on with this ``event`` and ``fields``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self.events(event, since, **fields)
                if found:
                    return found[0]
                if self._eof:
                    raise AssertionError(f"{self.name} exited without {event} {fields}:\n"
                                         f"{self.describe()}")  # fmt: skip
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.name} did not print {event} {fields} within "
                                       f"{timeout:.1f} s:\n{self.describe()}")  # fmt: skip
                self._cond.wait(left)

    def status(self, path: str) -> tuple[int, Line]:
        """One request to a role endpoint: (HTTP status, JSON body); (0, {}) when nothing
        answers."""
        try:
            with urllib.request.urlopen(f"http://{self.listen}{path}", timeout=1.0) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")
        except OSError:
            return 0, {}

    def wait_status(self, path: str, status: int, timeout: float = 20.0) -> Line:
        """Until ``path`` answers ``status``; returns the body."""
        return wait_until(
            lambda: (r := self.status(path))[0] == status and r[1],
            timeout, f"{self.name}{path} to answer {status}",
        )  # fmt: skip

    def describe(self) -> str:
        with self._cond:
            lines = [json.dumps(x) for x in self.lines]
        err = self.stderr_path.read_text(errors="replace")[-4000:]
        return (
            f"--- agent {self.name} (pid {self.proc.pid}, rc {self.proc.poll()}) ---\n"
            + "\n".join(lines)
            + (f"\n--- stderr ---\n{err}" if err.strip() else "")
        )

    def kill(self) -> float:
        """kill -9; returns the monotonic time of the signal."""
        t = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        return t

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Agents:
    def __init__(self, endpoints: list[str], workdir: Path) -> None:
        self.endpoints = endpoints
        self.workdir = workdir
        self.procs: list[AgentProc] = []

    def start(self, group: str, member: str, **config: Any) -> AgentProc:
        cfg = {"endpoints": self.endpoints, "group": group, "member": member, "ttl": "2s",
               **config}  # fmt: skip
        p = AgentProc(member, cfg, self.workdir)
        self.procs.append(p)
        return p

    def describe(self) -> str:
        return "\n".join(p.describe() for p in self.procs)

    def close(self) -> None:
        for p in self.procs:  # all at once: a standby exits once its session is closed
            if p.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.proc.send_signal(signal.SIGTERM)
        for p in self.procs:
            p.close()


def agents_fixture(
    request: pytest.FixtureRequest, endpoints: list[str], workdir: Path
) -> Iterator[Agents]:
    os.makedirs(workdir, exist_ok=True)
    a = Agents(endpoints, workdir)
    try:
        yield a
    finally:
        if phase_failed(request.node):
            print(f"\n===== agents ({request.node.name} failed) =====\n{a.describe()}")
        a.close()
