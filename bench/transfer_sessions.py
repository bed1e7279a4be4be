"""Sessions kept alive through graceful leadership transfers, coord vs etcd.

One keeper process keeps ``--sessions`` sessions alive (TTL ``--ttl`` s) against a
3-node cluster while this driver performs ``--transfers`` graceful leader transfers in
a row, each time waiting until every node agrees on the new leader, then ``--pause`` s.
After the last transfer it waits one more TTL (a session about to lapse does), then
asks the keeper for its figures:

* sessions lost: coord, a ``Session`` (the client library: one keepalive stream each,
  every TTL/3) whose state became LOST; etcd, a lease whose keepalive answered TTL <= 0
  or whose client-side validity (newest acked keepalive's send + TTL) ran out;
* the longest keepalive gap any session saw: the time between consecutive
  acknowledgements of one session (a lost session's last gap runs to its loss), from
  the first transfer to the end; the steady-state gap is TTL/3;
* the least validity any session had left when an acknowledgement came (coord: its
  ``Session._valid_until``, send + TTL x 0.98; etcd: send + TTL);
* keepalive streams broken: coord, a Session's SUSPENDED transitions (its stream
  broke, or no ack for TTL/2); etcd, streams that failed or went TTL/2 unanswered.

The gaps are also reported for those that overlapped a transfer (from its call until
every node agreed on the new leader): a gap elsewhere in the window is the machine's
or the cluster's, not the transfer's.

coord: ``Client.transfer_leader()`` (what ``coordctl leader transfer`` calls: the most
caught-up member). etcd: ``Maintenance.MoveLeader`` to the most caught-up follower
(what ``etcdctl move-leader`` calls), its keeper uses one LeaseKeepAlive stream per
lease (each renewed every TTL/3, re-opened on error or after TTL/2 without an answer,
as coord's Session does), all on one channel to the member that led at the start:
etcd forwards a follower's renewals to the leader, so its streams need not move.

Usage: ``python bench/transfer_sessions.py [--sessions 200] [--transfers 10] [--ttl 5]
[--pause 0.5] [--systems coord,etcd] [--json]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _harness import Comparison, add_json_flag, loadavg, log, median, report, wait_until

BENCH = Path(__file__).resolve().parent

# --------------------------------------------------------------------------
# Keeper side (a separate process): per-session acknowledgement records.
# --------------------------------------------------------------------------


@dataclass
class Record:
    """One session's (or lease's) acknowledgements, on this host's monotonic clock."""

    id: str
    acks: list[float] = field(default_factory=list)  # arrival times
    margins: list[tuple[float, float]] = field(default_factory=list)  # (arrival, validity left)
    lost_at: float | None = None
    why: str = ""
    breaks: int = 0  # streams broken / given up (etcd), SUSPENDED transitions (coord)


def summarize_records(
    recs: list[Record], t0: float, t1: float, interval: float, windows: list[tuple[float, float]]
) -> dict[str, Any]:
    """Gaps between consecutive acks of each session within [t0, t1] (a lost session's
    last gap runs to its loss), overall and for gaps that overlapped one of the
    transfer ``windows``; gaps over 1.2 x ``interval`` are listed with the transfers
    (1-based) they overlapped; the least validity left at an ack; the losses."""
    per_max: list[float] = []
    long_gaps: list[list[Any]] = []
    worst: tuple[float, str, float, float] = (0.0, "", t0, t0)
    worst_in_transfer = 0.0
    for r in recs:
        prev = max((a for a in r.acks if a < t0), default=t0)
        end = t1 if r.lost_at is None else min(max(r.lost_at, t0), t1)
        best = 0.0
        for a in [*(a for a in r.acks if t0 <= a <= end), end]:
            gap = a - prev
            best = max(best, gap)
            if gap > worst[0]:
                worst = (gap, r.id, prev, a)
            hit = [k + 1 for k, (w0, w1) in enumerate(windows) if w0 < a and w1 > prev]
            if hit:
                worst_in_transfer = max(worst_in_transfer, gap)
            if gap > 1.2 * interval:
                long_gaps.append([r.id, round(prev, 4), round(a, 4), hit])
            prev = a
        per_max.append(best)
    margins = [m for r in recs for (t, m) in r.margins if t0 <= t <= t1]
    lost = [r for r in recs if r.lost_at is not None]
    return {
        "sessions": len(recs),
        "lost": len(lost),
        "lost_detail": [{"id": r.id, "t": r.lost_at, "why": r.why} for r in lost],
        "max_gap_s": worst[0],
        "max_gap_at": {"id": worst[1], "from": worst[2], "to": worst[3]},
        "max_gap_overlapping_a_transfer_s": worst_in_transfer,
        "per_session_max_gap_s": [round(x, 4) for x in per_max],
        "long_gaps": long_gaps,
        "min_margin_s": min(margins, default=None),
        "acks": sum(1 for r in recs for a in r.acks if t0 <= a <= t1),
        "breaks": sum(r.breaks for r in recs),
    }


def _finish(recs: list[Record], t0: float, t1: float) -> None:
    """Hand the records to the driver (it knows when the transfers were)."""
    doc = {"event": "result", "t0": t0, "t1": t1, "records": [asdict(r) for r in recs]}
    print(json.dumps(doc), flush=True)


def keeper_coord(endpoints: str, n: int, ttl: float) -> None:
    from coord.client import Client, Session, SessionState

    reasons: dict[str, str] = {}

    class LostReason(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("session ") and len(record.args or ()) == 2:
                sid, why = record.args  # type: ignore[misc]
                reasons[str(sid)] = str(why)

    slog = logging.getLogger("coord.client.session")
    slog.addHandler(LostReason())
    slog.propagate = False

    class TimedSession(Session):
        """coord's Session, noting when each acknowledgement arrives."""

        rec: Record

        def __init__(self, *a: Any, **k: Any) -> None:
            self.rec = Record("")
            super().__init__(*a, **k)

        def start(self) -> Session:
            super().start()
            self.rec.id = self.id
            return self

        def _acked(self, *a: Any, **k: Any) -> None:
            now = time.monotonic()
            left = self._valid_until - now
            super()._acked(*a, **k)
            self.rec.acks.append(now)
            self.rec.margins.append((now, left))

    def on_state(s: Session, state: SessionState) -> None:
        rec = s.rec  # type: ignore[attr-defined]
        if state == SessionState.LOST and rec.lost_at is None:
            rec.lost_at = time.monotonic()
        elif state == SessionState.SUSPENDED:
            rec.breaks += 1

    client = Client(endpoints, timeout_s=30)
    sessions = [
        TimedSession(client, ttl_s=ttl, name=f"t{i}", on_state=on_state).start() for i in range(n)
    ]
    wait_until(lambda: all(s.rec.acks for s in sessions), 60, "a keepalive ack for every session")
    t0 = time.monotonic()
    print(json.dumps({"event": "ready", "t": t0}), flush=True)
    sys.stdin.readline()
    t1 = time.monotonic()
    for s in sessions:
        if s.rec.lost_at is not None:
            s.rec.why = reasons.get(s.id, "")
    _finish([s.rec for s in sessions], t0, t1)
    os._exit(0)  # the cluster is torn down next: no need to close 200 sessions one by one


async def _etcd_keep(stub: Any, lease: int, rec: Record, ttl: int, valid_until: float) -> None:
    from grpc import aio

    from etcdpb import rpc_pb2

    while rec.lost_at is None:
        call = stub.LeaseKeepAlive()
        try:
            while True:
                sent = time.monotonic()
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease))
                resp = await asyncio.wait_for(call.read(), ttl / 2)
                now = time.monotonic()
                if resp is aio.EOF:
                    raise EOFError
                if valid_until <= now:  # the client's own validity lapsed before this ack
                    rec.lost_at, rec.why = valid_until, "client-side validity ran out"
                    return
                if resp.TTL <= 0:
                    rec.lost_at, rec.why = now, "etcd answered TTL <= 0 (expired)"
                    return
                rec.acks.append(now)
                rec.margins.append((now, valid_until - now))
                valid_until = max(valid_until, sent + ttl)
                await asyncio.sleep(max(0.0, sent + ttl / 3 - time.monotonic()))
        except (aio.AioRpcError, EOFError, TimeoutError):
            rec.breaks += 1
            if time.monotonic() >= valid_until:
                rec.lost_at, rec.why = valid_until, "client-side validity ran out"
                return
            await asyncio.sleep(0.02)
        finally:
            call.cancel()


async def keeper_etcd_async(endpoint: str, n: int, ttl: int) -> None:
    from grpc import aio

    from etcd_client import CHANNEL_OPTIONS
    from etcdpb import rpc_pb2, rpc_pb2_grpc

    async with aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS) as ch:
        stub = rpc_pb2_grpc.LeaseStub(ch)
        recs: list[Record] = []
        tasks = []
        for _ in range(n):
            sent = time.monotonic()
            lease = (await stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=10)).ID
            rec = Record(f"{lease:x}")
            recs.append(rec)
            tasks.append(asyncio.create_task(_etcd_keep(stub, lease, rec, ttl, sent + ttl)))
        deadline = time.monotonic() + 60
        while not all(r.acks for r in recs):
            if time.monotonic() > deadline:
                raise TimeoutError("no keepalive ack for every lease within 60 s")
            await asyncio.sleep(0.05)
        t0 = time.monotonic()
        print(json.dumps({"event": "ready", "t": t0}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        t1 = time.monotonic()
        _finish(recs, t0, t1)
        for t in tasks:
            t.cancel()
    os._exit(0)


# --------------------------------------------------------------------------
# Driver side.
# --------------------------------------------------------------------------


class Keeper:
    """The keeper process: JSON lines on stdout, "stop" on stdin."""

    def __init__(self, argv: list[str]) -> None:
        self.p = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=BENCH,
            env={**os.environ, "PYTHONPATH": str(BENCH.parent)},
        )  # fmt: skip
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(line))

    def wait(self, event: str, timeout: float) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            done = self.p.poll() is not None and not self._reader.is_alive()
            hit = next((x for x in self.lines if x.get("event") == event), None)
            if hit is None and done:
                raise RuntimeError(f"keeper exited ({self.p.returncode}) before {event!r}")
            return hit

        return wait_until(found, timeout, f"keeper event {event!r}")

    def stop(self, timeout: float = 60) -> dict[str, Any]:
        assert self.p.stdin is not None
        self.p.stdin.write("stop\n")
        self.p.stdin.flush()
        try:
            return self.wait("result", timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=10)


@dataclass
class Transfer:
    old: str
    new: str
    t0: float
    t1: float  # every node agrees on the new leader

    @property
    def ms(self) -> float:
        return (self.t1 - self.t0) * 1e3


def _run_transfers(
    name: str,
    keeper: Keeper,
    count: int,
    pause: float,
    ttl: float,
    agreed: Any,  # () -> leader id every node agrees on, or None
    transfer: Any,  # (old leader id) -> None, returns once the cluster accepted it
) -> tuple[list[Transfer], dict[str, Any]]:
    keeper.wait("ready", 180)
    log(f"{name}: sessions up; {count} transfers")
    done: list[Transfer] = []
    for i in range(count):
        old = wait_until(agreed, 30, f"{name}: a leader every node agrees on")
        t0 = time.monotonic()
        transfer(old)
        new = wait_until(lambda o=old: (x := agreed()) is not None and x != o and x, 30,
                         f"{name}: a new leader after transfer {i + 1}")  # fmt: skip
        done.append(Transfer(str(old), str(new), t0, time.monotonic()))
        log(f"{name} transfer {i + 1}/{count}: {old} -> {new} in {done[-1].ms:.0f} ms")
        time.sleep(pause)  # the workload: this many transfers, this far apart
    time.sleep(ttl + 1)  # a session left without an ack by the last transfer lapses by now
    got = keeper.stop()
    recs = [Record(**r) for r in got["records"]]
    windows = [(t.t0, t.t1) for t in done]
    result = summarize_records(recs, got["t0"], got["t1"], ttl / 3, windows)
    log(
        f"{name}: lost {result['lost']} of {result['sessions']}, longest gap "
        f"{result['max_gap_s'] * 1e3:.0f} ms (overlapping a transfer: "
        f"{result['max_gap_overlapping_a_transfer_s'] * 1e3:.0f} ms), least validity left "
        f"at an ack {(result['min_margin_s'] or 0) * 1e3:.0f} ms, {result['breaks']} breaks"
    )
    return done, result


def run_coord(sessions: int, count: int, ttl: float, pause: float) -> dict[str, Any]:
    from coord.client import Client
    from coord.v1 import cluster_pb2
    from coord_adapter import CoordBenchCluster

    with CoordBenchCluster(3) as c:
        c.wait_healthy()
        eps = c.endpoints()
        keeper = Keeper([sys.executable, str(BENCH / "transfer_sessions.py"), "--keeper",
                         "coord", "--endpoints", ",".join(eps), "--sessions", str(sessions),
                         "--ttl", str(ttl)])  # fmt: skip
        probes = [Client([ep], timeout_s=0.5, attempt_timeout_s=0.5) for ep in eps]
        admin = Client(eps, timeout_s=30)

        def agreed() -> str | None:
            ids = set()
            for ep, cl in zip(eps, probes, strict=True):
                try:
                    st = cl.status(endpoint=ep)
                except Exception:
                    return None
                if st.role == cluster_pb2.ROLE_LEADER:
                    ids.add(st.node_id)
                ids.add(st.leader_id)
            return ids.pop() if len(ids) == 1 and "" not in ids else None

        try:
            done, result = _run_transfers(
                "coord", keeper, count, pause, ttl, agreed, lambda _old: admin.transfer_leader()
            )
        finally:
            keeper.kill()
            for cl in [*probes, admin]:
                cl.close()
    return {"transfers": [asdict(t) | {"ms": t.ms} for t in done], **result}


def run_etcd(sessions: int, count: int, ttl: int, pause: float) -> dict[str, Any]:
    from etcd_cluster import DEFAULT, EtcdCluster

    with EtcdCluster(3, DEFAULT) as e:
        first = e.wait_leader()
        keeper = Keeper([sys.executable, str(BENCH / "transfer_sessions.py"), "--keeper",
                         "etcd", "--endpoints", e.endpoints()[first], "--sessions",
                         str(sessions), "--ttl", str(ttl)])  # fmt: skip

        def agreed() -> str | None:
            i = e._agreed_leader()
            return None if i is None else e.member_name(i)

        def move(old: str) -> None:
            sts = e.statuses()
            li = next(i for i in range(e.n) if e.member_name(i) == old)
            followers = [i for i in sts if i != li]
            target = max(followers, key=lambda i: (sts[i].raftAppliedIndex, -i))
            e.client(li).move_leader(sts[target].header.member_id, timeout=30)

        try:
            done, result = _run_transfers("etcd", keeper, count, pause, ttl, agreed, move)
        finally:
            keeper.kill()
    return {"transfers": [asdict(t) | {"ms": t.ms} for t in done], **result}


def compare(
    sessions: int = 200,
    transfers: int = 10,
    ttl: int = 5,
    pause: float = 0.5,
    systems: tuple[str, ...] = ("coord", "etcd"),
) -> tuple[list[Comparison], dict[str, Any]]:
    """Run both systems; returns the rows and the raw results (for run_all.py too)."""
    res: dict[str, dict[str, Any] | None] = {"coord": None, "etcd": None}
    if "coord" in systems:
        res["coord"] = run_coord(sessions, transfers, ttl, pause)
    if "etcd" in systems:
        res["etcd"] = run_etcd(sessions, transfers, ttl, pause)

    def both(fn: Callable[[dict[str, Any]], float | None]) -> tuple[float | None, float | None]:
        co, et = res["coord"], res["etcd"]
        return (None if co is None else fn(co)), (None if et is None else fn(et))

    def ms(key: str) -> Callable[[dict[str, Any]], float | None]:
        return lambda r: None if r[key] is None else float(r[key]) * 1e3

    def transfers_ms(r: dict[str, Any]) -> list[float]:
        return [float(t["ms"]) for t in r["transfers"]]

    tag = f"{sessions} sessions, {transfers} transfers"
    steady = f"steady: TTL/3 = {ttl / 3 * 1e3:,.0f} ms"
    rows = [
        Comparison(f"sessions lost ({tag}; goal 0)", "sessions", *both(lambda r: r["lost"])),
        Comparison(
            f"longest keepalive gap any session saw ({steady})", "ms", *both(ms("max_gap_s"))
        ),
        Comparison(
            "longest gap overlapping a transfer",
            "ms",
            *both(ms("max_gap_overlapping_a_transfer_s")),
        ),
        Comparison(
            "median over sessions of each one's longest gap",
            "ms",
            *both(lambda r: median(r["per_session_max_gap_s"]) * 1e3),
        ),
        Comparison(
            "least validity left when an ack came", "ms", *both(ms("min_margin_s")), "higher"
        ),
        Comparison(
            "keepalive streams broken (coord: SUSPENDED transitions)",
            "breaks",
            *both(lambda r: r["breaks"]),
        ),
        Comparison(
            "transfer -> all nodes agree on the new leader, median",
            "ms",
            *both(lambda r: median(transfers_ms(r))),
        ),
        Comparison(
            "transfer -> all nodes agree on the new leader, max",
            "ms",
            *both(lambda r: max(transfers_ms(r))),
        ),
    ]
    return rows, res


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--transfers", type=int, default=10)
    p.add_argument("--ttl", type=int, default=5, help="seconds (etcd leases take whole seconds)")
    p.add_argument("--pause", type=float, default=0.5, help="seconds after each new leader")
    p.add_argument("--systems", default="coord,etcd", help="which to run (comma-separated)")
    p.add_argument("--keeper", choices=("coord", "etcd"), help=argparse.SUPPRESS)
    p.add_argument("--endpoints", help=argparse.SUPPRESS)
    add_json_flag(p)
    args = p.parse_args()
    if args.keeper == "coord":
        keeper_coord(args.endpoints, args.sessions, float(args.ttl))
        return
    if args.keeper == "etcd":
        asyncio.run(keeper_etcd_async(args.endpoints, args.sessions, args.ttl))
        return
    load_start = loadavg()
    log(f"load average at start: {load_start}")
    rows, raw = compare(
        args.sessions, args.transfers, args.ttl, args.pause, tuple(args.systems.split(","))
    )
    load_end = loadavg()
    log(f"load average at end: {load_end}")
    report(
        rows,
        args.json,
        title=f"{args.sessions} sessions through {args.transfers} graceful leader transfers "
        f"(TTL {args.ttl} s, {args.pause:g} s after each new leader, 3 nodes, fsync on)",
        meta={
            "sessions": args.sessions,
            "transfers": args.transfers,
            "ttl_s": args.ttl,
            "pause_s": args.pause,
            "loadavg_start": load_start,
            "loadavg_end": load_end,
            "raw": raw,
        },
    )
    if not args.json:
        print(f"load average: start {load_start}, end {load_end}")
        for name, r in raw.items():
            if r and r["lost"]:
                whys = sorted({d["why"] for d in r["lost_detail"]})
                print(f"!!! {name}: {r['lost']} sessions lost: {'; '.join(whys)}")


if __name__ == "__main__":
    main()
