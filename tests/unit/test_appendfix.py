"""coord.raft.appendfix.rewrite: Raft's append-entries rule on pysyncobj followers.

Focused examples pin each clause of the docstring; Hypothesis checks the shape of
the rewritten message on arbitrary logs and messages; and the end-to-end property
drives :func:`deliver`, a model of pysyncobj 0.3.17's follower code
(``syncobj.py``, the ``'prevLogIdx' in message`` branch) with coord's
``_SyncObj__deleteEntriesFrom`` veto, through sequences of leader messages, and
compares the result with Raft's Figure 2 rule (:func:`raft_reference`).

Logs are lists of ``(command, idx, term)`` like pysyncobj's journal; ``log[0]``
may sit at any index (compaction). No sockets, no threads.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coord.raft.appendfix import rewrite, snapshot_is_covered

Entry = tuple[bytes, int, int]
Log = list[Entry]

PROPERTY = settings(max_examples=300, deadline=None)


def entry(idx: int, term: int) -> Entry:
    return (f"c{idx}t{term}".encode(), idx, term)


def make_log(start: int, terms: list[int]) -> Log:
    return [entry(start + i, t) for i, t in enumerate(terms)]


def ae(
    prev: int | None,
    prev_term: int | None,
    entries: list[Entry],
    commit: int,
    term: int = 50,
) -> dict[str, Any]:
    return {
        "type": "append_entries",
        "term": term,
        "commit_index": commit,
        "prevLogIdx": prev,
        "prevLogTerm": prev_term,
        "entries": list(entries),
    }


def cut(leader: Log, prev: int, count: int, commit: int) -> dict[str, Any]:
    """The message a leader holding ``leader`` (starting at idx 1) sends for nextIndex prev+1."""
    return ae(prev, leader[prev - 1][2], leader[prev : prev + count], commit)


# -- the follower model ---------------------------------------------------------


@dataclass
class Follower:
    log: Log
    commit: int


def deliver(f: Follower, message: dict[str, Any], truncate_from: int | None) -> bool:
    """pysyncobj's follower handling of a regular append-entries, with coord's veto.

    Returns False when pysyncobj rejects it (``reset=True``: nothing changes).
    """
    prev, prev_term = message["prevLogIdx"], message["prevLogTerm"]
    first = f.log[0][1]
    # __getEntries(prevLogIdx): [] for None, below the first entry, or past the end
    if prev is None or prev < first or prev - first >= len(f.log):
        return False
    if f.log[prev - first][2] != prev_term:
        return False
    # len(prevEntries) > 1: __deleteEntriesFrom(prevLogIdx + 1), which coord's override
    # performs only when it is the index rewrite() allowed
    if len(f.log) - (prev - first) > 1 and truncate_from == prev + 1:
        del f.log[prev + 1 - first :]
    f.log.extend(message.get("entries", []))
    last = f.log[-1][1]
    f.commit = min(f.commit, last)  # never a commit index past the log
    leader_commit = message["commit_index"]
    if leader_commit > f.commit:
        f.commit = min(leader_commit, last)
    return True


def raft_reference(f: Follower, message: dict[str, Any]) -> bool:
    """Raft, Figure 2, AppendEntries receiver steps 2-5 (step 5 never lowers commitIndex)."""
    prev, prev_term = message["prevLogIdx"], message["prevLogTerm"]
    first = f.log[0][1]
    if prev is None or prev < first or prev - first >= len(f.log):
        return False
    if f.log[prev - first][2] != prev_term:
        return False
    entries = message.get("entries", [])
    for e in entries:
        pos = e[1] - first
        if pos < len(f.log):
            if f.log[pos][2] == e[2]:
                continue
            del f.log[pos:]
        f.log.append(e)
    last_new = entries[-1][1] if entries else prev
    if message["commit_index"] > f.commit:
        f.commit = max(f.commit, min(message["commit_index"], last_new))
    return True


def apply(f: Follower, message: dict[str, Any]) -> tuple[bool, int | None, int | None]:
    """Rewrite then deliver, as coord's transport does. Returns (accepted, truncation, verified)."""
    before = copy.deepcopy(message)
    out, truncation = rewrite(f.log, message, f.commit)
    assert message == before, "rewrite must not mutate the leader's message"
    accepted = deliver(f, out, truncation)
    verified = None
    if accepted:
        verified = out["entries"][-1][1] if out["entries"] else out["prevLogIdx"]
    return accepted, truncation, verified


def assert_contiguous(log: Log) -> None:
    idxs = [e[1] for e in log]
    assert idxs == list(range(idxs[0], idxs[0] + len(idxs))), idxs


# -- unchanged messages -------------------------------------------------------------

FOLLOWER = make_log(1, [0, 1, 1, 2, 2])  # idx 1..5


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(
            {**ae(2, 1, [entry(3, 1)], 5), "transmission": "finish", "data": b"x"},
            id="transmission",
        ),
        pytest.param(
            {"type": "append_entries", "term": 50, "commit_index": 0, "serialized": b"snap"},
            id="no-prevLogIdx-below-our-commit",
        ),
        pytest.param(ae(None, None, [], 5), id="prev-None"),
        pytest.param(ae(6, 2, [entry(7, 2)], 7), id="prev-past-end"),
        pytest.param(ae(9, 2, [], 9), id="prev-far-past-end"),
        pytest.param(ae(3, 2, [entry(4, 2)], 4), id="prev-term-mismatch"),
        pytest.param(ae(5, 3, [], 5), id="prev-term-mismatch-at-last"),
    ],
)
def test_messages_it_does_not_own_come_back_unchanged(message: dict[str, Any]) -> None:
    before = copy.deepcopy(message)
    out, truncation = rewrite(list(FOLLOWER), message, 0)
    assert out is message
    assert out == before
    assert truncation is None


def test_prev_below_a_compacted_log_is_unchanged() -> None:
    log = make_log(100, [7, 7, 8])  # idx 100..102
    message = ae(99, 7, [entry(100, 7)], 100)
    out, truncation = rewrite(log, message, 0)
    assert out is message
    assert truncation is None


def test_rejected_messages_change_nothing_in_the_follower() -> None:
    f = Follower(list(FOLLOWER), 3)
    accepted, truncation, _ = apply(f, ae(3, 2, [entry(4, 2)], 5))
    assert (accepted, truncation) == (False, None)
    assert f == Follower(list(FOLLOWER), 3)


# -- focused rewrites -------------------------------------------------------------------


def test_matching_prefix_is_dropped_and_prev_advances() -> None:
    log = make_log(1, [0, 1, 1, 1, 1])  # idx 1..5
    leader = make_log(1, [0, 1, 1, 1, 1, 2, 2])  # idx 1..7
    out, truncation = rewrite(log, cut(leader, 2, 5, commit=7), 0)
    assert (out["prevLogIdx"], out["prevLogTerm"]) == (5, 1)
    assert out["entries"] == leader[5:7]
    assert out["commit_index"] == 7
    assert truncation is None
    assert {k: v for k, v in out.items() if k not in ("prevLogIdx", "prevLogTerm", "entries")} == {
        "type": "append_entries",
        "term": 50,
        "commit_index": 7,
    }


def test_conflict_keeps_the_entries_from_the_conflict_and_allows_truncation_there() -> None:
    log = make_log(1, [0, 1, 1, 1, 1, 1])  # idx 1..6, 4..6 from a deposed leader of term 1
    leader = make_log(1, [0, 1, 1, 3, 3])  # idx 1..5
    out, truncation = rewrite(log, cut(leader, 1, 4, commit=5), 0)
    assert (out["prevLogIdx"], out["prevLogTerm"]) == (3, 1)
    assert out["entries"] == leader[3:5]
    assert truncation == 4
    assert out["commit_index"] == 5

    f = Follower(list(log), 2)
    assert deliver(f, out, truncation)
    assert f.log == leader
    assert f.commit == 5


def test_conflict_right_after_prev() -> None:
    log = make_log(1, [0, 1, 2])
    leader = make_log(1, [0, 1, 3, 3])
    out, truncation = rewrite(log, cut(leader, 2, 2, commit=1), 0)
    assert (out["prevLogIdx"], out["prevLogTerm"], out["entries"]) == (2, 1, leader[2:4])
    assert truncation == 3
    assert out["commit_index"] == 1


def test_stale_shorter_message_keeps_acknowledged_entries() -> None:
    """The resend that pysyncobj turned into data loss: entries 3-4 again, follower holds 1-10."""
    leader = make_log(1, [0] + [1] * 9)  # idx 1..10
    out, truncation = rewrite(list(leader), cut(leader, 2, 2, commit=10), 0)
    assert (out["prevLogIdx"], out["prevLogTerm"], out["entries"]) == (4, 1, [])
    assert truncation is None
    assert out["commit_index"] == 4  # only what this message vouched for

    f = Follower(list(leader), 2)
    assert deliver(f, out, truncation)
    assert f.log == leader
    assert f.commit == 4


def test_without_rewrite_pysyncobj_loses_acknowledged_entries() -> None:
    """Sanity check of the model: the raw message, truncation allowed, cuts 5..10."""
    leader = make_log(1, [0] + [1] * 9)
    f = Follower(list(leader), 2)
    raw = cut(leader, 2, 2, commit=10)
    assert deliver(f, raw, truncate_from=raw["prevLogIdx"] + 1)
    assert f.log == leader[:4]


def test_entries_all_beyond_the_log_are_kept() -> None:
    log = make_log(1, [0, 1, 1])
    leader = make_log(1, [0, 1, 1, 2, 2])
    message = cut(leader, 3, 2, commit=4)
    out, truncation = rewrite(log, message, 0)
    assert (out["prevLogIdx"], out["prevLogTerm"], out["entries"]) == (3, 1, leader[3:5])
    assert truncation is None
    assert out["commit_index"] == 4
    assert out is not message


def test_heartbeat_clamps_commit_to_prev() -> None:
    log = make_log(1, [0, 1, 1, 1, 1])
    out, truncation = rewrite(log, ae(3, 1, [], 5), 0)
    assert (out["prevLogIdx"], out["prevLogTerm"], out["entries"]) == (3, 1, [])
    assert out["commit_index"] == 3
    assert truncation is None


def test_message_without_entries_key() -> None:
    log = make_log(1, [0, 1, 1])
    message = ae(2, 1, [], 9)
    del message["entries"]
    out, truncation = rewrite(log, message, 0)
    assert (out["prevLogIdx"], out["entries"], out["commit_index"]) == (2, [], 2)
    assert truncation is None


def test_lower_leader_commit_is_kept() -> None:
    log = make_log(1, [0, 1, 1])
    leader = make_log(1, [0, 1, 1, 1, 1, 1])
    out, _ = rewrite(log, cut(leader, 1, 5, commit=2), 0)
    assert out["commit_index"] == 2


def test_compacted_log() -> None:
    log = make_log(100, [4, 4, 5, 5])  # idx 100..103
    leader = make_log(100, [4, 4, 5, 6, 6])  # idx 100..104
    message = ae(100, 4, leader[1:5], 104)
    out, truncation = rewrite(log, message, 0)
    assert (out["prevLogIdx"], out["prevLogTerm"]) == (102, 5)
    assert out["entries"] == leader[3:5]
    assert truncation == 103
    assert out["commit_index"] == 104

    f = Follower(list(log), 101)
    assert deliver(f, out, truncation)
    assert f.log == leader


# -- Hypothesis: shape of the rewrite on arbitrary inputs -----------------------------------


@st.composite
def log_and_message(draw: st.DrawFn) -> tuple[Log, dict[str, Any]]:
    start = draw(st.integers(1, 20))
    terms = draw(st.lists(st.integers(0, 3), min_size=1, max_size=10))
    log = make_log(start, terms)
    last = start + len(terms) - 1
    prev = draw(st.one_of(st.none(), st.integers(start - 3, last + 3)))
    prev_term = draw(st.integers(0, 3))
    if prev is not None and start <= prev <= last and draw(st.booleans()):
        prev_term = log[prev - start][2]  # mostly a matching prev, so the rewrite runs
    n = draw(st.integers(0, 10))
    base = prev if prev is not None else start
    entries = [entry(base + 1 + i, draw(st.integers(0, 3))) for i in range(n)]
    commit = draw(st.integers(0, last + n + 3))
    message = ae(prev, prev_term, entries, commit)
    if draw(st.integers(0, 9)) == 0:
        message["transmission"] = draw(st.sampled_from(["start", "process", "finish"]))
    return log, message


@PROPERTY
@given(log_and_message())
def test_rewrite_shape(case: tuple[Log, dict[str, Any]]) -> None:
    log, message = case
    before = copy.deepcopy(message)
    log_before = list(log)
    out, truncation = rewrite(log, message, 0)
    assert message == before
    assert log == log_before

    first, last = log[0][1], log[-1][1]
    prev = message["prevLogIdx"]
    if (
        "transmission" in message
        or prev is None
        or not first <= prev <= last
        or log[prev - first][2] != message["prevLogTerm"]
    ):
        assert out is message
        assert truncation is None
        return

    entries = message["entries"]
    rest = out["entries"]
    dropped = entries[: len(entries) - len(rest)]
    assert entries[len(dropped) :] == rest  # rest is a suffix
    for e in dropped:  # only entries already present with the same term are dropped
        assert e[1] <= last
        assert log[e[1] - first] == (log[e[1] - first][0], e[1], e[2])
    if dropped:
        assert (out["prevLogIdx"], out["prevLogTerm"]) == (dropped[-1][1], dropped[-1][2])
    else:
        assert (out["prevLogIdx"], out["prevLogTerm"]) == (prev, message["prevLogTerm"])
    if rest:
        head = rest[0]
        conflicting = head[1] <= last and log[head[1] - first][2] != head[2]
        assert head[1] > last or conflicting  # the first missing or first conflicting
        assert truncation == (head[1] if conflicting else None)
        verified = rest[-1][1]
    else:
        assert truncation is None
        verified = out["prevLogIdx"]
    assert out["commit_index"] == min(message["commit_index"], verified)
    for key in message:
        if key not in ("prevLogIdx", "prevLogTerm", "entries", "commit_index"):
            assert out[key] == message[key]


# -- Hypothesis: followers of one leader, end to end --------------------------------------


@st.composite
def scenario(draw: st.DrawFn) -> tuple[Log, Follower, list[dict[str, Any]]]:
    """A leader's log and a follower's that share a prefix, plus messages cut from the leader.

    Terms obey Log Matching: the shared prefix uses multiples of 3, the leader's own
    suffix 3m+1 and the follower's divergent suffix (entries of deposed leaders) 3m+2,
    so no (idx, term) pair outside the shared prefix is in both logs.
    """
    sorted_ints = st.lists(st.integers(0, 3), max_size=8).map(sorted)
    prefix = [0] + [3 * (t + 1) for t in draw(sorted_ints)]  # pysyncobj's NO_OP at idx 1
    shared = draw(st.integers(1, len(prefix)))  # the follower may be behind
    base = prefix[shared - 1]
    leader_terms = prefix + [prefix[-1] + 3 * t + 1 for t in draw(sorted_ints)]
    follower_terms = prefix[:shared] + [base + 3 * t + 2 for t in draw(sorted_ints)]
    leader = make_log(1, leader_terms)
    first = draw(st.integers(1, shared))  # compaction of committed entries
    follower = Follower(make_log(1, follower_terms)[first - 1 :], draw(st.integers(0, shared)))

    messages = []
    for _ in range(draw(st.integers(1, 4))):
        prev = draw(st.integers(1, len(leader)))
        count = draw(st.integers(0, len(leader) - prev))
        commit = draw(st.integers(0, len(leader)))
        messages.append(cut(leader, prev, count, commit))
    return leader, follower, messages


def matches_leader(leader: Log, e: Entry) -> bool:
    return e[1] <= len(leader) and leader[e[1] - 1] == e


@PROPERTY
@given(scenario())
def test_followers_never_lose_acknowledged_entries_nor_commit_foreign_ones(
    case: tuple[Log, Follower, list[dict[str, Any]]],
) -> None:
    leader, f, messages = case
    ref = copy.deepcopy(f)
    kept = {e for e in f.log if matches_leader(leader, e)}
    for message in messages:
        accepted, truncation, verified = apply(f, message)
        assert raft_reference(ref, message) == accepted
        assert f == ref, "pysyncobj + rewrite must do what Raft's Figure 2 does"
        assert_contiguous(f.log)

        # (a) nothing that matched the leader is lost, whatever the message
        assert kept <= set(f.log)
        kept |= {e for e in f.log if matches_leader(leader, e)}
        # truncation only at a real conflict
        if truncation is not None:
            assert accepted
            assert truncation == message["prevLogIdx"] + 1 or any(
                e[1] == truncation for e in message["entries"]
            )
        # (b) prefix-consistent with the leader up to the verified index
        if accepted:
            assert verified is not None
            for e in f.log:
                if e[1] <= verified:
                    assert matches_leader(leader, e), (e, verified)
        # (c) the commit index never covers an entry the leader does not hold
        assert f.commit <= f.log[-1][1]
        for e in f.log:
            if e[1] <= f.commit:
                assert matches_leader(leader, e), (e, f.commit)


@PROPERTY
@given(scenario())
def test_after_a_full_message_the_follower_holds_the_leader_log(
    case: tuple[Log, Follower, list[dict[str, Any]]],
) -> None:
    leader, f, _ = case
    first = f.log[0][1]
    accepted, _, verified = apply(f, cut(leader, first, len(leader) - first, len(leader)))
    assert accepted
    assert verified == len(leader)
    # the leader's log is a prefix of the follower's: Raft deletes only at a conflict, so
    # entries past the leader's last index stay (uncommitted) until it overwrites them
    assert f.log[: len(leader) - first + 1] == leader[first - 1 :]
    assert f.commit == len(leader)


def test_a_message_without_prev_log_idx_commits_none_of_our_entries() -> None:
    # The leader has a snapshot for us and is still writing it ("serialized": None), or
    # sends one of its chunks: nothing in it vouches for our own entries, which may be a
    # deposed leader's uncommitted tail. Our commit index stays where it was.
    log = make_log(1, [1, 1, 1, 1])  # indexes 1..4, ours committed up to 2
    for message in (
        {"type": "append_entries", "term": 2, "commit_index": 400, "serialized": None},
        {"type": "append_entries", "term": 2, "commit_index": 400,
         "serialized": (b"chunk", True, False)},
    ):  # fmt: skip
        out, truncation = rewrite(log, message, 2)
        assert out["commit_index"] == 2 and truncation is None
        assert out["serialized"] == message["serialized"]
        assert message["commit_index"] == 400  # the leader's message is not mutated
    below = {"type": "append_entries", "term": 2, "commit_index": 1, "serialized": None}
    assert rewrite(log, below, 2)[0] is below


# -- a snapshot the log already covers is not installed (Raft §7) ----------------------

SNAPSHOT_LOG = [(b"", i, 1 if i < 8 else 2) for i in range(5, 13)]  # indexes 5..12, term 2 from 8


@pytest.mark.parametrize(
    ("last", "covered"),
    [
        ((b"", 10, 2), True),  # we hold it with the same term: keep our log
        ((b"", 12, 2), True),  # our last entry
        ((b"", 4, 1), True),  # before our log: our own dump went past it
        ((b"", 13, 2), False),  # beyond our log: install
        ((b"", 10, 3), False),  # a conflict at its index: install
        ((b"", 7, 2), False),  # we hold 7 in term 1: a conflict
    ],
)
def test_a_snapshot_is_covered_only_by_the_same_entry_or_a_log_past_it(
    last: tuple[bytes, int, int], covered: bool
) -> None:
    assert snapshot_is_covered(SNAPSHOT_LOG, last) is covered
    assert snapshot_is_covered([], last) is False
