"""Shared helpers for the coord-vs-etcd benchmarks.

Everything here is system-agnostic: port allocation, subprocess management,
deadline-bounded waiting, statistics, the failover retry strategy that both
clients use, the interfaces a system under test implements, and reporting.

Bench scripts are run as ``python bench/<script>.py``; modules in ``bench/``
import each other as top-level modules (``import _harness``).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import (
    IO,
    Any,
    ClassVar,
    Protocol,
    TypeVar,
    runtime_checkable,
)

from coord import testing

T = TypeVar("T")

BENCH_DIR = Path(__file__).resolve().parent
LOCALHOST = "127.0.0.1"

# --------------------------------------------------------------------------
# Interfaces implemented by each system under test (etcd, coord).
# --------------------------------------------------------------------------


@runtime_checkable
class KVClient(Protocol):
    """A client of a replicated KV store, as used by the benchmark drivers.

    ``put`` must only return once the write is committed, and must itself
    implement the failover strategy (see :class:`EndpointRotator`): try the
    current endpoint with a short per-call deadline, rotate on failure, and
    retry until an overall deadline, raising only when that deadline passes.
    """

    async def put(self, key: str, value: bytes) -> None:
        """Write ``key = value``; return when committed."""
        ...

    async def close(self) -> None:
        """Release channels/connections."""
        ...


@runtime_checkable
class ClusterUnderTest(Protocol):
    """A locally started cluster that the failover driver can disrupt."""

    name: str

    def endpoints(self) -> list[str]:
        """Client endpoints (``host:port``), indexed like the members."""
        ...

    def leader_index(self) -> int | None:
        """Index of the current leader, or None if none is known."""
        ...

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` (and reap it)."""
        ...

    def restart(self, i: int) -> None:
        """Start member ``i`` again with its existing data directory."""
        ...

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Block until every member is up, agrees on a leader and caught up."""
        ...

    def make_client(self, first: int = 0, call_timeout: float = 0.1) -> KVClient:
        """A failover :class:`KVClient` over all endpoints, trying ``first`` first.

        Must be called from inside a running event loop (async channels).
        """
        ...


# --------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------

_handed_out_ports: set[int] = set()


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports on 127.0.0.1 (coord.testing.free_ports: outside the
    ephemeral range), never one this process handed out before."""
    for _ in range(16):
        ports = [p for p in testing.free_ports(n) if p not in _handed_out_ports]
        if len(ports) == n:
            _handed_out_ports.update(ports)
            return ports
    raise RuntimeError(f"could not find {n} free ports")


# --------------------------------------------------------------------------
# Waiting
# --------------------------------------------------------------------------


def wait_until(
    pred: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.005,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``pred`` until it returns a truthy value; return that value.

    Raises ``TimeoutError`` mentioning ``what`` once ``timeout`` seconds pass.
    Exceptions of the types in ``ignore`` count as "not yet".
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except ignore as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)


def wait_for(
    fn: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.005,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``fn`` until it returns something other than None; return it.

    Like :func:`wait_until` but for values that may be falsy (e.g. index 0).
    """
    box: list[T] = []

    def pred() -> bool:
        value = fn()
        if value is None:
            return False
        box.append(value)
        return True

    wait_until(pred, timeout, what, interval, ignore)
    return box[-1]


async def wait_until_async(
    pred: Callable[[], Awaitable[T]],
    timeout: float,
    what: str,
    interval: float = 0.005,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Async variant of :func:`wait_until` for coroutine predicates."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = await pred()
            if value:
                return value
        except ignore as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------
# Client failover strategy (shared by the etcd and coord clients)
# --------------------------------------------------------------------------


class EndpointRotator:
    """Sticky endpoint choice with rotate-on-failure retries.

    The strategy both benchmark clients use: send each call to the current
    endpoint with a short per-call deadline; on any failure move to the next
    endpoint and retry at once, until ``total_timeout``. Attempts are spaced
    at least ``min_spacing`` seconds apart so that endpoints that fail
    instantly (connection refused, "no leader") do not cause a busy loop that
    steals CPU from the servers under test.
    """

    def __init__(
        self,
        n: int,
        first: int = 0,
        call_timeout: float = 0.1,
        total_timeout: float = 30.0,
        min_spacing: float = 0.005,
    ) -> None:
        if n <= 0:
            raise ValueError("need at least one endpoint")
        self.n = n
        self.current = first % n
        self.call_timeout = call_timeout
        self.total_timeout = total_timeout
        self.min_spacing = min_spacing
        self.failures = 0

    def _rotate_from(self, idx: int) -> None:
        # Only rotate if nobody else already moved on from idx (concurrent callers).
        if self.current == idx:
            self.current = (idx + 1) % self.n

    async def call(
        self,
        attempt: Callable[[int, float], Awaitable[T]],
        retry_on: tuple[type[BaseException], ...] = (Exception,),
    ) -> T:
        """Run ``attempt(endpoint_index, call_timeout)`` with failover.

        ``attempt`` must honour the given timeout (e.g. as a gRPC deadline).
        Returns its result; raises ``TimeoutError`` after ``total_timeout``.
        """
        deadline = time.monotonic() + self.total_timeout
        max_attempts = int(self.total_timeout / max(self.min_spacing, 1e-3)) + self.n
        last_exc: BaseException | None = None
        for _ in range(max_attempts):
            idx = self.current
            started = time.monotonic()
            timeout = max(0.001, min(self.call_timeout, deadline - started))
            try:
                return await attempt(idx, timeout)
            except retry_on as exc:
                last_exc = exc
                self.failures += 1
                self._rotate_from(idx)
            now = time.monotonic()
            if now >= deadline:
                break
            pause = self.min_spacing - (now - started)
            if pause > 0:
                await asyncio.sleep(pause)
        raise TimeoutError(f"no endpoint succeeded within {self.total_timeout}s: {last_exc!r}")


class FailoverKV:
    """Base of the benchmark ``KVClient``s whose puts fail over through an
    :class:`EndpointRotator` (``etcd_client.EtcdKV``, ``coord_adapter.CoordKV``,
    ``zk_client.ZkKV``): the constructor that ``make_client(first, call_timeout)`` and
    ``_loadgen.py --factory`` call, ``endpoints``, and ``rotator`` (whose ``failures``
    counts failed attempts).

    A subclass opens its connections in :meth:`_open`. By default it has one per endpoint
    and the rotator picks among them, starting at ``first``. With ``one_session = True``
    it has one session over all endpoints that fails over by itself, trying them in list
    order: ``endpoints`` starts at ``endpoints[first]``, and the rotator (of one
    "endpoint") only bounds and spaces the retries.
    """

    one_session: ClassVar[bool] = False

    def __init__(
        self,
        endpoints: Sequence[str],
        call_timeout: float = 0.1,
        first: int = 0,
        total_timeout: float = 30.0,
    ) -> None:
        eps = list(endpoints)
        if self.one_session:
            self.endpoints = eps[first:] + eps[:first]
            self.rotator = EndpointRotator(1, 0, call_timeout, total_timeout)
        else:
            self.endpoints = eps
            self.rotator = EndpointRotator(len(eps), first, call_timeout, total_timeout)
        self._open()

    def _open(self) -> None:
        """Open the connections to ``self.endpoints`` (called by ``__init__``)."""
        raise NotImplementedError


# --------------------------------------------------------------------------
# Subprocess management
# --------------------------------------------------------------------------

_live_groups: set[ProcessGroup] = set()
_hooks_installed = False


def _cleanup_all() -> None:
    for group in list(_live_groups):
        group.cleanup()


def _exit_on_signal(signum: int, _frame: Any) -> None:
    # Turn SIGTERM/SIGHUP into SystemExit so that atexit cleanup runs.
    raise SystemExit(128 + signum)


def _install_exit_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_cleanup_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _exit_on_signal)
    # SIGINT's default handler raises KeyboardInterrupt, which runs atexit.


def _with_pdeathsig(argv: list[str]) -> list[str]:
    """Wrap ``argv`` so the child gets SIGKILL if this process dies abruptly.

    Uses util-linux ``setpriv --pdeathsig`` (which then execs the command, so
    the PID is the server's) rather than a ``preexec_fn``: a preexec_fn forces
    a real fork() while gRPC threads are running, whereas without it Python
    spawns with vfork. PDEATHSIG fires when the *thread* that spawned the
    child exits, so it is only used when spawning from the main thread.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return argv
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


@dataclass
class _Member:
    argv: list[str]
    env: dict[str, str] | None
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    starts: int = 0
    paused: bool = False


class ProcessGroup:
    """A set of indexed server subprocesses with per-process log files.

    Each member logs stdout+stderr to ``<root>/logs/<name>-<i>.log``
    (appended across restarts). All members are SIGKILLed and the temp root
    is removed on :meth:`cleanup`, at interpreter exit and on SIGTERM/SIGHUP;
    children also get SIGKILL if this process dies abruptly. Set
    ``BENCH_KEEP_TMP=1`` to keep the temp root (logs, data dirs).
    """

    def __init__(self, name: str, root: Path | None = None) -> None:
        self.name = name
        self.root = root or Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self.log_dir = self.root / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._members: list[_Member] = []
        self._closed = False
        _install_exit_hooks()
        _live_groups.add(self)

    def __len__(self) -> int:
        return len(self._members)

    def add(self, argv: Sequence[str], env: dict[str, str] | None = None) -> int:
        """Register a member command; returns its index. Does not start it."""
        idx = len(self._members)
        log_path = self.log_dir / f"{self.name}-{idx}.log"
        self._members.append(_Member(list(argv), env, log_path))
        return idx

    def set_argv(self, i: int, argv: Sequence[str]) -> None:
        """Replace member ``i``'s command line (takes effect at next start)."""
        self._members[i].argv = list(argv)

    def start(self, i: int) -> None:
        """Start member ``i`` (must not be running)."""
        m = self._members[i]
        if self.alive(i):
            raise RuntimeError(f"{self.name}[{i}] already running")
        self._close_log(m)
        m.log_file = open(m.log_path, "ab")  # noqa: SIM115 - kept open while the child runs
        m.starts += 1
        m.log_file.write(
            f"\n=== start #{m.starts} {time.time():.3f}: {' '.join(m.argv)}\n".encode()
        )
        m.log_file.flush()
        env = None if m.env is None else {**os.environ, **m.env}
        m.proc = subprocess.Popen(
            _with_pdeathsig(m.argv),
            stdin=subprocess.DEVNULL,
            stdout=m.log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        m.paused = False

    def start_all(self) -> None:
        """Start every registered member."""
        for i in range(len(self._members)):
            self.start(i)

    def alive(self, i: int) -> bool:
        """True if member ``i`` has been started and has not exited."""
        proc = self._members[i].proc
        return proc is not None and proc.poll() is None

    def pid(self, i: int) -> int | None:
        """PID of member ``i`` if running."""
        proc = self._members[i].proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def kill(self, i: int, timeout: float = 5.0) -> None:
        """SIGKILL member ``i`` and reap it (no-op if not running)."""
        m = self._members[i]
        if m.proc is None or m.proc.poll() is not None:
            return
        m.proc.kill()
        m.proc.wait(timeout=timeout)
        m.paused = False
        self._close_log(m)

    def terminate(self, i: int, grace: float = 5.0) -> None:
        """SIGTERM member ``i``, then SIGKILL after ``grace`` seconds."""
        m = self._members[i]
        if m.proc is None or m.proc.poll() is not None:
            return
        if m.paused:
            self.resume(i)
        m.proc.terminate()
        try:
            m.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill(i)
        self._close_log(m)

    def pause(self, i: int) -> None:
        """SIGSTOP member ``i`` (freeze it without closing its sockets)."""
        m = self._members[i]
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGSTOP)
            m.paused = True

    def resume(self, i: int) -> None:
        """SIGCONT member ``i``."""
        m = self._members[i]
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGCONT)
            m.paused = False

    def restart(self, i: int, argv: Sequence[str] | None = None) -> None:
        """SIGKILL member ``i`` if running, then start it (optionally with new argv)."""
        self.kill(i)
        if argv is not None:
            self.set_argv(i, argv)
        self.start(i)

    def log_path(self, i: int) -> Path:
        """Path of member ``i``'s log file."""
        return self._members[i].log_path

    def tail_log(self, i: int, lines: int = 20) -> str:
        """Last ``lines`` lines of member ``i``'s log (for error messages)."""
        path = self._members[i].log_path
        if not path.exists():
            return ""
        data = path.read_bytes()[-64 * 1024 :].decode(errors="replace")
        return "\n".join(data.splitlines()[-lines:])

    def cleanup(self) -> None:
        """SIGKILL all members and remove the temp root (unless BENCH_KEEP_TMP)."""
        if self._closed:
            return
        self._closed = True
        for i in range(len(self._members)):
            with contextlib.suppress(Exception):  # best effort during teardown
                self.kill(i)
            self._close_log(self._members[i])
        _live_groups.discard(self)
        if os.environ.get("BENCH_KEEP_TMP"):
            print(f"[bench] kept {self.root}", file=sys.stderr)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _close_log(m: _Member) -> None:
        if m.log_file is not None:
            m.log_file.close()
            m.log_file = None


# --------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------


def pct(values: Iterable[float], p: float) -> float:
    """The ``p``-th percentile (0..100) with linear interpolation between ranks."""
    data = sorted(values)
    if not data:
        raise ValueError("pct() of empty data")
    if not 0 <= p <= 100:
        raise ValueError("p must be within [0, 100]")
    rank = (len(data) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = math.ceil(rank)
    return data[lo] + (data[hi] - data[lo]) * (rank - lo)


def median(values: Iterable[float]) -> float:
    """Median (the 50th percentile)."""
    return pct(values, 50)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """min/median/p90/max/mean of ``values`` (empty dict for no data)."""
    if not values:
        return {}
    return {
        "n": float(len(values)),
        "min": min(values),
        "median": median(values),
        "p90": pct(values, 90),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


@dataclass
class Comparison:
    """One row of the coord-vs-etcd table. ``better`` is "lower" or "higher".

    ``zk`` (ZooKeeper, ``run_all.py``) adds a third column group (zk, coord/zk) to the
    table and to the JSON when any row has it; rows without it render as before.
    """

    metric: str
    unit: str
    coord: float | None = None
    etcd: float | None = None
    better: str = "lower"
    extra: dict[str, Any] = field(default_factory=dict)
    zk: float | None = None

    @property
    def ratio(self) -> float | None:
        """coord / etcd, or None when either side is missing or etcd is 0."""
        if self.coord is None or self.etcd is None or self.etcd == 0:
            return None
        return self.coord / self.etcd

    @property
    def ratio_zk(self) -> float | None:
        """coord / zk, or None when either side is missing or zk is 0."""
        if self.coord is None or self.zk is None or self.zk == 0:
            return None
        return self.coord / self.zk


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "0"
    if float(v).is_integer() and abs(v) < 1e15:  # counts: "3", not "3.00"
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _fmt_ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def render_table(rows: Sequence[Comparison], title: str = "") -> str:
    """Render rows as an aligned text table with a coord/etcd ratio column (and zk,
    coord/zk columns when any row has a ZooKeeper value)."""
    with_zk = any(r.zk is not None for r in rows)
    header = ["metric", "unit", "coord", "etcd", "coord/etcd"]
    header += ["zk", "coord/zk", "better"] if with_zk else ["better"]
    body = []
    for r in rows:
        cells = [r.metric, r.unit, _fmt(r.coord), _fmt(r.etcd), _fmt_ratio(r.ratio)]
        if with_zk:
            cells += [_fmt(r.zk), _fmt_ratio(r.ratio_zk)]
        body.append([*cells, r.better])
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=True)]
    numeric = set(range(2, len(header) - 1))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if j in numeric else c.ljust(w)
            for j, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [title] if title else []
    out += [line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in body]
    return "\n".join(out)


def _row_json(r: Comparison) -> dict[str, Any]:
    doc = {**asdict(r), "ratio": r.ratio}
    if r.zk is None:  # rows without ZooKeeper stay as they were
        del doc["zk"]
    else:
        doc["ratio_zk"] = r.ratio_zk
    return doc


def rows_to_json(rows: Sequence[Comparison], meta: dict[str, Any] | None = None) -> str:
    """JSON document with the same rows (ratio included) plus optional metadata."""
    doc = {
        "meta": meta or {},
        "rows": [_row_json(r) for r in rows],
    }
    return json.dumps(doc, indent=2, sort_keys=False)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Add the common ``--json`` flag to a script's argument parser."""
    parser.add_argument(
        "--json", action="store_true", help="print results as JSON instead of a table"
    )


def report(
    rows: Sequence[Comparison],
    as_json: bool,
    title: str = "",
    meta: dict[str, Any] | None = None,
) -> None:
    """Print ``rows`` as a table (default) or as JSON (``--json``) to stdout."""
    if as_json:
        print(rows_to_json(rows, {"title": title, **(meta or {})}))
    else:
        print(render_table(rows, title))


def loadavg() -> tuple[float, float, float]:
    """``os.getloadavg()`` rounded to 2 decimals (1, 5, 15 minutes), for reports."""
    a, b, c = os.getloadavg()
    return round(a, 2), round(b, 2), round(c, 2)


def log(msg: str) -> None:
    """Progress message on stderr (stdout is reserved for results)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
