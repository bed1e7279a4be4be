"""chaos/diskshim: a child Python process under the LD_PRELOAD shim has its fdatasync and
fsync delayed by the control file (changed while it runs), each call still made (its
result and errno are the real function's), only the calling thread held up, and its
clocks and sleeps untouched; beside the clock shim, both work.

Timings are lower bounds only (a delayed call takes at least the delay; never "at most"):
a loaded machine can only make calls slower. That a call was *not* delayed is read from
the shim's own counters in the control file, not from a clock.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos import clocks, disks
from chaos.clocks import WallClock
from chaos.disks import SHIM_ENV, DiskDelay
from coord.testing import wait_until
from tests.unit.shim_child import ShimChild

DELAY_S = 0.2
HOUR = 3600.0
SLACK_S = 0.05  # float seconds, and the coarse clocks
EPS_S = 1e-6  # the shim sleeps to a nanosecond deadline; the child reads float seconds

# One request per stdin line, one answer line each. argv[1]: a file to write and sync.
CHILD = r"""
import os, sys, threading, time
path = sys.argv[1]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
def timed(sync, target):
    os.write(fd, b"x")
    t0 = time.monotonic()
    try:
        sync(target)
        outcome = "ok"
    except OSError as e:
        outcome = f"errno={e.errno}"
    return f"{outcome} {time.monotonic() - t0}"
background = []
for line in sys.stdin:
    what = line.split()
    if what[0] in ("fdatasync", "fsync"):
        print(timed(getattr(os, what[0]), fd if len(what) == 1 else int(what[1])), flush=True)
    elif what[0] == "background":  # an fdatasync on a thread of its own
        t = threading.Thread(target=os.fdatasync, args=(fd,), daemon=True)
        t.start()
        background.append(t)
        print("started", flush=True)
    elif what[0] == "sleep":
        t0 = time.monotonic()
        time.sleep(0.05)
        alive = sum(t.is_alive() for t in background)
        print(f"{time.monotonic() - t0} {alive}", flush=True)
    elif what[0] == "clocks":
        print(time.time(), time.monotonic(), flush=True)
"""


class Child(ShimChild):
    def __init__(self, env: dict[str, str], path: Path) -> None:
        super().__init__(CHILD, env, str(path))

    def sync(self, what: str = "fdatasync") -> tuple[str, float]:
        """(outcome: "ok" or "errno=N", seconds the call took in the child)."""
        outcome, took = self.ask(what)
        return outcome, float(took)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[DiskDelay]:
    d = DiskDelay(str(tmp_path / "delay"))
    yield d
    d.close()


@pytest.fixture
def child(disk: DiskDelay, tmp_path: Path) -> Iterator[Child]:
    ch = Child(disk.env(), tmp_path / "data")
    yield ch
    ch.close()


def assert_clocks_real(child: Child) -> None:
    """The child's time.time and time.monotonic lie between the parent's own readings."""
    wall0, mono0 = time.time(), time.monotonic()
    wall, mono = (float(x) for x in child.ask("clocks"))
    mono1, wall1 = time.monotonic(), time.time()
    assert wall0 - SLACK_S <= wall <= wall1 + SLACK_S, f"time.time {wall} not in [{wall0}, {wall1}]"
    assert mono0 - SLACK_S <= mono <= mono1 + SLACK_S, f"monotonic {mono} not in [{mono0}, {mono1}]"


def test_a_delay_set_while_the_process_runs_slows_fdatasync_and_fsync(
    disk: DiskDelay, child: Child
) -> None:
    assert child.sync()[0] == "ok"  # delay 0: the real call, not delayed
    assert child.sync("fsync")[0] == "ok"
    assert (disk.calls, disk.delayed) == (2, 0)
    disk.set(DELAY_S)
    assert disk.delay_s == DELAY_S
    for call in ("fdatasync", "fsync"):
        outcome, took = child.sync(call)
        assert outcome == "ok"
        assert took >= DELAY_S - EPS_S, f"{call} took {took:.3f} s under a {DELAY_S} s delay"
    assert (disk.calls, disk.delayed) == (4, 2)
    disk.set(0)  # healed: calls go straight through again
    assert child.sync()[0] == "ok"
    assert child.sync("fsync")[0] == "ok"
    assert (disk.calls, disk.delayed) == (6, 2)


def test_the_real_call_is_made_after_the_delay_and_its_error_returned(
    disk: DiskDelay, child: Child
) -> None:
    disk.set(DELAY_S)
    outcome, took = child.sync("fsync 987654")  # no such descriptor
    assert outcome == f"errno={errno.EBADF}"
    assert took >= DELAY_S - EPS_S
    assert disk.delayed == 1


def test_clocks_and_sleep_are_untouched_and_only_the_calling_thread_waits(
    disk: DiskDelay, child: Child
) -> None:
    disk.set(HOUR)  # the background fdatasync never returns while the child lives
    assert child.ask("background") == ["started"]
    wait_until(lambda: disk.delayed == 1, 10, "the background fdatasync in its delay")
    slept, alive = child.ask("sleep")  # the main thread runs meanwhile (the GIL released)
    assert float(slept) >= 0.05 - EPS_S, f"time.sleep(0.05) slept {slept} s"
    assert alive == "1", "the delayed fdatasync returned: the delay was not applied"
    assert_clocks_real(child)
    disk.set(0)  # later calls are not delayed; the one asleep keeps the delay it read
    assert child.sync()[0] == "ok"
    assert disk.delayed == 1


def test_without_a_usable_control_file_nothing_is_delayed(disk: DiskDelay, tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"\1\2\3")  # under 8 bytes: ignored, not mapped past its end
    for path in (str(tmp_path / "absent"), str(short), ""):
        ch = Child({**disk.env(), SHIM_ENV: path}, tmp_path / "data")
        try:
            assert ch.sync()[0] == "ok"
            assert ch.sync("fsync")[0] == "ok"
            assert_clocks_real(ch)
        finally:
            ch.close()
    assert disk.calls == 0  # the harness's file was not the one used


def test_an_8_byte_file_delays_without_counting(disk: DiskDelay, tmp_path: Path) -> None:
    only_delay = tmp_path / "only-delay"
    only_delay.write_bytes(round(DELAY_S * 1e9).to_bytes(8, sys.byteorder, signed=True))
    ch = Child({**disk.env(), SHIM_ENV: str(only_delay)}, tmp_path / "data")
    try:
        outcome, took = ch.sync()
        assert outcome == "ok"
        assert took >= DELAY_S - EPS_S
    finally:
        ch.close()
    assert only_delay.stat().st_size == 8  # nothing written past the delay


def test_both_shims_preloaded_together(disk: DiskDelay, tmp_path: Path) -> None:
    clock = WallClock(str(tmp_path / "offset"))
    try:
        # As chaos.cluster builds a node's environment: the clock shim, then the disk
        # shim before it, each over what was already preloaded.
        env = {**os.environ, **clock.env(dict(os.environ))}
        env |= disk.env(env)
        preloaded = env["LD_PRELOAD"].split()
        assert preloaded[:2] == [disks.shim_library(), clocks.shim_library()]
        clock.set(HOUR)
        disk.set(DELAY_S)
        ch = Child(env, tmp_path / "data")
        try:
            before = time.time()
            wall, _ = (float(x) for x in ch.ask("clocks"))
            after = time.time()
            assert before + HOUR - SLACK_S <= wall <= after + HOUR + SLACK_S, "no clock offset"
            outcome, took = ch.sync()
            assert outcome == "ok"
            assert took >= DELAY_S - EPS_S, f"fdatasync took {took:.3f} s"
            [slept, _] = ch.ask("sleep")
            assert float(slept) >= 0.05 - EPS_S
        finally:
            ch.close()
        assert disk.delayed == 1
    finally:
        clock.close()


def test_preload_puts_the_shim_first_once() -> None:
    lib = "/x/diskshim.so"
    assert disks.preload(lib, None) == lib
    assert disks.preload(lib, {"LD_PRELOAD": "/y/clockshim.so"}) == f"{lib} /y/clockshim.so"
    assert disks.preload(lib, {"LD_PRELOAD": f"/y/a.so:{lib} /y/b.so"}) == (
        f"{lib} /y/a.so /y/b.so"
    )


def test_a_negative_delay_is_refused(disk: DiskDelay) -> None:
    with pytest.raises(ValueError):
        disk.set(-0.1)
