"""Fixtures shared by the integration tests (the cluster fixtures are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from coord.testing import LocalCluster

from .members import Members, members_fixture


@pytest.fixture
def members(
    request: pytest.FixtureRequest, cluster: LocalCluster, tmp_path: Path
) -> Iterator[Members]:
    """Member processes against the test module's ``cluster`` fixture; their output is
    printed when the test failed."""
    yield from members_fixture(request, cluster, str(tmp_path / "members"))
