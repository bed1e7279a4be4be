"""Every example of README.md runs (issue 15 item 7, issue 20): none can break silently.

README.md's fenced blocks are read at test time (tests/integration/readme_blocks.py says
how each one is classified): every ``sh`` and ``python`` block is run, or excluded with
the reason its rule states; a block that is neither fails
:func:`test_every_block_is_run_or_excluded`.

The cluster is the one the README's examples address: ``coord dev`` (what ``scripts/demo``
starts), in the background with its data dir in a temporary directory, on the README's
ports 2379/2381/2383 unless another cluster holds them (then coord dev takes free ports
and the README's endpoints are replaced by its real ones). Shell blocks run with bash
``set -euo pipefail``, PATH starting at the venv's bin, after ``source DATA_DIR/env`` as
coord dev says (COORDCTL_ENDPOINTS and ``$E``), in a working directory of their own.
Python blocks run with the venv's python, each as its own process with a deadline; a
fragment gets the names the README leaves to the reader's program (``c``, ``session``,
``storage``...: see readme_blocks.READER_NAMES). The ``go`` block (the Go quick start) is
built as a program of its own against clients/go and run; the grpcurl blocks use the
grpcurl scripts/bootstrap builds (linked into the venv's bin), and a rule's ``expect``
checks what they print (the leader found; the old leader, then a new one, on the
leader-change stream). Every block runs twice on the same
cluster: examples must be re-runnable (issue 20: the masters example once collided with
the demo's group ``db``). The last test stops coord dev as the README says (Ctrl-C) and
checks that no process and no port of it is left.

No traffic leaves 127.0.0.1: the README's example hosts (10.0.0.x) are replaced by
loopback addresses, a health check's target by a small HTTP server of this test.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from coord import config
from coord.agent import config as agent_config
from coord.testing import LocalCluster, wait_until

from . import readme_blocks as rb
from .support import BIN_DIR, ClusterFactory, coordctl, describe
from .test_dev_lifecycle import Run, check_nothing_left, kill_run, start, wait_running

PYTHON = os.path.join(BIN_DIR, "python")
BLOCK_TIMEOUT_S = 60.0  # one block, start-up included (2 busy cores)
STOP_TIMEOUT_S = 20.0  # a looping block, from the harness's Ctrl-C to its exit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env() -> dict[str, str]:
    """The caller's environment without any coordctl settings, the venv's bin first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COORDCTL_") and k != "E"}
    env["PATH"] = f"{BIN_DIR}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def run_sh(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail -x\n{script}"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


class HealthServer:
    """What the README's health checks probe, on loopback: 200 to every GET."""

    def __init__(self) -> None:
        class Ok(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Dev:
    """The module's ``coord dev`` and where its examples run."""

    run: Run
    proc: subprocess.Popen[bytes]
    ports: set[int]
    endpoints: str
    health: HealthServer
    base: Path
    agent_listen: str = ""

    def env_file(self) -> Path:
        return self.run.data / "env"

    def on_this_cluster(self, text: str) -> str:
        """``text`` aimed at this cluster and at loopback only (the agent example's role
        endpoints on a free port)."""
        text = text.replace(rb.README_ENDPOINTS, self.endpoints)
        text = text.replace(rb.AGENT_LISTEN, self.agent_listen)
        return rb.EXAMPLE_HOST.sub(self.health.address, text)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    base = tmp_path_factory.mktemp("readme")
    run = Run(base / "coord-dev", base / "coord-dev.out")
    proc = start(run, [])  # the README's ports, or free ones (said so) when they are taken
    health = HealthServer()
    try:
        wait_running(run)
        apis = run.apis()
        if "are taken" not in run.text():
            assert ",".join(apis) == rb.README_ENDPOINTS, run.logs()
        agent_listen = f"127.0.0.1:{free_port()}"
        yield Dev(run, proc, run.ports(), ",".join(apis), health, base, agent_listen)
    finally:
        health.close()
        kill_run(run, proc)  # after a failure: whatever is still running


# -- classification -------------------------------------------------------------------


def test_every_block_is_run_or_excluded() -> None:
    found = rb.blocks()
    planned = rb.plans(found)  # fails on a block no rule claims
    rb.cluster_markers_are_the_deploy_tests(found)
    runs = {p.run for _, p in planned}
    assert {"dev", "python", "go", "own-cluster", "excluded", "yaml"} <= runs, planned
    for block, plan in planned:
        assert plan.run != "excluded" or plan.why, f"{block.where}: excluded without a reason"


def test_yaml_blocks_are_configurations_coord_serve_loads(tmp_path: Path) -> None:
    """A YAML block parses; one with ``node_id`` is a ``coord serve --config`` file and
    loads with coord's own loader (``coord serve``'s code path up to starting the node),
    with the cluster secret from the environment as the README says; one with ``group``
    and ``member`` is a ``coord agent --config`` file and loads with the agent's."""
    yamls = [b for b, p in rb.plans(rb.blocks()) if p.run == "yaml"]
    assert yamls
    for block in yamls:
        data = yaml.safe_load(block.text)
        assert isinstance(data, dict), block.where
        if {"group", "member"} <= data.keys():  # a `coord agent --config` file
            agent = agent_config.build(data, block.where)
            assert (agent.group, agent.member) == (data["group"], data["member"]), block.where
            continue
        if "node_id" not in data:
            continue
        # The files it names exist on the README's hosts (the deploy test makes them):
        # here, empty stand-ins under tmp_path, the YAML pointing at them.
        text = block.text
        for value in data.values():
            if isinstance(value, str) and value.startswith("/etc/"):
                stand_in = tmp_path / value.lstrip("/")
                stand_in.parent.mkdir(parents=True, exist_ok=True)
                stand_in.touch()
                text = text.replace(f" {value}\n", f" {stand_in}\n")
        path = tmp_path / "coord.yaml"
        path.write_text(text)
        cfg = config.load(str(path), {}, env={"COORD_CLUSTER_SECRET": "ab" * 32})
        assert cfg.node_id == data["node_id"], block.where
        assert cfg.tls_cert.startswith(str(tmp_path)), text
        assert {p.id for p in cfg.peers} == {p["id"] for p in data["peers"]}, block.where


# -- the examples ---------------------------------------------------------------------


def run_python(block: rb.Block, dev: Dev, work: Path) -> str | None:
    """Run one Python block; None when it did what it should, else what went wrong.

    A block exits 0 by itself within BLOCK_TIMEOUT_S, without a traceback (a background
    thread's included). One that loops by design (a master's ``while`` loop runs until the
    process is stopped) is stopped by the harness: once its loop has run (the stub of the
    reader's work, which the loop calls, printed ``README-STUB``), Ctrl-C, as a user would
    stop it; it counts only if its loop had run and it then left its ``with`` blocks
    (resigned, closed its session) and exited within STOP_TIMEOUT_S with no other error.
    Its re-run (the second round) shows that this left the cluster clean."""
    script = work / f"block-{block.line}.py"
    script.write_text(dev.on_this_cluster(block.text))
    arg, _ = rb.python_config(block, script, dev.endpoints)
    runner = work / "runner.py"
    runner.write_text(rb.RUNNER)
    out, err = work / f"block-{block.line}.out", work / f"block-{block.line}.err"
    interrupted = False
    with open(out, "wb") as o, open(err, "wb") as e:
        p = subprocess.Popen(
            [PYTHON, "-W", "error::DeprecationWarning:__main__", str(runner), arg],
            cwd=work, env=base_env(), stdout=o, stderr=e, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        if rb.loops_forever(block.text):
            with contextlib.suppress(TimeoutError):  # judged below, from its output
                wait_until(lambda: rb.STUB in out.read_text() or p.poll() is not None,
                           BLOCK_TIMEOUT_S, "the loop's first round", interval=0.05)  # fmt: skip
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                interrupted = True
        rc = p.wait(timeout=STOP_TIMEOUT_S if interrupted else BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=10)
        rc = None
    stdout, stderr = out.read_text(), err.read_text()
    said = f"--- stdout ---\n{stdout}--- stderr ---\n{stderr}"
    if interrupted:
        if rb.STUB not in stdout:
            return f"it ran for {BLOCK_TIMEOUT_S:g} s and its loop never did (exit {rc})\n{said}"
        if rc != 130 or rb.INTERRUPTED not in stdout or "Traceback" in stderr:
            return f"it did not stop cleanly on Ctrl-C (exit {rc})\n{said}"
    elif rc != 0 or "Traceback" in stderr:
        return f"{'did not finish in time' if rc is None else f'exit {rc}'}\n{said}"
    return None


GO_CLIENT = rb.REPO / "clients" / "go"


def run_go(block: rb.Block, dev: Dev, work: Path) -> str | None:
    """A ``go`` block is a whole program: built in a module of its own that uses
    clients/go through a ``replace`` (as the README says), run against the dev cluster."""
    mod = work / f"go-{block.line}"
    mod.mkdir(exist_ok=True)
    (mod / "main.go").write_text(dev.on_this_cluster(block.text))
    (mod / "go.mod").write_text(
        "module readme\n\ngo 1.26.0\n\nrequire github.com/coord/coord/clients/go v0.0.0\n\n"
        f"replace github.com/coord/coord/clients/go => {GO_CLIENT}\n"
    )
    shutil.copy(GO_CLIENT / "go.sum", mod / "go.sum")
    env = base_env()
    env["GOFLAGS"] = "-mod=mod"
    r = subprocess.run(
        ["go", "run", "."],
        cwd=mod,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S * 3,
        stdin=subprocess.DEVNULL,
        check=False,
    )  # fmt: skip  (a first build of grpc takes a while on 2 cores)
    if r.returncode != 0 or "fencing token" not in r.stdout:
        return describe(r)
    return None


def run_dev_sh(block: rb.Block, dev: Dev, work: Path, expect: str = "") -> str | None:
    """Run one shell block; it must exit 0 and, with ``expect``, print what matches it."""
    if "grpcurl" in block.text and shutil.which("grpcurl", path=base_env()["PATH"]) is None:
        return "grpcurl is not on the venv's PATH: run scripts/bootstrap (it builds it)"
    script = f"source {dev.env_file()}\n{dev.on_this_cluster(block.text)}"
    r = run_sh(script, work, base_env())
    if r.returncode != 0:
        return describe(r)
    if expect and re.search(expect, r.stdout, re.S) is None:
        return f"its output does not match {expect!r}\n{describe(r)}"
    return None


@pytest.mark.parametrize("round_", [1, 2], ids=["first-run", "re-run"])
def test_examples_run_on_the_dev_cluster(round_: int, dev: Dev) -> None:
    """Every block planned against the dev cluster, in README order; the second round
    re-runs them on the same cluster, in the same working directory."""
    work = dev.base / "work"
    work.mkdir(exist_ok=True)
    failed = []
    ran = 0
    for block, plan in rb.plans(rb.blocks()):
        t0 = time.monotonic()
        try:
            if plan.run == "python":
                why = run_python(block, dev, work)
            elif plan.run == "dev":
                why = run_dev_sh(block, dev, work, plan.expect)
            elif plan.run == "go":
                why = run_go(block, dev, work)
            else:
                continue
        except AssertionError as e:  # a block the harness cannot run (a name it lacks)
            why = str(e)
        print(f"{block.where}: {time.monotonic() - t0:.1f} s")
        ran += 1
        if why is not None:
            failed.append(f"===== {block.where} =====\n{block.text}----- {why}")
    assert ran, "no example ran"
    assert not failed, f"{len(failed)} of {ran} README examples failed:\n" + "\n".join(failed)


def test_membership_example_on_a_cluster_of_its_own(
    cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    """It adds n4 (at a loopback address where nothing listens: the README then starts
    it), removes n2 and moves leadership: on a throwaway cluster, so the dev cluster
    keeps its members and every other example stays re-runnable."""
    [(block, _)] = [(b, p) for b, p in rb.plans(rb.blocks()) if p.run == "own-cluster"]
    cluster: LocalCluster = cluster_factory(3, fsync=False)
    cluster.wait_for_leader()
    env = base_env()
    env["COORDCTL_ENDPOINTS"] = ",".join(cluster.endpoints)
    script = rb.loopback_addresses(block.text, free_port)
    r = run_sh(script, tmp_path, env)
    assert r.returncode == 0, f"{block.where}\n{script}\n{describe(r)}"
    after = coordctl(cluster.endpoints, "-o", "json", "node", "ls")
    assert after.returncode == 0, describe(after)
    assert '"n2"' not in after.stdout and '"n4"' in after.stdout, after.stdout


def test_ctrl_c_stops_coord_dev_and_leaves_nothing(dev: Dev) -> None:
    """Last: "Ctrl-C stops everything" — no process and no port of the run is left."""
    dev.proc.send_signal(signal.SIGINT)
    rc = dev.proc.wait(timeout=60)
    assert rc == 0, dev.run.logs()
    assert "coord dev: stopped" in dev.run.text(), dev.run.logs()
    check_nothing_left(dev.run, dev.ports)
