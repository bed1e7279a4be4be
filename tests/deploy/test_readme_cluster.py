"""README.md's "Running a real cluster" section, run as written, on three "hosts".

The fenced blocks after the ``<!-- readme-cluster: NAME -->`` markers are read from
README.md at test time, so editing the README changes what is tested:

- ``admin``: run once in an admin directory (certificates, the admin token, the secret);
- ``node``: run on every host, changing only its ``NODE=n1`` line (the README says so);
- ``yaml`` and ``yaml-serve``: the YAML variant, run as the README says: the ``node``
  block's lines before ``coord serve``, the YAML file written to ``/etc/coord/coord.yaml``
  (``node_id`` and the two certificate names changed per node), then ``yaml-serve``;
- ``status``: run from the admin directory, its ``<admin token>`` replaced by the token
  that ``admin`` printed.

Each host is a network namespace holding the address the README's ``--peer`` flags give
it (10.0.0.1-3), on a bridge in a hub namespace; the admin machine is one more
namespace on that bridge (.254). The root namespace has no leg on the bridge, so no
traffic leaves these namespaces and the addresses cannot clash with the machine's own.
The README's absolute paths are used as they are: each host's script runs in a private
mount namespace where ``/etc`` and ``/var/lib`` are overlays whose writable layers live
in a tmpfs of that namespace, so ``/etc/coord`` and ``/var/lib/coord`` are the host's own
and vanish with it. Only the files the README says to copy are copied to each host.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns_hosts import BIN, REPO, NetnsLab, netns_unavailable, run

README = REPO / "README.md"
SECTION = "## Running a real cluster"
START_TIMEOUT_S = 90.0  # three Python start-ups and an election on 2 busy cores

_WHY_NOT = netns_unavailable()
if _WHY_NOT is None and shutil.which("unshare") is None:
    _WHY_NOT = "util-linux's unshare is not installed"
pytestmark = pytest.mark.skipif(_WHY_NOT is not None, reason=f"network namespaces: {_WHY_NOT}")


# -- the README's blocks --------------------------------------------------------------


def readme_blocks() -> dict[str, str]:
    """The marked fenced blocks of the section, by marker name."""
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end >= 0 else len(text)]
    found = re.findall(
        r"^<!-- readme-cluster: ([\w-]+) -->\n```\w*\n(.*?)^```$", section, re.MULTILINE | re.DOTALL
    )
    blocks: dict[str, str] = {}
    for name, body in found:
        assert name not in blocks, f"README marks two blocks {name!r}"
        blocks[name] = body
    assert sorted(blocks) == ["admin", "node", "status", "yaml", "yaml-serve"], sorted(blocks)
    return blocks


def members(node_block: str) -> list[tuple[str, str]]:
    """(node id, host address) from the node block's ``--peer ID=RAFT,API`` flags."""
    peers = re.findall(r"--peer (\w+)=([\d.]+):\d+,([\d.]+):\d+", node_block)
    assert len(peers) >= 3, f"no 3 --peer flags in the README's node block: {peers}"
    for nid, raft, api in peers:
        assert raft == api, f"{nid}: Raft and API on different hosts ({raft}, {api})"
    return [(nid, raft) for nid, raft, _ in peers]


def node_script(block: str, node_id: str) -> str:
    """The node block on host ``node_id``: only its ``NODE=n1`` line changes."""
    script, n = re.subn(r"^NODE=n1\b", f"NODE={node_id}", block, flags=re.MULTILINE)
    assert n == 1, "the README's node block has no single NODE=n1 line"
    return script


def yaml_script(blocks: dict[str, str], node_id: str) -> str:
    """The YAML variant on host ``node_id``: the node block's lines before ``coord
    serve``, the YAML file (node_id and the certificate names changed), yaml-serve."""
    lines = node_script(blocks["node"], node_id).splitlines()
    serve = next(i for i, line in enumerate(lines) if line.startswith("coord serve"))
    config = blocks["yaml"]
    for key in ("node_id", "tls_cert", "tls_key"):
        config, n = re.subn(
            rf"^({key}:.*)\bn1\b", rf"\g<1>{node_id}", config, count=1, flags=re.MULTILINE
        )
        assert n == 1, f"the README's YAML has no {key} naming n1"
    m = re.search(r"--config (\S+)", blocks["yaml-serve"])
    assert m, "yaml-serve has no --config FILE"
    assert "COORD_README_YAML" not in config
    write = f"cat > {m.group(1)} <<'COORD_README_YAML'\n{config}COORD_README_YAML\n"
    return "\n".join(lines[:serve]) + "\n" + write + blocks["yaml-serve"]


# -- the lab --------------------------------------------------------------------------


class ReadmeLab(NetnsLab):
    """Hosts with the README's addresses plus an admin host, on one bridge, with no leg
    in the root namespace (its address range stays untouched)."""

    def __init__(self, addresses: list[str]) -> None:
        net = ipaddress.ip_network(f"{addresses[0]}/24", strict=False)
        assert all(ipaddress.ip_address(a) in net for a in addresses), addresses
        admin = str(net.network_address + 254)
        assert admin not in addresses
        super().__init__(len(addresses) + 1)
        self.hosts[-1] = f"coordtest-{self.tag}-admin"
        self.addresses = [*addresses, admin]

    @staticmethod
    def _free_prefix() -> str:
        return ""  # addresses are given, not picked

    def address(self, i: int) -> str:
        return self.addresses[i]

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


# A host's own /etc and /var/lib: overlays with their writable layers in a tmpfs of the
# script's private mount namespace; then the files the README copies, then the script.
HOST_PRELUDE = r"""set -eu
root=$1; files=$2; node=$3; script=$4
mount -t tmpfs -o mode=0700 coordtest "$root"
mkdir "$root/eu" "$root/ew" "$root/vu" "$root/vw" "$root/home" "$root/home/tls"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$root/eu,workdir=$root/ew" /etc
mount -t overlay overlay -o "lowerdir=/var/lib,upperdir=$root/vu,workdir=$root/vw" /var/lib
test ! -e /etc/coord && test ! -e /var/lib/coord
cp "$files/tls/ca.pem" "$files/tls/$node.pem" "$files/tls/$node-key.pem" "$root/home/tls/"
cp "$files/tokens.yaml" "$files/cluster-secret" "$root/home/"
cd "$root/home"
exec bash -e -c "$script"
"""


class ReadmeCluster:
    def __init__(self, lab: ReadmeLab, base: Path, ids: list[str]) -> None:
        self.lab = lab
        self.base = base
        self.ids = ids
        self.admin_dir = base / "admin"
        self.admin_dir.mkdir()
        self.admin = len(ids)  # the admin host's index
        self.env = {
            "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
            "HOME": str(self.admin_dir),
            "LANG": "C.UTF-8",
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = [base / f"{nid}.log" for nid in ids]

    def admin_sh(self, script: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        cmd = ["ip", "netns", "exec", self.lab.hosts[self.admin], "bash", "-e", "-c", script]
        return run(cmd, timeout=timeout, cwd=self.admin_dir, env=self.env)

    def start(self, i: int, script: str) -> None:
        root = self.base / f"host-{self.ids[i]}"
        root.mkdir()
        cmd = [
            "unshare", "--mount", "--propagation", "private",
            "bash", "-c", HOST_PRELUDE, "prelude", str(root), str(self.admin_dir), self.ids[i],
            script,
        ]  # fmt: skip
        self.procs.append(self.lab.popen(i, cmd, self.logs[i], self.env))

    def check_alive(self) -> None:
        for nid, p in zip(self.ids, self.procs, strict=True):
            assert p.poll() is None, f"{nid} exited with {p.returncode}:\n{self.describe()}"

    def close(self) -> None:
        """SIGTERM every node's process group, SIGKILL what is left."""
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)

    def describe(self) -> str:
        out = []
        for nid, path in zip(self.ids, self.logs, strict=True):
            text = path.read_text(errors="replace") if path.exists() else ""
            out.append(f"----- {nid} ({path}) -----\n{text[-5000:]}")
        return "\n".join(out)


def status_rows(stdout: str, endpoints: list[str]) -> dict[str, list[str]]:
    """``coordctl status``'s table rows, by endpoint."""
    rows = {}
    for line in stdout.splitlines():
        cols = line.split()
        if cols and cols[0] in endpoints:
            rows[cols[0]] = cols
    return rows


@pytest.fixture
def blocks() -> dict[str, str]:
    return readme_blocks()


@pytest.fixture
def lab(blocks: dict[str, str]) -> Iterator[ReadmeLab]:
    lab = ReadmeLab([addr for _, addr in members(blocks["node"])])
    try:
        lab.up()
        yield lab
    finally:
        lab.close()
        assert not lab.leftovers(), f"namespaces left behind: {lab.leftovers()}"


@pytest.mark.parametrize("variant", ["flags", "yaml"])
def test_readme_cluster_starts(
    variant: str, blocks: dict[str, str], lab: ReadmeLab, tmp_path: Path
) -> None:
    ids = [nid for nid, _ in members(blocks["node"])]
    cluster = ReadmeCluster(lab, tmp_path, ids)
    ok = False
    try:
        setup = cluster.admin_sh(blocks["admin"])
        assert setup.returncode == 0, f"the admin block failed:\n{setup.stdout}{setup.stderr}"
        tokens = re.findall(r"^token: (\S+)$", setup.stdout, re.MULTILINE)
        assert len(tokens) == 1, f"the admin block printed {len(tokens)} tokens:\n{setup.stdout}"

        for i, nid in enumerate(ids):
            script = node_script(blocks["node"], nid)
            if variant == "yaml":
                script = yaml_script(blocks, nid)
            cluster.start(i, script)

        assert blocks["status"].count("<admin token>") == 1
        status = blocks["status"].replace("<admin token>", tokens[0])
        endpoints = [f"{addr}:2379" for _, addr in members(blocks["node"])]
        deadline = time.monotonic() + START_TIMEOUT_S
        last = ""
        while True:
            cluster.check_alive()
            p = cluster.admin_sh(status)
            rows = status_rows(p.stdout, endpoints)
            last = f"rc {p.returncode}\n{p.stdout}{p.stderr}"
            roles = sorted(r[2] for r in rows.values())
            leaders = {r[4] for r in rows.values()}
            if (
                p.returncode == 0
                and len(rows) == len(ids)
                and roles == ["follower"] * (len(ids) - 1) + ["leader"]
                and len(leaders) == 1
                and leaders <= set(ids)
            ):
                break
            assert time.monotonic() < deadline, f"no leader in `coordctl status`:\n{last}"
            time.sleep(1.0)
        # The leader the table names is the node that says it leads.
        leader = next(r for r in rows.values() if r[2] == "leader")
        assert leader[1] == leader[4], last
        ok = True
    finally:
        cluster.close()
        if not ok:
            print(cluster.describe())
