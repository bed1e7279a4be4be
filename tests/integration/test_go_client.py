"""The Go client (clients/go) against real clusters (issue 19).

``go test ./...`` runs with COORD_ENDPOINTS set to this module's cluster (its tests that
need a cluster skip without it), and a conformance scenario puts a Python campaigner and
a Go campaigner in one group: the master's process is stopped (SIGSTOP) beyond its TTL,
the Raft leader is killed (-9), then the Raft leadership is handed over gracefully. Each
campaigner prints every moment it found itself master (read before its
is_master()/IsMaster() check, on CLOCK_MONOTONIC, which all processes of the machine
share). The records are judged by the chaos suite's own checkers (chaos/checkers.py:
``overlapping_masters``, ``tokens_increase``), each token's records making one tenure from
its first to its last: no two processes master of the slot at one instant, and tokens
increasing with time, never shared (docs/protocol.md, section 5).

Skipped when Go is not installed. The Go build cache makes reruns fast; the first build
on a clean machine takes tens of seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.checkers import overlapping_masters, tokens_increase
from chaos.records import RunRecord, Tenure
from coord.testing import LocalCluster, wait_until

REPO = Path(__file__).resolve().parents[2]
GO_DIR = REPO / "clients" / "go"
GO = shutil.which("go")
TTL_S = 2.0

pytestmark = pytest.mark.skipif(GO is None, reason="Go is not installed")

PY_CAMPAIGNER = r"""
import sys, time
from coord.client import Client

endpoints, group, member = sys.argv[1:4]
with Client(endpoints) as c:
    while True:
        try:
            with c.session(ttl_s=float(sys.argv[4])) as s:
                with c.group(group).member(member, s) as m:
                    while s.is_valid():
                        with m.campaign() as lead:
                            while True:
                                t = time.monotonic_ns()  # before the check
                                if not lead.is_master():
                                    break
                                print("master", lead.token, t, flush=True)
                                time.sleep(0.01)
                            print("ended", lead.token, time.monotonic_ns(), flush=True)
        except Exception as e:  # a lost session: campaign again in a new one
            print("campaigner:", e, file=sys.stderr, flush=True)
            time.sleep(0.1)
"""


def go_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-mod=mod")
    env.update(extra)
    return env


def test_go_test_against_the_cluster(cluster: LocalCluster) -> None:
    """The Go client's own tests, those that need a cluster included."""
    r = subprocess.run(
        [str(GO), "test", "-count=1", "./..."],
        cwd=GO_DIR, env=go_env(COORD_ENDPOINTS=",".join(cluster.endpoints)),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert "SKIP" not in r.stdout, r.stdout


def test_go_txn_and_session_bound_keys(cluster: LocalCluster, tmp_path: Path) -> None:
    """A Go process (clients/go/internal/kvprobe) does a compare-and-swap Txn (binding one
    key to its session in the same branch), a stale one, and a session-bound Put; the
    Python client sees each result, and sees the bound keys vanish when the Go process
    closes its session, which the Go side's key-prefix watch reports as one kv_delete."""
    binary = tmp_path / "kvprobe"
    build = subprocess.run(
        [str(GO), "build", "-o", str(binary), "./internal/kvprobe"],
        cwd=GO_DIR, env=go_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    p = f"go-kv/{os.getpid()}-{time.monotonic_ns()}/"
    with cluster.client() as c:
        rev = c.put(p + "cas", "py").kv.mod_revision
        proc = subprocess.Popen(
            [str(binary), "-endpoints", ",".join(cluster.endpoints), "-prefix", p,
             "-rev", str(rev)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stdin is not None
            lines = [proc.stdout.readline().split() for _ in range(3)]  # it exits within 30 s
            assert lines[:2] == [["cas", "true", "2"], ["stale", "false"]], lines
            assert lines[2][0] == "bound", lines
            session_id = lines[2][1]
            cas, bound, txn_bound = (c.get(p + k) for k in ("cas", "bound", "txn-bound"))
            assert cas is not None and cas.value == b"go" and cas.mod_revision > rev
            assert c.get(p + "lost") is None, "the first Txn's failure branch ran"
            assert getattr(c.get(p + "else"), "value", None) == b"ran", "no failure branch"
            assert bound is not None and bound.session_id == session_id
            assert txn_bound is not None and txn_bound.session_id == session_id
            assert bound.mod_revision == int(lines[2][2])
            out, err = proc.communicate("close\n", timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        assert proc.returncode == 0, err
        rest = [line.split() for line in out.splitlines()]
        assert rest[0] == ["closed"], rest
        # Closed means committed: the keys are gone at once, the unbound one stays.
        assert c.get(p + "bound") is None and c.get(p + "txn-bound") is None
        assert c.get(p + "cas") is not None
        kind, cause, keys = rest[1][1:]
        assert (kind, cause) == ("kv_delete", "session_closed"), rest
        assert sorted(keys.split(",")) == [p + "bound", p + "txn-bound"], rest


class Campaigner:
    def __init__(self, name: str, cmd: list[str], out: Path) -> None:
        self.name, self.out = name, out
        with out.open("w") as f:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)

    def records(self) -> list[tuple[str, int, int]]:
        """(kind, token, ns) lines printed so far."""
        out = []
        for line in self.out.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] in ("master", "ended"):
                out.append((parts[0], int(parts[1]), int(parts[2])))
        return out

    def last_token(self) -> int:
        masters = [tok for kind, tok, _ in self.records() if kind == "master"]
        return masters[-1] if masters else 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def campaigners(
    own_cluster: LocalCluster, tmp_path: Path
) -> Iterator[tuple[LocalCluster, dict[str, Campaigner]]]:
    binary = tmp_path / "campaigner"
    build = subprocess.run(
        [str(GO), "build", "-o", str(binary), "./internal/campaigner"],
        cwd=GO_DIR, env=go_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    eps = ",".join(own_cluster.endpoints)
    with own_cluster.client() as c:
        c.group("conf").create(slots=1, exist_ok=True)
    script = tmp_path / "py_campaigner.py"
    script.write_text(PY_CAMPAIGNER)
    procs = {
        "go": Campaigner("go", [str(binary), "-endpoints", eps, "-group", "conf", "-id", "go-1",
                                "-ttl", f"{TTL_S}s"], tmp_path / "go.out"),
        "py": Campaigner("py", [sys.executable, str(script), eps, "conf", "py-1", str(TTL_S)],
                         tmp_path / "py.out"),
    }  # fmt: skip
    try:
        yield own_cluster, procs
    finally:
        for p in procs.values():
            p.stop()
        for p in procs.values():
            print(f"--- {p.name} campaigner ---\n{p.out.read_text()[-3000:]}")


def current_master(procs: dict[str, Campaigner], after_token: int = 0) -> Campaigner | None:
    """The campaigner whose newest record is a master record above ``after_token``."""
    best = None
    for p in procs.values():
        recs = p.records()
        newest = recs[-1] if recs else None
        if newest and newest[0] == "master" and newest[1] > after_token:
            best = p if best is None or newest[1] > best.last_token() else best
    return best


def run_record(procs: dict[str, Campaigner]) -> RunRecord:
    """The campaigners' master records as the chaos suite's record of a run: per process
    and token one tenure of the group's one slot, from its first record to just after its
    last (tenures are half-open). A record is an instant the process was about to act as
    master (its check that followed said so); between two records of a process it acted
    on no other belief, and a stopped process does not act at all."""
    spans: dict[tuple[str, int], list[int]] = {}
    for p in procs.values():
        for kind, tok, ns in p.records():
            if kind == "master":
                lo_hi = spans.setdefault((p.name, tok), [ns, ns])
                lo_hi[0], lo_hi[1] = min(lo_hi[0], ns), max(lo_hi[1], ns)
    tenures = [
        Tenure(process=name, group="conf", slot=0, token=tok, start=lo / 1e9, end=(hi + 1) / 1e9)
        for (name, tok), (lo, hi) in sorted(spans.items(), key=lambda kv: kv[1][0])
    ]
    start = min((t.start for t in tenures), default=0.0)
    end = max((t.end or t.start for t in tenures), default=0.0)
    return RunRecord(scenario="go-client", seed=0, start=start, end=end, tenures=tenures)


def check_no_overlap(procs: dict[str, Campaigner]) -> list[int]:
    """The chaos checkers over the records (see the module's docstring); the tokens in
    the order they were granted."""
    record = run_record(procs)
    violations = overlapping_masters(record) + tokens_increase(record)
    assert not violations, "\n".join(str(v) for v in violations)
    return [t.token for t in sorted(record.tenures, key=lambda t: t.start)]


def test_python_and_go_campaigners_never_overlap(
    campaigners: tuple[LocalCluster, dict[str, Campaigner]],
) -> None:
    cluster, procs = campaigners
    first = wait_until(lambda: current_master(procs), 60, "a first master")
    token = first.last_token()

    # 1. Stop the master's process beyond its TTL: the other one takes over, with a
    # higher token, and the stopped one finds itself no longer master when it wakes.
    first.proc.send_signal(signal.SIGSTOP)
    try:
        other = wait_until(
            lambda: current_master(procs, token), 30, "a new master while the old one is stopped"
        )
        assert other is not first
    finally:
        first.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: first.records()[-1][0] == "ended", 30, "the woken master to step down")
    token = other.last_token()

    # 2. kill -9 of the Raft leader: a new one is elected, and a master acts under it
    # (the same one, as sessions outlive a leader change, unless the election outlasted
    # its validity: then a successor with a higher token, which the checkers judge).
    dead = cluster.wait_ready()
    cluster.kill(dead)
    cluster.wait_for_leader(exclude=dead)
    killed_at = time.monotonic_ns()
    wait_until(
        lambda: sum(ns > killed_at for p in procs.values() for k, _, ns in p.records()
                    if k == "master") > 20,
        30, "a master to act under the new Raft leader",
    )  # fmt: skip
    cluster.start(dead)
    cluster.wait_ready()
    other = wait_until(lambda: current_master(procs), 30, "the current master")
    token = other.last_token()

    # 3. A graceful Raft leader transfer: mastership stays where it is (sessions outlive
    # a leader change), and nobody else becomes master meanwhile.
    with cluster.client() as c:
        old = c.leader().leader_id
        new = c.transfer_leader().leader_id
        assert new != old
    seen = len(other.records())
    wait_until(lambda: len(other.records()) > seen + 20, 30, "the master to keep acting")
    after = other.records()[seen:]
    assert all(k == "master" and tok == token for k, tok, _ in after), (
        f"the transfer cost {other.name} its mastership (no session may be lost): {after[:3]}"
    )

    tokens = check_no_overlap(procs)
    held = [(t.process, t.token) for t in sorted(run_record(procs).tenures, key=lambda t: t.start)]
    print(
        f"conformance: tenures (process, token) {held}, 0 overlaps, tokens increasing, "
        f"the master through the transfer kept token {token}"
    )
    assert len(tokens) >= 2 and tokens[-1] >= token, tokens
    assert {procs["go"].last_token() > 0, procs["py"].last_token() > 0} == {True}, (
        "both the Go and the Python campaigner were master at some point"
    )
