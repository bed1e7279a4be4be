"""A subprocess that prints one JSON object per line, read on a thread: the base of the
member-process and agent harnesses (tests/integration/members.py, agents.py).

Each line read gets ``seen`` (this process's ``time.monotonic()`` at reading). A line
that is not JSON is kept as ``{"event": "unparsed", "raw": ...}``.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

Line = dict[str, Any]


class JsonLinesProcess:
    """``cmd`` started in its own session, stdout read as JSON lines, stderr to
    ``stderr_path``. ``title`` heads :meth:`describe`."""

    def __init__(self, title: str, cmd: Sequence[str], stderr_path: str) -> None:
        self.title = title
        self.stderr_path = stderr_path
        with open(stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                list(cmd), stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                text=True, bufsize=1, start_new_session=True,
            )  # fmt: skip
        self.lines: list[Line] = []
        self._eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True, name=title)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                line: Line = json.loads(raw)
            except ValueError:
                line = {"event": "unparsed", "raw": raw.rstrip("\n")}
            line["seen"] = time.monotonic()
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def mark(self) -> int:
        """The number of lines so far: pass it as ``since`` to look only at later ones."""
        with self._cond:
            return len(self.lines)

    def since(self, index: int = 0) -> list[Line]:
        with self._cond:
            return list(self.lines[index:])

    def events(self, event: str, since: int = 0, **fields: Any) -> list[Line]:
        """The lines from index ``since`` on with this ``event`` and ``fields``."""
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
                    raise AssertionError(
                        f"{self.title} exited (rc={self.proc.poll()}) without printing "
                        f"{event} {fields}:\n{self.describe()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{self.title} did not print {event} {fields} within {timeout:.1f} s:\n"
                        f"{self.describe()}"
                    )
                self._cond.wait(left)

    def describe(self) -> str:
        with self._cond:
            lines = [json.dumps(x, sort_keys=True) for x in self.lines]
        try:
            with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
                err = f.read()[-4000:]
        except OSError:
            err = ""
        return (
            f"--- {self.title} (pid {self.proc.pid}, rc {self.proc.poll()}) ---\n"
            + "\n".join(lines)
            + (f"\n--- stderr ---\n{err}" if err.strip() else "")
        )

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> float:
        """kill -9; returns the monotonic time of the signal."""
        t = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        return t

    def close_streams(self) -> None:
        """After the process ended: the reader thread done, stdout closed."""
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
