"""Failover seen from Go client processes beside Python client processes, in one run.

One 3-node coord cluster (fsync on); the Go side is clients/go's library
(``clients/go/internal/failoverprobe``, built here with ``go build``), the Python side
coord's own library (``bench/_py_writer.py``, ``python -m coord.member_process``).

* **leader kill -9 -> first write.** Per round: a Go writer process and a Python writer
  process each put once (each library then knows the leader); the leader is killed -9,
  and both are told at once to put again; each value is the time from the kill to that
  put returning OK, through the library's own discovery, hints and retries. The killed
  node is restarted and the cluster healthy again before the next round.
* **holder kill -9 -> standby elected.** Per round and language: a holder member process
  is elected in a 1-slot group of its own (``fo-go``, ``fo-python``), a standby process
  of the same language registers and campaigns (the group lists it as a candidate);
  both holders are killed -9, one right after the other (the order alternates), and
  each value is the time from its holder's kill to its standby printing ``elected``
  (the holder's session TTL, ``--ttl``, must run out first: the value is TTL - the
  time since the holder's newest keepalive, + the cluster's and the library's delays).

Times are on CLOCK_MONOTONIC, which every process of the machine shares. Reported:
median and max per language and measurement, and the load average at start and end
(everything shares the machine's cores).

Usage: ``python bench/go_failover.py [--rounds 8] [--ttl 2] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _harness import loadavg, log, summarize, wait_for, wait_until
from coord.client import Client
from coord_adapter import CoordBenchCluster
from election_failover import Proc

BENCH = Path(__file__).resolve().parent
GO_DIR = BENCH.parent / "clients" / "go"
LANGS = ("go", "python")


class Probe(Proc):
    """A client process whose JSON lines are collected as they come; stdin is a pipe."""

    def __init__(self, name: str, argv: Sequence[str]) -> None:
        super().__init__(argv, stdin=True)
        self.name = name

    def send(self, line: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def event(self, event: str, timeout: float, **match: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for x in list(self.lines):
                if x.get("event") == event and all(x.get(k) == v for k, v in match.items()):
                    return x
            return None

        try:
            return wait_for(found, timeout, f"{self.name}: {event} {match}")
        except TimeoutError:
            last = self.lines[-5:]
            raise TimeoutError(f"{self.name}: no {event} {match}; it printed {last}") from None

    def put(self, key: str, timeout: float = 60.0) -> float:
        """Ask for one put and wait for its answer; its ``t``."""
        self.send(f"put {key}")
        return self.put_result(key, timeout)

    def put_result(self, key: str, timeout: float = 60.0) -> float:
        ans = self.event("put", timeout, key=key)
        if not ans["ok"]:
            raise RuntimeError(f"{self.name}: put {key} failed: {ans.get('error')}")
        return float(ans["t"])

    def stop(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(timeout=10)


def build_probe(out: Path) -> Path:
    binary = out / "failoverprobe"
    env = {**os.environ, "GOFLAGS": os.environ.get("GOFLAGS", "") + " -mod=mod"}
    r = subprocess.run(
        ["go", "build", "-o", str(binary), "./internal/failoverprobe"],
        cwd=GO_DIR, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if r.returncode != 0:
        raise SystemExit(f"go build failed:\n{r.stderr}")
    return binary


def leader_kill_rounds(bc: CoordBenchCluster, probe: Path, rounds: int) -> dict[str, list[float]]:
    eps = ",".join(bc.endpoints())
    writers = {
        "go": Probe("go writer", [str(probe), "-mode", "writer", "-endpoints", eps]),
        "python": Probe("python writer", [sys.executable, str(BENCH / "_py_writer.py"), eps]),
    }
    out: dict[str, list[float]] = {lang: [] for lang in LANGS}
    try:
        for w in writers.values():
            w.event("ready", 60)
        cluster = bc.cluster
        for r in range(rounds):
            bc.wait_healthy(60)
            leader = wait_for(bc.leader_index, 30, "a leader")
            for w in writers.values():  # warm: each library knows the leader
                w.put(f"warm-{r}")
            order = list(LANGS) if r % 2 == 0 else list(reversed(LANGS))
            proc = cluster.nodes[leader].proc
            assert proc is not None
            t0 = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            for lang in order:
                writers[lang].send(f"put after-kill-{r}")
            for lang in LANGS:
                out[lang].append(writers[lang].put_result(f"after-kill-{r}") - t0)
            cluster.kill(leader)  # reap it
            said = ", ".join(f"{lang} {out[lang][-1] * 1e3:.0f} ms" for lang in LANGS)
            log(f"leader kill round {r + 1}/{rounds}: {said}")
            bc.restart(leader)
    finally:
        for w in writers.values():
            w.stop()
    return out


def holder_kill_rounds(
    bc: CoordBenchCluster, probe: Path, rounds: int, ttl: float
) -> dict[str, list[float]]:
    eps = ",".join(bc.endpoints())
    groups = {lang: f"fo-{lang}" for lang in LANGS}
    with Client(bc.endpoints(), timeout_s=30.0) as c:
        for g in groups.values():
            c.group(g).create(slots=1, exist_ok=True)

        def member(lang: str, mid: str) -> Probe:
            if lang == "go":
                argv = [str(probe), "-mode", "member", "-endpoints", eps, "-group", groups[lang],
                        "-id", mid, "-ttl", f"{ttl}s"]  # fmt: skip
            else:
                argv = [sys.executable, "-m", "coord.member_process", "--endpoints", eps,
                        "--group", groups[lang], "--id", mid, "--ttl-s", str(ttl)]  # fmt: skip
            return Probe(f"{lang} {mid}", argv)

        def candidate(lang: str, mid: str) -> bool:
            members = c.group(groups[lang]).get().members
            return any(m.id == mid and m.candidate for m in members)

        out: dict[str, list[float]] = {lang: [] for lang in LANGS}
        for r in range(rounds):
            holders: dict[str, Probe] = {}
            standbys: dict[str, Probe] = {}
            try:
                for lang in LANGS:
                    holders[lang] = member(lang, f"h{r}")
                for lang in LANGS:
                    holders[lang].event("elected", 60)
                for lang in LANGS:
                    standbys[lang] = member(lang, f"s{r}")
                for lang in LANGS:
                    sid = f"s{r}"
                    wait_until(lambda lang=lang, sid=sid: candidate(lang, sid), 60,  # type: ignore[misc]
                               f"{lang} standby {sid} campaigning")  # fmt: skip
                order = list(LANGS) if r % 2 == 0 else list(reversed(LANGS))
                t0: dict[str, float] = {}
                for lang in order:
                    t0[lang] = time.monotonic()
                    holders[lang].p.kill()
                for lang in LANGS:
                    elected = standbys[lang].event("elected", ttl * 3 + 30)
                    out[lang].append(float(elected["t"]) - t0[lang])
                said = ", ".join(f"{lang} {out[lang][-1] * 1e3:.0f} ms" for lang in LANGS)
                log(f"holder kill round {r + 1}/{rounds}: {said}")
            finally:
                for p in standbys.values():
                    p.stop(signal.SIGTERM)  # resigns: the next round starts clean
                for p in holders.values():
                    p.stop()
    return out


def ms(values: list[float]) -> dict[str, float]:
    s = summarize(values)
    return {k: (v if k == "n" else round(v * 1e3, 1)) for k, v in s.items()}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--ttl", type=float, default=2.0, help="the members' session TTL (s)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    args = p.parse_args()
    load_start = loadavg()
    with tempfile.TemporaryDirectory(prefix="go-failover-") as tmp:
        probe = build_probe(Path(tmp))
        with CoordBenchCluster(3) as bc:
            bc.cluster.wait_ready(60)
            writes = leader_kill_rounds(bc, probe, args.rounds)
            masters = holder_kill_rounds(bc, probe, args.rounds, args.ttl)
    load_end = loadavg()
    res = {
        "leader kill -9 -> first write": {lang: ms(writes[lang]) for lang in LANGS},
        f"holder kill -9 -> standby elected (TTL {args.ttl:g} s)": {
            lang: ms(masters[lang]) for lang in LANGS
        },
    }
    meta = {"rounds": args.rounds, "load_start": load_start, "load_end": load_end,
            "raw": {"writes": writes, "masters": masters}}  # fmt: skip
    if args.json:
        print(json.dumps({"results": res, "meta": meta}, indent=2))
        return
    print(f"failover from Go and Python client processes, 3 nodes, {args.rounds} rounds; "
          f"load average {load_start[0]} at start, {load_end[0]} at end")  # fmt: skip
    print(f"{'measurement':<50} {'Go median / max':>18} {'Python median / max':>22}")
    for name, by_lang in res.items():
        cells = [
            f"{by_lang[lang]['median']:,.0f} / {by_lang[lang]['max']:,.0f} ms" for lang in LANGS
        ]
        print(f"{name:<50} {cells[0]:>18} {cells[1]:>22}")


if __name__ == "__main__":
    main()
