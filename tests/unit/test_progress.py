"""coord.raft.progress: how a follower's reply moves the leader's record of it.

The last tests replay pysyncobj's leader (nextIndex moves past every entry it sends,
two appends in flight per round) against a model of pysyncobj's follower
(``next_node_idx`` answers as in pysyncobj 0.3.17's ``append_entries`` handler, with
coord's conflict fields or without).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from coord.raft.progress import (
    Progress,
    Reply,
    after_reply,
    conflict_of,
    hint_of,
    last_index_of_term,
)

TERM = 3
Rule = Callable[[Progress, Reply], Progress]


def reset(hint: int, term: int | None = TERM) -> Reply:
    return Reply(term=term, next_index=hint, success=False, reset=True)


def success(next_index: int, term: int | None = TERM) -> Reply:
    return Reply(term=term, next_index=next_index, success=True, reset=False)


def apply_all(p: Progress, *replies: Reply) -> Progress:
    for r in replies:
        out = after_reply(p, r, TERM)
        assert out is not None
        p = out
    return p


# -- terms ---------------------------------------------------------------------------------


@pytest.mark.parametrize("term", [1, 2, 4, None])
def test_a_reply_of_another_term_is_ignored(term: int | None) -> None:
    """A success of term 1 delayed until its leader leads again in term 3 must not count
    the follower as holding term 3's entries up to that index."""
    p = Progress(next_index=601, match_index=0)
    assert after_reply(p, success(700, term), TERM) is None
    assert after_reply(p, reset(10, term), TERM) is None


def test_reply_from_message_reads_the_stamped_term_and_conflict() -> None:
    msg = {"type": "next_node_idx", "next_node_idx": 42, "reset": True, "success": False}
    assert Reply.from_message(msg) == reset(42, None)
    assert Reply.from_message({**msg, "term": 7}) == reset(42, 7)
    conflict = {"conflict_term": 2, "conflict_index": 30}
    assert Reply.from_message({**msg, "term": 7, **conflict}) == Reply(7, 42, False, True, 2, 30)
    half = {"conflict_term": 2, "conflict_index": None}
    assert Reply.from_message({**msg, "term": 7, **half}) == reset(42, 7)


# -- the conflict fields ---------------------------------------------------------------------


def entries(terms: list[int], first: int = 1) -> list[tuple[bytes, int, int]]:
    """A pysyncobj log: (command, index, term), from index ``first``."""
    return [(b"", first + i, t) for i, t in enumerate(terms)]


def test_conflict_of_names_the_term_and_its_first_index() -> None:
    log = entries([0, 1, 1, 2, 2, 2, 4], first=10)  # indexes 10..16
    assert conflict_of(log, 15) == {"conflict_term": 2, "conflict_index": 13}
    assert conflict_of(log, 13) == {"conflict_term": 2, "conflict_index": 13}
    assert conflict_of(log, 16) == {"conflict_term": 4, "conflict_index": 16}
    assert conflict_of(log, 12) == {"conflict_term": 1, "conflict_index": 11}
    assert conflict_of(log, 10) == {"conflict_term": 0, "conflict_index": 10}


@pytest.mark.parametrize("hint", [9, 13, 40])
def test_conflict_of_says_nothing_for_an_index_it_does_not_hold(hint: int) -> None:
    assert conflict_of(entries([0, 1, 1], first=10), hint) == {}  # indexes 10..12
    assert conflict_of([], hint) == {}


def test_last_index_of_term() -> None:
    log = entries([0, 1, 1, 3, 3, 5], first=100)
    assert last_index_of_term(log, 1) == 102
    assert last_index_of_term(log, 3) == 104
    assert last_index_of_term(log, 5) == 105
    assert last_index_of_term(log, 2) is None
    assert last_index_of_term(log, 6) is None
    assert last_index_of_term([], 1) is None


def test_hint_of_jumps_past_the_leaders_last_entry_of_that_term() -> None:
    conflict = Reply(TERM, 566, False, True, conflict_term=1, conflict_index=2)
    assert hint_of(conflict, 559) == 560  # the leader's term-1 entries end at 559
    assert hint_of(conflict, None) == 2  # it has none: from the follower's first one
    assert hint_of(reset(566), 559) == 566  # no conflict fields: the plain hint


# -- within a term -------------------------------------------------------------------------


def test_success_raises_match_and_next() -> None:
    p = apply_all(Progress(700, 0), success(567))
    assert p == Progress(next_index=567, match_index=566)


def test_an_older_success_moves_nothing_but_ends_the_failures() -> None:
    p = apply_all(Progress(700, 600, lowest_reset=None), success(550))
    assert (p.next_index, p.match_index) == (700, 600)
    p = apply_all(Progress(650, 600, lowest_reset=640), success(550))
    assert p == Progress(650, 600, lowest_reset=None)


def test_a_chunk_acknowledgement_moves_nothing() -> None:
    p = Progress(700, 10, lowest_reset=500)
    assert apply_all(p, Reply(TERM, 12, success=False, reset=False)) == p


def test_pipelined_resets_566_then_567_leave_next_at_566() -> None:
    """The chaos isolate-leader trace: the probe at the follower's conflicting tail
    (hint 566) and the next pipelined append (hint 567) answered in one poll."""
    p = apply_all(Progress(next_index=700, match_index=0), reset(566), reset(567))
    assert p.next_index == 566


def test_next_only_moves_down_on_failures_until_a_success() -> None:
    p = apply_all(Progress(700, 0), reset(567), reset(566))
    p = replace(p, next_index=701)  # the leader sent from 566: next moved past its last
    p = apply_all(p, reset(567))  # the pipelined append's answer
    assert p.next_index == 566
    p = apply_all(p, reset(565), reset(567))
    assert p.next_index == 565
    p = apply_all(p, success(701))  # the probe at 559 matched: the follower truncated
    assert p == Progress(next_index=701, match_index=700)
    p = apply_all(p, reset(720))  # a new failure starts from its own hint
    assert p.next_index == 720


# -- pysyncobj's leader against pysyncobj's follower ---------------------------------------


@dataclass
class Follower:
    """A log of terms from index 1, answering as pysyncobj's follower does, and with
    coord's conflict fields when ``coord``."""

    log: list[int]  # term of each entry, index = position + 1
    coord: bool

    def append_entries(self, prev: int, prev_term: int, new: list[int]) -> Reply:
        if prev > len(self.log):
            return reset(len(self.log) + 1)  # prevLogIdx not in its log
        if prev > 0 and self.log[prev - 1] != prev_term:
            if not self.coord:
                return reset(prev)  # the entry at prevLogIdx conflicts
            found = conflict_of(entries(self.log), prev)
            return replace(reset(prev), **found)  # type: ignore[arg-type]
        del self.log[prev:]
        self.log += new
        return success(prev + len(new) + 1)


def rounds_to_catch_up(
    rule: Rule, coord: bool = False, old_tail_term: int = 1, limit: int = 100
) -> int | None:
    """Rounds until the follower's log is the leader's; each round the leader sends the
    probe at nextIndex and one pipelined append (new commands), and both are answered
    in the same poll; the leader then applies ``rule`` to each answer. The follower's
    7 entries 560..566 of ``old_tail_term`` conflict with the leader's term 3."""
    committed = [1] * 559
    leader_log = [*committed, *[3] * 140]  # the new leader, term 3, wrote to 699
    follower = Follower([*committed, *[old_tail_term] * 7], coord)
    p = Progress(next_index=len(leader_log) + 1, match_index=0)
    for n in range(limit):
        replies = []
        for _ in range(2):  # the probe, then the pipelined append
            nxt = p.next_index
            prev_term = leader_log[nxt - 2] if nxt >= 2 else 0
            replies.append(follower.append_entries(nxt - 1, prev_term, leader_log[nxt - 1 :]))
            leader_log.append(3)  # load: a new command by the next send
            p = replace(p, next_index=len(leader_log))  # pysyncobj: past what it sent
        for r in replies:
            if coord:
                last = last_index_of_term(entries(leader_log), r.conflict_term or -1)
                r = replace(r, next_index=hint_of(r, last))  # noqa: PLW2901
            p = rule(p, r)
        if follower.log == leader_log[: len(follower.log)] and len(follower.log) > 566:
            return n + 1
    return None


def pysyncobj_rule(p: Progress, r: Reply) -> Progress:
    """pysyncobj 0.3.17's leader, ``next_node_idx`` branch."""
    if r.reset:
        p = replace(p, next_index=r.next_index)
    if r.success and p.match_index < r.next_index - 1:
        p = replace(p, next_index=r.next_index, match_index=r.next_index - 1)
    return p


def test_pysyncobj_rule_never_reaches_the_conflict() -> None:
    assert rounds_to_catch_up(pysyncobj_rule) is None


def test_a_conflicting_tail_is_repaired_under_pipelined_load() -> None:
    rounds = rounds_to_catch_up(apply_all)
    assert rounds is not None and rounds <= 7 + 2, rounds  # 7 conflicting entries


@pytest.mark.parametrize("old_tail_term", [1, 2])
def test_with_the_conflict_fields_it_takes_three_rounds(old_tail_term: int) -> None:
    """Learn the follower is short, learn its conflict, repair; whether the old tail is
    of term 1 (the leader holds term-1 entries, up to 559) or of term 2 (the leader
    holds none: from the follower's first term-2 entry, 560)."""
    assert rounds_to_catch_up(apply_all, coord=True, old_tail_term=old_tail_term) == 3
