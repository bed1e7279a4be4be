"""coordctl starts without grpc (issue 18): importing it, ``--version`` and ``--help``
import neither grpc nor the generated code, and ``--help`` still lists every command
(the ones defined outside ctl.py are registered when used: coordctl.LAZY).

Each check runs in a fresh interpreter: this one has imported everything already."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Nothing of these may be imported by `import coord.cli.coordctl`, `--version`, `--help`.
HEAVY = ("grpc", "coord.v1", "google.protobuf", "coord.server", "coord.raft", "cryptography")


def _modules_after(code: str, tmp_path: Path) -> tuple[list[str], str]:
    """Run ``code`` in a fresh interpreter; the modules it had imported at exit, and
    its stdout."""
    out = tmp_path / "modules.json"
    prelude = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: open({str(out)!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", prelude + code],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    modules: list[str] = json.loads(out.read_text())
    return modules, r.stdout


def _heavy(modules: list[str], packages: tuple[str, ...] = HEAVY) -> list[str]:
    """The modules that are one of ``packages`` or inside one."""
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)]


def test_importing_coordctl_imports_no_grpc(tmp_path: Path) -> None:
    modules, _ = _modules_after("import coord.cli.coordctl", tmp_path)
    assert "coord.cli.ctl" in modules
    assert _heavy(modules) == [], "an eager import came back (see coord/cli/ctl.py)"


@pytest.mark.parametrize(
    ("args", "shows"),
    [(["--version"], "coordctl, version "), (["--help"], "Commands:"),
     (["kv", "--help"], "txn"), (["leader", "--help"], "transfer")],
)  # fmt: skip
def test_version_and_help_import_no_grpc(tmp_path: Path, args: list[str], shows: str) -> None:
    code = f"from coord.cli.coordctl import main\nmain({args!r}, prog_name='coordctl')\n"
    modules, stdout = _modules_after(code, tmp_path)
    assert shows in stdout
    assert _heavy(modules) == []
    lazy = sorted({m for m in modules if m.startswith("coord.cli.ctl_")})
    assert lazy == [], f"{' '.join(args)} imported {lazy}"


HELP_CHECK = """
import importlib, json, pkgutil
from click.testing import CliRunner
import coord.cli
from coord.cli.coordctl import LAZY, main

def helps():
    out = {}
    for path in ([], ["kv"], ["leader"]):
        r = CliRunner().invoke(main, [*path, "--help"], env={"COORDCTL_ENDPOINTS": None})
        assert r.exit_code == 0, r.output
        out[" ".join(path)] = r.output
    return out

lazy = helps()
lazy_names = sorted(main.commands)
for m in pkgutil.iter_modules(coord.cli.__path__):
    if m.name.startswith("ctl_"):
        importlib.import_module("coord.cli." + m.name)
unregistered = [
    (g.name, n, module) for g, n, module, _ in LAZY if not dict.__contains__(g.commands, n)
]
print(json.dumps({"lazy": lazy, "eager": helps(), "unregistered": unregistered,
                  "lazy_names": lazy_names, "eager_names": sorted(dict.keys(main.commands))}))
"""


def test_help_lists_every_command_as_if_all_were_imported() -> None:
    r = subprocess.run(
        [sys.executable, "-c", HELP_CHECK], check=False, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["unregistered"] == [], "coordctl.LAZY names a command its module does not define"
    assert doc["lazy_names"] == doc["eager_names"], (
        "a command defined outside ctl.py is missing from coordctl.LAZY"
    )
    assert len(doc["eager_names"]) >= 20
    for path, text in doc["eager"].items():
        # The help kept in coordctl.LAZY is the commands' own (first sentence).
        assert doc["lazy"][path] == text, f"coordctl {path} --help differs: update coordctl.LAZY"


def test_the_client_library_imports_no_server_code(tmp_path: Path) -> None:
    """What a command that dials imports: the client, never the server's side (nor
    coord.config's yaml: Credentials imports it only to check a token's endpoint)."""
    modules, _ = _modules_after("from coord.client import Client, Session", tmp_path)
    assert "grpc" in modules
    server_side = ("coord.server", "coord.raft", "coord.state", "coord.cli", "yaml")
    assert _heavy(modules, server_side) == []
