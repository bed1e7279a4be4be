"""coordctl starts without grpc (issue 18): importing it, ``--version`` and ``--help``
import neither grpc nor the generated code, and ``--help`` still lists every command
(the ones defined outside ctl.py are registered when used: coordctl.LAZY). ``kv get``
and ``status`` import the client and the generated modules of the services they call
only; coordctl run as a program (``main()``) takes the garbage collector over, a caller
running it in its own process (``main([...])``, CliRunner) keeps its collector as it was.

Each check runs in a fresh interpreter: this one has imported everything already."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from coord.v1 import cluster_pb2, cluster_pb2_grpc, kv_pb2, kv_pb2_grpc

# Nothing of these may be imported by `import coord.cli.coordctl`, `--version`, `--help`.
HEAVY = ("grpc", "coord.v1", "google.protobuf", "coord.server", "coord.raft", "cryptography")


def _modules_after(code: str, tmp_path: Path) -> tuple[list[str], str]:
    """Run ``code`` in a fresh interpreter; the modules it had imported at exit, and
    its stdout."""
    out = tmp_path / "modules.json"
    prelude = (  # json is imported after the list is taken: the commands may need none
        "import atexit, sys\n"
        "def _dump():\n"
        "    modules = sorted(sys.modules)\n"
        "    import json\n"
        f"    open({str(out)!r}, 'w').write(json.dumps(modules))\n"
        "atexit.register(_dump)\n"
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


# What `kv get` and `status` need not import: the generated modules of the services they
# do not call, the client's other recipes, json (table output), importlib.metadata
# (--version reads coord.__version__), yaml and the server's side.
NOT_FOR_KV_GET = (
    "coord.v1.availability_pb2", "coord.v1.availability_pb2_grpc", "coord.v1.groups_pb2",
    "coord.v1.groups_pb2_grpc", "coord.v1.maintenance_pb2", "coord.v1.maintenance_pb2_grpc",
    "coord.v1.raft_pb2", "coord.v1.raft_pb2_grpc", "coord.v1.election_pb2",
    "coord.v1.election_pb2_grpc", "coord.client.session", "coord.client.election",
    "coord.client.group", "coord.client.fencing", "coord.client.balancer", "coord.config",
    "coord.state", "coord.server", "coord.raft", "coord.agent", "yaml", "cryptography",
    "json", "importlib.metadata", "google.protobuf.json_format",
)  # fmt: skip


class _Cluster(cluster_pb2_grpc.ClusterServicer):
    def __init__(self) -> None:
        self.address = ""

    def GetLeader(
        self, request: cluster_pb2.GetLeaderRequest, context: grpc.ServicerContext
    ) -> cluster_pb2.GetLeaderResponse:
        return cluster_pb2.GetLeaderResponse(leader_id="n1", leader_api_address=self.address)

    def Status(
        self, request: cluster_pb2.StatusRequest, context: grpc.ServicerContext
    ) -> cluster_pb2.StatusResponse:
        return cluster_pb2.StatusResponse(node_id="n1", role=cluster_pb2.ROLE_LEADER, term=1)


class _KV(kv_pb2_grpc.KVServicer):
    def Range(
        self, request: kv_pb2.RangeRequest, context: grpc.ServicerContext
    ) -> kv_pb2.RangeResponse:
        kv = kv_pb2.KeyValue(key=request.key, value=b"v1", mod_revision=7, version=1)
        return kv_pb2.RangeResponse(kvs=[kv], count=1)


@pytest.fixture(scope="module")
def node() -> Iterator[str]:
    """A fake node's address: it answers what `kv get` and `status` call (GetLeader,
    naming itself; Range; Status)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    cluster = _Cluster()
    cluster_pb2_grpc.add_ClusterServicer_to_server(cluster, server)
    kv_pb2_grpc.add_KVServicer_to_server(_KV(), server)
    cluster.address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    yield cluster.address
    server.stop(None)


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
    # --version prints coord.__version__ (tests/unit/test_version.py): no metadata lookup.
    assert _heavy(modules, ("importlib.metadata", "json", "dataclasses")) == []


@pytest.mark.parametrize(
    ("args", "shows"),
    [(["kv", "get", "app/key"], "app/key  v1"), (["status"], "leader")],
)  # fmt: skip
def test_kv_get_and_status_import_only_what_they_call(
    tmp_path: Path, node: str, args: list[str], shows: str
) -> None:
    argv = ["--endpoints", node, *args]
    code = f"from coord.cli.coordctl import main\nmain({argv!r}, prog_name='coordctl')\n"
    modules, stdout = _modules_after(code, tmp_path)
    assert shows in stdout
    assert {"coord.v1.cluster_pb2_grpc", "coord.v1.kv_pb2_grpc"} <= set(modules)
    extra = _heavy(modules, NOT_FOR_KV_GET)
    assert extra == [], f"{' '.join(args)} imported {extra} (coord/client/client.py, cli/output.py)"
    lazy = sorted({m for m in modules if m.startswith("coord.cli.ctl_")})
    assert lazy == [], f"{' '.join(args)} imported {lazy}"


def test_the_snapshot_and_consistency_commands_import_no_config_or_server(tmp_path: Path) -> None:
    # `coordctl snapshot save` and `consistency` are measured against etcdctl (bench/
    # backup.py): coord.config (its dataclasses, hashlib, yaml) cost them ~17 ms, the
    # state machine ~40 ms; they need neither.
    modules, _ = _modules_after(
        "import coord.cli.coordctl, coord.cli.ctl_nodes, coord.cli.ctl_backup", tmp_path
    )
    heavy = ("yaml", "coord.config", "coord.server", "coord.state.machine", "coord.agent")
    assert _heavy(modules, heavy) == []


GC_STATE = """
import gc, json, sys
from coord.cli.coordctl import main
sys.argv = ["coordctl", *ARGS]
try:
    main(*CALL)
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}))
"""


@pytest.mark.parametrize("args", [["--version"], ["kv", "txn", "--help"], ["kv", "get", "k"]])
def test_coordctl_as_the_program_freezes_its_imports(node: str, args: list[str]) -> None:
    """``main()`` (the console script, ``python -m``): the imports' objects are frozen
    (gc.freeze; again at exit), and the collector runs again after a lazy import."""
    argv = ["--endpoints", node, *args] if args[0] == "kv" else args
    code = GC_STATE.replace("ARGS", repr(argv)).replace("CALL", "()")
    r = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    state = json.loads(r.stdout.splitlines()[-1])
    assert state["code"] == 0
    assert state["enabled"] is True
    assert state["frozen"] > 1000


def test_coordctl_called_with_arguments_leaves_the_collector_alone(node: str) -> None:
    """``main([...])`` (a program or a test running coordctl in its own process): no
    freeze, the collector as it was, also across a lazy import and the client's."""
    argv = ["--endpoints", node, "kv", "get", "k"]
    code = GC_STATE.replace("ARGS", "[]").replace("CALL", f"({argv!r},)")
    r = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1]) == {"code": 0, "enabled": True, "frozen": 0}


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
