"""One version: ``coord.__version__`` (what the servers report, and what ``coordctl
--version`` and ``coord --version`` print without asking importlib.metadata: start-up
time, issue 18) is pyproject.toml's."""

from __future__ import annotations

import tomllib
from pathlib import Path

from click.testing import CliRunner

import coord
from coord.cli.coord_main import main as coord_main
from coord.cli.coordctl import main as coordctl_main

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _project_version() -> str:
    version: str = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    return version


def test_version_is_pyprojects() -> None:
    assert coord.__version__ == _project_version(), (
        "coord/__init__.py's __version__ and pyproject.toml's [project] version differ"
    )


def test_the_commands_print_it() -> None:
    for main, name in ((coordctl_main, "coordctl"), (coord_main, "coord")):
        r = CliRunner().invoke(main, ["--version"], prog_name=name)
        assert r.exit_code == 0, r.output
        assert r.output == f"{name}, version {_project_version()}\n"
