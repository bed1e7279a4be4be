"""Where a coord leader's CPU goes under a put load: py-spy profile + /proc accounting.

Starts a local coord cluster as ``CoordBenchCluster`` does (real ``coord serve``
processes, fsync on), runs the put load of ``measure.measure_put_throughput``
(``--clients`` coroutines in one ``_loadgen.py`` process, starting on the leader)
and, once the load is flowing:

1. a **baseline window** (``--baseline-seconds``, default ``--seconds``) without any
   profiler: the leader's (and a follower's) CPU per committed put;
2. a **profile window** (``--seconds``): ``py-spy record --format raw --threads
   --full-filenames`` on the leader (``--follower``: on one follower too, at the
   same time), and the same CPU accounting around it.

CPU comes from ``/proc/<pid>/task/<tid>/schedstat`` (ns on a CPU, and ns runnable
but waiting for one) per thread, summed per process and checked against
``/proc/<pid>/stat`` utime + stime; committed puts are the leader's applied index
moving over the window (Status; a put is one log entry, nothing else is written
under this load). Per thread also: minor page faults per put.

What py-spy counts: without ``--idle`` (the default here) py-spy keeps a thread's
sample only when the kernel reports the thread in state R, which on Linux means
*running or runnable*: on this shared 2-core machine the runnable-but-waiting time
(schedstat's second field) is often larger than the CPU time, and a thread woken
from a blocking call waits with that call as its Python leaf. So the tables do not
use raw sample shares as CPU shares: each Python thread's CPU (schedstat, exact) is
divided among its samples whose leaf is not a blocking call (epoll/poll/select,
``Condition.wait``, ``fdatasync``); samples in blocking calls are shown but get no
CPU (their kernel time, a few µs a call, is spread over the rest of the thread).
Threads whose stacks say nothing useful are one component each (the journal's sync
thread, grpc.aio's poller thread, gRPC's C-core threads, which have no Python
stack and are not sampled at all). Without ``--native`` the time of a C function
(zlib, pickle, socket, Cython) is on the Python line that calls it; pysyncobj's
``pickle.dumps``/``loads`` are Python functions, so pickle and zlib are told apart
by the leaf line. With ``--native`` py-spy unwinds C stacks too (much slower: it
perturbs the leader, see bench/README.md).

With ``--perf`` (the default when ``perf`` is installed) ``perf record -e cpu-clock -g``
samples the same processes in the same window: on-CPU only, native and kernel
frames (no Python frames on 3.11), so it tells the interpreter, zlib, gRPC's C code,
protobuf and each kind of syscall (futex, TCP, epoll, fdatasync) apart, without the
runnable-wait bias; its per-thread samples are scaled to the thread's schedstat CPU.

By default py-spy samples ``--nonblocking`` (it does not stop the process per
sample; its default, stopping it, halved the leader's throughput here);
``--blocking`` uses py-spy's default.

Outputs: ``--out DIR`` (default: a new temp dir, printed at the end) gets the raw
profiles (``leader.raw``, ``follower.raw``: one collapsed stack per line with its
sample count, loadable by speedscope or flamegraph.pl; ``*.perf.collapsed`` likewise,
``tid;frames…`` from perf), ``meta.json`` (all /proc
figures and settings) and ``report.txt`` (the tables, as printed on stdout).
``--analyze DIR`` prints the tables again from a saved directory (e.g. after
changing the buckets below) without running anything; ``--analyze DIR DIR DIR``
prints the median and range of every figure over those runs.

Usage::

    .venv/bin/python bench/profile_leader.py [--clients 64] [--seconds 10] [--follower]
        [--rate 100] [--baseline-seconds 10] [--out DIR] [--native] [--blocking]
        [--coord-args "--cluster-secret s3cret"] [--no-perf] [--perf-rate 499] [--top 25]
    .venv/bin/python bench/profile_leader.py --analyze DIR [DIR ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import linecache
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import loadavg, log, wait_until
from coord_adapter import COORD_FACTORIES, CoordBenchCluster
from measure import Throughput, leader_first, measure_put_throughput

REPO = Path(__file__).resolve().parent.parent
SETTLE_S = 2.0  # after the load is seen flowing, before the first window
# Load kept running after the profile window: py-spy and perf take seconds to attach
# on a busy machine, and the window must end before the load does (checked).
TAIL_S = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --------------------------------------------------------------------------
# /proc accounting
# --------------------------------------------------------------------------


@dataclass
class ThreadStat:
    """One thread's counters (cumulative since it started)."""

    comm: str
    cpu_ns: int  # schedstat: time on a CPU
    wait_ns: int  # schedstat: time runnable, waiting for a CPU
    minflt: int  # minor page faults


@dataclass
class ProcSnap:
    """A process's counters at one instant."""

    t: float
    utime_stime_s: float  # /proc/<pid>/stat utime + stime (includes exited threads)
    threads: dict[int, ThreadStat]


def _stat_fields(path: str) -> tuple[str, list[str]]:
    with open(path, encoding="ascii", errors="replace") as f:
        text = f.read()
    head, _, rest = text.rpartition(")")
    return head.partition("(")[2], rest.split()


def proc_snap(pid: int) -> ProcSnap:
    """Per-thread schedstat / minflt and the process's utime + stime, now."""
    t = time.perf_counter()
    _, fields = _stat_fields(f"/proc/{pid}/stat")
    total = (int(fields[11]) + int(fields[12])) / CLK_TCK
    threads: dict[int, ThreadStat] = {}
    for name in os.listdir(f"/proc/{pid}/task"):
        tid = int(name)
        try:
            comm, tf = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                run_ns, wait_ns, _ = f.read().split()
        except (OSError, ValueError):  # the thread exited meanwhile
            continue
        threads[tid] = ThreadStat(comm, int(run_ns), int(wait_ns), int(tf[7]))
    return ProcSnap(t, total, threads)


def snap_delta(a: ProcSnap, b: ProcSnap) -> dict[str, Any]:
    """What a process did between two snapshots (threads started since count from 0)."""
    threads = {}
    for tid, tb in b.threads.items():
        ta = a.threads.get(tid, ThreadStat(tb.comm, 0, 0, 0))
        threads[str(tid)] = {
            "comm": tb.comm,
            "cpu_s": (tb.cpu_ns - ta.cpu_ns) / 1e9,
            "wait_s": (tb.wait_ns - ta.wait_ns) / 1e9,
            "minflt": tb.minflt - ta.minflt,
        }
    return {
        "wall_s": b.t - a.t,
        "cpu_s": b.utime_stime_s - a.utime_stime_s,
        "threads_cpu_s": sum(t["cpu_s"] for t in threads.values()),
        "threads": threads,
    }


_SS_FIELDS = ("bytes_sent", "bytes_received", "data_segs_out", "data_segs_in")


def link_counters(pid: int, ports: set[int]) -> dict[str, dict[str, int]]:
    """TCP counters (``ss -ti``) of ``pid``'s established sockets whose local or peer
    port is a Raft port: the Raft link, one entry per socket."""
    try:
        text = subprocess.run(
            ["ss", "-tinpH", "state", "established"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    out: dict[str, dict[str, int]] = {}
    current: str | None = None
    for line in text.splitlines():
        if not line.startswith((" ", "\t")):
            cols = line.split()
            current = None
            if len(cols) >= 5 and f"pid={pid}," in line:
                local, peer = cols[2], cols[3]
                lp, pp = int(local.rsplit(":", 1)[1]), int(peer.rsplit(":", 1)[1])
                if lp in ports or pp in ports:
                    current = f"{local}-{peer}"
            continue
        if current is not None:
            vals = dict(kv.split(":", 1) for kv in line.split() if ":" in kv)
            out[current] = {k: int(vals.get(k, "0")) for k in _SS_FIELDS}
            current = None
    return out


def link_delta(a: dict[str, dict[str, int]], b: dict[str, dict[str, int]]) -> dict[str, int]:
    """Sum over sockets of what the counters moved (a socket opened since counts from 0)."""
    total = dict.fromkeys(_SS_FIELDS, 0)
    for key, cb in b.items():
        ca = a.get(key, dict.fromkeys(_SS_FIELDS, 0))
        for k in _SS_FIELDS:
            total[k] += cb[k] - ca[k]
    total["sockets"] = len(b)
    return total


def find_loadgen() -> int | None:
    """The ``_loadgen.py`` child of this process, if running."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError):
            _, fields = _stat_fields(f"/proc/{name}/stat")
            if int(fields[1]) != me:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if b"_loadgen.py" in f.read():
                    return int(name)
    return None


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


@dataclass
class Watched:
    """A process whose CPU is accounted over each window."""

    role: str  # leader | follower | loadgen
    pid: int
    applied: Callable[[], int] | None = None  # its applied index (cluster members)
    raft_ports: set[int] = field(default_factory=set)  # the cluster's (members only)


@dataclass
class Window:
    """Counters at the start and end of a window."""

    start: dict[str, ProcSnap] = field(default_factory=dict)
    end: dict[str, ProcSnap] = field(default_factory=dict)
    applied: dict[str, tuple[int, int]] = field(default_factory=dict)
    links: dict[str, list[dict[str, dict[str, int]]]] = field(default_factory=dict)

    def begin(self, procs: Iterable[Watched]) -> None:
        for w in procs:
            if w.applied is not None:
                self.applied[w.role] = (w.applied(), 0)
            if w.raft_ports:
                self.links[w.role] = [link_counters(w.pid, w.raft_ports)]
            self.start[w.role] = proc_snap(w.pid)

    def finish(self, procs: Iterable[Watched]) -> None:
        for w in procs:
            self.end[w.role] = proc_snap(w.pid)
            if w.raft_ports:
                self.links[w.role].append(link_counters(w.pid, w.raft_ports))
            if w.applied is not None:
                self.applied[w.role] = (self.applied[w.role][0], w.applied())

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for role, a in self.start.items():
            d = snap_delta(a, self.end[role])
            if role in self.applied:
                lo, hi = self.applied[role]
                d["applied"] = hi - lo
            if role in self.links:
                d["raft_link"] = link_delta(*self.links[role])
            out[role] = d
        return out


def _applied(cluster: CoordBenchCluster, i: int) -> Callable[[], int]:
    def get() -> int:
        st = wait_until(lambda: cluster.cluster.status(i, timeout=2.0), 10.0, f"status of {i}")
        if st is None:  # wait_until returns only a truthy value
            raise RuntimeError(f"no status from node {i}")
        return int(st.applied_index)

    return get


def _spy(args: argparse.Namespace, pid: int, path: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if exe is None:
        raise SystemExit(
            "py-spy not found: .venv/bin/pip install py-spy (or pip install '.[bench]')"
        )
    cmd = [exe, "record", "--pid", str(pid), "--format", "raw", "--threads", "--full-filenames"]
    cmd += ["--rate", str(args.rate), "--duration", str(args.seconds), "--output", str(path)]
    if not args.blocking:
        cmd.append("--nonblocking")
    if args.native:
        cmd.append("--native")
    log("  " + shlex.join(cmd))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=path.parent)


def _wait_spy(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Reap py-spy with its own rusage (its CPU is a cost on this 2-core machine)."""
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = proc.stdout.read().decode(errors="replace") if proc.stdout is not None else ""
    return {
        "rc": proc.returncode,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "output": output[-2000:],
    }


def _perf(args: argparse.Namespace, pid: int, path: Path) -> subprocess.Popen[bytes]:
    cmd = ["perf", "record", "-e", "cpu-clock", "-F", str(args.perf_rate), "-g"]
    cmd += ["-p", str(pid), "-o", str(path), "--", "sleep", str(args.seconds)]
    log("  " + shlex.join(cmd))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=path.parent)


def collapse_perf(data: Path, out: Path) -> int:
    """``perf script`` of ``data`` as collapsed stacks (``tid;root;...;leaf count``,
    frames ``symbol (dso)``) in ``out``; returns the number of samples."""
    text = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "tid,ip,sym,dso"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    stacks: Counter[str] = Counter()
    for block in text.split("\n\n"):
        lines = [ln.strip() for ln in block.strip().splitlines() if ln.strip()]
        if not lines:
            continue
        tid = lines[0].split()[0]
        frames = []
        for ln in lines[1:]:
            _, _, rest = ln.partition(" ")  # drop the address
            frames.append(rest.replace(";", ","))
        stacks[";".join([tid, *reversed(frames)])] += 1
    with open(out, "w", encoding="utf-8") as f:
        for stack, n in stacks.items():
            f.write(f"{stack} {n}\n")
    return sum(stacks.values())


def wait_for_quiet(limit: float | None, max_wait_s: float = 600.0) -> None:
    """With ``--wait-load``: wait (at most ``max_wait_s``) for the 1-minute load average
    to drop below ``limit``; go on anyway after that (the report shows the load)."""
    if limit is None:
        return
    deadline = time.monotonic() + max_wait_s
    while os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        log(f"load average {os.getloadavg()[0]:.1f} >= {limit:g}: waiting")
        time.sleep(15)


def run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Start the cluster, run the load, account and profile; return the meta document."""
    wait_for_quiet(args.wait_load)
    meta: dict[str, Any] = {
        "argv": sys.argv[1:],
        "load_start": loadavg(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "tree": _tree_state(),
    }
    baseline = args.baseline_seconds if args.baseline_seconds is not None else args.seconds
    total = SETTLE_S + baseline + 2 * args.seconds + TAIL_S
    with CoordBenchCluster(args.nodes, extra_args=shlex.split(args.coord_args)) as c:
        c.wait_healthy()
        li = c.leader_index()
        if li is None:
            raise RuntimeError("no leader")
        fi = next(i for i in range(args.nodes) if i != li)
        nodes = c.cluster.nodes
        ports = {int(n.raft.rsplit(":", 1)[1]) for n in nodes}
        procs = [
            Watched("leader", _pid(nodes[li].proc), _applied(c, li), ports),
            Watched("follower", _pid(nodes[fi].proc), _applied(c, fi), ports),
        ]
        meta.update(leader=nodes[li].node_id, follower=nodes[fi].node_id, term_before=c.term())
        result: dict[str, Throughput | BaseException] = {}

        def load() -> None:
            try:
                result["r"] = measure_put_throughput(
                    leader_first(c.endpoints(), li),
                    args.clients,
                    total,
                    factory=COORD_FACTORIES[args.coord_client],
                )
            except BaseException as e:
                result["r"] = e

        log(f"load: {args.clients} clients for {total:g} s on leader {nodes[li].node_id}")
        loader = threading.Thread(target=load, name="load", daemon=True)
        loader.start()
        first = procs[0].applied
        assert first is not None
        start_idx = first()
        wait_until(lambda: first() > start_idx + 2 * args.clients, 60.0, "the load to flow")
        time.sleep(SETTLE_S)
        lg = find_loadgen()
        if lg is not None:
            procs.append(Watched("loadgen", lg))

        windows = _windows(args, procs, out, baseline, meta)
        meta["leader_after"] = c.leader_index()
        loader.join(timeout=total + 180)
        meta["term_after"] = c.term()
    r = result.get("r")
    if isinstance(r, BaseException):
        raise RuntimeError("load generator failed") from r
    if r is not None:
        meta["loadgen"] = {
            "ops_per_s": r.ops_per_s,
            "p50_ms": r.p50_ms,
            "p99_ms": r.p99_ms,
            "errors": r.errors,
            "seconds": total,
        }
    meta["windows"] = {name: w.summary() for name, w in windows.items()}
    meta["load_end"] = loadavg()
    meta["settings"] = _settings(args, baseline)
    return meta


def _tree_state() -> str:
    """The commit and whether coord/ or pysyncobj differ from it (read-only git)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "coord"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    changed = [ln[3:] for ln in dirty if ln.strip()]
    return head + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")


def _settings(args: argparse.Namespace, baseline: float) -> dict[str, Any]:
    return {
        "clients": args.clients,
        "seconds": args.seconds,
        "baseline_seconds": baseline,
        "rate": args.rate,
        "native": args.native,
        "blocking": args.blocking,
        "nodes": args.nodes,
        "coord_args": args.coord_args,
        "follower_profiled": args.follower,
        "perf": args.perf,
        "perf_rate": args.perf_rate,
    }


def _windows(
    args: argparse.Namespace,
    procs: list[Watched],
    out: Path,
    baseline: float,
    meta: dict[str, Any],
) -> dict[str, Window]:
    """The baseline window (no profiler), then the profile window (py-spy running)."""
    windows: dict[str, Window] = {}
    if baseline > 0:
        log(f"baseline window: {baseline:g} s, no profiler")
        w = windows["baseline"] = Window()
        w.begin(procs)
        time.sleep(baseline)
        w.finish(procs)
    log(f"profile window: {args.seconds:g} s of py-spy at {args.rate} Hz")
    w = windows["profile"] = Window()
    targets = [procs[0]] + ([procs[1]] if args.follower else [])
    w.begin(procs)
    spies = [(p.role, _spy(args, p.pid, out / f"{p.role}.raw")) for p in targets]
    perfs = (
        [(p.role, _perf(args, p.pid, out / f"{p.role}.perf.data")) for p in targets]
        if args.perf
        else []
    )
    meta["pyspy"] = {role: _wait_spy(proc) for role, proc in spies}
    meta["perf"] = {role: _wait_spy(proc) for role, proc in perfs}
    w.finish(procs)
    if any(p.role == "loadgen" for p in procs) and find_loadgen() is None:
        raise RuntimeError("the load ended inside the profile window: raise TAIL_S")
    for tool in ("pyspy", "perf"):
        for role, info in meta[tool].items():
            if info["rc"] != 0:
                raise RuntimeError(f"{tool} on the {role} failed ({info['rc']}):\n{info['output']}")
    for role in meta["perf"]:
        data = out / f"{role}.perf.data"
        meta["perf"][role]["samples"] = collapse_perf(data, out / f"{role}.perf.collapsed")
        data.unlink()
    return windows


def _pid(proc: subprocess.Popen[bytes] | None) -> int:
    if proc is None:
        raise RuntimeError("node not running")
    return proc.pid


# --------------------------------------------------------------------------
# Reading py-spy's raw output
# --------------------------------------------------------------------------

_THREAD = re.compile(r"^thread \((?P<tid>\d+|0x[0-9a-fA-F]+)\)(?::\s*(?P<name>.*))?$")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_STDLIB = sysconfig.get_paths()["stdlib"]


@dataclass(frozen=True)
class Frame:
    """One frame of a sample: function (qualified name), file (as py-spy gave it), line."""

    func: str
    file: str
    line: int

    @property
    def short(self) -> str:
        """The file relative to site-packages, the stdlib or the repo."""
        f = self.file
        for marker in ("/site-packages/", "/dist-packages/"):
            if marker in f:
                return f.split(marker, 1)[1]
        if f.startswith(_STDLIB + "/"):
            return f[len(_STDLIB) + 1 :]
        if f.startswith(str(REPO) + "/"):
            return f[len(str(REPO)) + 1 :]
        return f

    @property
    def python(self) -> bool:
        return self.file.endswith((".py", ".pyx", ".pxi")) or self.file.startswith("<frozen")

    @property
    def source(self) -> str:
        """The source line (empty if unknown)."""
        if not self.python or self.line <= 0:
            return ""
        return linecache.getline(self.file, self.line).strip()

    def label(self, lineno: bool = False) -> str:
        where = f"{self.short}:{self.line}" if lineno else self.short
        return f"{self.func} ({where})"


@dataclass
class Sample:
    """A collapsed stack (root first) with its count."""

    tid: int
    thread: str
    frames: list[Frame]
    count: int


def parse_frame(text: str) -> Frame:
    m = _FRAME.match(text)
    if m is None:
        return Frame(text, "", 0)
    return Frame(m["func"], m["file"], int(m["line"] or 0))


def read_raw(path: Path) -> list[Sample]:
    """py-spy ``--format raw --threads`` output (``thread (tid): name;f;...;leaf N``)."""
    samples = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not line:
                continue
            stack, _, n = line.rpartition(" ")
            parts = stack.split(";")
            m = _THREAD.match(parts[0])
            if m is None:
                samples.append(Sample(0, "?", [parse_frame(p) for p in parts], int(n)))
                continue
            tid = int(m["tid"], 0)
            frames = [parse_frame(p) for p in parts[1:]]
            samples.append(Sample(tid, m["name"] or f"thread {tid}", frames, int(n)))
    return samples


# --------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------

WAITING = "(in a blocking call: poll/select/wait; not CPU, see text)"
# Components whose leaf line is a C call that releases the GIL: after it the thread waits
# (runnable) to take the GIL back with that line as its leaf, so py-spy overstates them;
# perf's on-CPU figures (libz, kernel TCP, kernel pipe) are the ones to quote.
GIL_RELEASING = {
    "Raft link: zlib compress/decompress",
    "Raft link: socket send/recv",
    "cross-thread wake-ups (pipes)",
}


def thread_kind(name: str, comm: str) -> str:
    """The role of a thread of a coord server, from its Python name or its comm."""
    if name == "MainThread":
        return "asyncio loop (gRPC servicers)"
    if "_autoTickThread" in name:
        return "Raft tick (pysyncobj)"
    if name == "coord-journal-sync":
        return "journal fsync thread"
    if "_poll_wrapper" in name:
        return "grpc.aio poller thread"
    if name.startswith("coord-dump"):
        return "snapshot dump thread"
    if name:
        return f"other Python ({name})"
    if comm in ("event_engine", "grpc_global_tim", "lifeguard") or comm.startswith("grpc"):
        return "gRPC C-core threads (no Python stack)"
    return f"other native ({comm})"


# Threads whose CPU is one component each (their stacks say nothing finer).
WHOLE_THREAD = {
    "journal fsync thread": "journal fsync thread (fdatasync, wake-ups)",
    "grpc.aio poller thread": "gRPC: grpc.aio poller thread (Cython/C)",
    "snapshot dump thread": "snapshot dump thread (log compaction)",
}


def _is_waiting(f: Frame) -> bool:
    src = f.source
    return (
        (f.short == "selectors.py" and f.func.endswith("select"))
        or (f.short == "pysyncobj/poller.py" and f.func.endswith(".poll"))
        or (f.short == "threading.py" and f.func.endswith((".wait", ".join")))
        or "fdatasync(" in src
        or "fsync(" in src
        or "time.sleep(" in src
    )


_NATIVE_LIBS = (
    ("libz", "Raft link: zlib compress/decompress"),
    ("zlibmodule", "Raft link: zlib compress/decompress"),
    ("_pickle", "pickle"),
    ("cygrpc", "gRPC: Cython/C under the event loop"),
    ("libgrpc", "gRPC: Cython/C under the event loop"),
    ("_message", "protobuf"),
    ("_asynciomodule", "asyncio event loop"),
)

_PROTO_CALLS = ("SerializeToString", "ParseFromString", "FromString", "CopyFrom", "_pb2.")


def _python_bucket(f: Frame, stack: list[Frame]) -> str:
    """The component of a sample whose deepest Python frame is ``f``."""
    short, src = f.short, f.source
    on_link = any(x.short == "pysyncobj/tcp_connection.py" for x in stack)
    if "zlib.compress" in src or "zlib.decompress" in src:
        return "Raft link: zlib compress/decompress"
    if short in ("pysyncobj/pickle.py", "pickle.py", "copyreg.py") or "pickle." in src:
        return "Raft link: pickle dumps/loads" if on_link else "pickle: command wrapper/apply"
    if short == "pysyncobj/tcp_connection.py" and (".send(" in src or ".recv(" in src):
        return "Raft link: socket send/recv"
    if short == "pysyncobj/pipe_notifier.py" or f.func.endswith(
        ("_write_to_self", "_read_from_self")
    ):
        return "cross-thread wake-ups (pipes)"
    if short == "pysyncobj/syncobj.py":
        return "pysyncobj Raft logic (syncobj.py)"
    if short.startswith("pysyncobj/"):
        return "pysyncobj transport/poller bookkeeping"
    if any(p in src for p in _PROTO_CALLS) or short.startswith("google/protobuf/"):
        return "protobuf"
    if short.startswith(("coord/raft/journal", "coord/raft/fsutil")):
        return "coord/raft journal (append, CRC)"
    if short.startswith("coord/raft/"):
        return "coord/raft (node, transport hooks, adapter)"
    if short.startswith("coord/state/") or short.startswith("sortedcontainers/"):
        return "coord/state (state machine apply)"
    if short.startswith("coord/server/http/metrics") or short.startswith("prometheus_client/"):
        return "metrics (prometheus_client)"
    if short.startswith("coord/"):
        return "coord/server (servicers, guard, context)"
    if short.startswith("grpc/") or (short == "asyncio/events.py" and f.func == "Handle._run"):
        return "gRPC: Cython/C under the event loop"
    if short.startswith("asyncio/") or short in ("selectors.py", "contextvars.py"):
        return "asyncio event loop"
    if short in ("threading.py", "queue.py") or short.startswith("concurrent/"):
        return "threading/queue/futures"
    if short.startswith("logging/"):
        return "logging"
    return "other"


def bucket_of(sample: Sample, kind: str) -> str:
    """The component a sample's self time belongs to."""
    if kind in WHOLE_THREAD:
        return WHOLE_THREAD[kind]
    frames = sample.frames
    if not frames:
        return "other"
    py = [i for i, f in enumerate(frames) if f.python]
    if py and _is_waiting(frames[py[-1]]) and py[-1] == len(frames) - 1:
        return WAITING
    # Native frames below the deepest Python frame (--native): known libraries first.
    below = frames[py[-1] + 1 :] if py else frames
    for f in reversed(below):
        for lib, bucket in _NATIVE_LIBS:
            if lib in f.file:
                return bucket
    if py:
        deepest = frames[py[-1]]
        if _is_waiting(deepest):
            return WAITING
        return _python_bucket(deepest, frames)
    return "other"


# Inclusive markers: a sample counts for every marker one of its frames matches.
PATHS: list[tuple[str, Callable[[Frame], bool]]] = [
    ("gRPC Put servicer (KVService.Put and below)", lambda f: f.func == "KVService.Put"),
    (
        "coord handler wrappers (handlers.py: guard, metrics, errors)",
        lambda f: f.short == "coord/server/api/handlers.py",
    ),
    (
        "propose: adapter + pysyncobj @replicated wrapper (pickle) + queue + wake-up",
        lambda f: f.func in ("SyncObjAdapter.propose", "_SyncObj._applyCommand"),
    ),
    (
        "drain proposals + append (_checkCommandsToApply)",
        lambda f: f.func.endswith("_checkCommandsToApply"),
    ),
    ("journal append (DurableJournal.add)", lambda f: f.func == "DurableJournal.add"),
    ("build+send AppendEntries (__sendAppendEntries)", lambda f: "__sendAppendEntries" in f.func),
    (
        "Raft link send: pickle+zlib+socket (TcpConnection.send/__processSend)",
        lambda f: f.func in ("TcpConnection.send", "TcpConnection.__processSend"),
    ),
    (
        "Raft link receive: read+decompress+unpickle (__processRead/__processParseMessage)",
        lambda f: f.func in ("TcpConnection.__processRead", "TcpConnection.__processParseMessage"),
    ),
    (
        "handle peer messages (SyncObj.__onMessageReceived)",
        lambda f: "__onMessageReceived" in f.func,
    ),
    (
        "apply committed entries (SyncObj.__applyLogEntries)",
        lambda f: "__applyLogEntries" in f.func,
    ),
    ("coord state machine (coord/state/*)", lambda f: f.short.startswith("coord/state/")),
    ("coord per-tick hook (RaftNode._on_tick)", lambda f: f.func == "RaftNode._on_tick"),
    ("log compaction (__tryLogCompaction)", lambda f: "__tryLogCompaction" in f.func),
    (
        "wake asyncio from the tick (call_soon_threadsafe)",
        lambda f: "call_soon_threadsafe" in f.func,
    ),
    ("metrics (prometheus_client)", lambda f: f.short.startswith("prometheus_client/")),
]


# --------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------


@dataclass
class ThreadRow:
    """A thread kind's figures in the profile window."""

    kind: str
    tids: list[int] = field(default_factory=list)
    cpu_s: float = 0.0
    wait_s: float = 0.0
    minflt: int = 0
    samples: int = 0  # py-spy samples (state R: running or runnable)
    waiting: int = 0  # ... of them in a blocking call
    base_us_per_put: float = 0.0  # the same threads' CPU per put in the baseline window


@dataclass
class Profile:
    """One process's aggregated profile."""

    role: str
    puts: int
    rate: int
    threads: dict[str, ThreadRow]
    buckets: Counter[str]  # samples per component
    bucket_us: dict[str, float]  # CPU per put per component
    paths: Counter[str]
    paths_us: dict[str, float]
    self_fn: Counter[str]
    self_us: dict[str, float]
    incl_fn: Counter[str]
    incl_us: dict[str, float]
    total_samples: int


def _thread_rows(
    role: str, meta: dict[str, Any], names: dict[int, str]
) -> tuple[dict[int, str], dict[str, ThreadRow]]:
    win = meta["windows"]["profile"][role]
    base = meta["windows"].get("baseline", {}).get(role)
    base_puts = meta["windows"].get("baseline", {}).get("leader", {}).get("applied") or 0
    kinds: dict[int, str] = {}
    rows: dict[str, ThreadRow] = {}
    for tid_s, t in win["threads"].items():
        tid = int(tid_s)
        kind = thread_kind(names.get(tid, ""), t["comm"])
        kinds[tid] = kind
        row = rows.setdefault(kind, ThreadRow(kind))
        row.tids.append(tid)
        row.cpu_s += t["cpu_s"]
        row.wait_s += t["wait_s"]
        row.minflt += t["minflt"]
        if base is not None and base_puts and tid_s in base["threads"]:
            row.base_us_per_put += base["threads"][tid_s]["cpu_s"] * 1e6 / base_puts
    exited = []
    for tid, name in names.items():  # a sampled thread that exited before the end snapshot
        if tid not in kinds:
            kinds[tid] = thread_kind(name, "")
            rows.setdefault(kinds[tid], ThreadRow(kinds[tid])).tids.append(tid)
            exited.append(kinds[tid])
    # Their CPU (snapshot dump workers) is in the process's utime + stime (10 ms ticks)
    # but in no thread's schedstat: the difference, if any, is theirs.
    gone = win["cpu_s"] - win["threads_cpu_s"]
    if exited and gone > 0:
        rows[exited[0]].cpu_s += gone
    return kinds, rows


_ROOT_FUNCS = (
    "BaseEventLoop.run_forever",
    "BaseEventLoop.run_until_complete",
    "BaseEventLoop._run_once",
    "SyncObj._autoTickThread",
    "serve",
)


def _is_root_frame(f: Frame) -> bool:
    """Frames every sample of a thread passes through (thread start, click, runpy, the
    event loop's run loop): left out of the inclusive list, which they would fill."""
    return (
        f.short in ("threading.py", "asyncio/runners.py")
        or f.short.startswith(("click/", "<frozen runpy"))
        or f.short == "coord/cli/coord_main.py"
        or f.func in _ROOT_FUNCS
    )


def aggregate(role: str, raw: Path, meta: dict[str, Any]) -> Profile:
    """Samples of ``raw`` (py-spy) weighted by the /proc CPU of their threads."""
    samples = read_raw(raw)
    names = {s.tid: s.thread for s in samples}
    kinds, rows = _thread_rows(role, meta, names)
    puts = int(meta["windows"]["profile"]["leader"]["applied"])
    per_kind: dict[str, list[tuple[Sample, str]]] = defaultdict(list)
    for s in samples:
        kind = kinds.get(s.tid, thread_kind(s.thread, ""))
        b = bucket_of(s, kind)
        per_kind[kind].append((s, b))
        row = rows.setdefault(kind, ThreadRow(kind))
        row.samples += s.count
        if b == WAITING:
            row.waiting += s.count
    buckets: Counter[str] = Counter()
    bucket_us: dict[str, float] = defaultdict(float)
    paths: Counter[str] = Counter()
    paths_us: dict[str, float] = defaultdict(float)
    self_fn: Counter[str] = Counter()
    self_us: dict[str, float] = defaultdict(float)
    incl_fn: Counter[str] = Counter()
    incl_us: dict[str, float] = defaultdict(float)
    for kind, row in rows.items():
        cpu_us_per_put = row.cpu_s * 1e6 / puts if puts else 0.0
        working = row.samples - row.waiting
        if not working:  # not sampled (native threads) or only waiting: one component
            name = WHOLE_THREAD.get(kind, kind)
            bucket_us[name] += cpu_us_per_put
            continue
        w = cpu_us_per_put / working  # µs per put for one working sample of this thread
        for s, b in per_kind[kind]:
            buckets[b] += s.count
            if b == WAITING:
                continue
            bucket_us[b] += s.count * w
            if s.frames:
                leaf = s.frames[-1].label()
                self_fn[leaf] += s.count
                self_us[leaf] += s.count * w
            for label, pred in PATHS:
                if any(pred(f) for f in s.frames):
                    paths[label] += s.count
                    paths_us[label] += s.count * w
            for fn in {f.label() for f in s.frames if not _is_root_frame(f)}:
                incl_fn[fn] += s.count
                incl_us[fn] += s.count * w
    return Profile(
        role,
        puts,
        int(meta["settings"]["rate"]),
        rows,
        buckets,
        dict(bucket_us),
        paths,
        dict(paths_us),
        self_fn,
        dict(self_us),
        incl_fn,
        dict(incl_us),
        sum(s.count for s in samples),
    )


# --------------------------------------------------------------------------
# perf (on-CPU, native and kernel)
# --------------------------------------------------------------------------

_SYSCALL = re.compile(r"^(?:__x64_sys|__se_sys|__do_sys|__ia32_sys|ksys)_(\w+)")
_USER_DSOS = (
    ("libz.so", "zlib (libz)"),
    ("_pickle", "pickle (C)"),
    ("cygrpc", "gRPC (cygrpc: Cython + C-core)"),
    ("_message", "protobuf (upb)"),
    ("libprotobuf", "protobuf (upb)"),
    ("libpython", "Python interpreter (libpython)"),
    ("/python3", "Python interpreter (libpython)"),
    ("_asyncio", "asyncio C module"),
    ("libc.so", "libc (malloc, memcpy, syscall stubs)"),
    ("libstdc++", "libstdc++ (gRPC C-core)"),
    ("ld-linux", "dynamic loader"),
)


_GC_SYMS = {
    "visit_decref",
    "visit_reachable",
    "move_unreachable",
    "subtract_refs",
    "update_refs",
    "deduce_unreachable",
    "move_legacy_finalizers",
    "handle_weakrefs",
}


def _kernel_group(syms: list[str]) -> str:
    """Why a kernel sample ran: the syscall or fault its stack entered by (root first)."""
    joined = " ".join(syms)
    if "page_fault" in joined:
        return "kernel: page faults"
    name = next((m[1] for m in map(_SYSCALL.match, syms) if m), None)
    if name is not None:
        if name in ("fdatasync", "fsync", "sync_file_range"):
            return "kernel: fdatasync"
        if name in ("epoll_wait", "epoll_pwait", "epoll_ctl", "poll", "ppoll", "select"):
            return "kernel: epoll/poll"
        if name == "futex":
            return "kernel: futex (GIL, locks)"
        if "unix_" in joined or "pipe_" in joined or "eventfd" in joined:
            return "kernel: pipe/socketpair/eventfd (wake-ups)"
        if (
            name in ("sendto", "recvfrom", "sendmsg", "recvmsg")
            or "tcp_" in joined
            or "sock_" in joined
            or "inet_" in joined
        ):
            return "kernel: TCP send/recv (loopback)"
        if name in ("write", "pwrite64", "writev", "read", "pread64", "lseek", "openat"):
            return "kernel: file read/write"
        return f"kernel: syscall {name}"
    if "irq" in joined:
        return "kernel: interrupts"
    if "schedule" in joined or "finish_task_switch" in joined:
        return "kernel: scheduler"
    return "kernel: other"


def perf_group(frames: list[str]) -> str:
    """Component of one perf sample (frames ``symbol (dso)``, root first)."""
    if not frames:
        return "unknown"
    if frames[-1].endswith("([kernel.kallsyms])"):
        ksyms = []
        for f in reversed(frames):
            if not f.endswith("([kernel.kallsyms])"):
                break
            ksyms.append(f.rsplit(" (", 1)[0])
        return _kernel_group(list(reversed(ksyms)))
    sym, _, dso = frames[-1].rpartition(" (")
    if "libpython" in dso and (sym.startswith("gc_") or "traverse" in sym or sym in _GC_SYMS):
        return "Python cyclic GC (libpython gc_*, *_traverse)"
    for key, group in _USER_DSOS:
        if key in dso:
            return group
    return f"other: {Path(dso.rstrip(')')).name}"


@dataclass
class PerfProfile:
    """One process's perf samples by thread kind and component."""

    role: str
    samples: int
    by_group: Counter[str]
    by_kind_group: dict[str, Counter[str]]
    leaves: Counter[str]


def aggregate_perf(role: str, path: Path, kinds: dict[int, str]) -> PerfProfile:
    by_group: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    leaves: Counter[str] = Counter()
    total = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            stack, _, n_s = raw.rstrip("\n").rpartition(" ")
            tid_s, *frames = stack.split(";")
            n = int(n_s)
            g = perf_group(frames)
            kind = kinds.get(int(tid_s), "other") if tid_s.isdigit() else "other"
            by_group[g] += n
            by_kind[kind][g] += n
            if frames:
                leaves[frames[-1]] += n
            total += n
    return PerfProfile(role, total, by_group, dict(by_kind), leaves)


def perf_scaled(pp: PerfProfile, kinds_cpu: dict[str, float]) -> dict[str, float]:
    """CPU seconds per component: each thread kind's perf samples scaled to its
    schedstat CPU (perf's cpu-clock sees 70-80 % of it here; see the thread table)."""
    out: dict[str, float] = defaultdict(float)
    for kind, groups in pp.by_kind_group.items():
        n = sum(groups.values())
        cpu = kinds_cpu.get(kind, 0.0)
        for g, k in groups.items():
            out[g] += k / n * cpu if cpu > 0 else 0.0
    return dict(out)


def render_perf(
    pp: PerfProfile, meta: dict[str, Any], kinds_cpu: dict[str, float], top: int
) -> str:
    """perf's tables: components (scaled to schedstat per thread), per thread, leaves."""
    rate = int(meta["settings"]["perf_rate"])
    puts = int(meta["windows"]["profile"]["leader"]["applied"])

    def us(n: float) -> float:
        return n / rate * 1e6 / puts

    scaled = perf_scaled(pp, kinds_cpu)
    total = sum(scaled.values()) * 1e6 / puts
    out = [
        f"perf on the {pp.role} (cpu-clock, {rate} Hz, on-CPU only, native + kernel): "
        f"{pp.samples} samples = {us(pp.samples):.0f} µs/put as sampled, "
        f"{total:.0f} µs/put scaled to each thread's schedstat CPU\n"
    ]
    main_kinds = sorted(pp.by_kind_group, key=lambda k: -sum(pp.by_kind_group[k].values()))[:3]
    header = ["component", "µs/put (scaled)", "%", "samples", *[f"{k}" for k in main_kinds]]
    rows = []
    small = 0.0
    for g, cpu in sorted(scaled.items(), key=lambda kv: -kv[1]):
        g_us = cpu * 1e6 / puts
        if g_us < 0.5:
            small += g_us
            continue
        per_kind = []
        for k in main_kinds:
            groups = pp.by_kind_group[k]
            n = sum(groups.values())
            per_kind.append(f"{groups.get(g, 0) / n * kinds_cpu.get(k, 0.0) * 1e6 / puts:.0f}")
        rows.append(
            [g, f"{g_us:.0f}", f"{100 * g_us / total:.1f} %", str(pp.by_group[g]), *per_kind]
        )
    if small:
        rows.append(
            ["(others, each < 0.5 µs/put)", f"{small:.1f}", "", "", *["" for _ in main_kinds]]
        )
    out.append(_table(header, rows))
    out.append("")
    krows = [
        [k, f"{us(sum(c.values())):.0f}", f"{kinds_cpu.get(k, 0.0) * 1e6 / puts:.0f}"]
        for k, c in sorted(pp.by_kind_group.items(), key=lambda kv: -sum(kv[1].values()))
    ]
    out.append(_table(["thread", "perf µs/put (as sampled)", "schedstat µs/put"], krows))
    out.append("")
    lrows = []
    for leaf, n in pp.leaves.most_common(top):
        sym, _, dso = leaf.rpartition(" (")
        lrows.append(
            [f"{sym} ({Path(dso.rstrip(')')).name})", str(n), f"{100 * n / pp.samples:.1f} %"]
        )
    out.append(f"Top {top} leaf symbols (perf, as sampled):\n")
    out.append(_table(["symbol (dso)", "samples", "%"], lrows))
    out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _window_line(name: str, meta: dict[str, Any]) -> str:
    w = meta["windows"][name]
    lead = w["leader"]
    puts = lead["applied"]
    line = (
        f"{name} window: {lead['wall_s']:.1f} s, {puts} puts committed "
        f"({puts / lead['wall_s']:.0f}/s); leader CPU {lead['cpu_s'] * 1e6 / puts:.0f} µs/put "
        f"(threads' schedstat: {lead['threads_cpu_s'] * 1e6 / puts:.0f}), "
        f"{lead['cpu_s'] / lead['wall_s']:.2f} core"
    )
    link = lead.get("raft_link")
    if link:
        line += (
            f"; leader's Raft link: {link['data_segs_out'] / puts:.2f} TCP data segments "
            f"and {link['bytes_sent'] / puts:.0f} bytes sent per put, "
            f"{link['data_segs_in'] / puts:.2f} segments received"
        )
    fol = w.get("follower")
    if fol is not None:
        line += f"; follower {fol['cpu_s'] * 1e6 / puts:.0f} µs/put"
    lg = w.get("loadgen")
    if lg is not None:
        line += f"; load generator {lg['cpu_s'] / lg['wall_s']:.2f} core"
    return line


def render_profile(p: Profile, top: int) -> str:
    """The tables of one process."""
    out: list[str] = []
    total_cpu = sum(r.cpu_s for r in p.threads.values())
    per_put = total_cpu * 1e6 / p.puts
    out.append(
        f"### {p.role}: {p.total_samples} py-spy samples at {p.rate} Hz, "
        f"{per_put:.0f} µs CPU per committed put ({p.puts} puts)\n"
    )
    rows = []
    for r in sorted(p.threads.values(), key=lambda r: -r.cpu_s):
        if r.cpu_s < 1e-4 and not r.samples:
            continue
        rows.append(
            [
                r.kind,
                str(len(r.tids)),
                f"{r.cpu_s * 1e6 / p.puts:.0f}",
                f"{100 * r.cpu_s / total_cpu:.0f} %" if total_cpu else "-",
                f"{r.base_us_per_put:.0f}" if r.base_us_per_put else "-",
                f"{r.wait_s * 1e6 / p.puts:.0f}",
                f"{r.minflt / p.puts:.1f}",
                str(r.samples),
                str(r.waiting),
            ]
        )
    out.append(
        _table(
            [
                "thread",
                "n",
                "CPU µs/put",
                "share",
                "(baseline window µs/put, same threads)",
                "runnable-wait µs/put",
                "minor faults/put",
                "samples",
                "of them waiting",
            ],
            rows,
        )
    )
    out.append("")
    brows = []
    sampled = sum(n for b, n in p.buckets.items() if b != WAITING)
    for b, us in sorted(p.bucket_us.items(), key=lambda kv: -kv[1]):
        n = p.buckets.get(b, 0)
        mark = " †" if b in GIL_RELEASING else ""
        brows.append(
            [b + mark, f"{us:.0f}", f"{100 * us / per_put:.1f} %", str(n) if n else "(not sampled)"]
        )
    if p.buckets.get(WAITING):
        brows.append([WAITING, "-", "-", str(p.buckets[WAITING])])
    out.append(f"Components (self time; {sampled} working samples):\n")
    out.append(_table(["component", "µs/put", "% of process CPU", "samples"], brows))
    out.append(
        "\n† a C call that releases the GIL: its samples include the wait to take the GIL "
        "back, so py-spy overstates it (see perf's libz / kernel rows)\n"
    )
    prows = [
        [
            label,
            f"{p.paths_us.get(label, 0.0):.0f}",
            f"{100 * p.paths_us.get(label, 0.0) / per_put:.1f} %",
            str(n),
        ]
        for label, n in sorted(p.paths.items(), key=lambda kv: -p.paths_us.get(kv[0], 0.0))
    ]
    out.append("Paths (inclusive, overlapping; scaled like the components):\n")
    out.append(_table(["path", "µs/put", "% of process CPU", "samples"], prows))
    out.append("")
    for title, counter, fn_us in (
        (f"Top {top} functions by self samples", p.self_fn, p.self_us),
        (
            f"Top {top} functions by inclusive samples (thread roots and the event loop's "
            "run loop left out)",
            p.incl_fn,
            p.incl_us,
        ),
    ):
        frows = [
            [
                fn.replace("|", "/"),
                str(n),
                f"{100 * n / sampled:.1f} %",
                f"{fn_us.get(fn, 0.0):.1f}",
            ]
            for fn, n in counter.most_common(top)
        ]
        out.append(f"{title} (working samples only):\n")
        out.append(_table(["function (file)", "samples", "% of working", "µs/put"], frows))
        out.append("")
    return "\n".join(out)


def render(out_dir: Path, meta: dict[str, Any], top: int) -> str:
    """The whole report for a saved run."""
    s = meta["settings"]
    extra = f", coord args {s['coord_args']}" if s["coord_args"] else ""
    lines = [
        f"# coord leader profile ({meta['started']}; {s['clients']} clients, "
        f"{s['nodes']} nodes, fsync on{extra}; tree {meta.get('tree', 'unknown')})",
        "",
        f"load average at start {meta['load_start']}, at end {meta['load_end']}; "
        f"term {meta['term_before']} -> {meta['term_after']}"
        + ("" if meta.get("leader_after") is not None else " (no agreed leader at the end!)"),
    ]
    lg = meta.get("loadgen")
    if lg:
        lines.append(
            f"load generator over the whole run ({lg['seconds']:g} s): "
            f"{lg['ops_per_s']:.0f} ops/s, "
            f"p50 {lg['p50_ms']:.1f} ms, p99 {lg['p99_ms']:.1f} ms, {lg['errors']} errors"
        )
    for name in ("baseline", "profile"):
        if name in meta["windows"]:
            lines.append(_window_line(name, meta))
    for role, info in meta.get("pyspy", {}).items():
        lines.append(
            f"py-spy on the {role}: rc {info['rc']}, its own CPU {info['cpu_s']:.2f} s, "
            f"{'native, ' if s['native'] else ''}{'blocking' if s['blocking'] else 'nonblocking'}, "
            f"{s['rate']} Hz"
        )
    for role, info in meta.get("perf", {}).items():
        lines.append(
            f"perf on the {role}: rc {info['rc']}, its own CPU {info['cpu_s']:.2f} s, "
            f"{info.get('samples', 0)} samples at {s.get('perf_rate')} Hz (cpu-clock, -g)"
        )
    lines += [
        "",
        "Counted: py-spy samples of threads in state R (running or runnable; no --idle); "
        "each Python thread's CPU (schedstat) is divided among its samples not in a "
        "blocking call; CPU per put = CPU / puts committed (leader's applied index) in "
        "the profile window.",
        "",
    ]
    for role in ("leader", "follower"):
        raw = out_dir / f"{role}.raw"
        names = {s.tid: s.thread for s in read_raw(raw)} if raw.exists() else {}
        if raw.exists():
            lines.append(render_profile(aggregate(role, raw, meta), top))
        collapsed = out_dir / f"{role}.perf.collapsed"
        if collapsed.exists():
            kinds, rows = _thread_rows(role, meta, names)
            cpu = {k: r.cpu_s for k, r in rows.items()}
            lines.append(render_perf(aggregate_perf(role, collapsed, kinds), meta, cpu, top))
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Several runs: medians
# --------------------------------------------------------------------------


def summarize_run(out_dir: Path, meta: dict[str, Any]) -> dict[str, dict[str, float]]:
    """A run's figures as flat tables of µs per put (and a few others), for medians."""
    res: dict[str, dict[str, float]] = {}
    win: dict[str, float] = {}
    for name in ("baseline", "profile"):
        w = meta["windows"].get(name)
        if w is None:
            continue
        lead, puts = w["leader"], w["leader"]["applied"]
        win[f"{name}: puts/s"] = puts / lead["wall_s"]
        win[f"{name}: leader CPU µs/put"] = lead["cpu_s"] * 1e6 / puts
        if "follower" in w:
            win[f"{name}: follower CPU µs/put"] = w["follower"]["cpu_s"] * 1e6 / puts
        link = lead.get("raft_link")
        if link:
            win[f"{name}: leader TCP data segments sent/put"] = link["data_segs_out"] / puts
            win[f"{name}: leader Raft bytes sent/put"] = link["bytes_sent"] / puts
    win["load average (1 min) at start"] = meta["load_start"][0]
    win["load average (1 min) at end"] = meta["load_end"][0]
    res["run"] = win
    for role in ("leader", "follower"):
        raw = out_dir / f"{role}.raw"
        if not raw.exists():
            continue
        prof = aggregate(role, raw, meta)
        puts = prof.puts
        res[f"{role}: threads (schedstat)"] = {
            k: r.cpu_s * 1e6 / puts for k, r in prof.threads.items() if r.cpu_s > 0
        }
        res[f"{role}: py-spy components"] = dict(prof.bucket_us)
        res[f"{role}: py-spy paths (inclusive)"] = dict(prof.paths_us)
        collapsed = out_dir / f"{role}.perf.collapsed"
        if collapsed.exists():
            names = {s.tid: s.thread for s in read_raw(raw)}
            kinds, rows = _thread_rows(role, meta, names)
            cpu = {k: r.cpu_s for k, r in rows.items()}
            pp = aggregate_perf(role, collapsed, kinds)
            res[f"{role}: perf components (scaled)"] = {
                g: c * 1e6 / puts for g, c in perf_scaled(pp, cpu).items()
            }
    return res


def render_medians(dirs: list[Path]) -> str:
    """Median and range over runs of every figure of :func:`summarize_run`."""
    runs = []
    for d in dirs:
        meta = json.loads((d / "meta.json").read_text())
        runs.append(summarize_run(d, meta))
    out = [f"Medians over {len(runs)} runs ({', '.join(str(d) for d in dirs)})", ""]
    tables = list(dict.fromkeys(t for r in runs for t in r))
    for t in tables:
        keys = list(dict.fromkeys(k for r in runs for k in r.get(t, {})))
        rows = []
        for k in keys:
            vals = [r.get(t, {}).get(k, 0.0) for r in runs]
            med = statistics.median(vals)
            if t != "run" and max(vals) < 0.5:
                continue
            rows.append((med, k, vals))
        if t != "run":
            rows.sort(key=lambda r: -r[0])
        out.append(f"{t}:\n")
        out.append(
            _table(
                ["", "median", "min-max", "runs"],
                [
                    [k, _num(med), f"{_num(min(v))}-{_num(max(v))}", ", ".join(_num(x) for x in v)]
                    for med, k, v in rows
                ],
            )
        )
        out.append("")
    return "\n".join(out)


def _num(x: float) -> str:
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.0f}"


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=int, default=10, help="profile window (py-spy: whole s)")
    p.add_argument(
        "--baseline-seconds",
        type=float,
        default=None,
        help="window without the profiler before it (default: --seconds; 0: none)",
    )
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--follower", action="store_true", help="profile one follower too")
    p.add_argument("--native", action="store_true", help="py-spy --native (slow, perturbs)")
    p.add_argument("--blocking", action="store_true", help="py-spy stops the process per sample")
    p.add_argument(
        "--perf",
        action=argparse.BooleanOptionalAction,
        default=shutil.which("perf") is not None,
        help="also `perf record -e cpu-clock -g` the same processes (default: if perf exists)",
    )
    p.add_argument("--perf-rate", type=int, default=499, help="perf samples per CPU-second")
    p.add_argument(
        "--wait-load",
        type=float,
        default=None,
        help="first wait (up to 10 min) for the 1-min load average to drop below this",
    )
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument(
        "--coord-client",
        choices=sorted(COORD_FACTORIES),
        default="pipeline",
        help="the load's client: pipeline (KV.Pipeline, as coord's library sends concurrent "
        "requests; default) or unary (one call per put, the profile before stop 22)",
    )
    p.add_argument("--coord-args", default="", help="extra `coord serve` flags (one string)")
    p.add_argument("--out", type=Path, default=None, help="output dir (default: a new temp dir)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument(
        "--analyze",
        type=Path,
        nargs="+",
        default=None,
        help="only re-read saved --out dirs (several: medians over them)",
    )
    return p.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.analyze is not None:
        if len(args.analyze) > 1:
            print(render_medians(args.analyze))
            return
        meta = json.loads((args.analyze[0] / "meta.json").read_text())
        print(render(args.analyze[0], meta, args.top))
        return
    out = args.out or Path(tempfile.mkdtemp(prefix="coord-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    meta = run(args, out)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    report = render(out, meta, args.top)
    (out / "report.txt").write_text(report + "\n")
    print(report)
    print(f"\nraw profiles, meta.json and report.txt in {out}")


if __name__ == "__main__":
    main()
