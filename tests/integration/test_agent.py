"""``coord agent`` on a real cluster (issue 17 item 1): role endpoints behind a real
HAProxy, hooks in order, a command run only while master, and bad settings refused; and
fenced calls (item 2): the token on every gRPC call and HTTP request, refused once not
master, and checked by the resource (docs/fencing.md's file store, run as written).

One 3-node cluster (fsync off) is shared; each test has a group of its own. Agents run
with a 2 s TTL: a killed master's slot is granted once the cluster has waited that out.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import requests

from coord import errors
from coord.client import (
    Client,
    FencedAuth,
    FencedHTTP,
    FencedResource,
    StaticFence,
    fenced_channel,
    new_request_id,
)
from coord.client.errors import translate
from coord.testing import LocalCluster, free_ports, wait_until
from coord.v1 import election_pb2, groups_pb2

from . import readme_blocks as rb
from .agents import AgentProc, Agents, agents_fixture
from .members import close_session, groups_stub, holders, list_sessions
from .support import COORD, ClusterFactory, describe

REPO = Path(__file__).resolve().parents[2]
HAPROXY_CFG = REPO / "deploy" / "haproxy" / "haproxy.cfg"
TTL_S = 2.0
SLACK_S = 2.0  # a loaded 2-core machine (CI runs a CPU hog): scheduling, a check in flight


@pytest.fixture(scope="module")
def cluster(module_cluster_factory: ClusterFactory) -> LocalCluster:
    return module_cluster_factory(3, fsync=False)


@pytest.fixture
def agents(
    request: pytest.FixtureRequest, cluster: LocalCluster, tmp_path: Path
) -> Iterator[Agents]:
    yield from agents_fixture(request, cluster.endpoints, tmp_path / "agents")


def create_group(cluster: LocalCluster, name: str) -> None:
    with cluster.client() as c:
        c.group(name).create()


def switchover(cluster: LocalCluster, group: str, to: str) -> None:
    with cluster.client() as c:
        groups_stub(c).Switchover(
            election_pb2.SwitchoverRequest(group=group, to_member=to, request_id=new_request_id())
        )


def close_sessions_of(cluster: LocalCluster, name: str) -> float:
    """An operator closes the sessions named ``name``; returns the time it was done."""
    with cluster.client() as c:
        ids = [s.id for s in list_sessions(c) if s.name == name]
        assert ids, f"no session named {name}"
        for sid in ids:
            close_session(c, sid)
    return time.monotonic()


# -- HAProxy ----------------------------------------------------------------------------


class Service:
    """The service behind an agent: answers every GET with its name."""

    def __init__(self, name: str) -> None:
        body = name.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client (HAProxy) that hung up: nothing to report


class Traffic:
    """Requests through one address, one after another: (sent, answered, who or None)."""

    def __init__(self, address: str) -> None:
        self.url = f"http://{address}/"
        self.results: list[tuple[float, float, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="traffic")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            who: str | None
            try:
                with urllib.request.urlopen(self.url, timeout=0.5) as r:
                    who = r.read().decode()
            except OSError:
                who = None
            self.results.append((sent, time.monotonic(), who))
            self._stop.wait(0.01)  # the pace of the load, not a synchronisation

    def last(self, n: int) -> list[str | None]:
        return [who for _, _, who in self.results[-n:]] if len(self.results) >= n else []

    def until(self, pred: Callable[[list[str | None]], bool], what: str, work: Path) -> None:
        """Until ``pred`` holds for the last 10 answers (15 s at most; then the answers
        and HAProxy's log say why)."""
        try:
            wait_until(lambda: pred(self.last(10)), 15, what)
        except TimeoutError as e:
            log = (work / "haproxy.log").read_text(errors="replace")
            raise AssertionError(f"{e}: last answers {self.results[-10:]}\n{log}") from None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def haproxy_binary() -> str:
    found = shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if found is None:
        pytest.skip("haproxy is not installed: scripts/system-deps installs Debian's haproxy "
                    "package (it needs root or sudo)")  # fmt: skip
    return found


def local_haproxy_config(
    text: str, servers: dict[str, tuple[int, int]], binds: dict[int, int]
) -> str:
    """deploy/haproxy/haproxy.cfg with each server NAME on 127.0.0.1: its service port
    and its agent's port (``servers[NAME]``), and each ``bind *:PORT`` on 127.0.0.1."""
    out = []
    for line in text.splitlines():
        server = re.match(r"^(\s*server\s+(\S+)\s+)10\.0\.0\.\d+:\d+(\s.*\bport\s+)\d+(.*)$", line)
        bind = re.match(r"^(\s*bind\s+)\*:(\d+)(.*)$", line)
        if server is not None:
            service, agent = servers[server[2]]
            out.append(f"{server[1]}127.0.0.1:{service}{server[3]}{agent}{server[4]}")
        elif bind is not None:
            out.append(f"{bind[1]}127.0.0.1:{binds[int(bind[2])]}{bind[3]}")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


@contextlib.contextmanager
def haproxy(servers: dict[str, tuple[int, int]], work: Path) -> Iterator[tuple[str, str]]:
    """A real HAProxy running deploy/haproxy/haproxy.cfg on loopback: yields the addresses
    of its master (writes) and standbys (reads) frontends."""
    binary = haproxy_binary()
    master, standbys = free_ports(2)
    cfg = work / "haproxy.cfg"
    cfg.write_text(local_haproxy_config(HAPROXY_CFG.read_text(), servers,
                                        {5000: master, 5001: standbys}))  # fmt: skip
    with open(work / "haproxy.log", "wb") as log:
        proc = subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        yield f"127.0.0.1:{master}", f"127.0.0.1:{standbys}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def master_check_interval_s() -> float:
    found = re.search(r"listen master\b.*?\binter (\d+)ms", HAPROXY_CFG.read_text(), re.S)
    assert found is not None, "the master section's check interval"
    return int(found[1]) / 1000


def test_haproxy_sends_traffic_only_to_the_master_across_a_master_kill(
    cluster: LocalCluster, agents: Agents, tmp_path: Path
) -> None:
    """deploy/haproxy/haproxy.cfg, run by a real HAProxy in front of three agents and their
    services: writes reach only the master; the master's host dies (agent kill -9,
    service gone); writes reach the next master, and only it, within TTL + one check
    interval (+ slack), and never the standby db-3; reads reach only standbys."""
    check_s = master_check_interval_s()
    haproxy_binary()  # skips, saying why, before anything starts
    create_group(cluster, "web")
    services = {n: Service(n) for n in ("db-1", "db-2", "db-3")}

    def start(name: str, priority: int) -> AgentProc:
        address = f"127.0.0.1:{services[name].port}"
        return agents.start("web", name, priority=priority, address=address)

    try:
        a1 = start("db-1", 30)
        a1.wait_status("/master", 200)
        a2, a3 = start("db-2", 20), start("db-3", 10)
        for a in (a2, a3):
            a.wait_status("/standby", 200)
            assert a.status("/master")[0] == 503
        servers = {a.name: (services[a.name].port, int(a.listen.rsplit(":", 1)[1]))
                   for a in (a1, a2, a3)}  # fmt: skip
        with haproxy(servers, tmp_path) as (master_address, standbys_address):
            reads, writes = Traffic(standbys_address), Traffic(master_address)
            # HAProxy has checked every server: writes go to db-1 alone, reads to standbys.
            writes.until(lambda last: last == ["db-1"] * 10, "writes on db-1 only", tmp_path)
            reads.until(lambda last: set(last) == {"db-2", "db-3"}, "reads on standbys", tmp_path)
            reads.stop()
            start_at = len(writes.results)
            killed = time.monotonic()  # the master's host dies: its service and its agent
            services["db-1"].close()
            gone = time.monotonic()
            a1.kill()
            wait_until(lambda: writes.last(5) == ["db-2"] * 5, TTL_S + check_s + 10,
                       "writes on db-2 only")  # fmt: skip
            writes.stop()
    finally:
        for s in services.values():
            s.close()
    became_master = a2.wait_for("master", 1)["t"]
    after = writes.results[start_at:]
    took = next(done for _, done, who in after if who == "db-2") - killed
    print(f"kill -9 of the master to the first write on db-2 through HAProxy: {took:.2f} s")
    assert {who for _, _, who in after} <= {"db-1", "db-2", None}, after  # never db-3
    # db-2 got writes only once it was master; db-1 none once its host was gone.
    assert all(done >= became_master for _, done, who in after if who == "db-2"), after
    assert all(sent < gone for sent, _, who in after if who == "db-1"), after
    assert took < TTL_S + check_s + SLACK_S, f"{took:.2f} s to switch"
    assert a3.status("/standby")[0] == 200 and a3.status("/master")[0] == 503


# -- hooks ------------------------------------------------------------------------------

HOOK = """#!/bin/sh
# argv: LOG DIR. Appends one line per run; h1's first pre_promote fails once DIR/gate exists.
echo "$COORD_HOOK member=$COORD_MEMBER token=$COORD_TOKEN slot=$COORD_SLOT" \\
  "cause=$COORD_CAUSE" >> "$1"
if [ "$COORD_HOOK" = pre_promote ] && [ "$COORD_MEMBER" = h1 ] && [ ! -e "$2/failed-once" ]; then
  touch "$2/failed-once"
  while [ ! -e "$2/gate" ]; do sleep 0.02; done
  echo "h1 cannot promote" >&2
  exit 1
fi
"""


def hook_runs(log: Path) -> list[dict[str, str]]:
    """Each line of a hook log: {"hook": name, "member": ..., "token": ..., ...}."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        name, *pairs = line.split(" ")
        out.append({"hook": name, **dict(p.split("=", 1) for p in pairs)})
    return out


def test_hooks_run_in_order_and_a_failing_pre_promote_hands_the_slot_on(
    cluster: LocalCluster, agents: Agents, tmp_path: Path
) -> None:
    """h1 (preferred) is elected, its pre_promote hangs and then fails: /master says 503
    all along, h1 resigns and h2 is elected with a larger token; h2 runs pre_promote, then
    on_elected. A switchover back to h1: h2 runs on_demoted (cause switchover), h1
    pre_promote then on_elected. h1 pauses (SIGSTOP) past its TTL, h2 is elected, h1
    resumes: it runs on_lost (with the token it held), not on_demoted."""
    create_group(cluster, "hooks")
    script = tmp_path / "hook.sh"
    script.write_text(HOOK)
    script.chmod(0o755)
    logs = {m: tmp_path / f"hooks-{m}.log" for m in ("h1", "h2")}

    def hooks(m: str) -> dict[str, list[str]]:
        cmd = [str(script), str(logs[m]), str(tmp_path)]
        return {h: cmd for h in ("pre_promote", "on_elected", "on_demoted", "on_lost")}

    h1 = agents.start("hooks", "h1", priority=20, hooks=hooks("h1"), retry_delay="0.5s")
    h1.wait_for("hook", 20, hook="pre_promote", state="started")
    promoting = h1.wait_status("/master", 503)
    assert promoting["role"] == "promoting" and promoting["token"] > 0, promoting
    h2 = agents.start("hooks", "h2", priority=10, hooks=hooks("h2"))
    h2.wait_status("/standby", 200)

    (tmp_path / "gate").touch()  # h1's pre_promote fails now
    h2_master = h2.wait_status("/master", 200)
    resigned = h1.wait_for("resigned", 5, cause="pre_promote_failed")
    assert h2_master["token"] > promoting["token"], (promoting, h2_master)
    assert not h1.events("master"), h1.describe()  # never reported master
    h1.wait_status("/standby", 200)
    wait_until(lambda: len(hook_runs(logs["h2"])) >= 2, 10, "h2's on_elected")
    t2 = str(h2_master["token"])
    assert [(r["hook"], r["token"]) for r in hook_runs(logs["h2"])] == [
        ("pre_promote", t2), ("on_elected", t2),
    ]  # fmt: skip
    assert [r["hook"] for r in hook_runs(logs["h1"])] == ["pre_promote"]

    h1.wait_for("campaigning", 10, since=h1.lines.index(resigned))  # after retry_delay
    switchover(cluster, "hooks", "h1")
    h1_master = h1.wait_status("/master", 200)
    wait_until(lambda: len(hook_runs(logs["h2"])) >= 3, 10, "h2's on_demoted")
    wait_until(lambda: len(hook_runs(logs["h1"])) >= 3, 10, "h1's on_elected")
    t1 = str(h1_master["token"])
    assert hook_runs(logs["h2"])[2] == {"hook": "on_demoted", "member": "h2", "token": t2,
                                        "slot": "0", "cause": "switchover"}  # fmt: skip
    assert [(r["hook"], r["token"]) for r in hook_runs(logs["h1"])[1:]] == [
        ("pre_promote", t1), ("on_elected", t1),
    ]  # fmt: skip

    h1.proc.send_signal(signal.SIGSTOP)  # a pause longer than the TTL: the session is lost
    try:
        h2.wait_status("/master", 200, timeout=TTL_S + 10)
    finally:
        h1.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: len(hook_runs(logs["h1"])) >= 4, 10, "h1's on_lost")
    assert hook_runs(logs["h1"])[3] == {"hook": "on_lost", "member": "h1", "token": t1,
                                        "slot": "0", "cause": "session_lost"}  # fmt: skip
    assert h1.wait_for("not_master", 5, cause="session_lost")["token"] == h1_master["token"]
    assert h1.status("/master")[0] == 503
    assert [r["hook"] for r in hook_runs(logs["h1"])] == [
        "pre_promote", "pre_promote", "on_elected", "on_lost",
    ]  # fmt: skip


# -- the command run while master -------------------------------------------------------

CHILD = """
import os, signal, sys, time
path, mode = sys.argv[1], sys.argv[2]
token = os.environ["COORD_TOKEN"]
stop = []
signal.signal(signal.SIGTERM, lambda *_: None if mode == "stubborn" else stop.append(1))
with open(path, "a", buffering=1) as f:
    while not stop:
        f.write(f"{token} {time.monotonic():.6f}\\n")  # a heartbeat, while it runs
        time.sleep(0.005)
"""


def beats(path: Path) -> dict[str, tuple[float, float]]:
    """token -> (first, last) heartbeat of the command run under that token."""
    out: dict[str, tuple[float, float]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        token, t = line.split()
        first, _ = out.get(token, (float(t), 0.0))
        out[token] = (first, float(t))
    return out


def test_the_command_run_while_master_stops_before_the_next_masters_starts(
    cluster: LocalCluster, agents: Agents, tmp_path: Path
) -> None:
    """r1 and r2 run a command while master that writes heartbeats. A switchover r1 -> r2:
    r1's command stops (SIGTERM) before r2's writes its first beat. An operator closes
    r2's session (the slot is revoked): r2's command ignores SIGTERM and is killed at the
    stop grace, and its last beat is before the first of r1's next run."""
    create_group(cluster, "run")
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    files = {m: tmp_path / f"beats-{m}" for m in ("r1", "r2")}

    def run(m: str, mode: str) -> list[str]:
        return [sys.executable, str(child), str(files[m]), mode]

    r1 = agents.start("run", "r1", priority=20, run=run("r1", "polite"), stop_grace="0.3s")
    first = r1.wait_status("/master", 200)
    r2 = agents.start("run", "r2", priority=10, run=run("r2", "stubborn"), stop_grace="0.3s")
    r2.wait_status("/standby", 200)
    wait_until(lambda: str(first["token"]) in beats(files["r1"]), 10, "r1's command to run")

    # /standby answers once r2 registered, a moment before it campaigns: retry until
    # the cluster takes r2 as a candidate.
    wait_until(lambda: _switched(cluster, "run", "r2"), 10, "a switchover to r2 accepted")
    second = r2.wait_status("/master", 200)
    t2 = str(second["token"])
    wait_until(lambda: t2 in beats(files["r2"]), 10, "r2's command to run")
    assert r1.wait_for("child", 5, state="stopped")["by"] == "SIGTERM"
    old, new = beats(files["r1"])[str(first["token"])], beats(files["r2"])[t2]
    assert old[1] < new[0], f"r1's command beat at {old[1]}, after r2's started at {new[0]}"

    closed = close_sessions_of(cluster, "r2")
    third = r1.wait_status("/master", 200, timeout=TTL_S + 10)
    t3 = str(third["token"])
    wait_until(lambda: t3 in beats(files["r1"]), 10, "r1's command to run again")
    stopped = r2.wait_for("child", 5, state="stopped")
    assert stopped["by"] == "SIGKILL", r2.describe()  # it ignored SIGTERM
    old, new = beats(files["r2"])[t2], beats(files["r1"])[t3]
    assert old[1] < new[0], f"r2's command beat at {old[1]}, after r1's started at {new[0]}"
    # The close revokes the slot first (then ends the session): mastership ends at once.
    ended = r2.wait_for("not_master", 5, token=int(t2))
    assert ended["cause"] in ("revoked", "session_lost") and ended["t"] >= closed - 0.1, ended


def test_a_master_cut_off_from_the_cluster_stops_its_command_before_validity_ends(
    cluster: LocalCluster, agents: Agents, tmp_path: Path
) -> None:
    """Every node of the cluster hangs (SIGSTOP): keepalives go unanswered. The master's
    agent stops acting while the validity left still covers the stop grace, and its
    command is gone (its last heartbeat too) before the session's validity ends."""
    create_group(cluster, "cut-off")
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    beats_file = tmp_path / "beats-v1"
    v1 = agents.start("cut-off", "v1", run=[sys.executable, str(child), str(beats_file),
                      "stubborn"], stop_grace="0.3s")  # fmt: skip
    token = str(v1.wait_status("/master", 200)["token"])
    wait_until(lambda: token in beats(beats_file), 10, "v1's command to run")
    for i in range(len(cluster.nodes)):
        cluster.pause(i)
    try:
        ended = v1.wait_for("not_master", TTL_S + 5, cause="validity_low")
        stopped = v1.wait_for("child", 5, state="stopped")
        assert v1.status("/master")[0] == 503
    finally:
        for i in range(len(cluster.nodes)):
            cluster.resume(i)
    valid_until = ended["t"] + ended["validity_ms"] / 1000
    assert ended["validity_ms"] > 0, ended  # it stopped acting before its validity ended
    assert stopped["t"] <= valid_until and stopped["by"] == "SIGKILL", (ended, stopped)
    assert beats(beats_file)[token][1] <= valid_until
    cluster.wait_for_leader()


# -- positions (freshness-aware succession) ---------------------------------------------


def write_atomically(path: Path, text: str) -> None:
    """As the position's writer should: a reader never sees it half written."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_agents_report_positions_and_the_lagging_one_is_skipped_at_failover(
    cluster: LocalCluster, agents: Agents, tmp_path: Path
) -> None:
    """Two agents read their positions every 0.2 s, p2 through a command that cats a file,
    p3 from the file itself; the group sets max_lag_on_failover 100. A garbage position is
    logged and the last good one stands. The master (p1, a library member at 1000) goes
    away: p2, preferred by priority but 900 behind, is skipped and p3 (990) is elected.
    p2's position then goes back: it registers again from a new session, reporting it."""
    g = "positions"
    files = {m: tmp_path / f"{m}.position" for m in ("p2", "p3")}
    write_atomically(files["p2"], "100\n")
    write_atomically(files["p3"], "990\n")

    def verdict(c: Client, member: str) -> groups_pb2.MemberVerdict:
        return next(v for v in c.group(g).explain().members if v.member_id == member)

    with cluster.client() as c:
        c.group(g).create(max_lag_on_failover=100, prefer_most_advanced=True)
        s1 = c.session(ttl_s=10, name="p1").start()
        try:
            m1 = c.group(g).member("p1", s1, priority=1).start()
            m1.report_position(1000)
            m1.campaign(timeout_s=10)
            p2 = agents.start(g, "p2", priority=30, position=["cat", str(files["p2"])],
                              position_interval="0.2s")  # fmt: skip
            p3 = agents.start(g, "p3", priority=10, position_file=str(files["p3"]),
                              position_interval="0.2s", tags={"zone": "b"})  # fmt: skip
            for a, position in ((p2, 100), (p3, 990)):
                assert a.wait_for("position", 20, state="reported")["position"] == position
                a.wait_status("/standby", 200)
            wait_until(lambda: verdict(c, "p3").eligible and verdict(c, "p2").reason == "lagging",
                       10, "p3 eligible, p2 lagging")  # fmt: skip

            write_atomically(files["p2"], "not a number\n")  # logged; 100 stands
            failed = p2.wait_for("position", 5, state="failed")
            assert failed["kind"] == "not_a_position" and failed["output"] == "not a number"
            assert p2.status("/role")[1]["position"] == 100
            s1.close()  # the master goes away
        finally:
            with contextlib.suppress(errors.CoordError):
                s1.close()
        p3_master = p3.wait_status("/master", 200)
        assert holders(c, g) == {0: ("p3", p3_master["token"])}
        assert p2.status("/standby")[0] == 200 and not p2.events("elected"), p2.describe()
        assert "behind by 890" in verdict(c, "p2").detail

        mark = p2.mark()
        write_atomically(files["p2"], "50\n")  # lower than reported: p2 starts over
        went = p2.wait_for("position", 5, since=mark, state="went_back")
        assert (went["position"], went["reported"]) == (50, 100), went
        p2.wait_for("registering_again", 5, since=mark)
        assert p2.wait_for("position", 10, since=mark, state="reported")["position"] == 50
        members = {m.id: m for m in c.group(g).get().members}
        assert members["p2"].position == 50 and members["p3"].position == 990
        assert dict(members["p3"].tags) == {"zone": "b"}  # registered with the agent's tags
        assert holders(c, g) == {0: ("p3", p3_master["token"])}


# -- bad settings -----------------------------------------------------------------------

BAD = {
    "unknown-key": ("ttl: 5s\ncolour: blue\n", "unknown key 'colour'"),
    "ttl-out-of-bounds": ("ttl: 100ms\n", "ttl '100ms' is out of bounds"),
    "hook-unsplittable": ("hooks:\n  on_elected: echo 'unclosed\n",
                          "hooks.on_elected: cannot split the command"),
    "position-twice": ("position: cat f\nposition_file: /f\n",
                       "position and position_file are both set"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_settings_exit_2_with_the_reason(case: str, tmp_path: Path) -> None:
    extra, said = BAD[case]
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"endpoints: [127.0.0.1:1]\ngroup: g\nmember: m\n{extra}")
    r = subprocess.run([COORD, "agent", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    assert r.returncode == 2, describe(r)
    assert said in r.stderr and str(cfg) in r.stderr, describe(r)
    assert "Traceback" not in r.stderr and r.stdout == "", describe(r)


# -- fenced calls (issue 17 item 2) -----------------------------------------------------

DOCS_FENCING = REPO / "docs" / "fencing.md"


def read_file(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


def test_the_docs_file_store_takes_only_the_current_masters_writes(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """docs/fencing.md's file store, run as written: f1's write is stored; once f1
    resigned its FencedHTTP refuses to send; f2 (a larger token) writes; the old token
    sent anyway (a master that paused after its check) gets 409 / StaleToken and the file
    keeps f2's data; requests with FencedAuth works, a request without a token is
    refused; the page's master block runs as written."""
    store_block, master_block = [b for b in rb.blocks(DOCS_FENCING.read_text())
                                 if b.lang == "python"]  # fmt: skip
    ns: dict[str, object] = {"__name__": "fencing_doc"}
    exec(compile("\n" * (store_block.line - 1) + store_block.text, str(DOCS_FENCING), "exec"), ns)
    root = tmp_path / "files"
    root.mkdir()
    store = ns["FileStore"](("127.0.0.1", 0), str(root))  # type: ignore[operator]
    threading.Thread(target=store.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{store.server_address[1]}"
    try:
        with cluster.client() as c, c.session(ttl_s=2) as s1, c.session(ttl_s=2) as s2:
            group = c.group("fenced-http")
            group.create()
            lead1 = group.campaign("f1", s1)
            FencedHTTP(lead1).request("PUT", f"{url}/balance", b"one")
            assert read_file(f"{url}/balance") == "one"
            lead1.resign()
            with pytest.raises(errors.StaleToken, match="not sent"):
                FencedHTTP(lead1).request("PUT", f"{url}/balance", b"late")
            assert read_file(f"{url}/balance") == "one"  # not sent (it would have been taken)
            lead2 = group.campaign("f2", s2)
            assert lead2.token > lead1.token
            FencedHTTP(lead2).request("PUT", f"{url}/balance", b"two")
            stale = StaticFence(lead1.group, lead1.slot, lead1.token)
            with pytest.raises(errors.StaleToken, match="older than"):
                FencedHTTP(stale).request("PUT", f"{url}/balance", b"stale")
            assert read_file(f"{url}/balance") == "two"
            assert requests.put(f"{url}/other", data=b"x", auth=FencedAuth(lead2),
                                timeout=5).status_code == 204  # fmt: skip
            unfenced = requests.put(f"{url}/other", data=b"y", timeout=5)
            assert unfenced.status_code == 400 and "coord-fencing-token" in unfenced.text
        master = master_block.text.replace(rb.README_ENDPOINTS, ",".join(cluster.endpoints))
        exec(compile("\n" * (master_block.line - 1) + master, str(DOCS_FENCING), "exec"),
             {"__name__": "__main__", "store_url": url})  # fmt: skip
        assert read_file(f"{url}/balance") == "42"  # the ledger group's own (group, slot)
    finally:
        store.shutdown()
        store.server_close()


def test_fenced_grpc_calls_carry_the_token_and_stop_with_mastership(
    cluster: LocalCluster,
) -> None:
    """A gRPC service guarded by FencedResource.check_grpc: calls through fenced_channel
    (unary and streaming) carry the holder's token; after a resign the channel raises
    StaleToken ("not sent") and sends nothing; the next master's calls pass; the old token
    is refused FAILED_PRECONDITION with coord-error stale_token (StaleToken); a call
    without a token, INVALID_ARGUMENT."""
    resource = FencedResource()
    seen: list[tuple[int, bytes]] = []

    def put(request: bytes, context: grpc.ServicerContext) -> bytes:
        stamp = resource.check_grpc(context)
        seen.append((stamp.token, request))
        return b"ok"

    def tail(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield str(resource.check_grpc(context).token).encode()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("demo.Store", {
        "Put": grpc.unary_unary_rpc_method_handler(put),
        "Tail": grpc.unary_stream_rpc_method_handler(tail),
    }),))  # fmt: skip
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    plain = grpc.insecure_channel(address)
    try:
        with cluster.client() as c, c.session(ttl_s=2) as s1, c.session(ttl_s=2) as s2:
            group = c.group("fenced-grpc")
            group.create()
            lead1 = group.campaign("g1", s1)
            first = fenced_channel(plain, lead1)
            assert first.unary_unary("/demo.Store/Put")(b"a", timeout=5) == b"ok"
            assert list(first.unary_stream("/demo.Store/Tail")(b"", timeout=5)) == [
                str(lead1.token).encode()
            ]
            lead1.resign()
            with pytest.raises(errors.StaleToken, match="not sent"):
                first.unary_unary("/demo.Store/Put")(b"late", timeout=5)
            lead2 = group.campaign("g2", s2)
            assert fenced_channel(plain, lead2).unary_unary("/demo.Store/Put")(b"b", timeout=5)
            old = fenced_channel(plain, StaticFence(lead1.group, lead1.slot, lead1.token))
            with pytest.raises(grpc.RpcError) as stale:
                old.unary_unary("/demo.Store/Put")(b"stale", timeout=5)
            assert isinstance(translate(stale.value, address), errors.StaleToken), stale.value
            with pytest.raises(grpc.RpcError) as bare:
                plain.unary_unary("/demo.Store/Put")(b"bare", timeout=5)
            assert bare.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
            assert seen == [(lead1.token, b"a"), (lead2.token, b"b")]
    finally:
        plain.close()
        server.stop(0)


def _switched(cluster: LocalCluster, group: str, to: str) -> bool:
    try:
        switchover(cluster, group, to)
    except errors.FailedPrecondition as e:
        if "not campaigning" not in e.message:
            raise
        return False
    return True
