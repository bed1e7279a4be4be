"""chaos/clockshim: a child Python process under the LD_PRELOAD shim sees its wall clock
moved by the offset file (at start and when the harness changes it while it runs), its
monotonic clocks untouched, and ``time.sleep`` working (libfaketime 0.9.10 breaks it).

The child answers one line per request on stdin, so each reading is bracketed by the
parent's own (unshifted) clocks: real_before <= child's wall clock - offset <= real_after.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.clocks import SHIM_ENV, WallClock
from tests.unit.shim_child import ShimChild

HOUR = 3600.0
SLACK_S = 0.05  # rounding of the coarse clocks and of float seconds

# Each request line names what to read; the answer is one line of floats.
CHILD = r"""
import ctypes, sys, time
libc = ctypes.CDLL(None)
libc.time.restype = ctypes.c_long
class Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]
REALTIME_COARSE, MONOTONIC_RAW, MONOTONIC_COARSE, BOOTTIME = 5, 4, 6, 7
for line in sys.stdin:
    if line.strip() == "sleep":
        t0 = time.monotonic()
        time.sleep(0.05)
        print(time.monotonic() - t0, flush=True)
        continue
    tv = Timeval()
    rc = libc.gettimeofday(ctypes.byref(tv), None)
    assert rc == 0, rc
    print(
        time.time(),
        time.clock_gettime(REALTIME_COARSE),
        tv.tv_sec + tv.tv_usec / 1e6,
        libc.time(None),
        time.monotonic(),
        time.clock_gettime(MONOTONIC_RAW),
        time.clock_gettime(MONOTONIC_COARSE),
        time.clock_gettime(BOOTTIME),
        flush=True,
    )
"""

WALL = ("time.time", "CLOCK_REALTIME_COARSE", "gettimeofday", "time()")
STEADY = ("time.monotonic", "CLOCK_MONOTONIC_RAW", "CLOCK_MONOTONIC_COARSE", "CLOCK_BOOTTIME")
STEADY_IDS = (time.CLOCK_MONOTONIC, 4, 6, 7)


class Child(ShimChild):
    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(CHILD, env)

    def numbers(self, what: str) -> list[float]:
        """The answer to ``what`` as floats."""
        return [float(x) for x in self.ask(what)]


@pytest.fixture
def clock(tmp_path: Path) -> Iterator[WallClock]:
    c = WallClock(str(tmp_path / "offset"))
    yield c
    c.close()


@pytest.fixture
def child(clock: WallClock) -> Iterator[Child]:
    ch = Child(clock.env())
    yield ch
    ch.close()


def read_bracketed(child: Child) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """The child's clocks, and the parent's real (wall, steady) before and after."""
    before_wall = time.time()
    before_steady = [time.clock_gettime(c) for c in STEADY_IDS]
    values = child.numbers("read")
    after_steady = [time.clock_gettime(c) for c in STEADY_IDS]
    after_wall = time.time()
    names = (*WALL, *STEADY)
    bounds = {n: (before_wall, after_wall) for n in WALL}
    bounds |= {n: (b, a) for n, b, a in zip(STEADY, before_steady, after_steady, strict=True)}
    return dict(zip(names, values, strict=True)), bounds


def assert_offset(child: Child, offset_s: float) -> None:
    seen, bounds = read_bracketed(child)
    for name in WALL:
        lo, hi = bounds[name]
        slack = 1.0 if name == "time()" else SLACK_S  # time() has whole seconds
        assert lo + offset_s - slack <= seen[name] <= hi + offset_s + slack, (
            f"{name} = {seen[name]:.3f}, expected real time {offset_s:+.0f} s "
            f"({lo + offset_s:.3f}..{hi + offset_s:.3f})"
        )
    for name in STEADY:
        lo, hi = bounds[name]
        assert lo - SLACK_S <= seen[name] <= hi + SLACK_S, (
            f"{name} = {seen[name]:.3f} moved: expected {lo:.3f}..{hi:.3f} (never shifted)"
        )


def test_the_wall_clock_is_shifted_and_the_monotonic_clocks_are_not(
    clock: WallClock, tmp_path: Path
) -> None:
    clock.set(HOUR)
    ch = Child(clock.env())  # started with the offset already in the file
    try:
        assert_offset(ch, HOUR)
    finally:
        ch.close()


def test_sleep_works_under_the_shim(clock: WallClock, child: Child) -> None:
    clock.set(-HOUR)
    [slept] = child.numbers("sleep")
    assert 0.05 <= slept < 2.0, f"time.sleep(0.05) slept {slept:.3f} s"


def test_a_change_of_the_offset_is_seen_by_a_running_process(
    clock: WallClock, child: Child
) -> None:
    assert_offset(child, 0.0)
    clock.set(HOUR + 0.25)  # a step forward, a fraction included
    assert clock.offset_s == HOUR + 0.25
    assert_offset(child, HOUR + 0.25)
    clock.set(-7.5)  # and back behind real time (negative nanoseconds carried)
    assert_offset(child, -7.5)
    clock.set(0)
    assert_offset(child, 0.0)


def test_without_an_offset_file_the_clock_is_real(clock: WallClock, tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"\1\2\3")  # under 8 bytes: ignored, not mapped past its end
    for path in (str(tmp_path / "absent"), str(short)):
        ch = Child({**clock.env(), SHIM_ENV: path})
        try:
            assert_offset(ch, 0.0)
        finally:
            ch.close()
