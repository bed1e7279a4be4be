"""In-process fixtures: ``cluster`` here is three real RaftNodes over the in-memory
network (tests/inproc/memory_raft.py), started, closed after the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inproc.memory_raft import MemoryCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[MemoryCluster]:
    c = MemoryCluster(tmp_path)
    c.start_all()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(autouse=True)
def no_tick_raises(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A Raft tick that raises is abandoned halfway (pysyncobj logs it, sleeps and ticks
    again): whatever the test then sees happened for the wrong reason. Every test here
    fails on one."""
    yield
    failed = [r for r in caplog.get_records("call") if r.getMessage().startswith("failed _onTick")]
    assert not failed, f"{len(failed)} Raft ticks raised, the first: {failed[0].exc_text}"
