"""``coord dev``: a local cluster of separate processes with a live view.

It also runs the demo group ``db``: three member processes (coord.member_process)
competing for one master slot, with failback to the preferred one.

Commands typed while it runs (one per line): ``kill N`` (kill -9 node N, or
``kill leader``), ``stop N``, ``start N``, ``restart N``, ``pause N`` /
``resume N`` (SIGSTOP/SIGCONT), ``kill db-1`` / ``start db-1`` (member
processes), ``switchover [db-2]``, ``put KEY VALUE``, ``demo``, ``quit``. A node
is named by its id (``n2``) or its number (``2``).

The nodes listen on the README's ports (API 127.0.0.1:2379, :2381, :2383) unless
those are taken or ``--base-port`` says otherwise; ``DATA_DIR/env`` sets
COORDCTL_ENDPOINTS to the cluster's endpoints either way (``source .coord-dev/env``).

Ctrl-C, SIGTERM or SIGHUP (even when started in the background with SIGINT
ignored) stops every member process and node and exits. Every child also gets
``COORD_EXIT_WITH_PARENT``/``--exit-with-parent``: it stops by itself when this
process dies, even by kill -9, so no cluster outlives ``coord dev``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable

import click

from coord import errors
from coord.cli.dev_group import GROUP, MEMBERS, TTL_S, DemoGroup
from coord.cli.output import EXIT_CONFIG, CLIError, table
from coord.client import Client, new_request_id
from coord.testing import LocalCluster
from coord.v1 import cluster_pb2, election_pb2, election_pb2_grpc

ROLE = {cluster_pb2.ROLE_LEADER: "LEADER", cluster_pb2.ROLE_CANDIDATE: "candidate"}

# The README's ports: n1, n2, n3 serve their APIs on 127.0.0.1:2379, 2381, 2383.
DEFAULT_BASE_PORT = 2379
# Every command of the live view (shown under it, and after an unknown command).
COMMANDS = (
    "kill N|leader|db-1, start N|db-1, stop N, restart N, pause N, resume N, "
    "switchover [db-2], put K V, demo, quit  (N: a node id n1.. or its number)"
)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class DevConsole:
    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.group = DemoGroup(cluster, self.note)
        self.events: deque[str] = deque(maxlen=12)
        self.tty = sys.stdout.isatty()
        self.stop = threading.Event()
        self._leader: str | None = None
        self._lost_at: float | None = None
        self._lock = threading.Lock()

    def note(self, msg: str) -> None:
        line = time.strftime("%H:%M:%S ") + msg
        with self._lock:
            self.events.append(line)
        if not self.tty:
            click.echo(line)

    # -- live view -------------------------------------------------------------

    def watch(self) -> None:
        while not self.stop.is_set():
            sts = self.cluster.statuses()
            self._track_leader(sts)
            if self.tty:
                self._draw(sts)
            self.stop.wait(0.1)

    def _track_leader(self, sts: list[cluster_pb2.StatusResponse | None]) -> None:
        i = self.cluster.leader_index()
        leader = self.cluster.nodes[i].node_id if i is not None else None
        if leader == self._leader:
            return
        now = time.monotonic()
        if leader is None:
            self._lost_at = now
            self.note(f"no leader (was {self._leader})")
        else:
            term = next((s.term for s in sts if s and s.node_id == leader), 0)
            took = (
                f" after {1000 * (now - self._lost_at):.0f} ms without one" if self._lost_at else ""
            )
            self.note(f"leader is {leader} (term {term}){took}")
            self._lost_at = None
        self._leader = leader

    def _draw(self, sts: list[cluster_pb2.StatusResponse | None]) -> None:
        rows = []
        for node, st in zip(self.cluster.nodes, sts, strict=True):
            pid = node.proc.pid if node.proc else "-"
            if st is None:
                state = "paused" if node.paused else "DOWN"
                rows.append([node.node_id, node.api, pid, state, "-", "-", "-", "-"])
            else:
                rows.append(
                    [
                        node.node_id,
                        node.api,
                        pid,
                        ROLE.get(st.role, "follower"),
                        st.term,
                        st.leader_id or "-",
                        st.applied_index,
                        st.revision,
                    ]
                )
        out = [
            "\x1b[H\x1b[2J",
            f"coord dev: {len(self.cluster.nodes)} nodes in "
            f"{self.cluster.base_dir}   (Ctrl-C to stop)\n",
            table(["ID", "API", "PID", "ROLE", "TERM", "LEADER", "APPLIED", "REV"], rows),
            f"\ngroup {GROUP} (session TTL {TTL_S:g} s, failback after 5 s):",
            table(["MEMBER", "PID", "PRIORITY", "ROLE", "TOKEN", "SESSION"], self.group.rows()),
            "\nevents:",
        ]
        with self._lock:
            out += ["  " + e for e in self.events]
        out.append(f"\ncommands: {COMMANDS}")
        out.append(f"coordctl --endpoints {','.join(self.cluster.endpoints)} status\n> ")
        sys.stdout.write("\n".join(out))
        sys.stdout.flush()

    # -- commands --------------------------------------------------------------

    def handle(self, line: str) -> bool:
        line = line.strip()
        parts = line.split()
        if not parts:
            return True
        cmd, args = parts[0].lower(), parts[1:]
        if cmd in ("quit", "exit", "q"):
            return False
        try:
            if cmd == "put" and len(args) == 2:
                with Client(self.cluster.endpoints, timeout_s=5) as c:
                    r = c.put(args[0], args[1])
                self.note(f"put {args[0]} -> revision {r.kv.mod_revision}")
            elif cmd == "demo":
                threading.Thread(
                    target=run_demo, args=(self.cluster, self.note, self.group), daemon=True
                ).start()
            elif cmd in ("kill", "start") and len(args) == 1 and args[0] in dict(MEMBERS):
                if cmd == "kill":
                    self.group.kill_member(args[0])
                else:
                    self.group.start_member(args[0])
                self.note(f"{cmd} member {args[0]}" + (" (kill -9)" if cmd == "kill" else ""))
            elif cmd == "switchover" and len(args) <= 1:
                switchover = election_pb2.SwitchoverRequest(
                    group=GROUP, to_member=args[0] if args else "", request_id=new_request_id()
                )
                with Client(self.cluster.endpoints, timeout_s=5) as c:
                    c.call(lambda ch, t: election_pb2_grpc.GroupsStub(ch).Switchover(
                        switchover, timeout=t))  # fmt: skip
                self.note(f"switchover of {GROUP} requested")
            elif cmd in ("kill", "stop", "start", "restart", "pause", "resume") and len(args) == 1:
                self._node_command(cmd, args[0])
            else:
                self.note(f"unknown command {line!r}; commands: {COMMANDS}")
        except (errors.CoordError, ValueError, IndexError) as e:
            self.note(f"{cmd} failed: {e}")
        return True

    def _node_command(self, cmd: str, which: str) -> None:
        i = self.node_index(which)
        node_id = self.cluster.nodes[i].node_id
        action = {
            "kill": self.cluster.kill,
            "stop": self.cluster.stop,
            "start": self.cluster.start,
            "restart": self.cluster.restart,
            "pause": self.cluster.pause,
            "resume": self.cluster.resume,
        }[cmd]
        action(i)
        self.note(f"{cmd} {node_id}" + (" (kill -9)" if cmd == "kill" else ""))

    def node_index(self, which: str) -> int:
        """The node named ``which``: ``leader``, an id (``n2``) or a number (``2``, for n2)."""
        if which == "leader":
            i = self.cluster.leader_index()
            if i is None:
                raise ValueError("no leader right now")
            return i
        ids = {node.node_id: node.index for node in self.cluster.nodes}
        i = ids.get(which.lower(), ids.get(f"n{which}"))
        if i is None:
            raise ValueError(
                f"no node {which!r}: the nodes are {', '.join(ids)} (or 1..{len(ids)})"
            )
        return i


def run_demo(
    cluster: LocalCluster,
    say: Callable[[str], None] = click.echo,
    group: DemoGroup | None = None,
) -> bool:
    """Scripted failover: write, kill -9 the leader, time the first good write, restart, verify."""
    say("demo: waiting for a leader")
    leader = cluster.wait_for_leader(timeout=30)
    with Client(cluster.endpoints, timeout_s=15) as c:
        for i in range(50):
            c.put(f"demo/{i:03d}", f"value-{i}")
        say(f"demo: wrote 50 keys; leader is {cluster.nodes[leader].node_id}; kill -9 it now")
        t0 = time.monotonic()
        cluster.kill(leader)
        c.put("demo/after-failover", "ok")
        took = time.monotonic() - t0
        new = cluster.wait_for_leader(timeout=30, exclude=leader)
        say(
            f"demo: new leader {cluster.nodes[new].node_id}; first write after the kill "
            f"succeeded in {1000 * took:.0f} ms"
        )
        cluster.start(leader)
        target = c.status(endpoint=cluster.nodes[new].api).applied_index
        cluster.wait_applied(target, timeout=30, nodes=[leader])
        with Client([cluster.nodes[leader].api], timeout_s=10) as one:
            got = one.range("demo/", prefix=True, serializable=True)
        ok = got.count == 51
        say(
            f"demo: {cluster.nodes[leader].node_id} restarted from its data dir and caught up: "
            f"{got.count}/51 keys present -> {'OK' if ok else 'MISSING KEYS'}"
        )
        check = c.check_consistency()  # what `coordctl consistency` runs
        hashes = sorted({n.hash[:12] for n in check.nodes if n.hash})
        say(
            f"demo: consistency check: {len(check.nodes)} members hash their whole state at "
            f"revision {check.revision} to {', '.join(hashes) or 'nothing'} -> "
            f"{'OK' if check.consistent else 'DIVERGED OR INCOMPLETE'}"
        )
        ok = ok and check.consistent
    if group is not None:
        ok = run_group_demo(group, say) and ok
    return ok


def run_group_demo(group: DemoGroup, say: Callable[[str], None]) -> bool:
    """kill -9 the master member process: the next one takes over with a larger token."""
    first = group.wait_for_master(timeout=30)
    say(f"demo: group {GROUP}: master {first.member_id} (token {first.token}); kill -9 it now")
    t0 = time.monotonic()
    group.kill_member(first.member_id)
    second = group.wait_for_master(timeout=30, not_member=first.member_id)
    took = time.monotonic() - t0
    ok = second.token > first.token
    say(
        f"demo: group {GROUP}: {second.member_id} is master after {took:.2f} s (session TTL "
        f"{TTL_S:g} s), token {first.token} -> {second.token} -> {'OK' if ok else 'BAD TOKEN'}"
    )
    group.start_member(first.member_id)
    say(
        f"demo: {first.member_id} restarted as a standby; failback hands mastership to the "
        "highest-priority member once it has been eligible for 5 s"
    )
    return ok


def _token(data_dir: str) -> str:
    path = os.path.join(data_dir, "cluster-token")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    token = "dev-" + secrets.token_hex(6)
    with open(path, "w", encoding="utf-8") as f:
        f.write(token)
    return token


class Stopped(BaseException):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) arrived: like KeyboardInterrupt, it ends
    whatever the main thread was doing and runs the clean-up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP raise Stopped in the main thread, the first one only:
    a second (timeout(1) signals us and then our whole process group) must not cut the
    clean-up short; kill -9 is what ends it early (and the children follow). Installed
    whatever they were: a background job of a script starts with SIGINT ignored."""
    first: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        if not first:
            first.append(signum)
            raise Stopped(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)


def _ports_free(ports: list[int]) -> bool:
    """No listener holds any of ``ports`` on 127.0.0.1 (as the nodes bind: SO_REUSEADDR)."""
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _base_port(n: int, base_port: int | None) -> int | None:
    """The first port to use, or None for free ports (what LocalCluster takes)."""
    if base_port == 0:
        return None
    base = DEFAULT_BASE_PORT if base_port is None else base_port
    if base < 1024:
        raise CLIError(f"--base-port {base}: use 1024 or above (or 0 for free ports)", EXIT_CONFIG)
    ports = list(range(base, base + 3 * n))  # API and Raft per node, then status pages
    if _ports_free(ports):
        return base
    if base_port is not None:
        raise CLIError(
            f"ports {ports[0]}-{ports[-1]} on 127.0.0.1 are not all free: pick another "
            "--base-port, or 0 for free ports",
            EXIT_CONFIG,
        )
    click.echo(
        f"coord dev: ports {ports[0]}-{ports[-1]} are taken (another coord dev? etcd?): "
        "using free ports instead"
    )
    return None


def _write_env(data_dir: str, endpoints: list[str]) -> str:
    """``DATA_DIR/env``: sourced, it points coordctl (and the README's ``$E``) here."""
    path = os.path.join(data_dir, "env")
    eps = ",".join(endpoints)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(
            f"# coord dev (pid {os.getpid()}): `source {path}` points coordctl at it.\n"
            f"export COORDCTL_ENDPOINTS={eps}\nE={eps}\n"
        )
    os.replace(path + ".tmp", path)
    return path


def run_dev(
    n: int, base_port: int | None, data_dir: str, demo: bool, exit_after_demo: bool, fresh: bool
) -> None:
    _stop_on_signals()
    try:
        base = _base_port(n, base_port)
        if fresh:
            shutil.rmtree(data_dir, ignore_errors=True)
        os.makedirs(data_dir, exist_ok=True)
        cluster = LocalCluster(
            n,
            base_dir=os.path.abspath(data_dir),
            base_port=base,
            token=_token(data_dir),
            http=True,
            env={"COORD_EXIT_WITH_PARENT": str(os.getpid())},  # children stop when we die
        )
        console = DevConsole(cluster)
    except Stopped as e:  # nothing started yet
        raise SystemExit(128 + e.signum) from None
    stopped: Stopped | None = None
    demo_done = not demo
    ok = True
    try:
        _start_and_announce(cluster)
        console.group.start()
        if demo:
            ok = run_demo(cluster, console.note if console.tty else click.echo, console.group)
            demo_done = True
        if not (demo and (exit_after_demo or not sys.stdin.isatty())):
            _live_view(console)  # after the demo: exits with the demo's verdict below
    except Stopped as e:
        stopped = e
    finally:
        _stop_everything(cluster, console, stopped)
    if stopped is not None and not demo_done:
        raise SystemExit(128 + stopped.signum)  # interrupted: the demo has no verdict
    if not ok:
        click.echo("coord dev: the demo failed (see the lines above)", err=True)
        raise SystemExit(1)


def _start_and_announce(cluster: LocalCluster) -> None:
    """Start the nodes, say where everything is, and wait for a leader (exit 1 if none)."""
    cluster.start()
    env_file = _write_env(cluster.base_dir, cluster.endpoints)
    click.echo(f"coord dev: {len(cluster.nodes)} nodes, data in {cluster.base_dir}")
    for node in cluster.nodes:
        click.echo(
            f"  {node.node_id}: api {node.api}  raft {node.raft}  "
            f"status page and /metrics http://{node.http}/  log {node.log_path}"
        )
    click.echo(f"try: coordctl --endpoints {','.join(cluster.endpoints)} status")
    click.echo(f" or: source {env_file}; coordctl status   (sets COORDCTL_ENDPOINTS and E)")
    try:
        cluster.wait_for_leader(timeout=30)
    except TimeoutError as e:
        click.echo(f"coord dev: {e}\n{cluster.logs()}", err=True)
        raise SystemExit(1) from None


def _live_view(console: DevConsole) -> None:
    """Commands from stdin until one stops the view; with stdin closed, run until a
    stop signal."""
    viewer = threading.Thread(target=console.watch, daemon=True)
    viewer.start()
    for line in sys.stdin:
        if not console.handle(line):
            return
    console.stop.wait()


def _stop_everything(cluster: LocalCluster, console: DevConsole, why: Stopped | None) -> None:
    console.stop.set()
    by = f" ({why})" if why is not None else ""
    click.echo(f"\ncoord dev: stopping the member processes and the nodes{by}")
    console.group.stop()
    for node in cluster.nodes:
        cluster.stop(node.index)
    # A command thread (``demo``) may have started one again meanwhile.
    console.group.stop()
    for node in cluster.nodes:
        if node.running:
            cluster.kill(node.index)
    click.echo("coord dev: stopped")
