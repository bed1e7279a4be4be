"""coordctl's command line without a cluster (click's CliRunner; nothing is dialled):
global options after the command, JSON errors, endpoint and argument checks that
fail before any connection, and the group and report renderings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from coord import errors
from coord.cli import coordctl, ctl_groups
from coord.cli.ctl import GLOBAL_OPTIONS, CtlCommand, CtlGroup, wants_json
from coord.cli.ctl_report import human_window, parse_window
from coord.cli.output import EXIT_CONFIG, EXIT_USAGE
from coord.client import parse_endpoints
from coord.state import backupfile
from coord.state.machine import StateMachine
from coord.v1 import groups_pb2, kv_pb2, raft_pb2

GLOBAL_FLAGS = {flag for flags, *_ in GLOBAL_OPTIONS for flag in flags}
NO_PORT = "localhost"  # refused before any connection: nothing is dialled


def commands(cmd: click.Command = coordctl.main, path: tuple[str, ...] = ()) -> Iterator[
    tuple[tuple[str, ...], click.Command]
]:  # fmt: skip
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from commands(sub, (*path, name))


def ctl(*args: str) -> Result:
    return CliRunner().invoke(coordctl.main, list(args), env={"COORDCTL_ENDPOINTS": None})


def json_error(r: Result) -> dict[str, object]:
    """The one JSON error object a failed ``-o json`` command prints on stderr."""
    assert r.stdout == "", r.stdout
    (line,) = r.stderr.strip().splitlines()
    err: dict[str, object] = json.loads(line)["error"]
    assert err["exit_code"] == r.exit_code, (err, r.exit_code)
    return err


def test_every_command_below_the_root_takes_the_global_options() -> None:
    below = [(p, c) for p, c in commands() if p]
    assert len(below) > 30
    for path, cmd in below:
        assert isinstance(cmd, CtlCommand | CtlGroup), f"{' '.join(path)}: {type(cmd)}"
        ctx = click.Context(cmd)
        flags = [f for p in cmd.get_params(ctx) for f in p.opts]
        own = [f for p in cmd.params for f in p.opts]
        assert set(flags) >= GLOBAL_FLAGS, " ".join(path)
        assert not GLOBAL_FLAGS & set(own), f"{' '.join(path)} redefines a global option"
        assert len(flags) == len(set(flags)), f"{' '.join(path)}: a flag twice"


def test_output_option_has_help_at_the_root_and_after_the_command() -> None:
    root = ctl("--help")
    assert root.exit_code == 0
    assert "-o, --output [table|json]  Output format" in root.stdout
    sub = ctl("kv", "get", "--help")
    assert sub.exit_code == 0
    assert "Global options (before or after the command):" in sub.stdout
    assert "-o, --output [table|json]  Output format" in sub.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["kv", "get", "config/", "--prefix", "-o", "json", "--endpoints", NO_PORT],
        ["kv", "get", "config/", "--prefix", "-ojson", "--endpoints", NO_PORT],
        ["-o", "table", "kv", "get", "config/", "--output=json", "--endpoints", NO_PORT],
        ["--endpoints", "127.0.0.1:1", "leader", "-o", "json", "--endpoints", NO_PORT],
        ["--endpoints", "127.0.0.1:1", "kv", "-o", "json", "--endpoints", NO_PORT, "ls"],
        ["node", "remove", "n9", "--timeout", "3", "-o", "json", "--endpoints", NO_PORT],
    ],
)
def test_global_options_after_the_command_are_taken_and_win(args: list[str]) -> None:
    """The endpoint given last (after the command) is the one used: it has no port, so
    the command fails before dialling, with exit 3 and, under -o json, a JSON error."""
    r = ctl(*args)
    assert r.exit_code == EXIT_CONFIG, (r.stdout, r.stderr)
    err = json_error(r)
    assert err["reason"] == "invalid_argument"
    assert "endpoint 'localhost' has no port" in str(err["message"])
    assert "localhost:2379" in str(err["message"])


def test_an_endpoint_without_a_port_is_refused_and_says_so() -> None:
    r = ctl("--endpoints", f"127.0.0.1:2379,{NO_PORT}", "status")
    assert r.exit_code == EXIT_CONFIG, r.stderr
    assert r.stderr.startswith("Error: coord: endpoint 'localhost' has no port: give HOST:PORT")
    assert "refused rather than dialled on a default port" in r.stderr
    for bad in ("[::1]", "host:", "host:http", "host:0", "host:70000"):
        with pytest.raises(errors.InvalidArgument):
            parse_endpoints(bad)
    ok = ["127.0.0.1:2379", "[::1]:2379", "node-1.example:2379", "unix:/run/coord.sock"]
    assert parse_endpoints(",".join(ok)) == ok


def test_usage_errors_are_json_under_o_json_and_text_otherwise() -> None:
    for args in (
        ["kv", "put", "k", "v", "--expect-rev", "-1", "-o", "json"],
        ["-o", "json", "kv", "put", "k", "v", "--expect-rev", "-1"],
        ["-o", "json", "kv", "del", "k", "--expect-rev", "-1"],
    ):
        r = ctl(*args, "--endpoints", NO_PORT)
        assert r.exit_code == EXIT_USAGE, r.stderr
        err = json_error(r)
        assert err["reason"] == "usage"
        assert "'--expect-rev': -1 is not in the range x>=0" in str(err["message"])
    r = ctl("-o", "json", "kv", "nope")
    assert (r.exit_code, json_error(r)["reason"]) == (EXIT_USAGE, "usage")
    r = ctl("kv", "get", "k", "--timeout", "0", "-o", "json")
    assert r.exit_code == EXIT_USAGE and "--timeout" in str(json_error(r)["message"])
    r = ctl("kv", "put", "k", "v", "--expect-rev", "-1")
    assert r.exit_code == EXIT_USAGE
    assert "Error: Invalid value for '--expect-rev'" in r.stderr and "{" not in r.stderr
    assert "compare-and-set" not in r.stderr


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["-o", "json"], True),
        (["kv", "get", "k", "-o", "json"], True),
        (["-ojson"], True),
        (["--output=json"], True),
        (["-o", "json", "kv", "get", "k", "-o", "table"], False),
        (["kv", "put", "--", "k", "-o", "json"], False),
        (["kv", "get", "k"], False),
    ],
)
def test_wants_json(args: list[str], expect: bool) -> None:
    assert wants_json(args) is expect


def test_campaign_ttl_is_checked_in_seconds() -> None:
    for ttl in ("0.2", "7200", "nan"):
        r = ctl("campaign", "g", "m1", "--ttl-s", ttl, "--endpoints", NO_PORT)
        assert r.exit_code == EXIT_USAGE, r.stderr
        assert "--ttl-s" in r.stderr and " ms" not in r.stderr, r.stderr
    assert "0.5<=x<=3600" in ctl("campaign", "g", "m1", "--ttl-s", "0.2").stderr
    # The state machine's own bounds message (in ms) is said in seconds when it comes.
    server = errors.InvalidArgument(
        "session TTL 200 ms (0.2 s) is out of bounds: use 500..3600000 ms (0.5..3600 s)"
    )
    said = ctl_groups._ttl_in_seconds(server, 0.2)
    assert isinstance(said, click.ClickException)
    assert said.format_message() == "coord: --ttl-s 0.2 is out of bounds: use 0.5..3600 s"
    assert said.exit_code == EXIT_CONFIG
    other = errors.InvalidArgument("member id 'x y' is invalid")
    assert ctl_groups._ttl_in_seconds(other, 1.0) is other


def _snapshot_file(path: Path) -> None:
    sm = StateMachine()
    boot = raft_pb2.Bootstrap(cluster_id="c1", node_ids=["n1"])
    sm.apply(raft_pb2.Command(time_ms=1, term=1, bootstrap=boot).SerializeToString())
    put = kv_pb2.PutRequest(key=b"k", value=b"v")
    sm.apply(raft_pb2.Command(time_ms=2, put=put).SerializeToString())
    head = backupfile.header(
        backupfile.FULL, cluster_id=sm.cluster_id, revision=sm.revision, raft_term=1,
        node_id="n1", created_unix_ms=2,
    )  # fmt: skip
    path.write_bytes(backupfile.encode(head, sm.snapshot()))


def test_snapshot_status_takes_o_json_after_the_command(tmp_path: Path) -> None:
    good = tmp_path / "full.coordbak"
    _snapshot_file(good)
    r = ctl("snapshot", "status", str(good), "-o", "json")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["kind"] == "full" and info["keys"] == 1
    assert isinstance(info["revision"], int) and isinstance(info["size_bytes"], int)
    bad = tmp_path / "bad.coordbak"
    bad.write_bytes(b"not a backup")
    r = ctl("snapshot", "status", str(bad), "-o", "json")
    assert r.exit_code == EXIT_CONFIG
    assert json_error(r)["reason"] == "invalid_argument"


def test_report_names_a_day_in_hours() -> None:
    assert [human_window(s) for s in (3600, 86400, 2592000, 900, 90, 172800, 7200)] == [
        "1h", "24h", "30d", "15m", "90s", "2d", "2h",
    ]  # fmt: skip
    assert parse_window("1d") == parse_window("24h") == 86400


def _group(deleting: bool) -> groups_pb2.Group:
    g = groups_pb2.Group(name="db", created_revision=3, deleting=deleting)
    g.policy.CopyFrom(
        groups_pb2.GroupPolicy(
            slots=3, failback=groups_pb2.FAILBACK_AUTO, failback_hold_ms=30_000,
            switchover_timeout_ms=10_000, downtime_budget_ms=60_000,
        )
    )  # fmt: skip
    g.members.add(id="m1", priority=10, healthy=True, session_id="s1")
    g.members.add(id="m2", priority=5, healthy=True, session_id="s2")
    g.holdings.add(slot=0, member_id="m1", token=7, revoked=deleting)
    g.holdings.add(slot=2, member_id="m2", token=9)
    g.handovers.add(slot=2, from_member="m2", cause="switchover", to_member="m1")
    g.vacated_cause[1] = "session_expired"
    return g


def test_group_get_shows_state_policy_and_every_slot() -> None:
    fields = dict(ctl_groups._policy_rows(_group(False)))
    assert fields["STATE"] == "active" and fields["SLOTS"] == 3
    assert fields["FAILBACK"] == "auto (hold 30s)"
    assert fields["SWITCHOVER TIMEOUT"] == "10s"
    assert fields["DOWNTIME BUDGET"] == "60s per 30 days"
    assert fields["FAILOVER ON UNHEALTHY"] == "no"
    assert ctl_groups._slot_rows(_group(False)) == [
        [0, "m1", 7, "held"],
        [1, "-", "-", "vacant (session_expired)"],
        [2, "m2", 9, "stepping down (switchover, to m1)"],
    ]
    deleting = _group(True)
    assert dict(ctl_groups._policy_rows(deleting))["STATE"].startswith("deleting")
    assert ctl_groups._slot_rows(deleting)[0][3].startswith("revoked")
    assert ctl_groups._state(deleting) == "deleting"
