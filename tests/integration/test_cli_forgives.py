"""coordctl against a real cluster (issue 20): global options after the command, JSON
numbers and JSON errors, fast failure when nothing listens, group and report views,
``watch``/``group rm`` of a missing group, and the README's exit-code table kept by
every command.

Matrices run coordctl in-process (click's CliRunner: the same code as the console
script, without an interpreter start per command); the rest run the real
``coordctl`` entry point.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from coord.cli import coordctl as coordctl_cli
from coord.cli.output import (
    EXIT_CODES,
    EXIT_CONFIG,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from coord.client import Member
from coord.testing import LocalCluster, free_ports, wait_until
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2

from .support import COORDCTL, coordctl, describe, run

# Keys whose values are int64 on the wire: JSON numbers in every command's output.
INT_KEYS = {
    "revision", "mod_revision", "create_revision", "created_revision", "version_number",
    "token", "term", "ttl_ms", "epoch", "window_s", "observed_ms", "downtime_ms", "now_ms",
    "time_ms", "registered_revision", "failback_hold_ms", "switchover_timeout_ms",
    "commit_index", "applied_index", "count", "base_revision", "raft_term", "size_bytes",
    "match_index",
}  # fmt: skip
TEXT_KEYS = {"value", "cluster_id", "sha256", "hash", "version", "coord_version"}


@pytest.fixture(scope="module")
def snapshot_file(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("ctl") / "full.coordbak")
    p = coordctl(cluster.endpoints, "snapshot", "save", path)
    assert p.returncode == 0, describe(p)
    return path


@pytest.fixture
def keep_sigterm() -> Iterator[None]:
    """``campaign`` run in-process installs a SIGTERM handler: put pytest's back."""
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def ctl(eps: list[str] | str, *args: str) -> Result:
    """coordctl in-process; stdout and stderr kept apart."""
    endpoints = eps if isinstance(eps, str) else ",".join(eps)
    return CliRunner().invoke(
        coordctl_cli.main, ["--endpoints", endpoints, *args], env={"COORDCTL_ENDPOINTS": None}
    )


def shown(r: Result) -> str:
    return f"exit {r.exit_code}\n--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}"


def json_error(r: Result | subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON error object of a failed ``-o json`` command (alone on stderr)."""
    stderr = r.stderr
    code = r.exit_code if isinstance(r, Result) else r.returncode
    (line,) = [x for x in stderr.splitlines() if x.startswith("{")]
    err: dict[str, Any] = json.loads(line)["error"]
    assert set(err) == {"reason", "message", "exit_code"}, err
    assert err["exit_code"] == code, (err, code)
    return err


def check_numbers(data: object, where: str) -> int:
    """Every int64 field is a JSON number and no number hides in a string; returns how
    many int64 fields were seen."""
    seen = 0
    if isinstance(data, dict):
        for k, v in data.items():
            if k in INT_KEYS and not isinstance(v, dict | list) and v is not None:
                assert isinstance(v, int) and not isinstance(v, bool), f"{where}: {k}={v!r}"
                seen += 1
            elif k not in TEXT_KEYS:
                if isinstance(v, str):
                    assert not v.lstrip("-").isdigit(), f"{where}: {k}={v!r} is a number"
                seen += check_numbers(v, where)
    elif isinstance(data, list):
        seen += sum(check_numbers(v, where) for v in data)
    return seen


def refused_endpoints(n: int = 3) -> list[str]:
    return [f"127.0.0.1:{p}" for p in free_ports(n)]


@contextlib.contextmanager
def master(cluster: LocalCluster, group: str, member_id: str, ttl_s: float) -> Iterator[Member]:
    """A member of ``group`` elected through the library, its session kept alive."""
    with cluster.client() as c, c.session(ttl_s=ttl_s, name=f"ctl-test {member_id}") as s:
        m = c.group(group).member(member_id, s, priority=10).start()
        m.campaign(timeout_s=20)
        yield m


def get_group(cluster: LocalCluster, name: str) -> groups_pb2.Group | None:
    with cluster.client() as c:
        groups = c.call(
            lambda ch, t: election_pb2_grpc.GroupsStub(ch).List(
                election_pb2.ListGroupsRequest(), timeout=t
            )
        ).groups
    return next((g for g in groups if g.name == name), None)


# -- global options after the command; JSON numbers ------------------------------------


def test_global_options_are_taken_after_the_command(
    cluster: LocalCluster, snapshot_file: str
) -> None:
    eps = ",".join(cluster.endpoints)
    for k, v in (("config/a", "one"), ("config/b", "two")):
        p = coordctl(eps, "kv", "put", k, v)
        assert p.returncode == 0, describe(p)
    p = coordctl(eps, "kv", "get", "config/", "--prefix", "-o", "json")
    assert p.returncode == 0, describe(p)
    got = json.loads(p.stdout)
    assert [(kv["key"], kv["value"]) for kv in got["kvs"]] == [
        ("config/a", "one"), ("config/b", "two"),
    ]  # fmt: skip
    assert check_numbers(got, "kv get") >= 7

    p = coordctl(eps, "snapshot", "status", snapshot_file, "-o", "json")
    assert p.returncode == 0, describe(p)
    info = json.loads(p.stdout)
    assert info["kind"] == "full" and check_numbers(info, "snapshot status") >= 3

    # After the command they win: over the flag before it and over the variable.
    (dead,) = refused_endpoints(1)
    p = run([COORDCTL, "--endpoints", dead, "kv", "get", "config/a", "--endpoints", eps,
             "--timeout", "20", "--output", "json"])  # fmt: skip
    assert p.returncode == 0 and json.loads(p.stdout)["kvs"][0]["value"] == "one", describe(p)
    env_run = subprocess.run(
        [COORDCTL, "kv", "get", "config/b", "--endpoints", eps, "-ojson"],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
        env={"COORDCTL_ENDPOINTS": dead, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert env_run.returncode == 0, describe(env_run)
    assert json.loads(env_run.stdout)["kvs"][0]["value"] == "two"
    # Credentials after the command are taken too: an unreadable CA is named.
    p = coordctl(eps, "kv", "get", "config/a", "--cacert", "/nonexistent/ca.pem")
    assert p.returncode == EXIT_CONFIG and "/nonexistent/ca.pem" in p.stderr, describe(p)


def test_json_output_prints_every_integer_as_a_number(cluster: LocalCluster) -> None:
    g = "ctl-json"
    eps = cluster.endpoints
    created = json.loads(ctl(eps, "-o", "json", "group", "create", g, "--slots", "2",
                             "--failback", "auto", "--failback-hold-s", "3").stdout)  # fmt: skip
    assert created["policy"]["failback_hold_ms"] == 3000
    with master(cluster, g, "m1", ttl_s=10):
        for args in (
            ["group", "get", g], ["group", "ls"], ["session", "ls"], ["member", "ls", g],
            ["status"], ["leader"], ["node", "ls"], ["report", "-g", g], ["kv", "ls"],
            ["watch", "--from-revision", str(created_rev(cluster, g)), "--group", g,
             "--count", "2"],
        ):  # fmt: skip
            r = ctl(eps, *args, "-o", "json")
            assert r.exit_code == 0, shown(r)
            docs = (
                [json.loads(x) for x in r.stdout.splitlines()]
                if args[0] == "watch"
                else [json.loads(r.stdout)]
            )
            assert sum(check_numbers(d, " ".join(args)) for d in docs) > 0, " ".join(args)
        got = json.loads(ctl(eps, "group", "get", g, "-o", "json").stdout)
        assert got["holdings"][0]["token"] > 0 and got["state"] == "active"


def created_rev(cluster: LocalCluster, group: str) -> int:
    g = get_group(cluster, group)
    assert g is not None
    return g.created_revision


# -- group views, report -----------------------------------------------------------------


def test_group_get_shows_policy_and_slots(cluster: LocalCluster) -> None:
    g = "ctl-slots"
    eps = cluster.endpoints
    r = ctl(eps, "group", "create", g, "--slots", "2", "--failback", "auto",
            "--failback-hold-s", "3", "--switchover-timeout-s", "4")  # fmt: skip
    assert r.exit_code == 0, shown(r)
    with master(cluster, g, "m1", ttl_s=10):
        token = get_group(cluster, g).holdings[0].token  # type: ignore[union-attr]
        r = ctl(eps, "group", "get", g)
        assert r.exit_code == 0, shown(r)
        policy, slots, members = r.stdout.strip().split("\n\n")
        rows = [re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in policy.splitlines()]
        assert rows[0] == ["FIELD", "VALUE"]
        fields = dict(rows[1:])
        assert fields["GROUP"] == g and fields["STATE"] == "active"
        assert fields["SLOTS"] == "2" and fields["FAILBACK"] == "auto (hold 3s)"
        assert fields["SWITCHOVER TIMEOUT"] == "4s"
        assert [r.split() for r in slots.splitlines()] == [
            ["SLOT", "MASTER", "TOKEN", "STATE"],
            ["0", "m1", str(token), "held"],
            ["1", "-", "-", "vacant"],
        ]
        header, row = members.splitlines()
        assert header.split()[:4] == ["GROUP", "MEMBER", "ROLE", "SLOT"]
        assert row.split()[:4] == [g, "m1", "MASTER", "0"]


def test_group_rm_waits_out_masters_and_ls_and_get_show_deleting(cluster: LocalCluster) -> None:
    g = "ctl-deleting"
    eps = cluster.endpoints
    assert ctl(eps, "group", "create", g).exit_code == 0
    with master(cluster, g, "m1", ttl_s=60):
        r = ctl(eps, "group", "rm", g)
        assert r.exit_code == 0, shown(r)
        assert r.stdout.split() == ["DELETING", g], shown(r)
        assert "waited out" in r.stderr and "--force" in r.stderr
        # The holder's session lives on (60 s): the group stays, deleting, meanwhile.
        rows = [x.split() for x in ctl(eps, "group", "ls").stdout.splitlines()]
        assert rows[0] == ["GROUP", "SLOTS", "MEMBERS", "MASTERS", "STATE"]
        assert [x for x in rows if x[0] == g] == [[g, "1", "1", "0:m1", "deleting"]]
        listed = json.loads(ctl(eps, "group", "ls", "-o", "json").stdout)
        assert [(x["state"], x["deleting"]) for x in listed if x["name"] == g] == [
            ("deleting", True)
        ]
        out = ctl(eps, "group", "get", g).stdout
        assert "STATE" in out and "deleting (its masters are waited out" in out, out
        assert "revoked" in out.split("\n\n")[1], out
        got = json.loads(ctl(eps, "group", "get", g, "-o", "json").stdout)
        assert got["state"] == "deleting" and got["deleting"] is True
        # --force deletes at once.
        r = ctl(eps, "-o", "json", "group", "rm", g, "--force")
        assert r.exit_code == 0 and json.loads(r.stdout) == {"deleted": g}, shown(r)
        assert get_group(cluster, g) is None


def test_report_labels_a_day_24h(cluster: LocalCluster) -> None:
    g = "ctl-report"
    eps = cluster.endpoints
    assert ctl(eps, "group", "create", g).exit_code == 0
    r = ctl(eps, "report", "-g", g)
    assert r.exit_code == 0, shown(r)
    lines = r.stdout.splitlines()
    assert lines[0].split()[:2] == ["GROUP", "WINDOW"]
    assert [x.split()[1] for x in lines[1:4]] == ["1h", "24h", "30d"], r.stdout
    assert " 1d " not in r.stdout
    r = ctl(eps, "report", "-g", g, "-w", "1d", "-w", "7d", "-w", "90m")
    assert sorted(x.split()[1] for x in r.stdout.splitlines()[1:4]) == ["1d", "7d", "90m"], r.stdout
    data = json.loads(ctl(eps, "report", "-g", g, "-o", "json").stdout)
    (grp,) = data["groups"]
    assert [(w["window_s"], w["window"]) for w in grp["windows"]] == [
        (3600, "1h"), (86400, "24h"), (2592000, "30d"),
    ]  # fmt: skip


# -- nothing listens: fail at once ----------------------------------------------------------


def test_connection_refused_everywhere_fails_at_once_and_names_the_endpoints() -> None:
    dead = refused_endpoints(3)
    start = time.monotonic()
    r = ctl(dead, "--timeout", "30", "kv", "get", "k")
    took = time.monotonic() - start
    assert r.exit_code == EXIT_UNAVAILABLE, shown(r)
    assert took < 1.0, f"took {took:.2f} s with nothing listening"
    assert "connection refused by every endpoint" in r.stderr, shown(r)
    assert all(ep in r.stderr for ep in dead) and "majority" not in r.stderr, shown(r)
    err = json_error(ctl(dead, "--timeout", "30", "leader", "-o", "json"))
    assert err["reason"] == "unavailable" and all(ep in err["message"] for ep in dead)
    # The console script too: far less than its --timeout.
    start = time.monotonic()
    p = coordctl(dead, "--timeout", "60", "node", "ls")
    assert p.returncode == EXIT_UNAVAILABLE and "refused" in p.stderr, describe(p)
    assert time.monotonic() - start < 20


def test_one_refusing_endpoint_among_live_ones_is_skipped(cluster: LocalCluster) -> None:
    eps = [*refused_endpoints(1), *cluster.endpoints]
    for _ in range(3):  # whichever endpoint the client starts with
        r = ctl(eps, "kv", "put", "ctl/mixed", "ok")
        assert r.exit_code == 0, shown(r)


def test_an_endpoint_without_a_port_is_refused() -> None:
    p = coordctl("localhost", "status")
    assert p.returncode == EXIT_CONFIG, describe(p)
    assert "endpoint 'localhost' has no port" in p.stderr and "localhost:2379" in p.stderr
    assert "443" not in p.stderr


# -- missing groups -------------------------------------------------------------------------


def test_watch_of_a_missing_group_says_so_unless_asked_to_wait(cluster: LocalCluster) -> None:
    eps = cluster.endpoints
    p = coordctl(eps, "watch", "--group", "ctl-nosuch", timeout=60)
    assert p.returncode == EXIT_NOT_FOUND, describe(p)
    assert "no group 'ctl-nosuch'" in p.stderr and "--allow-missing" in p.stderr, describe(p)
    assert "create it first" not in p.stderr

    g = "ctl-later"
    proc = subprocess.Popen(
        [COORDCTL, "--endpoints", ",".join(eps), "-o", "json", "watch", "--group", g,
         "--allow-missing", "--count", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        note = proc.stderr.readline()  # printed once it checked: then it watches
        assert f"no group '{g}' (yet): watching" in note, note
        with cluster.client() as c:
            c.group(g).create()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    (event,) = [json.loads(x) for x in out.splitlines()]
    assert (event["type"], event["group"]) == ("group_created", g)


def test_group_rm_of_a_missing_group_does_not_advise_creating_it(cluster: LocalCluster) -> None:
    for args in (["group", "rm", "ctl-nosuch"], ["group", "get", "ctl-nosuch"],
                 ["member", "rm", "ctl-nosuch", "m"], ["resign", "ctl-nosuch", "m"],
                 ["switchover", "ctl-nosuch"], ["check", "ctl-nosuch", "m"]):  # fmt: skip
        r = ctl(cluster.endpoints, *args)
        assert r.exit_code == EXIT_NOT_FOUND, shown(r)
        assert r.stderr.startswith("Error: coord: ") and "'ctl-nosuch'" in r.stderr, shown(r)
        assert "create it first" not in r.stderr, shown(r)
    r = ctl(cluster.endpoints, "group", "rm", "ctl-nosuch")
    assert r.stderr == (
        "Error: coord: group 'ctl-nosuch' does not exist: nothing to delete "
        "(`coordctl group ls` lists the groups)\n"
    ), shown(r)


# -- the exit-code table ----------------------------------------------------------------------

# Commands that need no cluster.
OFFLINE = {("certs", "init"), ("auth", "new-token"), ("snapshot", "status")}


def cluster_commands(snapshot: str, out: str, txn_spec: str) -> dict[tuple[str, ...], list[str]]:
    """Every command that talks to the cluster, with arguments that reach it."""
    return {
        ("status",): [],
        ("leader",): [],
        ("leader", "transfer"): [],
        ("nodes",): [],
        ("node", "ls"): [],
        ("node", "add"): ["n9", "--raft", "127.0.0.1:1", "--api", "127.0.0.1:2"],
        ("node", "remove"): ["n9"],
        ("node", "promote"): ["n9"],
        ("consistency",): [],
        ("kv", "put"): ["k", "v"],
        ("kv", "get"): ["k"],
        ("kv", "ls"): [],
        ("kv", "del"): ["k"],
        ("kv", "txn"): [txn_spec],
        ("snapshot", "save"): [out],
        ("backup", "diff"): ["--since", snapshot, out],
        ("session", "ls"): [],
        ("group", "create"): ["g"],
        ("group", "ls"): [],
        ("group", "get"): ["g"],
        ("group", "rm"): ["g"],
        ("group", "pause"): ["g"],
        ("group", "resume"): ["g"],
        ("group", "edit"): ["g", "--slots", "2"],
        ("group", "explain"): ["g"],
        ("member", "edit"): ["g", "m", "--priority", "3"],
        ("member", "ls"): [],
        ("member", "rm"): ["g", "m"],
        ("check",): ["g", "m"],
        ("campaign",): ["g", "m", "--no-hold"],
        ("resign",): ["g", "m"],
        ("switchover",): ["g"],
        ("rebalance",): ["g"],
        ("schedule", "ls"): [],
        ("schedule", "cancel"): ["g", "7"],
        ("watch",): [],
        ("report",): [],
    }


def leaf_commands(cmd: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(cmd, click.Group):
        if path and cmd.invoke_without_command:
            yield path
        for name, sub in cmd.commands.items():
            yield from leaf_commands(sub, (*path, name))
    else:
        yield path


def test_every_command_exits_4_as_json_when_nothing_listens(
    snapshot_file: str, tmp_path: Path, keep_sigterm: None
) -> None:
    spec = tmp_path / "txn.json"
    spec.write_text('{"success": [{"put": "k", "value": "v"}]}')
    commands = cluster_commands(snapshot_file, str(tmp_path / "out.coordbak"), str(spec))
    assert set(leaf_commands(coordctl_cli.main)) == set(commands) | OFFLINE, (
        "a new command: add it to cluster_commands (or OFFLINE)"
    )
    dead = refused_endpoints(2)
    for path, args in commands.items():
        start = time.monotonic()
        r = ctl(dead, "--timeout", "30", *path, *args, "-o", "json")
        assert r.exit_code == EXIT_UNAVAILABLE, f"{' '.join(path)}: {shown(r)}"
        err = json_error(r)
        assert "refused" in err["message"] or "no endpoint answered" in err["message"], err
        assert time.monotonic() - start < 5, f"{' '.join(path)} waited for nothing"
    assert not (tmp_path / "out.coordbak").exists()


def txn_spec(where: Path, key: str, expect_rev: int | None = None) -> str:
    """A ``coordctl kv txn`` spec file: put ``key`` (an empty key: refused by the
    cluster), compared on its mod revision ``expect_rev`` if given."""
    spec: dict[str, Any] = {"success": [{"put": key, "value": "v"}]}
    if expect_rev is not None:
        spec["compares"] = [{"key": key, "mod_revision": expect_rev}]
    path = where / f"txn-{len(list(where.glob('txn-*')))}.json"
    path.write_text(json.dumps(spec))
    return str(path)


def test_every_command_keeps_to_the_exit_code_table(
    cluster: LocalCluster, keep_sigterm: None, tmp_path: Path
) -> None:
    eps = cluster.endpoints
    (tmp_path / "no-key.json").write_text('{"compares": [{"value": "x"}]}')
    g = "ctl-codes"
    assert ctl(eps, "group", "create", g).exit_code == 0
    assert ctl(eps, "kv", "put", "ctl/codes", "v").exit_code == 0
    rev = json.loads(ctl(eps, "kv", "get", "ctl/codes", "-o", "json").stdout)["kvs"][0][
        "mod_revision"
    ]
    cases: list[tuple[int, str, list[str]]] = [
        # 5: what the command names does not exist.
        (EXIT_NOT_FOUND, "not_found", ["kv", "get", "ctl/missing"]),
        (EXIT_NOT_FOUND, "not_found", ["group", "get", "ctl-nosuch"]),
        (EXIT_NOT_FOUND, "not_found", ["group", "rm", "ctl-nosuch"]),
        (EXIT_NOT_FOUND, "not_found", ["member", "ls", "ctl-nosuch"]),
        (EXIT_NOT_FOUND, "not_found", ["member", "rm", g, "nobody"]),
        (EXIT_NOT_FOUND, "not_found", ["resign", g, "nobody"]),
        (EXIT_NOT_FOUND, "not_found", ["switchover", "ctl-nosuch"]),
        (EXIT_NOT_FOUND, "not_found", ["check", g, "nobody"]),
        (EXIT_NOT_FOUND, "not_found", ["report", "-g", "ctl-nosuch"]),
        (EXIT_NOT_FOUND, "not_found", ["watch", "--group", "ctl-nosuch"]),
        (EXIT_NOT_FOUND, "not_found", ["node", "remove", "n9"]),
        (EXIT_NOT_FOUND, "not_found", ["leader", "transfer", "--to", "n9"]),
        (EXIT_NOT_FOUND, "not_found", ["schedule", "cancel", g, "999999"]),
        (EXIT_NOT_FOUND, "not_found", ["schedule", "ls", "ctl-nosuch"]),
        (EXIT_NOT_FOUND, "not_found", ["switchover", g, "--to", "nobody", "--at", "2099-01-01"]),
        # 6: refused by the cluster's state.
        (EXIT_REFUSED, "compare_failed", ["kv", "put", "ctl/codes", "w", "--expect-rev",
                                          str(rev + 1000)]),
        (EXIT_REFUSED, "compare_failed", ["kv", "del", "ctl/codes", "--expect-rev",
                                          str(rev + 1000)]),
        (EXIT_REFUSED, "compare_failed", ["kv", "txn", txn_spec(tmp_path, "ctl/codes",
                                                                 rev + 1000)]),
        (EXIT_REFUSED, "already_exists", ["group", "create", g]),
        (EXIT_REFUSED, "failed_precondition", ["switchover", g]),
        # 3: an argument the cluster (or the CLI) finds invalid.
        (EXIT_CONFIG, "invalid_argument", ["group", "create", "bad name!"]),
        (EXIT_CONFIG, "invalid_argument", ["campaign", g, "bad id!", "--no-hold"]),
        (EXIT_CONFIG, "invalid_argument", ["group", "edit", g, "--breaker-failovers", "3"]),
        (EXIT_CONFIG, "invalid_argument", ["kv", "txn", txn_spec(tmp_path, "")]),
        (EXIT_CONFIG, "invalid_argument", ["kv", "txn", str(tmp_path / "no-key.json")]),
        # 2: the command line itself.
        (EXIT_USAGE, "usage", ["kv", "put", "ctl/codes", "x", "--expect-rev", "-1"]),
        (EXIT_USAGE, "usage", ["group", "create", "ctl-x", "--slots", "0"]),
        (EXIT_USAGE, "usage", ["campaign", g, "m", "--ttl-s", "0.1"]),
        (EXIT_USAGE, "usage", ["kv", "get", "k", "--no-such-option"]),
        (EXIT_USAGE, "usage", ["switchover", g, "--at", "2001-01-01T00:00Z"]),
        (EXIT_USAGE, "usage", ["group", "edit", g, "--breaker-failovers", "0"]),
    ]  # fmt: skip
    for code, reason, args in cases:
        r = ctl(eps, *args, "-o", "json")
        assert r.exit_code == code, f"{' '.join(args)}: {shown(r)}"
        assert code in EXIT_CODES
        err = json_error(r)
        assert err["reason"] == reason, f"{' '.join(args)}: {err}"
        text = ctl(eps, *args)
        assert text.exit_code == code and "Error: " in text.stderr, shown(text)
        assert "{" not in text.stderr.splitlines()[-1], shown(text)
    # The same "not a member" gives the same code from both commands.
    msgs = [json_error(ctl(eps, *a, "-o", "json"))["message"]
            for a in (["node", "remove", "n9"], ["leader", "transfer", "--to", "n9"])]  # fmt: skip
    assert all("'n9' is not a member" in m for m in msgs), msgs
    # The CAS conflicts changed nothing.
    assert (
        json.loads(ctl(eps, "kv", "get", "ctl/codes", "-o", "json").stdout)["kvs"][0][
            "mod_revision"
        ]
        == rev
    )


def test_a_campaign_for_a_taken_member_id_is_refused_with_6(cluster: LocalCluster) -> None:
    g = "ctl-taken"
    assert ctl(cluster.endpoints, "group", "create", g).exit_code == 0
    with master(cluster, g, "m1", ttl_s=10):
        p = coordctl(cluster.endpoints, "campaign", g, "m1", "--no-hold", "-o", "json")
        assert p.returncode == EXIT_REFUSED, describe(p)
        err = json_error(p)
        assert err["reason"] == "already_exists" and "registered by another session" in str(
            err["message"]
        )
        p = coordctl(cluster.endpoints, "campaign", g, "m1", "--no-hold")
        assert p.returncode == EXIT_REFUSED and "Error: coord: member 'm1'" in p.stderr


def test_a_group_being_deleted_is_refused_with_6(cluster: LocalCluster) -> None:
    g = "ctl-deleting-again"
    assert ctl(cluster.endpoints, "group", "create", g).exit_code == 0
    with master(cluster, g, "m1", ttl_s=60):
        assert ctl(cluster.endpoints, "group", "rm", g).exit_code == 0
        wait_until(lambda: (x := get_group(cluster, g)) and x.deleting, 10, "deleting")
        r = ctl(cluster.endpoints, "group", "create", g, "-o", "json")
        assert r.exit_code == EXIT_REFUSED and "being deleted" in json_error(r)["message"]
        assert ctl(cluster.endpoints, "group", "rm", g, "--force").exit_code == 0
