"""``coord dev`` never outlives itself: whatever signal ends it (SIGTERM from
``timeout 20``, SIGHUP, SIGINT even when a script started it in the background with SIGINT
ignored), it stops its 3 nodes and 3 member processes; killed with SIGKILL, its children
notice and stop by themselves. Each test then checks that no process of that run is left
(by command line: its data dir, its endpoints) and that none of its ports is listening.

Also: the live view names nodes n1..n3 (or 1..3), an unknown command lists every command,
and the cluster's endpoints are where coordctl finds them (the README's ports by default,
and ``DATA_DIR/env`` to source).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from coord.cli.dev import COMMANDS
from coord.testing import wait_until

from .support import BIN_DIR, COORD, COORDCTL

BANNER = re.compile(
    r"^\s+(n\d): api (\S+)  raft (\S+)  status page and /metrics http://(\S+)/", re.M
)
T = TypeVar("T")
README_APIS = ["127.0.0.1:2379", "127.0.0.1:2381", "127.0.0.1:2383"]


@dataclass
class Run:
    """One ``coord dev`` run: where it writes, and what it printed."""

    data: Path
    out: Path

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def addresses(self) -> dict[str, tuple[str, str, str]] | None:
        """node id -> (api, raft, http), once the banner is out."""
        found = {m[1]: (m[2], m[3], m[4]) for m in BANNER.finditer(self.text())}
        return found if len(found) == 3 else None

    def apis(self) -> list[str]:
        addrs = self.addresses()
        assert addrs is not None, self.text()
        return [addrs[n][0] for n in sorted(addrs)]

    def ports(self) -> set[int]:
        addrs = self.addresses()
        assert addrs is not None, self.text()
        return {int(a.rsplit(":", 1)[1]) for triple in addrs.values() for a in triple}

    def processes(self) -> dict[int, str]:
        """Live processes of this run: its nodes (their data dirs are under ours), its
        member processes (they dial its endpoints), and coord dev itself."""
        needles = [str(self.data)]
        if self.addresses() is not None:
            needles.append(",".join(self.apis()))
        return processes_mentioning(needles)

    def logs(self) -> str:
        parts = [f"--- coord dev output ---\n{self.text()}"]
        if self.data.is_dir():
            for log in sorted(self.data.glob("*.log")):
                parts.append(f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)


def processes_mentioning(needles: list[str]) -> dict[int, str]:
    """pid -> command line of every live process whose command line contains a needle
    (a zombie has an empty command line: it holds nothing)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        cmd = raw.replace(b"\0", b" ").decode(errors="replace")
        if any(n in cmd for n in needles):
            found[int(entry)] = cmd
    return found


def listening_ports() -> set[int]:
    """Every TCP port something listens on (this network namespace)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def members_and_nodes(run: Run) -> dict[int, str]:
    procs = run.processes()
    nodes = [c for c in procs.values() if " serve --node-id " in c]
    members = [c for c in procs.values() if "coord.member_process" in c]
    return procs if len(nodes) == 3 and len(members) == 3 else {}


def said_in(run: Run, text: str) -> Callable[[], bool]:
    return lambda: text in run.text()


def wait_for(run: Run, pred: Callable[[], T | None], timeout: float, what: str) -> T:
    """wait_until, with this run's output and logs (as they are then) when it times out."""
    try:
        return wait_until(pred, timeout, what, interval=0.05)
    except TimeoutError as e:
        raise AssertionError(f"{e}\n{run.logs()}") from None


def wait_running(run: Run, timeout: float = 60) -> dict[int, str]:
    """Until the banner is out, the demo group has a master and all 6 children run."""
    wait_for(run, run.addresses, timeout, "coord dev's banner")
    wait_for(run, said_in(run, "master_elected db-"), timeout, "a master of db")
    return wait_for(run, lambda: members_and_nodes(run), timeout, "3 nodes and 3 members")


def check_nothing_left(run: Run, ports: set[int], timeout: float = 30) -> None:
    def leftovers() -> str | None:
        procs = run.processes()
        held = ports & listening_ports()
        if procs or held:
            return f"processes {procs}, ports listening {sorted(held)}"
        return None

    try:
        wait_until(
            lambda: leftovers() is None, timeout, "no process and no port left", interval=0.1
        )
    except TimeoutError:
        left = leftovers()
        for pid in run.processes():  # don't leak them into the next test
            os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"left behind: {left}\n{run.logs()}") from None


def start(
    run: Run, args: list[str], stdin: int | None = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    with open(run.out, "wb") as out:
        return subprocess.Popen(
            [COORD, "dev", "--data-dir", str(run.data), *args],
            stdout=out, stderr=subprocess.STDOUT, stdin=stdin,
        )  # fmt: skip


def kill_run(run: Run, p: subprocess.Popen[bytes]) -> None:
    """Clean-up after a failed test: kill coord dev and whatever it left."""
    if p.poll() is None:
        p.kill()
        p.wait(timeout=10)
    if p.stdin is not None:
        p.stdin.close()
    for pid in run.processes():
        os.kill(pid, signal.SIGKILL)


def test_timeout_20_coord_dev_leaves_no_process_and_no_port(tmp_path: Path) -> None:
    run = Run(tmp_path / "dev", tmp_path / "out.txt")
    with open(run.out, "wb") as out:
        p = subprocess.Popen(
            ["timeout", "20", COORD, "dev", "--base-port", "0", "--data-dir", str(run.data)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    seen: dict[int, str] = {}

    def watch_children() -> bool:  # until timeout(1) ends it: remember every child seen
        seen.update(run.processes() if run.addresses() else {})
        return p.poll() is not None

    try:
        wait_for(run, run.addresses, 18, "coord dev's banner")
        ports = run.ports()
        wait_until(watch_children, 60, "timeout(1) to end coord dev", interval=0.1)
        rc = p.wait(timeout=1)
    finally:
        kill_run(run, p)
    assert rc == 124, f"timeout(1) says the command timed out\n{run.logs()}"
    # It had started its nodes (and, unless the machine is very slow, its members).
    nodes = [c for c in seen.values() if " serve --node-id " in c]
    assert len(nodes) == 3, f"{seen}\n{run.logs()}"
    text = run.text()
    assert "stopping the member processes and the nodes (SIGTERM)" in text, run.logs()
    assert "coord dev: stopped" in text, run.logs()
    check_nothing_left(run, ports)


def test_sigkill_of_coord_dev_takes_its_children_along(tmp_path: Path) -> None:
    run = Run(tmp_path / "dev", tmp_path / "out.txt")
    p = start(run, ["--base-port", "0"])
    try:
        wait_running(run)
        ports = run.ports()
        p.kill()
        assert p.wait(timeout=10) == -signal.SIGKILL
        check_nothing_left(run, ports)
    finally:
        kill_run(run, p)
    # They stopped because their parent died (not because of a signal from anyone).
    for member in ("db-1", "db-2", "db-3"):
        log = (run.data / f"{member}.log").read_text()
        assert f'"reason": "parent process {p.pid} exited"' in log, run.logs()
    for node in ("n1", "n2", "n3"):
        log = (run.data / f"{node}.log").read_text()
        assert f"parent process {p.pid} exited: stopping" in log, run.logs()


def test_sighup_stops_everything_and_the_live_view_names_nodes(tmp_path: Path) -> None:
    """Also item 1: the README's ports by default (or free ports, said so, when another
    cluster holds them), and ``DATA_DIR/env`` points coordctl at the cluster."""
    readme_ports_free = not ({2379, 2380, 2381, 2382, 2383, 2384, 2385, 2386, 2387}
                             & listening_ports())  # fmt: skip
    run = Run(tmp_path / "dev", tmp_path / "out.txt")
    p = start(run, [], stdin=subprocess.PIPE)
    assert p.stdin is not None
    try:
        wait_running(run)
        ports = run.ports()
        if readme_ports_free:
            assert run.apis() == README_APIS, run.logs()
        else:
            assert run.apis() != README_APIS
            assert "are taken (another coord dev? etcd?): using free ports instead" in run.text()

        # The env file: sourced, coordctl (and the README's $E) reach this cluster.
        env_file = run.data / "env"
        assert f"source {env_file}" in run.text()
        script = (f'source {env_file} && {COORDCTL} -o json status && '
                  f'{COORDCTL} --endpoints "$E" nodes')  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("COORDCTL_")}
        env["PATH"] = f"{BIN_DIR}:{env['PATH']}"
        r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                           env=env, check=False)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        assert all(api in r.stdout for api in run.apis()), r.stdout

        # Nodes by id or number; an unknown command lists every command.
        for line, said in (
            ("pause 1", "pause n1"),
            ("resume n1", "resume n1"),
            ("restart 2", "restart n2"),
            ("frobnicate 3", f"unknown command 'frobnicate 3'; commands: {COMMANDS}"),
            ("pause 0", "pause failed: no node '0': the nodes are n1, n2, n3"),
        ):
            p.stdin.write(f"{line}\n".encode())
            p.stdin.flush()
            wait_for(run, said_in(run, said), 30, repr(said))
        assert "pause n2" not in run.text()  # `pause 1` was n1, not index 1

        p.send_signal(signal.SIGHUP)
        rc = p.wait(timeout=60)
        assert rc == 0, run.logs()
        assert "stopping the member processes and the nodes (SIGHUP)" in run.text()
        check_nothing_left(run, ports)
    finally:
        kill_run(run, p)


def sigint_ignored(pid: int) -> bool:
    mask = re.search(r"^SigIgn:\s+([0-9a-f]+)$", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert mask is not None
    return bool(int(mask[1], 16) & (1 << (signal.SIGINT - 1)))


def test_sigint_stops_coord_dev_started_in_the_background_by_a_script(tmp_path: Path) -> None:
    """A non-interactive shell starts background jobs with SIGINT ignored (the ``sleep``
    beside it shows it); coord dev stops on SIGINT all the same."""
    run = Run(tmp_path / "dev", tmp_path / "out.txt")
    script = (f"sleep 120 & echo $!; {COORD} dev --base-port 0 --data-dir {run.data} "
              f'>{run.out} 2>&1 </dev/null & echo $!; wait $!; echo "rc=$?"; kill %1')  # fmt: skip
    sh = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, text=True)
    assert sh.stdout is not None
    sibling, dev_pid = int(sh.stdout.readline()), int(sh.stdout.readline())
    try:
        assert sigint_ignored(sibling), "the shell did not start its background jobs so"
        wait_running(run)
        ports = run.ports()
        os.kill(dev_pid, signal.SIGINT)
        rest, _ = sh.communicate(timeout=60)
        assert rest.strip() == "rc=0", run.logs()
        assert "stopping the member processes and the nodes (SIGINT)" in run.text()
        check_nothing_left(run, ports)
    finally:
        if sh.poll() is None:
            sh.kill()
            sh.wait(timeout=10)
        for pid in run.processes():
            os.kill(pid, signal.SIGKILL)
        for pid in processes_mentioning(["sleep 120"]):
            if pid == sibling:
                os.kill(pid, signal.SIGKILL)
