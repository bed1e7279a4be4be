"""coord.raft.membership and the journal's tracking of configuration entries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coord.raft import membership as m
from coord.raft.journal import DurableJournal

A = {
    "n1": m.NodeAddress("127.0.0.1:1", "127.0.0.1:2"),
    "n2": m.NodeAddress("127.0.0.1:3", "127.0.0.1:4"),
    "n3": m.NodeAddress("127.0.0.1:5", "127.0.0.1:6"),
}
N4 = m.NodeAddress("127.0.0.1:7", "127.0.0.1:8")


def test_change_round_trips_through_its_entry() -> None:
    for change in (m.Change(m.ADD, "n4", N4), m.Change(m.REMOVE, "n2")):
        entry = m.encode_change(change)
        assert m.is_change(entry)
        assert m.decode_change(entry) == change
    assert m.decode_change(b"\x00regular") is None
    assert m.decode_change(b"\x01") is None


def test_config_is_base_plus_entries_after_its_index() -> None:
    add = (10, m.encode_change(m.Change(m.ADD, "n4", N4)))
    rem = (12, m.encode_change(m.Change(m.REMOVE, "n1")))
    assert m.apply_changes(A, [add, rem], after=0) == {"n2": A["n2"], "n3": A["n3"], "n4": N4}
    # Entries at or below the base's index are already in it.
    assert m.apply_changes(A, [add, rem], after=10) == {"n2": A["n2"], "n3": A["n3"]}
    assert m.apply_changes(A, [add, rem], after=12) == A


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (m.Change(m.ADD, "n2", N4), "already a member"),
        (m.Change(m.ADD, "n4", m.NodeAddress(A["n1"].raft, "h:9")), "already used"),
        (m.Change(m.ADD, "n4", None), "needs its raft and api"),
        (m.Change(m.REMOVE, "n9"), "not a member"),
        (m.Change(m.REMOVE, "n1"), "transfer leadership first"),
        (m.Change("swap", "n1"), "unknown"),
    ],
)
def test_bad_changes_say_why(change: m.Change, reason: str) -> None:
    why = m.check_change(A, change, self_id="n1")
    assert why is not None and reason in why


def test_good_changes_pass() -> None:
    assert m.check_change(A, m.Change(m.ADD, "n4", N4), "n1") is None
    assert m.check_change(A, m.Change(m.REMOVE, "n3"), "n1") is None
    full = {f"n{i}": m.NodeAddress(f"h:{i}", f"h:{100 + i}") for i in range(7)}
    assert "7 members" in (m.check_change(full, m.Change(m.ADD, "x", N4), "n0") or "")


# -- strict reconfiguration check: no change that leaves the cluster unable to commit ---

FIVE = {f"n{i}": m.NodeAddress(f"h:{i}", f"h:{100 + i}") for i in range(1, 6)}


@pytest.mark.parametrize(
    ("config", "change", "active", "ok"),
    [
        # 3 members, all up: add (4 need 3, 3 up) or remove a follower (2 need 2).
        (A, m.Change(m.ADD, "n4", N4), {"n1", "n2", "n3"}, True),
        (A, m.Change(m.REMOVE, "n3"), {"n1", "n2", "n3"}, True),
        # 3 members, n3 down: adding makes 4 that need 3 (2 up): refused; removing the
        # dead n3 is fine (2 need 2); removing live n2 leaves n1 alone of 2: refused.
        (A, m.Change(m.ADD, "n4", N4), {"n1", "n2"}, False),
        (A, m.Change(m.REMOVE, "n3"), {"n1", "n2"}, True),
        (A, m.Change(m.REMOVE, "n2"), {"n1", "n2"}, False),
        # 5 members, 2 down: adding makes 6 that need 4 (3 up): refused; removing a dead
        # one makes 4 that need 3 (3 up): fine; removing a live one: refused.
        (FIVE, m.Change(m.ADD, "n6", N4), {"n1", "n2", "n3"}, False),
        (FIVE, m.Change(m.REMOVE, "n5"), {"n1", "n2", "n3"}, True),
        (FIVE, m.Change(m.REMOVE, "n3"), {"n1", "n2", "n3"}, False),
        # 1 -> 2 (growing a single node): allowed, as etcd does.
        ({"n1": A["n1"]}, m.Change(m.ADD, "n2", N4), {"n1"}, True),
        # Nodes the leader hears from that are not members do not count.
        (A, m.Change(m.ADD, "n4", N4), {"n1", "n2", "n9"}, False),
    ],
)
def test_strict_reconfiguration_check(
    config: dict[str, m.NodeAddress], change: m.Change, active: set[str], ok: bool
) -> None:
    why = m.check_quorum_after(config, change, active)
    assert (why is None) == ok, why
    if not ok:
        assert why is not None and "must be up to commit anything" in why
        for nid in sorted(set(config) - active):
            assert nid in why  # names the members that are down


def test_json_round_trip() -> None:
    assert m.from_json(m.to_json(A)) == A
    with pytest.raises(ValueError):
        m.from_json(["n1"])


def _journal(path: Path) -> DurableJournal:
    return DurableJournal(os.path.join(path, "j"), fsync=False)


def test_journal_tracks_config_entries_across_truncation_compaction_and_reload(
    tmp_path: Path,
) -> None:
    j = _journal(tmp_path)
    changes: list[int] = []
    j.on_config_change = lambda: changes.append(len(j.config_entries()))
    j.add(b"\x01", 1, 0)
    add = m.encode_change(m.Change(m.ADD, "n4", N4))
    rem = m.encode_change(m.Change(m.REMOVE, "n4"))
    j.add(b"\x00a", 2, 1)
    j.add(add, 3, 1)
    j.add(b"\x00b", 4, 1)
    j.add(rem, 5, 1)
    assert j.config_entries() == [(3, add), (5, rem)]
    assert changes == [1, 2]
    j.deleteEntriesFrom(4)  # position 4 = index 5: the removal goes
    assert j.config_entries() == [(3, add)]
    assert changes == [1, 2, 1]
    j.deleteEntriesFrom(3)  # index 4 (regular): no config change to report
    assert changes == [1, 2, 1]
    j.close()
    j = _journal(tmp_path)
    assert j.config_entries() == [(3, add)]
    j.deleteEntriesTo(3)  # compaction: entries up to index 3 folded into a snapshot
    assert j.config_entries() == []
    j.close()


ops = st.lists(
    st.tuples(st.sampled_from([m.ADD, m.REMOVE]), st.sampled_from(["n1", "n2", "n4", "n5"])),
    max_size=12,
)


@given(ops, st.integers(min_value=0, max_value=12))
def test_folding_a_prefix_into_the_base_changes_nothing(
    seq: list[tuple[str, str]], cut: int
) -> None:
    """base + all entries == (base + entries <= cut) + entries > cut: what compaction relies on."""
    entries = [
        (i + 1, m.encode_change(m.Change(op, nid, N4 if op == m.ADD else None)))
        for i, (op, nid) in enumerate(seq)
    ]
    whole = m.apply_changes(A, entries, after=0)
    folded = m.apply_changes(A, [e for e in entries if e[0] <= cut], after=0)
    assert m.apply_changes(folded, entries, after=cut) == whole
