"""coord.raft.gate.VotingGate: who may vote and campaign, and when a blank node turns voter."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coord.raft.gate import CATCH_UP, NEW_BLANK, VOTER, VotingGate

MODES = (VOTER, CATCH_UP, NEW_BLANK)


def test_default_mode_is_voter() -> None:
    gate = VotingGate()
    assert gate.mode == VOTER
    assert gate.is_voter
    assert gate.target is None


@pytest.mark.parametrize("mode", ["", "VOTER", "learner", None])
def test_unknown_mode_is_refused(mode: str) -> None:
    with pytest.raises(ValueError, match="unknown voting mode"):
        VotingGate(mode)


@pytest.mark.parametrize(
    ("mode", "is_voter", "campaigns"),
    [(VOTER, True, True), (CATCH_UP, False, False), (NEW_BLANK, False, True)],
)
def test_may_campaign(mode: str, is_voter: bool, campaigns: bool) -> None:
    gate = VotingGate(mode)
    assert gate.is_voter is is_voter
    assert gate.may_campaign() is campaigns


@pytest.mark.parametrize("term", [0, 1, 2, 17, 10**9])
def test_may_vote_for(term: int) -> None:
    assert VotingGate(VOTER).may_vote_for(term)
    assert not VotingGate(CATCH_UP).may_vote_for(term)
    assert VotingGate(NEW_BLANK).may_vote_for(term) is (term == 0)


def test_voter_ignores_leader_commit() -> None:
    gate = VotingGate(VOTER)
    gate.leader_commit(42)
    assert gate.target is None
    assert not gate.update(0)
    assert gate.is_voter


@pytest.mark.parametrize("mode", [CATCH_UP, NEW_BLANK])
def test_target_is_the_highest_leader_commit_seen(mode: str) -> None:
    gate = VotingGate(mode)
    gate.leader_commit(5)
    assert gate.target == 5
    gate.leader_commit(9)
    assert gate.target == 9
    gate.leader_commit(3)  # a stale message never lowers it
    assert gate.target == 9
    gate.leader_commit(0)
    assert gate.target == 9


@pytest.mark.parametrize("mode", [CATCH_UP, NEW_BLANK])
def test_no_voter_before_any_leader_commit(mode: str) -> None:
    gate = VotingGate(mode)
    for index in (0, 1, 100, 10**9):
        assert not gate.update(index)
    assert gate.mode == mode
    assert gate.target is None


@pytest.mark.parametrize("mode", [CATCH_UP, NEW_BLANK])
def test_turns_voter_once_the_log_reaches_the_target(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    gate = VotingGate(mode)
    gate.leader_commit(10)
    assert not gate.update(9)
    assert gate.mode == mode
    assert not gate.may_vote_for(5)
    with caplog.at_level(logging.INFO, logger="coord.raft.gate"):
        assert gate.update(10)
    assert "now votes" in caplog.text
    assert gate.is_voter
    assert gate.may_campaign()
    assert gate.may_vote_for(5)


def test_reaching_past_the_target_also_counts() -> None:
    gate = VotingGate(CATCH_UP)
    gate.leader_commit(10)
    assert gate.update(25)
    assert gate.is_voter


def test_a_zero_leader_commit_is_a_target() -> None:
    """A leader of a new cluster has committed nothing: any log is caught up."""
    gate = VotingGate(NEW_BLANK)
    gate.leader_commit(0)
    assert gate.target == 0
    assert gate.update(0)
    assert gate.is_voter


def test_a_rising_target_is_chased() -> None:
    gate = VotingGate(CATCH_UP)
    gate.leader_commit(10)
    gate.leader_commit(20)
    assert not gate.update(15)
    assert gate.update(20)


def test_update_reports_the_change_only_once_and_never_turns_back() -> None:
    gate = VotingGate(CATCH_UP)
    gate.leader_commit(3)
    assert gate.update(3)
    target = gate.target
    assert not gate.update(3)
    assert not gate.update(0)
    gate.leader_commit(1000)  # a voter no longer tracks the leader's commit
    assert gate.target == target
    assert not gate.update(1)
    assert gate.is_voter


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(MODES),
    st.lists(
        st.one_of(
            st.tuples(st.just("commit"), st.integers(0, 50)),
            st.tuples(st.just("update"), st.integers(0, 50)),
        ),
        max_size=30,
    ),
)
def test_gate_against_a_model(mode: str, ops: list[tuple[str, int]]) -> None:
    gate = VotingGate(mode)
    voter = mode == VOTER
    target: int | None = None
    changes = 0
    for op, n in ops:
        if op == "commit":
            gate.leader_commit(n)
            if not voter:
                target = n if target is None else max(target, n)
        else:
            changed = gate.update(n)
            expect = not voter and target is not None and n >= target
            assert changed is expect
            if expect:
                voter = True
                changes += 1
        assert gate.is_voter is voter
        assert gate.mode == (VOTER if voter else mode)
        assert gate.target == target
        assert gate.may_campaign() is (voter or mode == NEW_BLANK)
        assert gate.may_vote_for(1) is voter
        assert gate.may_vote_for(0) is (voter or mode == NEW_BLANK)
    assert changes <= (0 if mode == VOTER else 1)
