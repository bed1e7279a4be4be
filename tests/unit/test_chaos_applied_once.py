"""chaos.applied_once: logical writes counted in the event log. A clean history of every
kind passes; each planted duplicate (a second session from one Open, a refused retry of
an applied create, a registration applied twice, ...) is caught, and a log with a hole
is not vouched for. Also: the event notes the watcher keeps (chaos.workload.note_of)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from chaos.applied_once import EFFECTS, applied_once
from chaos.records import EventNote, LoggedWrite, RunRecord
from chaos.workload import note_of
from coord.v1 import groups_pb2, kv_pb2

T0 = 1000.0
MEMBER_A = ("s1", "", 2, 1, [], [], False, False, False)  # member_fields as registered


class Log:
    """A history in the making: writes and the events they caused, in order."""

    def __init__(self) -> None:
        self.writes: list[LoggedWrite] = []
        self.events: list[EventNote] = []
        self._rev: Iterator[int] = itertools.count(100)
        self._t: Iterator[int] = itertools.count(1)

    def write(self, kind: str, subject: str, outcome: str = "ok", *events: EventNote) -> None:
        t = next(self._t)
        self.writes.append(LoggedWrite(kind, subject, T0 + t, T0 + t + 0.5, outcome))
        self.events += events

    def ev(self, type_: str, **kw: Any) -> EventNote:
        return EventNote(revision=next(self._rev), type=type_, **kw)

    def record(self) -> RunRecord:
        return RunRecord("t", 1, T0, T0 + 100, writes=self.writes, events=self.events)


def clean_iteration(log: Log, g: str = "it1") -> None:
    """One every-kind iteration, each write applied once (chaos.every_write's order)."""
    e = log.ev
    log.write("create_group", g, "ok", e("group_created", group=g))
    log.write(
        "open_session", f"{g}-a", "ok", e("session_opened", session_id="s1", session_name=f"{g}-a")
    )
    log.write(
        "open_session", f"{g}-b", "ok", e("session_opened", session_id="s2", session_name=f"{g}-b")
    )
    log.write(
        "register", f"{g}/a", "ok", e("member_joined", group=g, member="a", member_fields=MEMBER_A)
    )
    log.write(
        "register", f"{g}/b", "ok", e("member_joined", group=g, member="b", member_fields=("s2",))
    )
    campaigning = (*MEMBER_A[:7], True, False)
    log.write(
        "campaign", f"{g}/a", "ok",
        e("member_updated", group=g, member="a", member_fields=campaigning),
        e("master_elected", group=g, member="a"),
    )  # fmt: skip
    log.write("campaign", f"{g}/b", "unknown")  # stays standby: its wait timed out
    updated = ("s1", "", 2, 3, [("it", g)], [], False, True, False)
    log.write(
        "update", f"{g}/a", "ok", e("member_updated", group=g, member="a", member_fields=updated)
    )
    log.write(
        "switchover", g, "ok", e("stepdown_requested", group=g, member="a", cause="switchover")
    )
    log.write(
        "resign", f"{g}/a", "ok",
        e("master_lost", group=g, member="a", cause="switchover"),
        e("master_elected", group=g, member="b"),
    )  # fmt: skip
    log.write("put", f"every/{g}", "ok", e("kv_put", keys=(f"every/{g}",)))
    log.write("delete", f"every/{g}", "ok", e("kv_delete", keys=(f"every/{g}",)))
    log.write("close_session", "s1", "ok", e("session_closed", session_id="s1"))
    log.write("close_session", "s2", "ok", e("session_closed", session_id="s2"))
    log.write("delete_group", g, "ok", e("group_deleted", group=g))


@pytest.fixture
def log() -> Log:
    return Log()


def test_a_clean_history_of_every_kind_passes(log: Log) -> None:
    clean_iteration(log, "it1")
    clean_iteration(log, "it2")
    r = log.record()
    assert {w.kind for w in r.writes} >= set(EFFECTS)
    assert applied_once(r) == []


def test_no_writes_nothing_to_judge() -> None:
    assert applied_once(RunRecord("t", 1, T0, T0 + 1)) == []


def test_a_second_session_from_one_open_is_caught(log: Log) -> None:
    e = log.ev
    log.write(
        "open_session", "it1-a", "ok",
        e("session_opened", session_id="s1", session_name="it1-a"),
        e("session_opened", session_id="s2", session_name="it1-a"),  # the retry's
    )  # fmt: skip
    [v] = applied_once(log.record())
    assert v.checker == "applied_once"
    assert "open_session it1-a (answered ok) applied 2 times (revisions 100, 101)" in v.detail


def test_a_refused_retry_of_an_applied_create_is_caught(log: Log) -> None:
    log.write("create_group", "it1", "AlreadyExists", log.ev("group_created", group="it1"))
    [v] = applied_once(log.record())
    assert "create_group it1 answered AlreadyExists, yet was applied (revision 100)" in v.detail


@pytest.mark.parametrize(
    ("kind", "subject", "outcome", "effect"),
    [
        ("delete_group", "it1", "NotFound", {"type_": "group_deleted", "group": "it1"}),
        ("switchover", "it1", "FailedPrecondition",
         {"type_": "stepdown_requested", "group": "it1", "cause": "switchover"}),
        ("resign", "it1/a", "FailedPrecondition",
         {"type_": "master_lost", "group": "it1", "member": "a", "cause": "resign"}),
    ],
)  # fmt: skip
def test_every_refused_retry_kind_is_caught(
    log: Log, kind: str, subject: str, outcome: str, effect: dict[str, Any]
) -> None:
    log.write(kind, subject, outcome, log.ev(**effect))
    [v] = applied_once(log.record())
    assert f"{kind} {subject} answered {outcome}, yet was applied" in v.detail


def test_a_refusal_without_effect_is_a_plain_refusal(log: Log) -> None:
    # b was no candidate: the switchover was refused, and nothing happened.
    log.write("create_group", "it1", "ok", log.ev("group_created", group="it1"))
    log.write("switchover", "it1", "FailedPrecondition")
    assert applied_once(log.record()) == []


def test_a_registration_applied_twice_is_caught(log: Log) -> None:
    e = log.ev
    log.write(
        "register", "it1/a", "ok",
        e("member_joined", group="it1", member="a", member_fields=MEMBER_A),
        e("member_updated", group="it1", member="a", member_fields=MEMBER_A),  # the retry
    )  # fmt: skip
    [v] = applied_once(log.record())
    assert "register it1/a (answered ok) applied again at revision 101" in v.detail
    assert "changes nothing" in v.detail


def test_an_update_that_changes_something_is_not_a_registration(log: Log) -> None:
    e = log.ev
    log.write(
        "register",
        "it1/a",
        "ok",
        e("member_joined", group="it1", member="a", member_fields=MEMBER_A),
    )
    campaigning = (*MEMBER_A[:7], True, False)
    log.write(
        "campaign",
        "it1/a",
        "ok",
        e("member_updated", group="it1", member="a", member_fields=campaigning),
    )
    assert applied_once(log.record()) == []


def test_an_acknowledged_write_that_never_applied_is_caught(log: Log) -> None:
    log.write("create_group", "it1", "ok", log.ev("group_created", group="it1"))
    log.write("put", "every/it1", "ok")  # acknowledged, not in the log
    [v] = applied_once(log.record())
    assert "put every/it1 was acknowledged but never applied" in v.detail


def test_an_unknown_outcome_may_have_applied_once_or_not_at_all(log: Log) -> None:
    log.write("create_group", "it1", "unknown", log.ev("group_created", group="it1"))
    log.write("create_group", "it2", "unknown")
    assert applied_once(log.record()) == []
    log.write("put", "k", "unknown", log.ev("kv_put", keys=("k",)), log.ev("kv_put", keys=("k",)))
    [v] = applied_once(log.record())
    assert "put k (answered unknown) applied 2 times" in v.detail


def test_one_write_does_not_count_another_subjects_events(log: Log) -> None:
    # it1's session and a session named it1-a-x: names are compared whole.
    log.write("open_session", "it1-a", "ok", log.ev("session_opened", session_name="it1-a"))
    log.write("open_session", "it1-a-x", "ok", log.ev("session_opened", session_name="it1-a-x"))
    assert applied_once(log.record()) == []


def test_a_log_with_a_hole_is_not_vouched_for(log: Log) -> None:
    clean_iteration(log)
    del log.events[3]  # revision 103 never noted
    [v] = applied_once(log.record())
    assert "not complete (revisions 103 missing)" in v.detail


def test_many_problems_are_summed_up(log: Log) -> None:
    for i in range(12):
        log.write("create_group", f"g{i}", "AlreadyExists", log.ev("group_created", group=f"g{i}"))
    log.write("open_session", "s", "ok", log.ev("session_opened", session_name="s"))
    log.events.append(log.ev("session_opened", session_name="s"))
    [v] = applied_once(log.record())
    assert v.detail.startswith(
        "13 writes not applied exactly once (create_group 12, open_session 1): "
    )
    assert v.detail.endswith("... and 3 more")


# -- the notes the watcher keeps ------------------------------------------------------------


def test_note_of_a_member_event_keeps_what_a_client_sets() -> None:
    member = groups_pb2.Member(
        group="g", id="a", session_id="s1", address="h:1", priority=2, weight=3,
        tags={"b": "2", "a": "1"}, candidate=True, registered_revision=7, eligible_since_ms=5,
    )  # fmt: skip
    e = groups_pb2.Event(
        revision=9, type="member_updated", group="g", member="a", member_record=member
    )
    n = note_of(e)
    assert (n.revision, n.type, n.group, n.member) == (9, "member_updated", "g", "a")
    assert n.member_fields == ("s1", "h:1", 2, 3, [("a", "1"), ("b", "2")], [], False, True, False)
    member.eligible_since_ms = 6  # not set by a client: the same fields
    assert note_of(e).member_fields == n.member_fields


def test_note_of_session_and_kv_events() -> None:
    opened = groups_pb2.Event(
        revision=3, type="session_opened", session=groups_pb2.Session(id="s3", name="it1-a")
    )
    n = note_of(opened)
    assert (n.session_id, n.session_name, n.member_fields) == ("s3", "it1-a", ())
    put = groups_pb2.Event(revision=4, type="kv_put", kvs=[kv_pb2.KeyValue(key=b"every/x")])
    assert note_of(put).keys == ("every/x",)
    deleted = groups_pb2.Event(revision=5, type="kv_delete", deleted_keys=[b"every/x"])
    assert note_of(deleted).keys == ("every/x",)
