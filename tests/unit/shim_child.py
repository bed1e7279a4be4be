"""A child Python process for the LD_PRELOAD shim tests (test_chaos_clockshim.py,
test_chaos_diskshim.py): it runs a script that answers one line on stdout per request
line on stdin, under the environment the shim's harness gives (``LD_PRELOAD`` ...)."""

from __future__ import annotations

import os
import subprocess
import sys


class ShimChild:
    """``python -c script *args`` with ``env`` over ``os.environ``; one answer line per
    :meth:`ask`, and :meth:`close` ends its request loop and checks it exited 0."""

    def __init__(self, script: str, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, **env}, text=True,
        )  # fmt: skip

    def ask(self, what: str) -> list[str]:
        """Send the request line ``what``; the words of the answer line."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the child exited (rc={self.proc.poll()})"
        return line.split()

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()  # the child's loop ends
        rc = self.proc.wait(10)
        self.proc.stdout.close()
        assert rc == 0, f"the child failed (rc={rc})"
