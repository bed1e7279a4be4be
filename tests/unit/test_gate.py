"""coord.raft.gate: who may vote, campaign and acknowledge; when a blank node learns the
current term (learned_term) and when it turns voter."""

from __future__ import annotations

import itertools
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coord.raft.gate import CATCH_UP, NEW_BLANK, VOTER, TermAnswer, VotingGate, learned_term

MODES = (VOTER, CATCH_UP, NEW_BLANK)


def learned(mode: str) -> VotingGate:
    """A gate in ``mode`` whose node has learned the current term (the only member)."""
    gate = VotingGate(mode)
    assert gate.learn([["me"]], "me") == 0 or mode == VOTER
    assert gate.term_known
    return gate


def test_default_mode_is_voter() -> None:
    gate = VotingGate()
    assert gate.mode == VOTER
    assert gate.is_voter
    assert gate.target is None
    assert gate.term_known and gate.may_acknowledge()
    assert not gate.fresh


@pytest.mark.parametrize("mode", ["", "VOTER", "learner", None])
def test_unknown_mode_is_refused(mode: str) -> None:
    with pytest.raises(ValueError, match="unknown voting mode"):
        VotingGate(mode)


@pytest.mark.parametrize(
    ("mode", "is_voter", "campaigns"),
    [(VOTER, True, True), (CATCH_UP, False, False), (NEW_BLANK, False, True)],
)
def test_may_campaign(mode: str, is_voter: bool, campaigns: bool) -> None:
    gate = learned(mode)
    assert gate.is_voter is is_voter
    assert gate.may_campaign() is campaigns


@pytest.mark.parametrize("term", [0, 1, 2, 17, 10**9])
def test_may_vote_for(term: int) -> None:
    assert learned(VOTER).may_vote_for(term)
    assert not learned(CATCH_UP).may_vote_for(term)
    assert learned(NEW_BLANK).may_vote_for(term) is (term == 0)


@pytest.mark.parametrize("mode", [CATCH_UP, NEW_BLANK])
def test_a_blank_node_does_nothing_until_it_learned_the_term(mode: str) -> None:
    gate = VotingGate(mode)
    assert not gate.term_known
    assert gate.fresh
    assert not gate.may_acknowledge()
    assert not gate.may_campaign()
    assert not any(gate.may_vote_for(t) for t in (0, 1, 5))
    gate.leader_commit(10)  # a leader it cannot judge yet: its word does not count
    assert gate.target is None
    assert not gate.update(10**6)
    assert gate.mode == mode


def test_voter_ignores_leader_commit() -> None:
    gate = VotingGate(VOTER)
    gate.leader_commit(42)
    assert gate.target is None
    assert not gate.update(0)
    assert gate.is_voter


@pytest.mark.parametrize("mode", [CATCH_UP, NEW_BLANK])
def test_target_is_the_highest_leader_commit_seen(mode: str) -> None:
    gate = learned(mode)
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
    gate = learned(mode)
    for index in (0, 1, 100, 10**9):
        assert not gate.update(index)
    assert gate.mode == mode
    assert gate.target is None


@pytest.mark.parametrize("mode", [CATCH_UP, NEW_BLANK])
def test_turns_voter_once_the_log_reaches_the_target(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    gate = learned(mode)
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
    gate = learned(CATCH_UP)
    gate.leader_commit(10)
    assert gate.update(25)
    assert gate.is_voter


def test_a_zero_leader_commit_is_a_target() -> None:
    """A leader of a new cluster has committed nothing: any log is caught up."""
    gate = learned(NEW_BLANK)
    gate.leader_commit(0)
    assert gate.target == 0
    assert gate.update(0)
    assert gate.is_voter


def test_a_rising_target_is_chased() -> None:
    gate = learned(CATCH_UP)
    gate.leader_commit(10)
    gate.leader_commit(20)
    assert not gate.update(15)
    assert gate.update(20)


def test_update_reports_the_change_only_once_and_never_turns_back() -> None:
    gate = learned(CATCH_UP)
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
            st.tuples(st.just("learn"), st.just(0)),
            st.tuples(st.just("ack"), st.just(0)),
        ),
        max_size=30,
    ),
)
def test_gate_against_a_model(mode: str, ops: list[tuple[str, int]]) -> None:
    gate = VotingGate(mode)
    voter = mode == VOTER
    known = mode == VOTER
    fresh = mode != VOTER
    target: int | None = None
    changes = 0
    for op, n in ops:
        if op == "commit":
            gate.leader_commit(n)
            if not voter and known:
                target = n if target is None else max(target, n)
        elif op == "learn":
            assert (gate.learn([["me"]], "me") is None) is known
            known = True
        elif op == "ack":
            gate.counted()
            fresh = False
        else:
            changed = gate.update(n)
            expect = not voter and target is not None and n >= target
            assert changed is expect
            if expect:
                voter = True
                changes += 1
        assert gate.term_known is known
        assert gate.may_acknowledge() is known
        assert gate.fresh is fresh
        assert gate.is_voter is voter
        assert gate.mode == (VOTER if voter else mode)
        assert gate.target == target
        assert gate.may_campaign() is (known and (voter or mode == NEW_BLANK))
        assert gate.may_vote_for(1) is (known and voter)
        assert gate.may_vote_for(0) is (known and (voter or mode == NEW_BLANK))
    assert changes <= (0 if mode == VOTER else 1)


# -- learning the current term ---------------------------------------------------------


def ans(term: int, fresh: bool = False) -> TermAnswer:
    return TermAnswer(term, fresh)


N3 = [["a", "b", "c"]]


def test_the_stale_leader_alone_is_not_enough() -> None:
    """The issue's scenario: W (a) hears only the stale leader (b, term 1); c, which
    committed at term 2 with W before the wipe, is cut off."""
    assert learned_term(N3, "a", {"b": ans(1)}) is None
    assert learned_term(N3, "a", {"b": ans(1), "c": ans(2)}) == 2


@pytest.mark.parametrize(
    ("size", "needed"), [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3), (7, 4)]
)
def test_answers_from_ceil_half_of_the_configuration_besides_itself(size: int, needed: int) -> None:
    members = [f"n{i}" for i in range(size)]
    others = members[1:]
    for k in range(len(others) + 1):
        got = learned_term([members], "n0", {m: ans(3 + i) for i, m in enumerate(others[:k])})
        assert (got is not None) is (k >= needed), (size, k)
        if got is not None:
            assert got == max([3 + i for i in range(k)], default=0)


def test_every_majority_holds_an_answer_besides_itself() -> None:
    """The property behind the count: for each configuration size and each set of
    answering peers that suffices, every majority containing the node also contains a
    peer that answered (so an entry committed with the node has its term answered)."""
    for size in range(1, 8):
        members = list(range(size))
        for mask in range(2 ** (size - 1)):
            answered = {m for m in members[1:] if mask >> (m - 1) & 1}
            ok = learned_term([[str(m) for m in members]], "0",
                              {str(m): ans(1) for m in answered}) is not None  # fmt: skip
            majorities_missed = [
                sub
                for r in range(size // 2 + 1, size + 1)
                for sub in itertools.combinations(members, r)
                if 0 in sub and not answered & set(sub)
            ]
            if ok:
                assert not majorities_missed or size == 1, (size, answered)
            else:
                assert majorities_missed, (size, answered)


def test_a_fresh_majority_bootstraps() -> None:
    """Two of three blank nodes of a new cluster: each hears the other, fresh."""
    assert learned_term(N3, "a", {"b": ans(0, fresh=True)}) == 0
    assert learned_term(N3, "a", {"b": ans(0)}) is None  # b has history: c may too
    five = [["a", "b", "c", "d", "e"]]
    assert learned_term(five, "a", {"b": ans(0, True)}) is None
    assert learned_term(five, "a", {"b": ans(0, True), "c": ans(1, True)}) == 1


def test_answers_from_non_members_do_not_count() -> None:
    assert learned_term(N3, "a", {"x": ans(5), "y": ans(6)}) is None
    assert learned_term(N3, "a", {"x": ans(9), "b": ans(1), "c": ans(2)}) == 2


def test_every_configuration_must_be_satisfied() -> None:
    """A stale leader's uncommitted addition (d) must not lower the bar for the
    configuration the node started with."""
    start, grown = ["a", "b", "c"], ["a", "b", "c", "d"]
    got = {"b": ans(1), "d": ans(0, fresh=True)}
    assert learned_term([grown], "a", got) == 1  # enough for 4 members alone
    assert learned_term([start, grown], "a", got) is None
    got["c"] = ans(2)
    assert learned_term([start, grown], "a", got) == 2


def test_answers_keep_the_highest_term_and_lose_freshness() -> None:
    gate = VotingGate(CATCH_UP)
    gate.answer("b", 4, fresh=True)
    gate.answer("b", 2, fresh=True)
    assert gate.answers["b"] == ans(4, fresh=True)
    gate.answer("b", 3, fresh=False)
    assert gate.answers["b"] == ans(4, fresh=False)
    gate.answer("b", 7, fresh=True)  # once not fresh, never fresh again
    assert gate.answers["b"] == ans(7, fresh=False)


def test_learn_takes_the_highest_term_once(caplog: pytest.LogCaptureFixture) -> None:
    gate = VotingGate(CATCH_UP)
    assert gate.learn(N3, "a") is None
    gate.answer("b", 1, fresh=False)
    assert gate.learn(N3, "a") is None
    assert not gate.may_acknowledge()
    gate.answer("c", 2, fresh=False)
    with caplog.at_level(logging.INFO, logger="coord.raft.gate"):
        assert gate.learn(N3, "a") == 2
    assert "learned the current term 2 from b (term 1), c (term 2)" in caplog.text
    assert gate.term_known and gate.may_acknowledge()
    assert not gate.may_campaign() and not gate.may_vote_for(0)  # still catching up
    assert gate.learn(N3, "a") is None  # only once
    gate.leader_commit(7)
    assert gate.target == 7


def test_voters_know_their_term_and_are_never_fresh() -> None:
    gate = VotingGate(VOTER)
    assert gate.learn(N3, "a") is None
    assert gate.term_known and not gate.fresh
