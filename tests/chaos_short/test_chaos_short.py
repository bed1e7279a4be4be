"""The short chaos subset in the default test run: a few scenarios, one fault cycle
each, through the real Toxiproxy server; the full suite is ``make chaos``."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos import run
from chaos.toxiproxy import Toxiproxy


@pytest.mark.parametrize("name", run.SHORT)
def test_short_scenario_has_no_violations(toxi: Toxiproxy, tmp_path: Path, name: str) -> None:
    (sc,) = [s for s in run.SCENARIOS if s.name == name]
    row = run.run_scenario(toxi, sc, seed=1, cycles=1, workdir=str(tmp_path))
    assert row.violations == [], "\n".join(row.violations)
    assert row.operations > 100, "the workload did not run"
    assert row.recovered_after_s is not None
