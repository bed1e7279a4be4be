"""``coord agent``'s position reports (coord.agent.position) without a cluster: what a
read accepts, what a command's failure logs, and the reporter's rules — the first
report, nothing for an equal position, the last good one standing through failures, a
lower one never sent (went_back), an unanswered report counted as sent, a new
registration starting over. The reporter's ``tick`` is called directly (no thread)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from coord import errors
from coord.agent import config
from coord.agent.position import MAX_POSITION, PositionError, Reporter, parse, read_file, reader
from coord.agent.position import run_command as run
from coord.v1 import groups_pb2

BASE = {"endpoints": ["127.0.0.1:1"], "group": "g", "member": "m"}


@pytest.mark.parametrize("text, value", [
    ("0", 0), ("42\n", 42), ("  7 \n", 7), ("007", 7), (str(MAX_POSITION), MAX_POSITION),
])  # fmt: skip
def test_a_position_is_one_integer(text: str, value: int) -> None:
    assert parse(text) == value


@pytest.mark.parametrize("text, said", [
    ("", "gave nothing"), ("-1", "gave '-1', not one integer >= 0"), ("1 2", "not one integer"),
    ("0/3000060", "not one integer"), ("1e5", "not one"), ("²", "not one"), ("+3", "not one"),
    (str(MAX_POSITION + 1), "more than 2**63-1"),
])  # fmt: skip
def test_anything_else_is_refused(text: str, said: str) -> None:
    with pytest.raises(PositionError) as e:
        parse(text)
    assert e.value.kind == "not_a_position" and said in e.value.reason, e.value.reason


def sh(script: str) -> tuple[str, ...]:
    return ("sh", "-c", script)


def test_a_command_is_read_like_a_hook_and_its_failures_say_why(tmp_path: Path) -> None:
    env = {"COORD_GROUP": "g", "COORD_MEMBER": "m"}
    assert run(sh('echo "$COORD_MEMBER" >&2; echo 12'), 5, env) == 12
    with pytest.raises(PositionError) as e:
        run(sh("echo partial; echo 'db is down' >&2; exit 3"), 5, env)
    assert (e.value.kind, e.value.reason) == ("exit", "exited 3")
    assert e.value.output == "partial\ndb is down"  # logged with the failure
    with pytest.raises(PositionError) as e:
        run(sh("echo LSN 0/16B3748"), 5, env)
    assert e.value.kind == "not_a_position" and e.value.output == "LSN 0/16B3748"
    with pytest.raises(PositionError) as e:
        run((str(tmp_path / "missing"),), 5, env)
    assert e.value.kind == "cannot_start" and "missing" in e.value.reason
    # A timeout kills the command's process group (the sleep it started too).
    pid = tmp_path / "pid"
    with pytest.raises(PositionError) as e:
        run(sh(f"echo started; sleep 30 & echo $! > {pid}; wait"), 0.3, env)
    assert (e.value.kind, e.value.reason, e.value.output) == (
        "timeout", "timed out after 0.3 s", "started",
    )  # fmt: skip
    assert gone(int(pid.read_text())), "the command's sleep outlived the timeout"


def gone(pid: int) -> bool:
    """The process has exited (or is a zombie), within 2 s."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.01)
    return False


def test_a_file_is_read_and_a_missing_one_is_a_failure(tmp_path: Path) -> None:
    f = tmp_path / "lsn"
    with pytest.raises(PositionError, match="cannot read") as e:
        read_file(str(f))
    assert e.value.kind == "unreadable"
    f.write_text("990\n")
    assert read_file(str(f)) == 990
    f.write_text("9" * 5000)
    with pytest.raises(PositionError, match="holds more than"):
        read_file(str(f))
    cfg = config.build({**BASE, "position_file": str(f)})
    f.write_text("5")
    assert reader(cfg)() == 5
    cfg = config.build({**BASE, "position": [sys.executable, "-c", "print(6)"]})
    assert reader(cfg)() == 6


class FakeMember:
    """Member.report_position's contract: refuses a lower position, like the cluster."""

    def __init__(self) -> None:
        self.position: int | None = None
        self.reports: list[int] = []
        self.fail: errors.CoordError | None = None
        self.applied_anyway = False  # the failure came after the write was applied

    def report_position(self, position: int) -> groups_pb2.Member:
        self.reports.append(position)
        if self.fail is not None:
            if self.applied_anyway:
                self.position = position
            raise self.fail
        if self.position is not None and position < self.position:
            raise errors.FailedPrecondition("positions only increase")
        self.position = position
        return groups_pb2.Member(id="m", position=position)


class Source:
    def __init__(self) -> None:
        self.value: int | PositionError = 0

    def __call__(self) -> int:
        if isinstance(self.value, PositionError):
            raise self.value
        return self.value


def events(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [{k: v for k, v in e.items() if k != "t"} for e in lines if e["event"] == "position"]


def test_reports_go_up_only_and_a_failed_read_keeps_the_last(
    capsys: pytest.CaptureFixture[str],
) -> None:
    src, m = Source(), FakeMember()
    r = Reporter(src, 1.0)
    r.tick()  # not registered: nothing read, nothing reported
    src.value = 100
    r.attach(m)  # reports at once
    assert (m.reports, r.position) == ([100], 100)
    r.tick()  # the same: not sent again
    src.value = 150
    r.tick()
    assert m.reports == [100, 150]
    src.value = PositionError("exit", "exited 1", "db is down")
    r.tick()
    r.tick()  # the same failure: logged once
    src.value = PositionError("not_a_position", "gave 'x', not one integer >= 0", "x")
    r.tick()
    src.value = 150
    r.tick()
    assert (m.reports, m.position, r.position) == ([100, 150], 150, 150)
    assert events(capsys) == [
        {"event": "position", "state": "reported", "position": 100},
        {"event": "position", "state": "failed", "kind": "exit", "reason": "exited 1",
         "output": "db is down"},
        {"event": "position", "state": "failed", "kind": "not_a_position",
         "reason": "gave 'x', not one integer >= 0", "output": "x"},
        {"event": "position", "state": "recovered", "position": 150, "failures": 3},
    ]  # fmt: skip
    assert not r.went_back.is_set()


def test_a_lower_position_is_never_sent_and_ends_the_registration(
    capsys: pytest.CaptureFixture[str],
) -> None:
    src, m = Source(), FakeMember()
    r = Reporter(src, 1.0)
    src.value = 500
    r.attach(m)
    src.value = 499
    r.tick()
    r.tick()
    assert m.reports == [500] and r.went_back.is_set()
    src.value = 600  # above the one sent again (a master finishing its term): reported
    r.tick()
    assert m.reports == [500, 600] and r.went_back.is_set()
    went = [e for e in events(capsys) if e["state"] == "went_back"]
    assert went == [{"event": "position", "state": "went_back", "position": 499, "reported": 500,
                     "action": "registering again from a new session"}]  # fmt: skip
    # The agent registers again: a new member record, positions start over.
    fresh = FakeMember()
    src.value = 450
    r.attach(fresh)
    assert fresh.reports == [450] and r.position == 450 and not r.went_back.is_set()
    r.detach()
    src.value = 460
    r.tick()
    assert fresh.reports == [450] and m.reports == [500, 600]  # detached: nothing sent


def test_an_unanswered_report_counts_as_sent(capsys: pytest.CaptureFixture[str]) -> None:
    """The cluster may have applied a report it did not answer: a later lower position
    is going back, not a position to send."""
    src, m = Source(), FakeMember()
    r = Reporter(src, 1.0)
    src.value = 10
    r.attach(m)
    m.fail, m.applied_anyway = errors.OutcomeUnknown("no answer"), True
    src.value = 20
    r.tick()
    r.tick()  # sent again (the outcome is unknown), logged once
    m.fail = None
    src.value = 15
    r.tick()
    assert (m.reports, m.position, r.position) == ([10, 20, 20], 20, 10)
    assert r.went_back.is_set()
    src.value = 20
    r.tick()  # the same as sent: sent again until answered
    assert (m.reports[-1], r.position) == (20, 20)
    states = [(e["state"], e.get("kind")) for e in events(capsys)]
    assert states == [("reported", None), ("report_failed", "OutcomeUnknown"),
                      ("went_back", None), ("recovered", None)]  # fmt: skip
