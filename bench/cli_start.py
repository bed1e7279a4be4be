"""What a command-line call costs: ``coordctl`` vs ``etcdctl``, start to exit.

Each command is run as a child process and timed from ``Popen`` to its exit; the
child's CPU time (user + sys) comes from ``os.wait4``'s rusage. Commands:

- ``coordctl --version`` vs ``etcdctl version`` (no cluster contact: pure start-up);
- ``coordctl kv get KEY`` vs ``etcdctl get KEY`` (one linearizable read);
- ``coordctl status`` vs ``etcdctl endpoint status`` (every endpoint's status).

``kv get`` and ``status`` are also run against forwarding TCP proxies in front of the
same endpoints (separate runs, in the same rounds): the time from ``Popen`` to the first
connection any proxy accepts is the start to the first RPC (gRPC connects a channel at
its first call; etcdctl dials when it starts its client). Issue 18's goal is that
figure for ``coordctl`` (<= 120 ms).

Both systems run a local 3-node cluster (fsync on) and get all three endpoints on
the command line. The commands are interleaved (coord, etcd, coord, ...) round by
round, so a busy neighbour slows both alike; one unmeasured warm-up run of each
first (page cache; ``.pyc`` files are written even under PYTHONDONTWRITEBYTECODE).
Reported: medians of ``--runs`` (default 15) runs, wall and CPU, with the load average
at start and end. Never asserted.

``coordctl`` is the entry-point script next to this interpreter (``.venv/bin``),
as a user runs it; ``etcdctl`` is Debian's (``apt-get install -y etcd-client``,
``$ETCDCTL_BIN`` overrides).

``--baseline DIR`` also runs another tree's coordctl in the same rounds (``DIR`` holds
its ``coord`` package, e.g. ``git archive HEAD coord | tar -x -C DIR``; run as
``python -m coord.cli.coordctl`` with ``PYTHONPATH=DIR``, against the same cluster) and
prints a before/after table: a change measured under the same load.

Usage: ``python bench/cli_start.py [--runs 15] [--systems coord,etcd] [--baseline DIR]
[--json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _harness import Comparison, add_json_flag, loadavg, log, median, report

KEY = "bench/cli-start"
VALUE = "v" * 32


@dataclass
class Sample:
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    first_conn_s: list[float] = field(default_factory=list)


class FirstConnection:
    """Forwarding TCP proxies, one per endpoint of a cluster; ``first`` is when the
    first connection to any of them was accepted since the last ``reset()``."""

    def __init__(self, endpoints: Sequence[str]) -> None:
        self.first: float | None = None
        self._lock = threading.Lock()
        self._listeners: list[socket.socket] = []
        self.endpoints: list[str] = []
        for ep in endpoints:
            host, _, port = ep.rpartition(":")
            ls = socket.create_server(("127.0.0.1", 0))
            self._listeners.append(ls)
            self.endpoints.append(f"127.0.0.1:{ls.getsockname()[1]}")
            threading.Thread(target=self._accept, args=(ls, (host, int(port))), daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.first = None

    def close(self) -> None:
        for ls in self._listeners:
            ls.close()

    def _accept(self, ls: socket.socket, target: tuple[str, int]) -> None:
        while True:
            try:
                conn, _ = ls.accept()
            except OSError:
                return
            now = time.perf_counter()
            with self._lock:
                if self.first is None:
                    self.first = now
            try:
                up = socket.create_connection(target)
            except OSError:
                conn.close()
                continue
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until either side ends, then close both."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def coordctl_argv() -> list[str]:
    """The ``coordctl`` a user runs: the entry-point script beside this Python."""
    script = Path(sys.executable).parent / "coordctl"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "coord.cli.coordctl"]


def etcdctl_argv() -> list[str]:
    path = os.environ.get("ETCDCTL_BIN") or shutil.which("etcdctl") or "/usr/bin/etcdctl"
    if not Path(path).exists():
        raise FileNotFoundError("etcdctl not found; apt-get install -y etcd-client")
    return [path]


def run_once(
    argv: Sequence[str], env: dict[str, str] | None, proxies: FirstConnection | None = None
) -> tuple[float, float, float | None]:
    """(wall seconds, child CPU seconds, seconds to the first connection ``proxies``
    accepted or None) of one run; fails unless it exits 0. The baseline's runs start in
    its tree (``python -m`` puts the working directory first)."""
    cwd = env.get("CLI_START_CWD") if env else None
    if proxies is not None:
        proxies.reset()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # Reading the pipes after the exit is safe: the outputs are far below a pipe's buffer.
    _pid, status, rusage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.communicate()
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}: {err.decode(errors='replace')[-500:]}"
        )
    first = None
    if proxies is not None:
        if proxies.first is None:
            raise RuntimeError(f"{' '.join(argv)} made no connection")
        first = proxies.first - t0
    return wall, rusage.ru_utime + rusage.ru_stime, first


Command = tuple[list[str], dict[str, str], FirstConnection | None]

PROXIED = " (proxied)"  # the label suffix of the runs through FirstConnection


def commands(
    systems: Sequence[str],
    coord_eps: str,
    etcd_eps: str,
    baseline: str | None,
    coord_proxies: FirstConnection | None = None,
    etcd_proxies: FirstConnection | None = None,
) -> dict[tuple[str, str], Command]:
    """(label, system) -> (argv, environment, proxies to time the first connection)."""
    # Bytecode caches are written by the warm-up run (as an installed package has them):
    # without them every run would compile the changed modules again.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["ETCDCTL_API"] = "3"
    out: dict[tuple[str, str], Command] = {}
    coord_sides = [("coord", coordctl_argv(), env)] if "coord" in systems else []
    if baseline and "coord" in systems:
        tree = os.path.abspath(baseline)
        base_env = {**env, "PYTHONPATH": tree, "CLI_START_CWD": tree}
        coord_sides.append(("baseline", [sys.executable, "-m", "coord.cli.coordctl"], base_env))
    sides = [
        (system, ctl, ctl_env, coord_eps, coord_proxies) for system, ctl, ctl_env in coord_sides
    ]
    if "etcd" in systems:
        sides.append(("etcd", etcdctl_argv(), env, etcd_eps, etcd_proxies))
    for system, ctl, ctl_env, eps, proxies in sides:
        is_etcd = system == "etcd"
        version = ["version"] if is_etcd else ["--version"]
        get = ["get", KEY] if is_etcd else ["kv", "get", KEY]
        status = ["endpoint", "status"] if is_etcd else ["status"]
        out[("version", system)] = ([*ctl, *version], ctl_env, None)
        out[("kv get", system)] = ([*ctl, "--endpoints", eps, *get], ctl_env, None)
        out[("status", system)] = ([*ctl, "--endpoints", eps, *status], ctl_env, None)
        if proxies is not None:
            via = ",".join(proxies.endpoints)
            out[("kv get" + PROXIED, system)] = ([*ctl, "--endpoints", via, *get], ctl_env, proxies)
            out[("status" + PROXIED, system)] = (
                [*ctl, "--endpoints", via, *status],
                ctl_env,
                proxies,
            )
    return out


def measure(cmds: dict[tuple[str, str], Command], runs: int) -> dict[tuple[str, str], Sample]:
    for argv, env, proxies in cmds.values():  # warm-up, not measured
        run_once(argv, env, proxies)
    samples = {k: Sample() for k in cmds}
    for r in range(runs):
        for k, (argv, env, proxies) in cmds.items():
            wall, cpu, first = run_once(argv, env, proxies)
            samples[k].wall_s.append(wall)
            samples[k].cpu_s.append(cpu)
            if first is not None:
                samples[k].first_conn_s.append(first)
        log(f"round {r + 1}/{runs} done (load {loadavg()[0]})")
    return samples


def rows(samples: dict[tuple[str, str], Sample], other: str = "etcd") -> list[Comparison]:
    """coord vs ``other`` (etcd, or the baseline tree's coord in the etcd column)."""
    measures = [
        ("version", "wall", "wall_s"),
        ("version", "CPU user+sys", "cpu_s"),
        ("kv get", "wall", "wall_s"),
        ("kv get", "CPU user+sys", "cpu_s"),
        ("kv get" + PROXIED, "start to first connection", "first_conn_s"),
        ("status", "wall", "wall_s"),
        ("status", "CPU user+sys", "cpu_s"),
        ("status" + PROXIED, "start to first connection", "first_conn_s"),
    ]
    out: list[Comparison] = []
    for label, what, attr in measures:
        c, e = samples.get((label, "coord")), samples.get((label, other))
        if c is None and e is None:
            continue
        out.append(
            Comparison(
                metric=f"{label.removesuffix(PROXIED)}: {what}, median",
                unit="ms",
                coord=None if c is None else median(getattr(c, attr)) * 1e3,
                etcd=None if e is None else median(getattr(e, attr)) * 1e3,
                extra={
                    "coord_runs_ms": [] if c is None else [v * 1e3 for v in getattr(c, attr)],
                    "etcd_runs_ms": [] if e is None else [v * 1e3 for v in getattr(e, attr)],
                },
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15, help="measured runs per command (>= 1)")
    ap.add_argument("--systems", default="coord,etcd", help="coord, etcd or both")
    ap.add_argument("--baseline", default=None, help="a tree holding another coord package")
    add_json_flag(ap)
    args = ap.parse_args()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    load_start = loadavg()

    from contextlib import ExitStack

    with ExitStack() as stack:
        coord_eps = etcd_eps = ""
        coord_px = etcd_px = None
        if "coord" in systems:
            from coord.client import Client
            from coord_adapter import CoordBenchCluster

            log("starting a 3-node coord cluster")
            cc = stack.enter_context(CoordBenchCluster(3))
            coord_eps = ",".join(cc.endpoints())
            with Client(coord_eps) as client:
                client.put(KEY, VALUE)
            coord_px = FirstConnection(cc.endpoints())
            stack.callback(coord_px.close)
        if "etcd" in systems:
            from etcd_cluster import DEFAULT, EtcdCluster

            log("starting a 3-node etcd cluster")
            ec = stack.enter_context(EtcdCluster(3, DEFAULT))
            etcd_eps = ",".join(ec.endpoints())
            ec.client(0).put(KEY, VALUE)
            etcd_px = FirstConnection(ec.endpoints())
            stack.callback(etcd_px.close)
        cmds = commands(systems, coord_eps, etcd_eps, args.baseline, coord_px, etcd_px)
        samples = measure(cmds, args.runs)
    load_end = loadavg()
    report(
        rows(samples),
        args.json,
        title=(
            f"CLI start to exit, medians of {args.runs} runs; load average "
            f"{load_start[0]} at start, {load_end[0]} at end ({os.cpu_count()} CPUs)"
        ),
        meta={"runs": args.runs, "load_start": load_start, "load_end": load_end},
    )
    if args.baseline and "coord" in systems:
        report(
            rows(samples, "baseline"),
            args.json,
            title=f"\ncoordctl, this tree (coord column) vs {args.baseline} (etcd column)",
            meta={"baseline": args.baseline},
        )


if __name__ == "__main__":
    main()
