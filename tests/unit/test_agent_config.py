"""``coord agent``'s configuration (coord.agent.config): what loads, what is refused and
how, and that the shipped example (deploy/haproxy/agent.yaml) loads. Files only."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from coord import errors
from coord.agent import config

ROOT = Path(__file__).resolve().parents[2]
BASE = {"endpoints": ["127.0.0.1:1"], "group": "g", "member": "m"}


def test_the_shipped_example_loads() -> None:
    cfg = config.load(str(ROOT / "deploy" / "haproxy" / "agent.yaml"))
    assert (cfg.group, cfg.member, cfg.ttl_s, cfg.listen) == ("db", "db-1", 10.0, "0.0.0.0:8008")
    assert cfg.hooks["on_lost"] == ("logger", "-t", "coord-agent", "db-1 lost its session")
    assert cfg.check is not None and cfg.check.tcp.address == "10.0.0.1:5432"
    assert cfg.check.interval_ms == 1000 and cfg.check.fall == 3
    assert cfg.stop_grace_s == 2.5  # ttl / 4


def test_flags_win_over_the_file_and_hooks_merge_by_name(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("endpoints: a:1,b:2\ngroup: g\nmember: m\nttl: 1m\npriority: 3\n"
                 "hooks: {on_elected: 'echo hi', on_lost: [logger, lost]}\n")  # fmt: skip
    cfg = config.load(str(f), {"priority": 7, "hooks": {"on_elected": "true"}, "run": "x 'a b'"})
    assert cfg.endpoints == ("a:1", "b:2") and cfg.ttl_s == 60.0 and cfg.priority == 7
    assert cfg.hooks == {"on_elected": ("true",), "on_lost": ("logger", "lost")}
    assert cfg.run == ("x", "a b") and cfg.stop_grace_s == 10.0  # min(ttl / 4, 10 s)
    assert config.describe(cfg)["run"] == ["x", "a b"]


@pytest.mark.parametrize("value, seconds", [
    ("500ms", 0.5), ("2s", 2.0), ("1m30s", 90.0), (3, 3.0), ("1.5", 1.5), ("1h", 3600.0),
])  # fmt: skip
def test_durations(value: object, seconds: float) -> None:
    assert config.duration(value, "ttl", "x") == seconds


@pytest.mark.parametrize("extra, said", [
    ({"colour": "blue"}, "unknown key 'colour'"),
    ({"ttl": "100ms"}, "out of bounds"),
    ({"ttl": "2h"}, "out of bounds"),
    ({"ttl": "soon"}, "ttl: 'soon' is not a duration"),
    ({"ttl": -1}, "not a duration >= 0"),
    ({"ttl": "4s", "stop_grace": "2s"}, "more than ttl/4"),
    ({"hooks": {"on_elected": "echo 'unclosed"}}, "hooks.on_elected: cannot split"),
    ({"hooks": {"on_elected": {"cmd": "x"}}}, "a command is a string or a list"),
    ({"hooks": {"on_promote": "x"}}, "unknown hook 'on_promote'"),
    ({"run": "   "}, "run: the command is empty"),
    ({"check": {"tcp": "a:1", "http": "http://a"}}, "exactly one of"),
    ({"check": {"tcp": "a:1", "every": "1s"}}, "check: unknown key 'every'"),
    ({"listen": "8008"}, "not HOST:PORT"),
    ({"priority": "high"}, "priority: 'high' is not an integer"),
    ({"endpoints": ["10.0.0.1"]}, "has no port"),
    ({"member": ""}, "'member' is required"),
    ({"position": "cat 'unclosed"}, "position: cannot split the command"),
    ({"position": {"cmd": "cat"}}, "position: a command is a string or a list"),
    ({"position": "cat f", "position_file": "/f"}, "position and position_file are both set"),
    ({"position_file": ["/f"]}, "position_file: ['/f'] is not a string"),
    ({"position": "cat f", "position_interval": "0s"}, "position_interval must be more than 0"),
    ({"position": "cat f", "position_interval": "often"}, "position_interval: 'often' is not"),
    ({"position_file": "/f", "position_timeout": 0}, "position_timeout must be more than 0"),
    ({"position_interval": "1s"}, "position_interval is set, but neither position nor"),
    ({"tags": ["zone"]}, "tags is a map of names to values"),
    ({"tags": {"zone": None}}, "tags.zone: None is not a string"),
])  # fmt: skip
def test_bad_settings_name_the_key(extra: dict[str, object], said: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=re.escape(said)) as e:
        config.build({**BASE, **extra}, "agent.yaml")
    assert e.value.message.startswith("coord: agent.yaml: "), e.value.message


def test_a_missing_program_is_refused_at_start_not_at_load() -> None:
    cfg = config.build({**BASE, "hooks": {"pre_promote": "/nonexistent/promote --now"}})
    with pytest.raises(errors.InvalidArgument, match=r"hooks\.pre_promote: program '/nonexistent"):
        config.runnable(cfg, "agent.yaml")
    cfg = config.build({**BASE, "position": "/nonexistent/lsn"})
    with pytest.raises(errors.InvalidArgument, match=r"position: program '/nonexistent/lsn'"):
        config.runnable(cfg, "agent.yaml")
    config.runnable(config.build({**BASE, "run": ["sh", "-c", "true"]}))


def test_tags_are_strings_by_name() -> None:
    assert config.build({**BASE, "tags": {"zone": "eu-1a", "rack": 7}}).tags == {
        "zone": "eu-1a",
        "rack": "7",
    }
    assert config.build(BASE).tags == {}


def test_position_settings_and_flags() -> None:
    cfg = config.build({**BASE, "position": "sh -c 'echo 5'", "position_interval": "200ms"})
    assert cfg.position == ("sh", "-c", "echo 5") and cfg.position_file == ""
    assert (cfg.position_interval_s, cfg.position_timeout_s) == (0.2, 5.0)
    assert cfg.reports_position and cfg.commands()["position"] == cfg.position
    assert config.describe(cfg)["position"] == ["sh", "-c", "echo 5"]
    cfg = config.build({**BASE, "position_file": "/run/db/lsn", "position_timeout": "1s"})
    assert (cfg.position, cfg.position_file, cfg.position_timeout_s) == ((), "/run/db/lsn", 1.0)
    assert not config.build(BASE).reports_position
    # A flag replaces the file's way of reading it (coord/cli/agent.py clears the other).
    cfg = config.load(None, {"position": "cat f", "position_file": None}, {**BASE})
    assert cfg.position == ("cat", "f") and cfg.position_file == ""


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("- just\n- a list\n")
    with pytest.raises(errors.InvalidArgument, match="mapping at the top level"):
        config.load(str(f))
    with pytest.raises(errors.InvalidArgument, match="cannot read agent config"):
        config.load(str(tmp_path / "missing.yaml"))


def test_position_flags_replace_the_files_way_of_reading_it(tmp_path: Path) -> None:
    from coord.cli import coord_main

    f = tmp_path / "a.yaml"
    f.write_text("endpoints: [127.0.0.1:1]\ngroup: g\nmember: m\nposition_file: /run/lsn\n")

    def agent(*flags: str) -> Result:
        return CliRunner().invoke(coord_main.main, ["agent", "--config", str(f), *flags],
                                  env={"COORDCTL_ENDPOINTS": None})  # fmt: skip

    shown = json.loads(agent("--check-config").stdout)
    assert (shown["position"], shown["position_file"]) == ([], "/run/lsn")
    r = agent("--position", "cat /tmp/lsn", "--position-interval", "250ms", "--check-config")
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    assert (shown["position"], shown["position_file"]) == (["cat", "/tmp/lsn"], "")
    assert shown["position_interval_s"] == 0.25
    r = agent("--position", "cat x", "--position-file", "/x")
    assert r.exit_code == 2 and "give one" in r.output, r.output
    r = agent("--position-interval", "0s")
    assert r.exit_code == 2 and f"{f}: position_interval must be more than 0" in r.output
