"""chaos.checkers.converged: after every heal, every member past the leader's heal-time
commit index within 2 s (planted samples, as chaos.convergence records them)."""

from __future__ import annotations

from typing import Any

import pytest

from chaos.checkers import CONVERGE_S, check_all, converged
from chaos.records import HealSample, RunRecord

T0 = 1000.0  # record.start
HEAL = T0 + 10.0
MEMBERS = ["n1", "n2", "n3"]


def rec(*heals: HealSample) -> RunRecord:
    return RunRecord(scenario="test", seed=1, start=T0, end=T0 + 100.0, heals=list(heals))


def heal(
    passed: dict[str, float | None],
    answered: dict[str, float] | None = None,
    target: int = 500,
    at: float = HEAL,
    **kwargs: Any,
) -> HealSample:
    """A heal at ``at`` whose members answered at the heal (or at ``answered`` + at)
    and passed ``target`` ``passed[m]`` seconds after ``at`` (None: never)."""
    members = list(passed)
    first = {m: at for m in members}
    first.update({m: at + dt for m, dt in (answered or {}).items()})
    return HealSample(
        at=at,
        members=members,
        target=target,
        leader=kwargs.pop("leader", "n1"),
        answered={m: t for m, t in first.items() if t is not None},
        passed={m: at + dt for m, dt in passed.items() if dt is not None},
        last_commit={m: target if dt is not None else target - 7 for m, dt in passed.items()},
        sampled_until=at + 2.2,
        **kwargs,
    )


def test_members_that_caught_up_in_time_pass() -> None:
    assert converged(rec(heal({"n1": 0.0, "n2": 0.4, "n3": 1.999}))) == []
    assert converged(rec()) == []  # no heal, nothing to judge


def test_the_bound_is_inclusive() -> None:
    assert converged(rec(heal({"n1": 0.0, "n2": CONVERGE_S, "n3": 0.1}))) == []


def test_a_member_that_passed_late_is_caught() -> None:
    [v] = converged(rec(heal({"n1": 0.0, "n2": 2.5, "n3": 0.2})))
    assert v.checker == "converged"
    assert v.detail == (
        "heal #1 at +10.000s: n2 behind the leader n1's heal-time commit index 500 for "
        "more than 2 s after the heal: passed it 2.500 s after the heal"
    )


def test_a_member_that_never_passed_is_caught_with_its_last_commit() -> None:
    [v] = converged(rec(heal({"n1": 0.0, "n2": 0.3, "n3": None})))
    assert "n3 behind the leader n1's heal-time commit index 500" in v.detail
    assert "was still at commit 493 when last sampled, at +12.200s" in v.detail


def test_a_member_that_never_answered_is_caught() -> None:
    h = heal({"n1": 0.0, "n2": 0.3, "n3": None})
    del h.answered["n3"]
    [v] = converged(rec(h))
    assert "n3 did not answer (sampled until +12.200s)" in v.detail


def test_a_restarted_member_is_timed_from_its_first_answer() -> None:
    """kill-leader's heal starts the process: it answers 3 s later, and catches up 1.5 s
    after that (within 2 s of its window's start, though 4.5 s after the heal)."""
    ok = heal({"n1": 0.0, "n2": 0.2, "n3": 4.5}, answered={"n3": 3.0})
    assert converged(rec(ok)) == []
    late = heal({"n1": 0.0, "n2": 0.2, "n3": 5.5}, answered={"n3": 3.0})
    [v] = converged(rec(late))
    assert v.detail.endswith(
        "n3 behind the leader n1's heal-time commit index 500 for more than 2 s after it "
        "first answered at +13.000s: passed it 2.500 s after it first answered at +13.000s"
    )


def test_a_heal_after_which_nobody_answered_is_caught() -> None:
    h = HealSample(at=HEAL, members=MEMBERS, sampled_until=HEAL + 20.0)
    [v] = converged(rec(h))
    assert v.detail == "heal #1 at +10.000s: no member answered (members ['n1', 'n2', 'n3'])"


def test_every_heal_is_judged_and_named() -> None:
    good = heal({"n1": 0.0, "n2": 0.5, "n3": 0.5})
    bad = heal({"n1": 0.0, "n2": None, "n3": 3.0}, at=HEAL + 20.0, leader="n3")
    got = converged(rec(good, bad, good))
    assert [v.detail.split(":")[0] for v in got] == ["heal #2 at +30.000s"] * 2
    assert all("the leader n3's heal-time commit index 500" in v.detail for v in got)


@pytest.mark.parametrize("bound", [1.0, 3.0])
def test_the_bound_is_a_parameter(bound: float) -> None:
    r = rec(heal({"n1": 0.0, "n2": 2.5, "n3": 0.2}))
    assert len(converged(r, bound)) == (1 if bound < 2.5 else 0)


def test_check_all_runs_it() -> None:
    r = rec(heal({"n1": 0.0, "n2": 0.1, "n3": None}))
    r.final = {"n1": set(), "n2": set(), "n3": set()}
    assert [v.checker for v in check_all(r, 15.0) if v.checker == "converged"] == ["converged"]
    r.heals = [heal({"n1": 0.0, "n2": 0.1, "n3": 0.2})]
    assert not [v for v in check_all(r, 15.0) if v.checker == "converged"]
