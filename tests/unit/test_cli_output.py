"""coordctl's output conventions without a cluster: the exit-code table (README and
code agree; every coord error maps to its row), JSON numbers for int64 fields, and
the JSON error object."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest

from coord import errors
from coord.cli.output import (
    EXIT_CODES,
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    CLIError,
    error_record,
    exit_code_for,
    from_coord_error,
    proto_dict,
)
from coord.v1 import availability_pb2, groups_pb2

README = Path(__file__).resolve().parents[2] / "README.md"

# Every coord error class and the exit code the README's table gives it.
EXPECTED = {
    errors.CoordError: EXIT_ERROR,
    errors.InvalidArgument: EXIT_CONFIG,
    errors.NotFound: EXIT_NOT_FOUND,
    errors.AlreadyExists: EXIT_REFUSED,
    errors.FailedPrecondition: EXIT_REFUSED,
    errors.NotLeader: EXIT_REFUSED,
    errors.StaleToken: EXIT_REFUSED,
    errors.Unavailable: EXIT_UNAVAILABLE,
    errors.NoLeader: EXIT_UNAVAILABLE,
    errors.OutcomeUnknown: EXIT_UNAVAILABLE,
    errors.DeadlineExceeded: EXIT_UNAVAILABLE,
    errors.ResourceExhausted: EXIT_ERROR,
    errors.Unauthenticated: EXIT_ERROR,
    errors.PermissionDenied: EXIT_ERROR,
    errors.OutOfRange: EXIT_ERROR,
    errors.Internal: EXIT_ERROR,
}


def readme_exit_codes() -> dict[int, str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("Exit codes (every command") :]
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| .+ \|$", section, flags=re.MULTILINE)
    return {int(code): name for code, name in rows}


def test_the_readme_table_is_the_codes_table() -> None:
    assert readme_exit_codes() == EXIT_CODES


def test_every_coord_error_has_its_row() -> None:
    assert set(EXPECTED) == set(errors.BY_REASON.values()), "a new error class needs a row"
    for cls, code in EXPECTED.items():
        e = cls("x")
        assert exit_code_for(e) == code, cls.__name__
        cli = from_coord_error(e)
        assert (cli.exit_code, cli.reason, cli.format_message()) == (code, e.reason, "coord: x")


def test_json_error_object() -> None:
    got = error_record(from_coord_error(errors.AlreadyExists("member 'm1' is taken")))
    assert got == {
        "error": {
            "reason": "already_exists",
            "message": "coord: member 'm1' is taken",
            "exit_code": EXIT_REFUSED,
        }
    }
    assert error_record(CLIError("key 'k' not found", EXIT_NOT_FOUND))["error"] == {
        "reason": "not_found",
        "message": "key 'k' not found",
        "exit_code": EXIT_NOT_FOUND,
    }
    usage = error_record(click.UsageError("No such option: -x"))["error"]
    assert (usage["reason"], usage["exit_code"]) == ("usage", 2)
    json.dumps(usage)  # serialisable


def test_int64_fields_are_json_numbers_everywhere() -> None:
    resp = availability_pb2.AvailabilityResponse()
    g = resp.groups.add(group="web", now_ms=2**40, tracking_since_ms=5)
    g.failovers_by_cause_total["session_expired"] = 3
    w = g.windows.add(window_s=86400, observed_ms=7, budget_remaining_ms=-4, ftsd=0.5)
    w.failovers_by_cause["resign"] = 2
    g.timeline.add(start_ms=10, end_ms=20, slot=1, cause="resign")
    data = proto_dict(resp)
    (web,) = data["groups"]
    assert web["now_ms"] == 2**40 and web["tracking_since_ms"] == 5
    assert web["failovers_by_cause_total"] == {"session_expired": 3}
    assert web["windows"][0]["window_s"] == 86400
    assert web["windows"][0]["budget_remaining_ms"] == -4
    assert web["windows"][0]["failovers_by_cause"] == {"resign": 2}
    assert web["windows"][0]["ftsd"] == 0.5
    assert web["timeline"][0]["start_ms"] == 10 and web["timeline"][0]["slot"] == 1

    group = groups_pb2.Group(name="db", created_revision=12)
    group.policy.failback_hold_ms = 3000
    group.holdings.add(slot=0, member_id="m1", token=2**53 + 1)
    group.members.add(id="m1", registered_revision=11, tags={"zone": "a"})
    got = proto_dict(group)
    assert got["created_revision"] == 12 and got["policy"]["failback_hold_ms"] == 3000
    assert got["holdings"][0]["token"] == 2**53 + 1
    assert got["members"][0]["registered_revision"] == 11
    assert got["members"][0]["tags"] == {"zone": "a"}

    ev = groups_pb2.Event(revision=9, term=4, time_ms=1)
    assert proto_dict(ev) == {"revision": 9, "term": 4, "time_ms": 1}

    def strings(x: object) -> list[str]:
        if isinstance(x, dict):
            return [s for v in x.values() for s in strings(v)]
        if isinstance(x, list):
            return [s for v in x for s in strings(v)]
        return [x] if isinstance(x, str) and x.lstrip("-").isdigit() else []

    assert strings(data) == [] and strings(got) == [], "an integer printed as a string"


@pytest.mark.parametrize("code", sorted(EXIT_CODES))
def test_cli_error_reason_defaults_to_the_codes_name(code: int) -> None:
    assert CLIError("m", code).reason == EXIT_CODES[code]
