"""Hosts in network namespaces, and a coord cluster on them built from deploy/'s files.

:class:`NetnsLab` makes N "hosts": network namespaces, each with one interface
(``eth0``, 10.77.X.i/24) on a bridge that lives in a hub namespace of its own, so the
root namespace's firewall never sees their traffic. The test process (the root
namespace) joins the bridge too, as 10.77.X.254: clients, member processes and HTTP
probes run there. X is picked so that no route of the root namespace covers it.
Everything is named after a random tag and removed by :meth:`NetnsLab.close`, which
kills whatever still runs inside the namespaces first (only this lab's processes can).

:class:`HostCluster` installs the per-node configuration files of a deploy example
(``deploy/config/3-nodes/nK.yaml``, as systemd would read them from
``/etc/coord/coord.yaml``) on those hosts, changing only addresses (10.0.0.K -> the
lab's) and absolute paths (``/etc/coord``, ``/var/lib/coord...`` -> the host's own
directory), with TLS certificates and tokens made by ``coordctl certs init`` and
``coordctl auth new-token`` and the cluster secret in the environment, the way
``deploy/systemd/coord.env.example`` gives it. Each node is
``ip netns exec HOST .venv/bin/coord serve --config FILE``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coord.client import Client
from coord.client.credentials import Credentials
from coord.testing import wait_until

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
COORD = str(BIN / "coord")
COORDCTL = str(BIN / "coordctl")
IP_TIMEOUT_S = 10.0


def run(cmd: Sequence[str], timeout: float = 30.0, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, check=False,
        stdin=subprocess.DEVNULL, **kw,
    )  # fmt: skip


def netns_unavailable() -> str | None:
    """Why this machine cannot run the lab (None when it can)."""
    if os.geteuid() != 0:
        return "needs root for ip netns and veth (CI runs as root)"
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    probe = f"coordtest-probe-{secrets.token_hex(3)}"
    p = run(["ip", "netns", "add", probe], timeout=IP_TIMEOUT_S)
    if p.returncode != 0:
        return f"ip netns add fails here: {p.stderr.strip()}"
    run(["ip", "netns", "del", probe], timeout=IP_TIMEOUT_S)
    return None


class NetnsLab:
    """``n`` hosts on one bridge; see the module docstring."""

    def __init__(self, n: int) -> None:
        self.tag = secrets.token_hex(3)
        self.prefix = self._free_prefix()
        self.hub = f"coordtest-{self.tag}-hub"
        self.hosts = [f"coordtest-{self.tag}-n{i}" for i in range(1, n + 1)]
        self.root_if = f"cdr{self.tag}"
        self.root_address = f"{self.prefix}.254"
        self._made: list[str] = []  # namespaces created so far

    @staticmethod
    def _free_prefix() -> str:
        routes = run(["ip", "-4", "route", "show", "table", "all"], timeout=IP_TIMEOUT_S).stdout
        taken = []
        for word in re.findall(r"\d+\.\d+\.\d+\.\d+(?:/\d+)?", routes):
            with contextlib.suppress(ValueError):
                taken.append(ipaddress.ip_network(word, strict=False))
        for _ in range(100):
            net = ipaddress.ip_network(f"10.77.{secrets.randbelow(250)}.0/24")
            if not any(net.overlaps(t) for t in taken):
                return str(net.network_address).rsplit(".", 1)[0]
        raise RuntimeError("no free 10.77.X.0/24 for the lab")

    def address(self, i: int) -> str:
        """Host ``i``'s (0-based) address."""
        return f"{self.prefix}.{i + 1}"

    def _ip(self, *args: str) -> None:
        p = run(["ip", *args], timeout=IP_TIMEOUT_S)
        if p.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {p.stderr.strip()}")

    def up(self) -> None:
        self._ip("netns", "add", self.hub)
        self._made.append(self.hub)
        self._ip("-n", self.hub, "link", "set", "lo", "up")
        self._ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        self._ip("-n", self.hub, "link", "set", "br0", "up")
        for i, host in enumerate(self.hosts):
            self._ip("netns", "add", host)
            self._made.append(host)
            self._ip("-n", host, "link", "set", "lo", "up")
            port = f"cdv{self.tag}{i}"
            self._ip("link", "add", port, "netns", self.hub, "type", "veth",
                     "peer", "name", "eth0", "netns", host)  # fmt: skip
            self._ip("-n", self.hub, "link", "set", port, "master", "br0", "up")
            self._ip("-n", host, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            self._ip("-n", host, "link", "set", "eth0", "up")
        # The root namespace's leg: the test process reaches every host through it.
        self._ip("link", "add", self.root_if, "type", "veth",
                 "peer", "name", f"cdh{self.tag}", "netns", self.hub)  # fmt: skip
        self._ip("-n", self.hub, "link", "set", f"cdh{self.tag}", "master", "br0", "up")
        self._ip("addr", "add", f"{self.root_address}/24", "dev", self.root_if)
        self._ip("link", "set", self.root_if, "up")

    def popen(self, i: int, cmd: Sequence[str], log_path: Path, env: dict[str, str]) -> Any:
        """Run ``cmd`` inside host ``i``'s namespace (``ip netns exec`` execs it: the pid is
        the command's own)."""
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                ["ip", "netns", "exec", self.hosts[i], *cmd], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,
            )  # fmt: skip

    def close(self) -> None:
        """Kill what runs in the namespaces, remove links and namespaces (errors ignored)."""
        for ns in reversed(self._made):
            pids = run(["ip", "netns", "pids", ns], timeout=IP_TIMEOUT_S).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        run(["ip", "link", "del", self.root_if], timeout=IP_TIMEOUT_S)
        for ns in reversed(self._made):
            run(["ip", "netns", "del", ns], timeout=IP_TIMEOUT_S)
        self._made.clear()

    def leftovers(self) -> list[str]:
        """This lab's namespaces that still exist (empty after close)."""
        names = run(["ip", "netns", "list"], timeout=IP_TIMEOUT_S).stdout
        return [line.split()[0] for line in names.splitlines() if self.tag in line]


# -- the cluster ------------------------------------------------------------------------

EXAMPLE_PREFIX = "10.0.0."  # the addresses of deploy/config/3-nodes
EXAMPLE_PATHS = ("/etc/coord", "/var/lib/coord")  # /var/lib/coord-backups too


class HostCluster:
    """The 3-node systemd example on the lab's hosts (module docstring)."""

    def __init__(
        self, lab: NetnsLab, base: Path, example: Path = DEPLOY / "config" / "3-nodes"
    ) -> None:
        self.lab = lab
        self.base = base
        self.files = sorted(example.glob("n*.yaml"))
        self.n = len(self.files)
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * self.n
        self.roots = [base / f"host-n{i + 1}" for i in range(self.n)]
        self.configs = [r / "etc" / "coord" / "coord.yaml" for r in self.roots]
        self.logs = [base / f"n{i + 1}.log" for i in range(self.n)]
        self.node_ids = [f.stem for f in self.files]
        self.api = [f"{lab.address(i)}:2379" for i in range(self.n)]
        self.http = [f"{lab.address(i)}:9479" for i in range(self.n)]
        self.admin_token = ""
        self.member_token = ""
        self.ca = str(base / "tls" / "ca.pem")
        self.env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME")}

    # -- installing the files -----------------------------------------------------------

    def template(self, text: str, i: int) -> str:
        """The example file as installed on host ``i``: addresses and paths only."""
        out = text.replace(EXAMPLE_PREFIX, f"{self.lab.prefix}.")
        for path in EXAMPLE_PATHS:
            out = out.replace(path, f"{self.roots[i]}{path}")
        return out

    def install(self) -> None:
        tls = self.base / "tls"
        nodes = [f"--node={nid}={self.lab.address(i)}" for i, nid in enumerate(self.node_ids)]
        ctl(["certs", "init", "--dir", str(tls), *nodes, "--client", "admin"])
        tokens = self.base / "tokens.yaml"
        self.admin_token = new_token(tokens, "admin", "--role", "admin")
        self.member_token = new_token(tokens, "db-members", "--role", "member", "--groups", "db")
        # The cluster secret, as the EnvironmentFile example sets it (a real value).
        env_example = (DEPLOY / "systemd" / "coord.env.example").read_text()
        for line in env_example.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, _ = line.partition("=")
                self.env[key.strip()] = secrets.token_hex(32)
        assert "COORD_CLUSTER_SECRET" in self.env, "coord.env.example sets no cluster secret"
        for i, (src, nid) in enumerate(zip(self.files, self.node_ids, strict=True)):
            etc = self.roots[i] / "etc" / "coord"
            (etc / "tls").mkdir(parents=True)
            for name in ("ca.pem", f"{nid}.pem", f"{nid}-key.pem"):
                shutil.copy2(tls / name, etc / "tls" / name)
            shutil.copy2(tokens, etc / "tokens.yaml")
            original = src.read_text()
            installed = self.template(original, i)
            # Only addresses and paths changed: every example path now lies in the
            # host's own directory, and no example address is left.
            assert EXAMPLE_PREFIX not in installed
            assert installed.count(str(self.roots[i])) == sum(map(original.count, EXAMPLE_PATHS))
            self.configs[i].write_text(installed)

    # -- nodes ----------------------------------------------------------------------

    def start(self, i: int) -> None:
        assert self.procs[i] is None or self.procs[i].poll() is not None
        self.procs[i] = self.lab.popen(
            i, [COORD, "serve", "--config", str(self.configs[i])], self.logs[i], self.env
        )

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        p = self.procs[i]
        if p is None:
            return
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(sig)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
        self.procs[i] = None

    def close(self) -> None:
        for i in range(self.n):
            self.kill(i)

    def credentials(self, token: str = "") -> Credentials:
        return Credentials(token=token or self.admin_token, ca_file=self.ca)

    def client(self, endpoints: Sequence[str] | None = None, **kw: Any) -> Client:
        return Client(list(endpoints or self.api), credentials=self.credentials(), **kw)

    def ready(self, i: int) -> bool:
        """/readyz answers 200 (from the root namespace, over the bridge)."""
        ctx = ssl.create_default_context(cafile=self.ca)  # HTTPS: the nodes have TLS
        try:
            url = f"https://{self.http[i]}/readyz"
            with urllib.request.urlopen(url, timeout=1.0, context=ctx) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, nodes: Sequence[int], timeout: float = 30.0) -> None:
        ids = [self.node_ids[i] for i in nodes]
        wait_until(lambda: all(self.ready(i) for i in nodes), timeout, f"/readyz 200 on {ids}")

    def leader_index(self) -> int:
        with self.client(timeout_s=10.0) as c:
            return self.node_ids.index(c.leader().leader_id)

    def describe(self) -> str:
        out = []
        for i, path in enumerate(self.logs):
            text = path.read_text(errors="replace") if path.exists() else ""
            out.append(f"----- {self.node_ids[i]} ({path}) -----\n{text[-6000:]}")
        return "\n".join(out)


def ctl(args: Sequence[str], timeout: float = 30.0) -> str:
    p = run([COORDCTL, *args], timeout=timeout)
    assert p.returncode == 0, f"coordctl {' '.join(args)}: {p.stdout}{p.stderr}"
    return p.stdout


def new_token(tokens_file: Path, name: str, *args: str) -> str:
    out = ctl(["auth", "new-token", name, *args, "--append", str(tokens_file)])
    m = re.search(r"^token: (\S+)$", out, re.MULTILINE)
    assert m, f"no token in: {out}"
    return m.group(1)


# -- member processes with credentials ---------------------------------------------------


class SecureMember:
    """``coord.member_process`` (through tests/deploy/secure_member.py, which gives it
    TLS and a token) and the JSON lines it printed. ``t`` in a line is the member's
    CLOCK_MONOTONIC, the same clock as this process's ``time.monotonic()``."""

    def __init__(
        self, cluster: HostCluster, group: str, member_id: str, priority: int, ttl_s: float
    ) -> None:
        self.id = member_id
        self.ttl_s = ttl_s
        env = {
            **cluster.env,
            "MEMBER_TOKEN": cluster.member_token,
            "MEMBER_CA": cluster.ca,
            "PYTHONPATH": str(REPO),
        }
        self.stderr_path = cluster.base / f"member-{member_id}.stderr"
        cmd = [
            sys.executable, str(Path(__file__).with_name("secure_member.py")),
            "--endpoints", ",".join(cluster.api), "--group", group, "--id", member_id,
            "--priority", str(priority), "--ttl-s", str(ttl_s),
        ]  # fmt: skip
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True,
                bufsize=1, env=env, start_new_session=True,
            )  # fmt: skip
        self.lines: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": "unparsed", "raw": raw}
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def events(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            return [x for x in self.lines if x.get("event") == name]

    def wait_for(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.get("event") == event:
                        return line
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    raise AssertionError(
                        f"member {self.id} printed no {event} within {timeout:.1f} s:\n"
                        + self.describe()
                    )
                self._cond.wait(left)

    def kill(self) -> float:
        """kill -9; the monotonic time of the signal."""
        t = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        return t

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def describe(self) -> str:
        with self._cond:
            lines = "\n".join(json.dumps(x) for x in self.lines)
        err = self.stderr_path.read_text(errors="replace")[-3000:]
        return f"--- member {self.id} (rc {self.proc.poll()}) ---\n{lines}\n{err}"
