"""``python -m coord.member_process`` exits within a few seconds of SIGTERM whatever the
cluster's state (resigning when it can), reads COORDCTL_ENDPOINTS, and documents every
option in ``--help``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from coord.testing import LocalCluster, wait_until

from .members import Members, holders
from .support import describe, kill_all_at_once

TTL_S = 2.0
STOP_TIMEOUT_S = 3.0  # member_process's --stop-timeout-s default
# SIGTERM to exit: the stop timeout, and room for a loaded machine to get there.
EXIT_WITHIN_S = STOP_TIMEOUT_S + 3.0
MEMBER = [sys.executable, "-m", "coord.member_process"]


def run_member(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MEMBER, *args], capture_output=True, text=True, timeout=30,
                          env=env, stdin=subprocess.DEVNULL, check=False)  # fmt: skip


def test_sigterm_exits_within_seconds_once_the_cluster_is_gone(
    own_cluster: LocalCluster, own_members: Members
) -> None:
    with own_cluster.client() as c:
        c.group("gone").create()
    m1 = own_members.start("gone", "m1", priority=10, ttl_s=TTL_S)
    m1.elected()
    m2 = own_members.start("gone", "m2", priority=5, ttl_s=TTL_S)
    m2.wait_for("session", 15, state="connected")

    kill_all_at_once(own_cluster)  # no node answers any more
    # m1 still believes it is master until its session's validity ends; m2 is blocked in
    # its campaign. Either way, SIGTERM ends them within a few seconds.
    for m in (m1, m2):
        mark = m.mark()
        sent = time.monotonic()
        m.proc.send_signal(signal.SIGTERM)
        m.proc.wait(timeout=30)
        took = time.monotonic() - sent
        assert took < EXIT_WITHIN_S, f"{m.id} exited {took:.1f} s after SIGTERM\n{m.describe()}"
        assert m.wait_for("stopping", 5, since=mark, reason="SIGTERM")
        assert m.proc.returncode in (0, 1), m.describe()


def test_sigterm_of_a_master_resigns_when_the_cluster_answers(
    own_cluster: LocalCluster, own_members: Members
) -> None:
    with own_cluster.client() as c:
        c.group("up").create()
        m1 = own_members.start("up", "m1", priority=10, ttl_s=TTL_S)
        token = m1.elected()["token"]
        sent = m1.terminate()
        assert m1.proc.returncode == 0, m1.describe()
        assert time.monotonic() - sent < EXIT_WITHIN_S
        m1.wait_for("resigned", 1, cause="stop")
        assert holders(c, "up") == {}, f"token {token} still held"


def test_member_process_reads_coordctl_endpoints_and_documents_its_options(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "COORDCTL_ENDPOINTS"}
    help_run = run_member(["--help"], env)
    assert help_run.returncode == 0, describe(help_run)
    text = help_run.stdout
    options = set(re.findall(r"--[a-z][a-z-]+", text.split("options:")[0]))  # the usage line
    assert {"--endpoints", "--group", "--id", "--stop-timeout-s"} <= options, text
    for opt in options:  # each one explained in the options list
        entry = re.search(rf"^  {opt}\b.*?(?=^  -|\Z)", text, re.M | re.S)
        assert entry is not None, f"{opt} not listed\n{text}"
        words = entry[0].split()
        assert len(words) > 3, f"{opt} has no help text: {entry[0]!r}"
    assert "COORDCTL_ENDPOINTS" in text

    missing = run_member(["--group", "g", "--id", "x"], env)
    assert missing.returncode == 2 and "--endpoints" in missing.stderr, describe(missing)

    with cluster.client() as c:
        c.group("from-env").create()
    env["COORDCTL_ENDPOINTS"] = ",".join(cluster.endpoints)
    out = tmp_path / "member.out"
    with open(out, "wb") as f:
        p = subprocess.Popen(
            [*MEMBER, "--group", "from-env", "--id", "e1", "--ttl-s", str(TTL_S)],
            stdout=f, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        wait_until(lambda: '"event": "elected"' in out.read_text() or p.poll() is not None,
                   30, "elected")  # fmt: skip
        assert '"event": "elected"' in out.read_text(), out.read_text()
    finally:
        p.terminate()
        p.wait(timeout=30)
    assert p.returncode == 0, out.read_text()
    assert '"cause": "stop"' in out.read_text()


def test_a_ttl_out_of_bounds_is_refused_in_seconds_without_a_traceback(
    cluster: LocalCluster,
) -> None:
    with cluster.client() as c:
        c.group("short-ttl").create(exist_ok=True)
    env = {**os.environ, "COORDCTL_ENDPOINTS": ",".join(cluster.endpoints)}
    bad = run_member(["--group", "short-ttl", "--id", "t1", "--ttl-s", "0.1"], env)
    assert bad.returncode == 2, describe(bad)
    assert "Traceback" not in bad.stderr, describe(bad)
    assert "(0.1 s)" in bad.stderr and "0.5..3600 s" in bad.stderr, describe(bad)
