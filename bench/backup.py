"""Backup and restore, coord vs etcd 3.4: snapshot save time and file size, restore time.

For each size (default 10k and 100k keys, 100-byte values, plus 200 sessions with a
member each in 20 groups; on etcd, 200 leases with a key each), on a 3-node cluster
(fsync on, both sides):

- ``snapshot save``: wall time of ``coordctl snapshot save FILE`` against the cluster,
  vs ``etcdctl snapshot save FILE`` against etcd's leader; the CPU time it costs (the
  command's, plus the serving node's beyond what that node spends idle over the same
  time); and the file's size;
- ``restore one member``: wall and CPU time of ``coord restore --snapshot FILE ...``
  building one node's data dir, vs ``etcdctl snapshot restore FILE --data-dir ...``;
- ``restore 3 members → serving``: all three data dirs restored, the three processes
  started, until a linearizable read answers from the restored data;
- ``consistency check``: ``coordctl consistency`` (a check point committed, every member
  hashes its whole state there: keys, sessions, groups, events, dedupe table) vs
  ``etcdctl endpoint hashkv`` against the three members (each hashes its key-value store).

Each figure is the median of ``--runs`` runs; coord's and etcd's runs alternate, so a
busy machine weighs on both alike (CPU times are the steadier figures there). The
commands' times include their process start: Python's for coord's CLIs (the ``CLI
start`` rows measure it alone), Go's for etcdctl. coord's modules are byte-compiled
first, as an installed package's are.

Usage: ``python bench/backup.py [--keys 10000,100000] [--runs 3] [--json]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import coord
from _harness import (
    LOCALHOST,
    Comparison,
    KVClient,
    ProcessGroup,
    add_json_flag,
    free_ports,
    log,
    median,
    report,
    wait_until,
)
from coord.client import Client
from coord.testing import LocalCluster
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2
from coord_adapter import CoordKV
from etcd_client import AsyncEtcdClient, EtcdClient, EtcdKV
from etcd_cluster import DEFAULT, EtcdCluster, etcd_binary

BIN = Path(sys.executable).parent
COORD, COORDCTL = str(BIN / "coord"), str(BIN / "coordctl")
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
VALUE = b"v" * 100
SESSIONS = 200
GROUPS = 20
CONCURRENCY = 64


def timed(argv: Sequence[str], env: dict[str, str] | None = None) -> float:
    """Run a command to completion; its wall time in seconds (it must succeed)."""
    return timed_cpu(argv, env)[0]


def byte_compile_coord() -> None:
    """Write the .pyc files of coord's modules, as installing the package does (pip
    compiles them). Where writing them is off (PYTHONDONTWRITEBYTECODE, as on the
    machine these figures come from), every coordctl and coord would otherwise compile
    the modules it imports at each start (~20-40 ms), which a user's installation
    does not; compileall writes them regardless, and imports read them."""
    package = Path(coord.__file__).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)


def timed_cpu(argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run a command to completion; its wall time and its CPU time (user + system), in
    seconds. The CPU time does not depend on what else the machine runs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(list(argv), capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def proc_cpu(pid: int) -> float:
    """CPU time (user + system) a running process has used, in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu_rate(pid: int, window_s: float = 1.0) -> float:
    """CPU seconds per second the serving node spends with no request (heartbeats,
    ticks), measured over ``window_s`` (a measurement window, not a synchronisation)."""
    before = proc_cpu(pid)
    time.sleep(window_s)
    return (proc_cpu(pid) - before) / window_s


async def in_parallel(n: int, one: Callable[[int], Awaitable[None]]) -> None:
    """``one(i)`` for i in 0..n-1, CONCURRENCY at a time."""
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            await one(i)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


# -- coord ------------------------------------------------------------------------------


def load_coord(endpoints: list[str], keys: int) -> None:
    """Groups, sessions with a member each (through the client library, with its
    retries), then the keys (64 at a time, retried on another node after a failure)."""
    with Client(endpoints, timeout_s=60.0) as c:
        for g in range(GROUPS):
            c.group(f"g{g}").create(slots=1)
        for i in range(SESSIONS):
            s = c.call(lambda ch, t: election_pb2_grpc.SessionsStub(ch).Open(
                election_pb2.OpenSessionRequest(ttl_ms=3_600_000), timeout=t))  # fmt: skip
            m = groups_pb2.Member(
                group=f"g{i % GROUPS}", id=f"m{i}", session_id=s.session.id,
                address=f"10.0.0.{i % 250}:5432", candidate=True, tags={"zone": str(i % 3)},
            )  # fmt: skip
            req = election_pb2.RegisterRequest(member=m)
            c.call(lambda ch, t, r=req: election_pb2_grpc.GroupsStub(ch).Register(r, timeout=t))
    asyncio.run(load_keys(lambda: CoordKV(endpoints, call_timeout=5.0, total_timeout=120), keys))


async def load_keys(make: Callable[[], KVClient], keys: int) -> None:
    kv = make()
    try:
        await in_parallel(keys, lambda i: kv.put(f"bench/{i:07d}", VALUE))
    finally:
        await kv.close()


def coord_flags(i: int, ports: list[int], data_dir: str, token: str) -> list[str]:
    flags = ["--node-id", f"n{i + 1}", "--data-dir", data_dir, "--cluster-token", token]
    for j in range(3):
        flags += ["--peer", f"n{j + 1}={LOCALHOST}:{ports[2 * j + 1]},{LOCALHOST}:{ports[2 * j]}"]
    return flags


def coord_restore_to_serving(snapshot: str, tmp: str, keys: int) -> float:
    """Restore three nodes, start them, until a linearizable read answers."""
    ports = free_ports(6)
    group = ProcessGroup("coord-restored", Path(tmp))
    t0 = time.perf_counter()
    try:
        for i in range(3):
            flags = coord_flags(i, ports, f"{tmp}/r{i}", "restored")
            timed([COORD, "restore", "--snapshot", snapshot, *flags])
            group.add([COORD, "serve", *flags])
        group.start_all()
        eps = [f"{LOCALHOST}:{ports[2 * i]}" for i in range(3)]
        with Client(eps, timeout_s=60.0) as c:
            last = c.get(b"bench/%07d" % (keys - 1))
        assert last is not None and last.value == VALUE
        return time.perf_counter() - t0
    finally:
        group.cleanup()


def coord_run(
    endpoints: list[str], leader_pid: int, keys: int, out: dict[str, list[float]]
) -> None:
    tmp = tempfile.mkdtemp(prefix="coord-bench-backup-")
    try:
        snap = f"{tmp}/snap.coordbak"
        eps = ",".join(endpoints)
        idle = idle_cpu_rate(leader_pid)
        served = proc_cpu(leader_pid)
        wall, cpu = timed_cpu([COORDCTL, "--endpoints", eps, "snapshot", "save", snap])
        out["save"].append(wall)
        out["save_cpu"].append(cpu + proc_cpu(leader_pid) - served - idle * wall)
        out["size"].append(os.path.getsize(snap))
        flags = coord_flags(0, free_ports(6), f"{tmp}/one", "restored")
        wall, cpu = timed_cpu([COORD, "restore", "--snapshot", snap, *flags])
        out["restore"].append(wall)
        out["restore_cpu"].append(cpu)
        out["serving"].append(coord_restore_to_serving(snap, tmp, keys))
        out["hash"].append(timed([COORDCTL, "--endpoints", eps, "consistency"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- etcd -------------------------------------------------------------------------------


def load_etcd(endpoints: list[str], leader: str, keys: int) -> None:
    """Leases with a key each (an election candidate's cost), then the keys."""

    async def members() -> None:
        async with AsyncEtcdClient(leader, timeout=30) as c:
            for i in range(SESSIONS):
                lease = await c.lease_grant(3600)
                await c.put(f"election/g{i % GROUPS}/{lease:x}", f"10.0.0.{i % 250}:5432", lease)

    asyncio.run(members())
    asyncio.run(load_keys(lambda: EtcdKV(endpoints, call_timeout=5.0, total_timeout=120), keys))


def etcd_restore_argv(snap: str, i: int, ports: list[int], data_dir: str) -> list[str]:
    cluster = ",".join(f"m{j}=http://{LOCALHOST}:{ports[3 + j]}" for j in range(3))
    return [
        ETCDCTL, "snapshot", "restore", snap, "--data-dir", data_dir, "--name", f"m{i}",
        "--initial-cluster", cluster, "--initial-cluster-token", "restored",
        "--initial-advertise-peer-urls", f"http://{LOCALHOST}:{ports[3 + i]}",
    ]  # fmt: skip


def etcd_serve_argv(i: int, ports: list[int], data_dir: str) -> list[str]:
    client, peer = f"http://{LOCALHOST}:{ports[i]}", f"http://{LOCALHOST}:{ports[3 + i]}"
    cluster = ",".join(f"m{j}=http://{LOCALHOST}:{ports[3 + j]}" for j in range(3))
    return [
        etcd_binary(), "--name", f"m{i}", "--data-dir", data_dir,
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", cluster, "--initial-cluster-token", "restored",
        "--initial-cluster-state", "new", "--heartbeat-interval", str(DEFAULT.heartbeat_ms),
        "--election-timeout", str(DEFAULT.election_ms), "--logger", "zap",
        "--log-outputs", "stderr",
    ]  # fmt: skip


def etcd_restore_to_serving(snap: str, tmp: str, keys: int) -> float:
    ports = free_ports(6)
    group = ProcessGroup("etcd-restored", Path(tmp))
    env = {**os.environ, "ETCDCTL_API": "3"}
    t0 = time.perf_counter()
    try:
        for i in range(3):
            timed(etcd_restore_argv(snap, i, ports, f"{tmp}/r{i}"), env)
            group.add(etcd_serve_argv(i, ports, f"{tmp}/r{i}"))
        group.start_all()

        def answered() -> bool:
            with EtcdClient(f"{LOCALHOST}:{ports[0]}", timeout=1.0) as c:
                return c.get(b"bench/%07d" % (keys - 1)) == VALUE

        wait_until(answered, 60, "the restored etcd to answer", interval=0.005, ignore=(Exception,))
        return time.perf_counter() - t0
    finally:
        group.cleanup()


def etcd_run(
    endpoints: list[str], leader: int, leader_pid: int, keys: int, out: dict[str, list[float]]
) -> None:
    endpoint = endpoints[leader]
    env = {**os.environ, "ETCDCTL_API": "3"}
    tmp = tempfile.mkdtemp(prefix="etcd-bench-backup-")
    try:
        snap = f"{tmp}/snap.db"
        idle = idle_cpu_rate(leader_pid)
        served = proc_cpu(leader_pid)
        wall, cpu = timed_cpu([ETCDCTL, "--endpoints", endpoint, "snapshot", "save", snap], env)
        out["save"].append(wall)
        out["save_cpu"].append(cpu + proc_cpu(leader_pid) - served - idle * wall)
        out["size"].append(os.path.getsize(snap))
        restore = etcd_restore_argv(snap, 0, free_ports(6), f"{tmp}/one")
        wall, cpu = timed_cpu(restore, env)
        out["restore"].append(wall)
        out["restore_cpu"].append(cpu)
        out["serving"].append(etcd_restore_to_serving(snap, tmp, keys))
        hashkv = [ETCDCTL, "--endpoints", ",".join(endpoints), "endpoint", "hashkv"]
        out["hash"].append(timed(hashkv, env))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(keys: int, runs: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Both clusters loaded, then coord and etcd runs alternate: a busy machine (other
    work on the two cores) weighs on both sides alike."""
    co: dict[str, list[float]] = {
        k: [] for k in ("save", "save_cpu", "size", "restore", "restore_cpu", "serving", "hash")
    }
    et: dict[str, list[float]] = {k: [] for k in co}
    with LocalCluster(3) as cluster, EtcdCluster(3, DEFAULT) as e:
        cluster.wait_for_leader(timeout=60)
        log(f"coord: loading {keys:,} keys and {SESSIONS} sessions + members")
        load_coord(cluster.endpoints, keys)
        endpoint = e.endpoints()[e.leader_index() or 0]
        log(f"etcd: loading {keys:,} keys and {SESSIONS} leases + keys")
        load_etcd(e.endpoints(), endpoint, keys)
        for run in range(runs):
            coord_leader = cluster.wait_for_leader(timeout=60)  # it may move on a busy machine
            coord_pid = cluster.nodes[coord_leader].proc.pid  # type: ignore[union-attr]
            etcd_leader = e.leader_index() or 0
            etcd_pid = e.group.pid(etcd_leader)
            assert etcd_pid is not None
            coord_run(cluster.endpoints, coord_pid, keys, co)
            log(f"coord {keys:,} keys, run {run + 1}: " + _last(co))
            etcd_run(e.endpoints(), etcd_leader, etcd_pid, keys, et)
            log(f"etcd {keys:,} keys, run {run + 1}: " + _last(et))
    return co, et


def _last(out: dict[str, list[float]]) -> str:
    return ", ".join(
        f"{k} {v[-1] / 1e6:.2f} MB" if k == "size" else f"{k} {v[-1] * 1000:.0f} ms"
        for k, v in out.items()
    )


def cli_start(runs: int) -> list[Comparison]:
    """Process start of the CLIs alone (``--version``), for reading the figures above."""
    co = [timed_cpu([COORDCTL, "--version"]) for _ in range(runs)]
    et = [timed_cpu([ETCDCTL, "version"]) for _ in range(runs)]
    return [
        Comparison("CLI start (--version)", "ms", 1000 * median(w for w, _ in co),
                   1000 * median(w for w, _ in et)),
        Comparison("… its CPU time", "ms", 1000 * median(c for _, c in co),
                   1000 * median(c for _, c in et)),
    ]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--keys", default="10000,100000", help="comma-separated key counts")
    p.add_argument("--runs", type=int, default=3)
    add_json_flag(p)
    args = p.parse_args()
    rows: list[Comparison] = []
    byte_compile_coord()
    for keys in (int(k) for k in args.keys.split(",")):
        co, et = measure(keys, args.runs)
        n = f"{keys // 1000}k keys"
        rows += [
            Comparison(f"snapshot save, {n}", "ms", 1000 * median(co["save"]),
                       1000 * median(et["save"])),
            Comparison(f"… CPU: command + serving node beyond idle, {n}", "ms",
                       1000 * median(co["save_cpu"]), 1000 * median(et["save_cpu"])),
            Comparison(f"snapshot file size, {n}", "MB", median(co["size"]) / 1e6,
                       median(et["size"]) / 1e6),
            Comparison(f"restore one member's data dir, {n}", "ms",
                       1000 * median(co["restore"]), 1000 * median(et["restore"])),
            Comparison(f"… its CPU time, {n}", "ms",
                       1000 * median(co["restore_cpu"]), 1000 * median(et["restore_cpu"])),
            Comparison(f"restore 3 members → serving, {n}", "ms",
                       1000 * median(co["serving"]), 1000 * median(et["serving"])),
            Comparison(f"consistency check, all 3 members (vs endpoint hashkv), {n}", "ms",
                       1000 * median(co["hash"]), 1000 * median(et["hash"])),
        ]  # fmt: skip
    rows += cli_start(args.runs)
    report(rows, args.json, title=f"backup and restore, 3 nodes, median of {args.runs} runs")


if __name__ == "__main__":
    main()
