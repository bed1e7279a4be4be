"""The ``coord dev`` demo group ``db``: three member processes and their events.

Each member is a real ``python -m coord.member_process`` (session TTL 2 s,
priorities 30/20/10). Kill one, and the live view shows the next master, its
fencing token and the events with their causes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from coord import errors
from coord.client import Client
from coord.testing import LocalCluster, wait_until
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2

GROUP = "db"
MEMBERS = (("db-1", 30), ("db-2", 20), ("db-3", 10))
TTL_S = 2.0


class DemoGroup:
    def __init__(self, cluster: LocalCluster, note: Callable[[str], None]) -> None:
        self.cluster = cluster
        self.note = note
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stop = threading.Event()

    # -- processes -------------------------------------------------------------

    def start(self) -> None:
        with Client(self.cluster.endpoints, timeout_s=15) as c:
            try:
                c.group(GROUP).create(
                    slots=1, exist_ok=True, failback=groups_pb2.FAILBACK_AUTO,
                    failback_hold_ms=5000, switchover_timeout_ms=5000,
                )  # fmt: skip
            except errors.AlreadyExists as e:  # another policy (an older data dir): keep it
                self.note(f"{e.message}; the demo uses it as it is")
        threading.Thread(target=self._watch, daemon=True).start()
        for member_id, _ in MEMBERS:
            self.start_member(member_id)

    def start_member(self, member_id: str) -> None:
        priority = dict(MEMBERS)[member_id]
        if member_id in self.procs and self.procs[member_id].poll() is None:
            return
        log = open(os.path.join(self.cluster.base_dir, f"{member_id}.log"), "ab")  # noqa: SIM115
        self.procs[member_id] = subprocess.Popen(
            [sys.executable, "-m", "coord.member_process", "--endpoints",
             ",".join(self.cluster.endpoints), "--group", GROUP, "--id", member_id,
             "--priority", str(priority), "--ttl-s", str(TTL_S),
             "--exit-with-parent", str(os.getpid())],  # it stops when coord dev dies
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()

    def kill_member(self, member_id: str) -> None:
        proc = self.procs.get(member_id)
        if proc is None or proc.poll() is not None:
            raise ValueError(f"member {member_id} is not running")
        proc.kill()
        proc.wait(timeout=10)

    def stop(self) -> None:
        self._stop.set()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)  # it exits within its --stop-timeout-s (3 s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    # -- view ------------------------------------------------------------------

    def group(self) -> groups_pb2.Group | None:
        for node in self.cluster.nodes:
            if not node.running or node.paused:
                continue
            with Client([node.api], timeout_s=0.5, attempt_timeout_s=0.5) as c:
                try:
                    resp = c.call(
                        lambda ch, t: election_pb2_grpc.GroupsStub(ch).Get(
                            election_pb2.GetGroupRequest(name=GROUP, serializable=True), timeout=t
                        ),
                        endpoint=node.api,
                    )
                    group: groups_pb2.Group = resp.group
                    return group
                except errors.CoordError:
                    continue
        return None

    def rows(self) -> list[list[object]]:
        g = self.group()
        holders = {h.member_id: h for h in g.holdings} if g else {}
        members = {m.id: m for m in g.members} if g else {}
        rows: list[list[object]] = []
        for member_id, priority in MEMBERS:
            proc = self.procs.get(member_id)
            alive = proc is not None and proc.poll() is None
            h = holders.get(member_id)
            role = "MASTER" if h and not h.revoked else ("revoked" if h else "standby")
            if member_id not in members:
                role = "-" if alive else "DOWN"
            rows.append([member_id, proc.pid if alive and proc else "-", priority, role,
                         h.token if h else "-", members[member_id].session_id
                         if member_id in members else "-"])  # fmt: skip
        return rows

    def wait_for_master(self, timeout: float, not_member: str = "") -> groups_pb2.Holding:
        def master() -> groups_pb2.Holding | None:
            g = self.group()
            live = [h for h in g.holdings if not h.revoked] if g else []
            return next((h for h in live if h.member_id != not_member), None)

        return wait_until(master, timeout, f"a master of group {GROUP}")

    def _watch(self) -> None:
        with Client(self.cluster.endpoints, timeout_s=30) as c:
            while not self._stop.is_set():
                try:
                    for ev in c.group(GROUP).watch():
                        if ev.type in (
                            "master_elected",
                            "master_lost",
                            "stepdown_requested",
                            "master_revoked",
                            "member_joined",
                            "member_left",
                        ):
                            token = f" token {ev.token}" if ev.token else ""
                            cause = f" ({ev.cause})" if ev.cause else ""
                            self.note(f"{GROUP}: {ev.type} {ev.member}{token}{cause}")
                        if self._stop.is_set():
                            return
                except errors.CoordError:
                    time.sleep(0.2)  # the cluster is down: look again shortly
