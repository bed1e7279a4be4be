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
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from coord.testing import free_ports, phase_failed, wait_until

from .jsonlines import JsonLinesProcess, Line
from .support import COORD


class AgentProc(JsonLinesProcess):
    def __init__(self, name: str, config: dict[str, Any], workdir: Path) -> None:
        self.name = name
        if "listen" not in config:
            config = {**config, "listen": f"127.0.0.1:{free_ports(1)[0]}"}
        self.config = config
        self.listen = config["listen"]
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd = [COORD, "agent", "--config", str(path)]
        super().__init__(f"agent {name}", cmd, str(workdir / f"{name}.stderr"))

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

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.close_streams()


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
