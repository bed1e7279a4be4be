"""Shared pytest machinery: remember each phase's outcome, print node logs on failure.

Integration tests get their clusters from :func:`cluster_factory` (one test) or
from :func:`module_cluster_factory` (shared by the tests of a module). Either way, when a
test fails, every node log of every cluster that test used is printed in its
report ("Captured stdout teardown"), and the clusters are always closed.
Clusters live under pytest's tmp dir, so their data dirs and logs also stay on
disk after a failed run (pytest keeps the last three base temp dirs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coord.testing import LocalCluster, phase_failed

ClusterFactory = Callable[..., LocalCluster]

# Module-scoped clusters that are running now: a failing test prints their logs too.
_SHARED: list[LocalCluster] = []


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Store each phase's report on the item (``item.rep_setup``/``rep_call``/...)."""
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``slow`` tests run only when a ``-m`` expression is given (``-m slow``, ``-m "slow or
    not slow"``); a plain run skips them, ``-m "not slow"`` deselects them."""
    if config.getoption("markexpr", ""):
        return
    skip = pytest.mark.skip(reason="slow: select with -m slow")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


def print_logs(clusters: list[LocalCluster], why: str) -> None:
    for c in clusters:
        print(f"\n===== coord node logs ({why}): cluster {c.base_dir} =====")
        print(c.logs())


def _new_cluster(base: Path, n: int, fsync: bool, **kwargs: Any) -> LocalCluster:
    base.mkdir(parents=True, exist_ok=False)
    return LocalCluster(n, base_dir=str(base), fsync=fsync, **kwargs)


@pytest.fixture
def cluster_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClusterFactory]:
    """Build and start LocalClusters for one test; logs printed on failure; always closed.

    ``cluster_factory(n=3, fsync=True, start=True, ready=True, **LocalCluster kwargs)``:
    with ``start``, the cluster is handed over ``ready`` (LocalCluster.wait_ready: a leader,
    and every member acknowledging), so a test may kill any one member at once.
    """
    made: list[LocalCluster] = []

    def make(
        n: int = 3, fsync: bool = True, start: bool = True, ready: bool = True, **kwargs: Any
    ) -> LocalCluster:
        c = _new_cluster(tmp_path / f"cluster{len(made)}", n, fsync, **kwargs)
        made.append(c)
        if start:
            c.start()
            if ready:
                c.wait_ready()
        return c

    try:
        yield make
    finally:
        if phase_failed(request.node):
            print_logs(made, f"{request.node.name} failed")
        for c in made:
            c.close()


@pytest.fixture(scope="module")
def module_cluster_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterFactory]:
    """Like :func:`cluster_factory`, for clusters shared by the tests of one module.

    A failing test prints their logs (see :func:`_shared_cluster_logs_on_failure`);
    they are closed when the module is done.
    """
    made: list[LocalCluster] = []

    def make(
        n: int = 3, fsync: bool = True, start: bool = True, ready: bool = True, **kwargs: Any
    ) -> LocalCluster:
        c = _new_cluster(tmp_path_factory.mktemp("shared") / "cluster", n, fsync, **kwargs)
        made.append(c)
        _SHARED.append(c)
        if start:
            c.start()
            if ready:
                c.wait_ready()
        return c

    try:
        yield make
    finally:
        for c in made:
            _SHARED.remove(c)
            c.close()


@pytest.fixture(scope="module")
def cluster(module_cluster_factory: ClusterFactory) -> LocalCluster:
    """A 3-node cluster with a leader, shared by one module's tests (a module may
    define its own ``cluster`` instead)."""
    c = module_cluster_factory(3)
    c.wait_ready()
    return c


@pytest.fixture(autouse=True)
def _shared_cluster_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a failed test, print the logs of the module-scoped clusters still running."""
    yield
    if _SHARED and phase_failed(request.node):
        print_logs(list(_SHARED), f"{request.node.name} failed")
