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
