"""A master asked to step down (switchover, coordctl resign) resigns at once by default, with
the library and with ``coordctl campaign``: the next master is elected within a keepalive
interval or so, not after the group's switchover timeout (10 s). An application that
registers ``on_stepdown`` stays master while its handler runs, for at most its grace.
``group.create(..., exist_ok=True)`` makes the README's Masters example re-runnable; the
example itself (extracted from README.md) is run twice against a real cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coord import errors
from coord.client import Session
from coord.testing import LocalCluster, wait_until
from coord.v1 import election_pb2, groups_pb2

from .members import Members, Watcher, get_group, holders
from .support import COORDCTL, coordctl, describe

TTL_S = 2.0
SWITCHOVER_TIMEOUT_S = 10.0  # the cluster's default (coord.state.limits)
# A prompt step-down: the request rides on the next keepalive answer (every TTL/3),
# then one Resign. Far below the switchover timeout a master that ignores it gets.
PROMPT_S = 8.0
README = Path(__file__).resolve().parents[2] / "README.md"
README_ENDPOINTS = '"127.0.0.1:2379,127.0.0.1:2381,127.0.0.1:2383"'


def wait_candidates(cluster: LocalCluster, group: str, ids: set[str]) -> None:
    def ready() -> bool:
        with cluster.client() as c:
            return ids <= {m.id for m in get_group(c, group).members if m.candidate}

    wait_until(ready, 20, f"members {sorted(ids)} of {group} to campaign")


def handover_events(w: Watcher, group: str) -> list[tuple[str, str, str]]:
    return [
        (e.type, e.member, e.cause)
        for e in w.events()
        if e.group == group
        and e.type in ("stepdown_requested", "master_lost", "master_revoked", "master_elected")
    ]


@pytest.fixture
def watcher(cluster: LocalCluster) -> Iterator[Watcher]:
    w = Watcher(cluster.endpoints)
    try:
        yield w
    finally:
        w.stop()


# -- the README's example ----------------------------------------------------------------


def readme_masters_example() -> str:
    text = README.read_text()
    section = text[text.index("## Masters") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


PRELUDE = """
import json, time

class Storage:  # the example's resource: records the writes it was given
    def __init__(self):
        self.writes = 0

    def write(self, data, token):
        if not self.writes:
            print(json.dumps({"event": "writing", "token": token, "t": time.monotonic()}),
                  flush=True)
        self.writes += 1
        time.sleep(0.01)

storage, data = Storage(), b"row"
"""
POSTLUDE = """
print(json.dumps({"event": "done", "t": time.monotonic(), "writes": storage.writes}), flush=True)
"""


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.startswith("{")]


def line(path: Path, event: str) -> dict[str, Any] | None:
    return next((x for x in lines(path) if x["event"] == event), None)


def run_example_until_resigned(
    cluster: LocalCluster, watcher: Watcher, code: str, out: Path
) -> None:
    """Run the example until it writes as master, resign it with coordctl: it stops
    acting (its loop ends) and exits promptly, having resigned (master_lost)."""
    with open(out, "wb") as f:
        p = subprocess.Popen([sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT)
    try:
        writing = wait_until(lambda: line(out, "writing"), 30, f"{out.name}: elected")
        asked = time.monotonic()
        r = coordctl(cluster.endpoints, "resign", "orders", "orders-1")
        assert r.returncode == 0, describe(r)
        assert p.wait(timeout=30) == 0, out.read_text()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    done = line(out, "done")
    assert done is not None, out.read_text()
    took = done["t"] - asked
    assert took < PROMPT_S, f"{out.name}: stopped acting {took:.2f} s after the resign"
    assert done["writes"] > 0
    token = writing["token"]
    watcher.wait_for(lambda e: e.type == "master_lost" and e.token == token, 10, "master_lost")


def test_readme_masters_example_reruns_and_resigns_at_once(
    cluster: LocalCluster, watcher: Watcher, tmp_path: Path
) -> None:
    example = readme_masters_example()
    assert ".create(slots=1, exist_ok=True)" in example, example
    assert README_ENDPOINTS in example, example
    code = PRELUDE + example.replace(README_ENDPOINTS, repr(",".join(cluster.endpoints))) + POSTLUDE
    for attempt in (1, 2):  # the second run finds the group it created: fine
        run_example_until_resigned(cluster, watcher, code, tmp_path / f"run{attempt}.out")
    # Both runs resigned themselves: nothing had to be revoked.
    events = handover_events(watcher, "orders")
    assert not [e for e in events if e[0] == "master_revoked"], events
    lost = [e for e in events if e[0] == "master_lost"]
    assert lost == [("master_lost", "orders-1", "resign")] * 2, events


# -- the library and coordctl campaign ---------------------------------------------------


def test_a_library_master_without_a_handler_resigns_at_once_on_switchover(
    cluster: LocalCluster, members: Members, watcher: Watcher
) -> None:
    g = "lib-switch"
    with cluster.client() as c:
        c.group(g).create()
        with c.session(ttl_s=TTL_S, name="lib") as s:
            me = c.group(g).member("lib", s, priority=50).start()
            lead = me.campaign(timeout_s=10)
            assert lead.is_master() and lead.stepdown is None
            m2 = members.start(g, "m2", priority=5, ttl_s=TTL_S)
            wait_candidates(cluster, g, {"m2"})

            asked = time.monotonic()
            r = coordctl(cluster.endpoints, "switchover", g, "--to", "m2")
            assert r.returncode == 0, describe(r)
            wait_until(lambda: not lead.is_master(), PROMPT_S, "the library to end mastership")
            new = m2.elected(timeout=PROMPT_S)
            assert new["t"] - asked < PROMPT_S, f"m2 elected {new['t'] - asked:.2f} s after"
            assert not lead.is_master()
            assert lead.stepdown is not None and lead.stepdown.cause == "switchover"
            assert holders(c, g) == {0: ("m2", new["token"])}
            # An application that resigns as well finds nothing left to give up: no error.
            me.resign()
            lead.resign()
    watcher.wait_for(lambda e: e.type == "master_elected" and e.group == g and e.member == "m2",
                     10, "m2 elected")  # fmt: skip
    assert handover_events(watcher, g)[1:] == [
        ("stepdown_requested", "lib", "switchover"),
        ("master_lost", "lib", "switchover"),
        ("master_elected", "m2", "switchover"),
    ]


def test_coordctl_campaign_is_switched_over_at_once(
    cluster: LocalCluster, members: Members, tmp_path: Path
) -> None:
    g = "ctl-switch"
    with cluster.client() as c:
        c.group(g).create()
    out, err = tmp_path / "campaign.out", tmp_path / "campaign.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        p = subprocess.Popen(
            [COORDCTL, "--endpoints", ",".join(cluster.endpoints), "-o", "json", "campaign", g,
             "ctl", "--ttl-s", str(TTL_S), "--priority", "50"],
            stdout=o, stderr=e, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        printed = wait_until(out.read_text, 30, "coordctl campaign to be elected")  # once elected
        elected = json.loads(printed)
        assert elected["member"] == "ctl"
        m2 = members.start(g, "m2", priority=5, ttl_s=TTL_S)
        wait_candidates(cluster, g, {"m2"})
        asked = time.monotonic()
        r = coordctl(cluster.endpoints, "switchover", g)
        assert r.returncode == 0, describe(r)
        new = m2.elected(timeout=PROMPT_S)
        assert new["t"] - asked < PROMPT_S
        assert p.wait(timeout=PROMPT_S) == 0, err.read_text()
        assert "no longer master" in err.read_text()
        assert new["token"] > int(elected["token"])
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# -- an application that needs time to hand over ------------------------------------------


def test_on_stepdown_keeps_mastership_until_the_handler_returns(
    cluster: LocalCluster, members: Members, watcher: Watcher
) -> None:
    g = "lib-handler"
    started = threading.Event()
    release = threading.Event()
    seen: list[election_pb2.StepDown] = []

    def hand_over(_: Session, step: election_pb2.StepDown) -> None:
        seen.append(step)
        started.set()
        release.wait(30)

    with cluster.client() as c:
        c.group(g).create()
        with c.session(ttl_s=TTL_S, on_stepdown=hand_over, stepdown_grace_s=30) as s:
            lead = c.group(g).member("lib", s, priority=50).start().campaign(timeout_s=10)
            m2 = members.start(g, "m2", priority=5, ttl_s=TTL_S)
            wait_candidates(cluster, g, {"m2"})
            r = coordctl(cluster.endpoints, "resign", g, "lib")
            assert r.returncode == 0, describe(r)
            assert started.wait(PROMPT_S), "the handler was not called"
            # The handler runs: still master here and on the cluster (several keepalives:
            # the request repeats on each, the handler is called once).
            mark = s._last_ack
            wait_until(lambda: s._last_ack > mark + TTL_S / 2, 10, "two more keepalives")
            assert lead.is_master()
            assert holders(c, g) == {0: ("lib", lead.token)}
            assert len(seen) == 1 and seen[0].cause == "resign"
            released = time.monotonic()
            release.set()
            wait_until(lambda: not lead.is_master(), 5, "the library to resign")
            new = m2.elected(timeout=5)
            assert new["seen"] >= released
    watcher.wait_for(lambda e: e.type == "master_elected" and e.group == g and e.member == "m2",
                     10, "m2 elected")  # fmt: skip
    assert ("master_lost", "lib", "resign") in handover_events(watcher, g)
    assert not [e for e in handover_events(watcher, g) if e[0] == "master_revoked"]


def test_a_handler_that_overruns_its_grace_is_resigned_for(
    cluster: LocalCluster, members: Members
) -> None:
    g = "lib-grace"
    grace_s = 1.0
    called: list[float] = []
    forever = threading.Event()

    def hand_over(_: Session, __: election_pb2.StepDown) -> None:
        called.append(time.monotonic())
        forever.wait(60)

    try:
        with cluster.client() as c:
            c.group(g).create()
            with c.session(ttl_s=TTL_S, on_stepdown=hand_over, stepdown_grace_s=grace_s) as s:
                lead = c.group(g).member("lib", s, priority=50).start().campaign(timeout_s=10)
                m2 = members.start(g, "m2", priority=5, ttl_s=TTL_S)
                wait_candidates(cluster, g, {"m2"})
                r = coordctl(cluster.endpoints, "switchover", g)
                assert r.returncode == 0, describe(r)
                wait_until(lambda: not lead.is_master(), PROMPT_S + grace_s, "resigned for it")
                ended = time.monotonic()
                assert called, "the handler was not called"
                assert ended - called[0] >= grace_s / 2, "resigned long before the grace ended"
                new = m2.elected(timeout=5)
                assert new["t"] - called[0] < SWITCHOVER_TIMEOUT_S / 2
                assert holders(c, g) == {0: ("m2", new["token"])}
    finally:
        forever.set()


# -- Group.create(exist_ok) --------------------------------------------------------------------


def test_create_group_exist_ok(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        policy: dict[str, Any] = {"failback": groups_pb2.FAILBACK_AUTO, "failback_hold_ms": 5000}
        first = c.group("idem").create(slots=1, **policy)
        with pytest.raises(errors.AlreadyExists):
            c.group("idem").create(slots=1, **policy)  # the plain form still refuses
        again = c.group("idem").create(slots=1, exist_ok=True, **policy)
        assert again.created_revision == first.created_revision
        assert again.policy == first.policy
        # Left unset, the switchover timeout is the cluster's default, as when created.
        same = c.group("idem").create(exist_ok=True, switchover_timeout_ms=10_000, **policy)
        assert same.created_revision == first.created_revision
        with pytest.raises(errors.AlreadyExists) as info:
            c.group("idem").create(slots=2, exist_ok=True, failback=groups_pb2.FAILBACK_OFF)
        msg = info.value.message
        assert "exists with another policy" in msg, msg
        assert "slots: asked 2, it has 1" in msg and "failback: asked FAILBACK_OFF" in msg, msg
        assert "failback_hold_ms: asked 0, it has 5000" in msg, msg
        assert get_group(c, "idem").policy == first.policy  # unchanged
        # A new name is simply created.
        fresh = c.group("idem-2").create(exist_ok=True)
        assert fresh.name == "idem-2" and fresh.created_revision > first.created_revision
