"""deploy/ is valid, and everything it passes to coord is something coord accepts.

- Compose files: the compose specification's schema, vendored by check-jsonschema
  (``--builtin-schema vendor.compose-spec``).
- Kubernetes manifests: ``kubernetes-validate --strict`` against a pinned Kubernetes
  version (unknown fields are errors).
- The systemd unit: ``systemd-analyze verify`` (any warning fails) and its offline
  security score, when systemd-analyze is installed; its hardening keys always.
- The Dockerfile: its base, user, pinned install, health check and build context.
- Cross-check: every ``coord`` command line (systemd ExecStart, Dockerfile CMD,
  compose command, the StatefulSet's args, ``coord serve`` lines of docs/deploy.md) is
  parsed by ``coord serve``'s own option parser; every COORD_* variable (unit, env
  example, Dockerfile, compose, StatefulSet) is one ``coord.config.from_env`` reads or
  an option's envvar (COORDCTL_* ones: coordctl's); every configuration file (systemd,
  compose, the ConfigMap) loads with ``coord.config.load_yaml``, which refuses unknown
  keys, and builds into a valid node configuration, cluster by cluster. The same
  checks are run on copies with typos planted, which must fail.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from coord import config
from coord.cli import coord_main, coordctl
from coord.errors import CoordError

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
# The validators (pinned in constraints.txt) and the Kubernetes version checked against.
CHECK_JSONSCHEMA = str(BIN / "check-jsonschema")
KUBERNETES_VALIDATE = str(BIN / "kubernetes-validate")
KUBERNETES_VERSION = "1.32.0"

COMPOSE_FILES = sorted((DEPLOY / "docker").glob("compose-*.yaml"))
K8S_FILES = sorted((DEPLOY / "kubernetes").rglob("*.yaml"))
UNIT = DEPLOY / "systemd" / "coord.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "coord.env.example"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
ENTRYPOINT = DEPLOY / "docker" / "entrypoint.sh"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
# Variables the image's entrypoint consumes itself (it turns them into COORD_* ones).
ENTRYPOINT_VARS = {"COORD_CLUSTER_SECRET_FILE": "COORD_CLUSTER_SECRET"}


def run(cmd: list[str], timeout: float = 60.0, **kw: Any) -> subprocess.CompletedProcess[str]:
    if cmd[0] in (CHECK_JSONSCHEMA, KUBERNETES_VALIDATE) and not Path(cmd[0]).exists():
        pytest.fail(
            f"{Path(cmd[0]).name} is not installed in this venv: it comes with the dev extras "
            "(pip install -e '.[dev]' -c constraints.txt)"
        )
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False,
        stdin=subprocess.DEVNULL, **kw,
    )  # fmt: skip


# -- schema validation -------------------------------------------------------------------


def test_deploy_files_exist() -> None:
    assert [p.name for p in COMPOSE_FILES] == ["compose-3.yaml", "compose-5.yaml"]
    kinds = {d["kind"] for p in K8S_FILES for d in yaml.safe_load_all(p.read_text()) if d}
    assert {"StatefulSet", "Service", "PodDisruptionBudget", "ConfigMap", "Secret"} <= kinds


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_matches_the_compose_spec(path: Path) -> None:
    p = run([CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", str(path)])
    assert p.returncode == 0, p.stdout + p.stderr


def test_kubernetes_manifests_validate_strictly() -> None:
    files = [str(p) for p in K8S_FILES]
    p = run([KUBERNETES_VALIDATE, "--strict", "-k", KUBERNETES_VERSION, *files])
    assert p.returncode == 0, p.stdout + p.stderr
    resources = sum(1 for f in K8S_FILES for d in yaml.safe_load_all(f.read_text()) if d)
    assert p.stdout.count(" passed for resource ") + p.stderr.count(" passed for resource ") == (
        resources
    ), p.stdout + p.stderr


def test_the_validators_refuse_typos(tmp_path: Path) -> None:
    """What the two tests above rely on: a misspelled key fails validation."""
    compose = tmp_path / "compose.yaml"
    compose.write_text(COMPOSE_FILES[0].read_text().replace("healthcheck:", "healthchek:", 1))
    p = run([CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", str(compose)])
    assert p.returncode != 0, "check-jsonschema accepted a misspelled compose key"
    sts = tmp_path / "sts.yaml"
    sts.write_text(
        (DEPLOY / "kubernetes" / "30-statefulset.yaml")
        .read_text()
        .replace("readinessProbe:", "readinesProbe:")
    )
    p = run([KUBERNETES_VALIDATE, "--strict", "-k", KUBERNETES_VERSION, str(sts)])
    assert p.returncode != 0, "kubernetes-validate accepted a misspelled field"


# -- systemd -----------------------------------------------------------------------------


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (a key may repeat); continuation lines joined."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in re.sub(r"\\\n", " ", text).splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE in [{section}]: {line!r}"
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def test_systemd_unit_hardening() -> None:
    unit = parse_unit(UNIT.read_text())
    svc = unit["Service"]

    def one(key: str) -> str:
        assert key in svc, f"coord.service has no {key}="
        return svc[key][-1]

    assert one("User") not in ("", "root") or one("DynamicUser") == "yes"
    assert one("ProtectSystem") == "strict"
    assert "/var/lib/coord" in one("ReadWritePaths").split()
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert one(key) == "yes", key
    assert one("CapabilityBoundingSet") == ""
    assert one("RestrictAddressFamilies").split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert "@system-service" in svc["SystemCallFilter"][0].split()
    assert int(one("LimitNOFILE")) >= 65536
    assert one("Restart") == "on-failure"
    assert one("TimeoutStopSec")
    env_file = one("EnvironmentFile").lstrip("-")
    assert env_file == "/etc/coord/coord.env"
    assert "cluster-secret" not in one("ExecStart"), "the secret belongs in the env file"
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at this venv's coord.
    unit = tmp_path / "coord.service"
    unit.write_text(UNIT.read_text().replace("/opt/coord/bin/coord", str(BIN / "coord")))
    p = run(["systemd-analyze", "verify", str(unit)])
    # verify exits 0 on unknown keys and bad values: any message is a failure.
    assert p.returncode == 0 and not (p.stdout + p.stderr).strip(), p.stdout + p.stderr
    p = run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)])
    m = re.search(r"Overall exposure level for coord.service: ([\d.]+)", p.stdout + p.stderr)
    assert m, p.stdout + p.stderr
    assert float(m.group(1)) <= 2.0, f"exposure {m.group(1)}:\n{p.stdout}"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_systemd_analyze_catches_a_typo(tmp_path: Path) -> None:
    unit = tmp_path / "coord.service"
    unit.write_text(
        UNIT.read_text()
        .replace("/opt/coord/bin/coord", str(BIN / "coord"))
        .replace("ProtectSystem=", "ProtectSytem=")
    )
    p = run(["systemd-analyze", "verify", str(unit)])
    assert "ProtectSytem" in p.stdout + p.stderr


# -- Dockerfile --------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for raw in joined.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerignore_allows(path: str) -> bool:
    """Does deploy/docker/Dockerfile.dockerignore (an allowlist) let ``path`` in?"""
    allowed = False
    for raw in (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().splitlines():
        pat = raw.strip()
        if not pat or pat.startswith("#"):
            continue
        negate = pat.startswith("!")
        pat = pat.lstrip("!")
        if pat in ("*", path) or path.startswith(pat + "/"):
            allowed = negate
    return allowed


def test_dockerfile() -> None:
    ins = dockerfile_instructions(DOCKERFILE.read_text())
    args = dict(a.split("=", 1) for w, a in ins if w == "ARG" and "=" in a)
    bases = [a.split()[0] for w, a in ins if w == "FROM"]
    for base in bases:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        assert image.startswith("python:3.11-slim"), image
    users = [a for w, a in ins if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    runs = " ".join(a for w, a in ins if w == "RUN")
    assert "--constraint constraints.txt" in runs, "install with the pinned constraints"
    health = [a for w, a in ins if w == "HEALTHCHECK"]
    assert len(health) == 1 and '"coord-healthcheck"' in health[0], health
    copies = [a.split() for w, a in ins if w == "COPY" and not a.startswith("--from")]
    for *sources, dest in copies:
        for src in sources:
            assert (REPO / src).exists(), f"COPY {src}: not in the repository"
            assert dockerignore_allows(src), f"COPY {src}: excluded from the build context"
        if dest.endswith("coord-healthcheck"):
            assert sources == ["deploy/docker/healthcheck.py"]
    for needed in ("pyproject.toml", "constraints.txt", "README.md", "coord"):
        assert dockerignore_allows(needed), needed
    assert not dockerignore_allows(".venv") and not dockerignore_allows("tests")
    exposed = {int(p) for w, a in ins if w == "EXPOSE" for p in a.split()}
    assert exposed == {2379, 2380, 9479}


def test_entrypoint_turns_the_secret_file_into_the_variable(tmp_path: Path) -> None:
    """The image's entrypoint, with a stand-in ``coord`` that prints what it was given."""
    fake = tmp_path / "bin" / "coord"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "args=$*"\nenv | grep "^COORD_" | sort\n')
    fake.chmod(0o755)
    secret = tmp_path / "cluster_secret"
    secret.write_text("s3cret value\n\n")
    env = {
        "PATH": f"{fake.parent}:/usr/bin:/bin",
        "COORD_CLUSTER_SECRET_FILE": str(secret),
        "COORD_CONFIG": "/etc/coord/coord.yaml",
    }
    p = run(["sh", str(ENTRYPOINT), "serve", "--log-level", "DEBUG"], env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        "args=serve --log-level DEBUG",
        "COORD_CLUSTER_SECRET=s3cret value",
        "COORD_CONFIG=/etc/coord/coord.yaml",
    ]
    env["COORD_CLUSTER_SECRET_FILE"] = str(tmp_path / "missing")
    assert run(["sh", str(ENTRYPOINT), "serve"], env=env).returncode != 0


def load_healthcheck() -> Any:
    spec = importlib.util.spec_from_file_location(
        "coord_healthcheck", DEPLOY / "docker" / "healthcheck.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("config_file", "dial", "name"),
    [
        (DEPLOY / "docker" / "config" / "3-nodes" / "n2.yaml", "127.0.0.1:2379", "n2"),
        (DEPLOY / "docker" / "config" / "5-nodes" / "n5.yaml", "127.0.0.1:2379", "n5"),
        (DEPLOY / "config" / "3-nodes" / "n3.yaml", "10.0.0.3:2379", "10.0.0.3"),
    ],
    ids=lambda v: str(v.relative_to(DEPLOY)) if isinstance(v, Path) else None,
)
def test_healthcheck_dials_the_node_by_its_certificate_name(
    config_file: Path, dial: str, name: str
) -> None:
    """The image's health check reads the node's own file (COORD_CONFIG): the address it
    listens on (loopback for a wildcard) and the name its certificate carries. (The
    netns test runs it against live TLS nodes.)"""
    hc = load_healthcheck()
    settings = hc.node_settings({"COORD_CONFIG": str(config_file)})
    assert hc.target(settings) == (dial, name)
    # COORD_* variables override the file, as for coord serve.
    env = {"COORD_CONFIG": str(config_file), "COORD_LISTEN_API": "0.0.0.0:3379"}
    assert hc.target(hc.node_settings(env)) == ("127.0.0.1:3379", name)
    ok, message = hc.check({"COORD_CONFIG": str(config_file), "COORD_NODE_ID": "nX"})
    assert not ok and "not among the configured peers" in message


# -- cross-check: what deploy/ passes to coord ---------------------------------------------


@dataclasses.dataclass
class Invocation:
    """One way deploy/ starts coord: a command line, environment variables, config files."""

    source: str
    args: list[str] | None = None  # after the program name; None: not a command line
    env: list[str] = dataclasses.field(default_factory=list)  # variable names
    configs: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (where, YAML)


def _serve_option_envvars() -> set[str]:
    out: set[str] = set()
    for param in coord_main.serve.params:
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str):
            out.add(envvar)
        elif envvar:
            out.update(envvar)
    return out


def _coordctl_envvars() -> set[str]:
    out: set[str] = set()
    for param in coordctl.main.params:
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str):
            out.add(envvar)
    return out


def coord_accepts_env(name: str) -> bool:
    """Does ``coord serve`` read this variable? Asks coord's own loader."""
    if name in _serve_option_envvars():
        return True
    try:
        return bool(config.from_env({name: "n1=127.0.0.1:1,127.0.0.1:2"}))
    except CoordError:
        return True  # it read it (and disliked the sample value)


def check_invocation(inv: Invocation, tmp: Path) -> list[str]:
    """What in ``inv`` coord would refuse (empty: nothing)."""
    problems: list[str] = []
    if inv.args is not None:
        if not inv.args or inv.args[0] != "serve":
            problems.append(f"{inv.source}: runs `coord {' '.join(inv.args)}`, not serve")
        else:
            try:
                coord_main.serve.make_context("serve", list(inv.args[1:]))
            except click.ClickException as e:
                problems.append(f"{inv.source}: coord serve {inv.args[1:]}: {e.format_message()}")
    for name in inv.env:
        if name.startswith("COORDCTL_"):
            if name not in _coordctl_envvars():
                problems.append(f"{inv.source}: coordctl reads no variable {name}")
        elif name.startswith("COORD_"):
            actual = ENTRYPOINT_VARS.get(name, name)
            if not coord_accepts_env(actual):
                problems.append(f"{inv.source}: coord serve reads no variable {name}")
    for where, text in inv.configs:
        path = tmp / f"config-{abs(hash((inv.source, where)))}.yaml"
        path.write_text(text)
        try:
            config.load_yaml(str(path))
        except CoordError as e:
            problems.append(f"{inv.source}: {where}: {e.message.replace(str(path), '')}")
    return problems


Reader = Callable[[Path], str]


def systemd_invocations(read: Reader) -> list[Invocation]:
    unit = parse_unit(read(UNIT))
    svc = unit["Service"]
    words = shlex.split(svc["ExecStart"][-1].lstrip("-@:+!"))
    assert Path(words[0]).name == "coord", words
    env = [w.split("=", 1)[0] for v in svc.get("Environment", []) for w in shlex.split(v)]
    env += [
        line.split("=", 1)[0].strip()
        for line in read(ENV_EXAMPLE).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    configs = [
        (str(p.relative_to(REPO)), read(p)) for p in sorted((DEPLOY / "config").glob("*/*.yaml"))
    ]
    return [Invocation("deploy/systemd/coord.service", words[1:], env, configs)]


def dockerfile_invocations(read: Reader) -> list[Invocation]:
    ins = dockerfile_instructions(read(DOCKERFILE))
    env: list[str] = []
    for word, rest in ins:
        if word == "ENV":
            env += [w.split("=", 1)[0] for w in shlex.split(rest)]
    cmd = [yaml.safe_load(a) for w, a in ins if w == "CMD"][-1]
    return [Invocation("deploy/docker/Dockerfile", cmd, env)]


def compose_invocations(path: Path, read: Reader) -> list[Invocation]:
    doc = yaml.safe_load(read(path))
    out = []
    for name, svc in doc["services"].items():
        env = svc.get("environment") or {}
        names = list(env) if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
        configs = []
        for ref in svc.get("configs") or ():
            source = doc["configs"][ref["source"]]["file"]
            configs.append((source, read((path.parent / source).resolve())))
            config_env = env.get("COORD_CONFIG") if isinstance(env, dict) else None
            assert ref["target"] == (config_env or "/etc/coord/coord.yaml"), ref
        out.append(Invocation(f"{path.name} service {name}", svc.get("command"), names, configs))
    return out


def kubernetes_invocations(docs: Iterable[dict[str, Any]]) -> list[Invocation]:
    docs = [d for d in docs if d]
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    out = []
    for sts in (d for d in docs if d["kind"] == "StatefulSet"):
        pod = sts["spec"]["template"]["spec"]
        assert pod.get("enableServiceLinks") is False, (
            "service links would add COORD_* variables of the service named coord"
        )
        mounts_cm = {
            v["name"]: configmaps[v["configMap"]["name"]]
            for v in pod["volumes"]
            if "configMap" in v
        }
        for c in pod["containers"]:
            env = [e["name"] for e in c.get("env", ())]
            mounted = {
                m["mountPath"]: mounts_cm[m["name"]]
                for m in c["volumeMounts"]
                if m["name"] in mounts_cm
            }
            values = {e["name"]: e.get("value", "") for e in c.get("env", ())}
            for ordinal in range(sts["spec"]["replicas"] + 2):  # up to 5 nodes
                values["POD_INDEX"] = str(ordinal)
                args = [
                    re.sub(r"\$\((\w+)\)", lambda m, v=values: v[m.group(1)], a) for a in c["args"]
                ]
                configs = []
                if "--config" in args:
                    path = args[args.index("--config") + 1]
                    cm = mounted[os.path.dirname(path)]
                    key = os.path.basename(path)
                    assert key in cm["data"], f"pod {ordinal} reads {key}: not in the ConfigMap"
                    configs.append((f"ConfigMap {key}", cm["data"][key]))
                out.append(Invocation(f"StatefulSet pod {ordinal}", args, env, configs))
    return out


def docs_invocations(read: Reader) -> list[Invocation]:
    """``coord serve`` command lines in the fenced code blocks of docs/deploy.md."""
    out = []
    blocks = re.findall(r"^\s*```[^\n]*\n(.*?)^\s*```", read(DEPLOY_DOC), re.MULTILINE | re.DOTALL)
    joined = re.sub(r"\\\n\s*", " ", "\n".join(blocks))
    for line in joined.splitlines():
        m = re.search(r"(?:^|\s)coord (serve\b.*)$", line.strip())
        if m and "coordctl" not in line:
            words = [w for w in shlex.split(m.group(1), comments=True) if w != "..."]
            out.append(Invocation(f"docs/deploy.md: {line.strip()}", words))
    return out


def all_invocations(read: Reader = Path.read_text) -> list[Invocation]:
    invs = systemd_invocations(read) + dockerfile_invocations(read)
    for path in COMPOSE_FILES:
        invs += compose_invocations(path, read)
    invs += kubernetes_invocations(d for p in K8S_FILES for d in yaml.safe_load_all(read(p)))
    invs += docs_invocations(read)
    return invs


def test_deploy_passes_coord_only_what_it_accepts(tmp_path: Path) -> None:
    invs = all_invocations()
    problems = [p for inv in invs for p in check_invocation(inv, tmp_path)]
    assert not problems, "\n".join(problems)
    # The cross-check saw every kind of file, with real content.
    sources = " ".join(inv.source for inv in invs)
    for kind in ("coord.service", "Dockerfile", "compose-3", "compose-5", "StatefulSet", "docs/"):
        assert kind in sources, kind
    # systemd 3 + 5, compose 3 + 5, Kubernetes n0..n4.
    assert sum(len(inv.configs) for inv in invs) == 8 + 8 + 5
    names = {n for inv in invs for n in inv.env}
    assert {"COORD_CLUSTER_SECRET", "COORD_CLUSTER_SECRET_FILE", "COORD_CONFIG"} <= names
    # The entrypoint does consume the variables the cross-check lets through for it.
    for name in ENTRYPOINT_VARS:
        assert name in ENTRYPOINT.read_text()


@pytest.mark.parametrize(
    ("path", "good", "bad", "expect"),
    [
        (UNIT, "--config /etc/coord", "--confg /etc/coord", "--confg"),
        (ENV_EXAMPLE, "COORD_CLUSTER_SECRET=", "COORD_CLUSTER_SECRT=", "COORD_CLUSTER_SECRT"),
        (DOCKERFILE, 'CMD ["serve"]', 'CMD ["serv"]', "coord serv`"),
        (DOCKERFILE, "COORD_CONFIG=", "COORD_CONFIGFILE=", "COORD_CONFIGFILE"),
        (
            COMPOSE_FILES[0],
            "COORD_CLUSTER_SECRET_FILE:",
            "COORD_CLUSTER_SECRET_FIEL:",
            "COORD_CLUSTER_SECRET_FIEL",
        ),
        (
            COMPOSE_FILES[1],
            'command: ["serve"]',
            'command: ["serve", "--listen-htp", "x:1"]',
            "--listen-htp",
        ),
        (
            DEPLOY / "kubernetes" / "30-statefulset.yaml",
            '"--config"',
            '"--config-file"',
            "--config-file",
        ),
        (
            DEPLOY / "kubernetes" / "30-statefulset.yaml",
            "COORDCTL_CACERT",
            "COORDCTL_CA",
            "variable COORDCTL_CA",
        ),
        (
            DEPLOY / "kubernetes" / "10-configmap.yaml",
            "listen_http:",
            "listen_htp:",
            "'listen_htp'",
        ),
        (
            DEPLOY / "config" / "3-nodes" / "n2.yaml",
            "auth_tokens_file:",
            "auth_token_file:",
            "'auth_token_file'",
        ),
        (DEPLOY / "config" / "5-nodes" / "n5.yaml", "  heartbeat_s", "  heartbeat", "'heartbeat'"),
        (
            DEPLOY / "docker" / "config" / "5-nodes" / "n5.yaml",
            "backup_dir",
            "backup_directory",
            "'backup_directory'",
        ),
        (
            DEPLOY_DOC,
            "initial-cluster-state existing",
            "initial-cluster-state exisitng",
            "exisitng",
        ),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else None,
)
def test_cross_check_catches_a_typo(
    path: Path, good: str, bad: str, expect: str, tmp_path: Path
) -> None:
    """Plant one typo in one deploy file: the cross-check must report it."""
    text = path.read_text()
    assert good in text, f"{path} has no {good!r} to misspell"

    def read(p: Path) -> str:
        return text.replace(good, bad, 1) if p.resolve() == path.resolve() else p.read_text()

    problems = [p for inv in all_invocations(read) for p in check_invocation(inv, tmp_path)]
    assert any(expect in p for p in problems), (
        f"a typo in {path.name} ({bad!r}) went unnoticed: {problems}"
    )


# -- every node configuration is a valid node of its cluster ------------------------------------


def cluster_sets() -> dict[str, list[tuple[str, str]]]:
    """cluster -> [(file, YAML)] for every example cluster."""
    out: dict[str, list[tuple[str, str]]] = {}
    for d in sorted((DEPLOY / "config").iterdir()) + sorted(
        (DEPLOY / "docker" / "config").iterdir()
    ):
        out[str(d.relative_to(REPO))] = [(p.name, p.read_text()) for p in sorted(d.glob("n*.yaml"))]
    cm = yaml.safe_load((DEPLOY / "kubernetes" / "10-configmap.yaml").read_text())
    out["kubernetes"] = sorted(cm["data"].items())
    return out


FILE_KEYS = ("tls_cert", "tls_key", "tls_ca", "auth_tokens_file")


def build_node(text: str, tmp: Path) -> config.NodeConfig:
    """The NodeConfig ``coord serve --config`` would run with (TLS and token files
    replaced by empty stand-ins, the cluster secret given as COORD_CLUSTER_SECRET)."""
    path = tmp / "node.yaml"
    path.write_text(text)
    layer = config.load_yaml(str(path))
    for key in FILE_KEYS:
        assert layer.get(key), f"no {key}: TLS and tokens are required beyond loopback"
        stand_in = tmp / key
        stand_in.write_text("")
        layer[key] = str(stand_in)
    return config.build([layer, config.from_env({"COORD_CLUSTER_SECRET": "x" * 64})])


@pytest.mark.parametrize("cluster", sorted(cluster_sets()))
def test_node_configs_make_one_valid_cluster(cluster: str, tmp_path: Path) -> None:
    nodes = {name: build_node(text, tmp_path) for name, text in cluster_sets()[cluster]}
    ids = {name: cfg.node_id for name, cfg in nodes.items()}
    assert all(name == f"{nid}.yaml" for name, nid in ids.items()), ids
    boot = [cfg for cfg in nodes.values() if cfg.initial_cluster_state == "new"]
    assert len(boot) in (3, 5), [c.node_id for c in boot]
    # The bootstrap members agree on the members, the token and so the cluster id.
    assert {c.peers for c in boot} == {boot[0].peers}
    assert sorted(p.id for p in boot[0].peers) == sorted(c.node_id for c in boot)
    assert len({c.cluster_id for c in nodes.values()}) == 1, "nodes of two clusters"
    # Later members (Kubernetes n3, n4) list every earlier member, unchanged, and themselves.
    for cfg in nodes.values():
        if cfg.initial_cluster_state == "existing":
            assert cfg.explicit_cluster_id == boot[0].cluster_id
            assert cfg.peers[: len(boot[0].peers)] == boot[0].peers
            assert cfg.peers[-1].id == cfg.node_id
    for cfg in nodes.values():
        assert cfg.listen_http, f"{cfg.node_id}: no listen_http (probes, metrics)"
        assert cfg.data_dir.startswith("/var/lib/coord")
        assert cfg.tls_cert and cfg.auth_tokens_file
