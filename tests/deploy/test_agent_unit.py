"""deploy/systemd/coord-agent.service: what it runs is what ``coord agent`` accepts, the
paths it names agree (with each other, its sysusers and env files, docs/deploy.md), it
does not restart on the agent's configuration exit codes, it is hardened, and
``systemd-analyze verify`` has nothing to say about it (when systemd-analyze is
installed). The checks of coord.service are in test_manifests.py."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from coord.agent.agent import STOP_SLACK_S
from coord.cli import coord_main
from coord.cli.agent import agent_command
from coord.cli.output import EXIT_CONFIG, EXIT_USAGE

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "deploy" / "systemd"
UNIT = SYSTEMD / "coord-agent.service"
SYSUSERS = SYSTEMD / "coord-agent.sysusers"
ENV_EXAMPLE = SYSTEMD / "coord-agent.env.example"
NODE_UNIT = SYSTEMD / "coord.service"
EXAMPLE_CONFIG = REPO / "deploy" / "haproxy" / "agent.yaml"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
BIN = Path(sys.executable).parent
MAX_DEFAULT_STOP_GRACE_S = 10.0  # coord.agent.config: min(ttl / 4, 10 s) by default


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


def service(path: Path) -> dict[str, list[str]]:
    return parse_unit(path.read_text())["Service"]


def one(svc: dict[str, list[str]], key: str) -> str:
    assert key in svc, f"no {key}="
    return svc[key][-1]


def exec_start(svc: dict[str, list[str]]) -> list[str]:
    return shlex.split(one(svc, "ExecStart").lstrip("-@:+!"))


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(s|min)?", value)
    assert m, f"not a duration this test reads: {value!r}"
    return int(m[1]) * (60 if m[2] == "min" else 1)


def installed_to(text: str) -> dict[str, str]:
    """``install ... SOURCE DEST`` lines of a text: deploy/ file name -> destination."""
    out = {}
    for line in text.splitlines():
        if not line.lstrip("# ").startswith("install "):
            continue
        words = shlex.split(line.lstrip("# "), comments=True)
        words = words[: words.index("&&")] if "&&" in words else words
        if words[:1] == ["install"] and "-d" not in words and len(words) >= 3:
            out[Path(words[-2]).name] = words[-1]
    return out


def test_the_unit_runs_what_coord_agent_accepts_with_paths_that_agree() -> None:
    svc = service(UNIT)
    words = exec_start(svc)
    assert words[0] == exec_start(service(NODE_UNIT))[0], "installed like coord.service"
    assert words[1] == "agent", words
    agent_command.make_context("agent", words[2:])  # click's parser: raises if refused
    config = words[words.index("--config") + 1]

    # The same command line, on the shipped example config, through the real CLI.
    args = [str(EXAMPLE_CONFIG) if w == config else w for w in words[1:]]
    r = CliRunner().invoke(coord_main.main, [*args, "--check-config"],
                           env={"COORDCTL_ENDPOINTS": None})  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["member"] == "db-1"

    # Where the header and docs/deploy.md install the files is where the unit reads them.
    env_file = one(svc, "EnvironmentFile").lstrip("-")
    for where, text in (
        ("the unit's header", UNIT.read_text()),
        ("docs/deploy.md", DEPLOY_DOC.read_text()),
    ):
        dest = installed_to(text)
        assert dest.get(EXAMPLE_CONFIG.name) == config, (where, dest)
        assert dest.get(ENV_EXAMPLE.name) == env_file, (where, dest)
        assert dest.get(UNIT.name) == f"/etc/systemd/system/{UNIT.name}", (where, dest)
        assert dest.get(SYSUSERS.name, "").startswith("/usr/lib/sysusers.d/"), (where, dest)
    assert ENV_EXAMPLE.read_text().startswith(f"# {env_file}:"), "the example names its path"
    sources = "".join(p.read_text() for p in (REPO / "coord" / "agent").glob("*.py"))
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name = line.split("=", 1)[0]
            assert f'"{name}"' in sources, f"coord agent reads no variable {name}"

    # The user: made by the sysusers file, home = the state directory, its one writable path.
    user = one(svc, "User")
    assert user not in ("", "root") and one(svc, "Group") == user
    (kind, name, _, _, home) = shlex.split(SYSUSERS.read_text(), comments=True)
    assert (kind, name) == ("u", user)
    state = [f"/var/lib/{d}" for d in one(svc, "StateDirectory").split()]
    assert one(svc, "ReadWritePaths").split() == state == [home]
    assert one(svc, "WorkingDirectory") in state


def test_the_unit_restarts_a_crash_but_not_a_bad_config(tmp_path: Path) -> None:
    svc = service(UNIT)
    assert one(svc, "Restart") == "on-failure"
    prevented = {int(code) for code in one(svc, "RestartPreventExitStatus").split()}
    assert {EXIT_USAGE, EXIT_CONFIG} <= prevented
    assert 0 not in prevented and 1 not in prevented  # a crash and a timeout restart
    bad = tmp_path / "agent.yaml"
    bad.write_text("endpoints: [127.0.0.1:1]\ngroup: g\nmember: m\nttl: 100ms\n")
    r = CliRunner().invoke(coord_main.main, ["agent", "--config", str(bad)],
                           env={"COORDCTL_ENDPOINTS": None})  # fmt: skip
    assert r.exit_code == EXIT_USAGE and "out of bounds" in r.output, r.output
    # SIGTERM: the agent exits by itself within stop_grace + STOP_SLACK_S.
    assert one(svc, "KillMode") == "mixed"
    assert seconds(one(svc, "TimeoutStopSec")) > MAX_DEFAULT_STOP_GRACE_S + STOP_SLACK_S


def test_the_unit_is_hardened() -> None:
    svc = service(UNIT)
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices",
                "RestrictSUIDSGID", "ProtectKernelTunables", "ProtectControlGroups"):  # fmt: skip
        assert one(svc, key) == "yes", key
    assert one(svc, "ProtectSystem") == "strict"
    assert one(svc, "CapabilityBoundingSet") == ""
    assert one(svc, "RestrictAddressFamilies").split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert "@system-service" in svc["SystemCallFilter"][0].split()
    assert "--token" not in exec_start(svc), "the token belongs in the environment file"
    assert parse_unit(UNIT.read_text())["Install"]["WantedBy"] == ["multi-user.target"]


def test_the_docs_agent_command_lines_parse() -> None:
    """Every ``coord agent`` line in docs/deploy.md's code blocks is one the CLI takes."""
    blocks = re.findall(r"^\s*```[^\n]*\n(.*?)^\s*```", DEPLOY_DOC.read_text(),
                        re.MULTILINE | re.DOTALL)  # fmt: skip
    lines = [m[1] for line in re.sub(r"\\\n\s*", " ", "\n".join(blocks)).splitlines()
             if (m := re.search(r"(?:^|\s|/)coord agent\b(.*)$", line))]  # fmt: skip
    assert lines, "docs/deploy.md shows no coord agent command line"
    for rest in lines:
        agent_command.make_context("agent", shlex.split(rest, comments=True))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at this venv's coord.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/coord/bin/coord", str(BIN / "coord")))
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, timeout=60, check=False)  # fmt: skip
    # verify exits 0 on unknown keys and bad values: any message is a failure.
    assert p.returncode == 0 and not (p.stdout + p.stderr).strip(), p.stdout + p.stderr
    p = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    m = re.search(r"Overall exposure level for coord-agent.service: ([\d.]+)", p.stdout + p.stderr)
    assert m, p.stdout + p.stderr
    assert float(m[1]) <= 2.0, f"exposure {m[1]}:\n{p.stdout}"


def test_the_exit_code_table_matches_both_units() -> None:
    """docs/operations.md's table: the codes marked "kept down" are exactly each unit's
    RestartPreventExitStatus=, and the agent's bad-setting code is the CLI's."""
    text = (REPO / "docs" / "operations.md").read_text()
    section = text.split("## Exit codes of `coord serve` and `coord agent`", 1)[1]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if re.match(r"\|\s*\d+\s*\|", line)
    ]
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3, 4, 6], rows
    for column, unit in ((1, NODE_UNIT), (2, UNIT)):
        kept = {int(r[0]) for r in rows if r[column].endswith("kept down")}
        prevented = {int(c) for c in one(service(unit), "RestartPreventExitStatus").split()}
        assert kept == prevented, (unit.name, kept, prevented)
    bad_setting = next(int(r[0]) for r in rows if r[2].startswith("a bad setting"))
    assert bad_setting == EXIT_USAGE
