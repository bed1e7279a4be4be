"""Fixtures shared by the integration tests (the cluster fixtures are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from coord.testing import LocalCluster

from .members import Members, members_fixture
from .support import ClusterFactory


@pytest.fixture
def members(
    request: pytest.FixtureRequest, cluster: LocalCluster, tmp_path: Path
) -> Iterator[Members]:
    """Member processes against the test module's ``cluster`` fixture; their output is
    printed when the test failed."""
    yield from members_fixture(request, cluster, str(tmp_path / "members"))


@pytest.fixture
def own_cluster(cluster_factory: ClusterFactory) -> LocalCluster:
    """A 3-node cluster of this test only (for a test that breaks or kills it)."""
    c = cluster_factory(3)
    c.wait_for_leader()
    return c


@pytest.fixture
def own_members(
    request: pytest.FixtureRequest, own_cluster: LocalCluster, tmp_path: Path
) -> Iterator[Members]:
    """Member processes against the test's ``own_cluster``."""
    yield from members_fixture(request, own_cluster, str(tmp_path / "own-members"))
