"""chaos.checkers: each checker passes a clean record and catches a planted violation."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import Any

import pytest

from chaos import checkers
from chaos.checkers import (
    Violation,
    acknowledged_writes_present,
    check_all,
    graceful_no_failover,
    linearizable,
    overlapping_masters,
    recovered,
    tokens_increase,
    watch_gap_free,
    watch_notes,
)
from chaos.records import LoggedWrite, RunRecord, SessionLoss, Tenure, WatchLog

T0 = 1000.0  # record.start: messages show times relative to it


def rec(**kwargs: Any) -> RunRecord:
    kwargs.setdefault("end", T0 + 100.0)
    return RunRecord(scenario="test", seed=1, start=T0, **kwargs)


def ten(
    process: str, start: float, end: float | None, token: int, slot: int = 0, group: str = "g"
) -> Tenure:
    return Tenure(process, group, slot, token, T0 + start, None if end is None else T0 + end)


# -- overlapping_masters -----------------------------------------------------------------


def test_handover_without_overlap_passes() -> None:
    r = rec(tenures=[ten("p1", 0, 10, 5), ten("p2", 12, 20, 9), ten("p1", 25, None, 14)])
    assert overlapping_masters(r) == []


def test_touching_tenures_do_not_overlap() -> None:
    r = rec(tenures=[ten("p1", 0, 10, 5), ten("p2", 10, 20, 9), ten("p3", 20, None, 12)])
    assert overlapping_masters(r) == []


def test_overlapping_holder_is_caught_with_names_and_times() -> None:
    r = rec(tenures=[ten("p1", 0, 10.5, 5), ten("p2", 10, 20, 9)])
    [v] = overlapping_masters(r)
    assert v.checker == "overlapping_masters"
    assert "slot 0 has two masters" in v.detail
    assert "p1" in v.detail and "p2" in v.detail
    assert "token 5" in v.detail and "token 9" in v.detail
    assert "from +10.000s to +10.500s (0.500 s)" in v.detail


def test_open_ended_tenure_lasts_until_run_end() -> None:
    # p1 never saw itself lose the slot: it still believes when p2 is elected.
    r = rec(tenures=[ten("p1", 0, None, 5), ten("p2", 50, 60, 9)])
    [v] = overlapping_masters(r)
    assert "from +50.000s to +60.000s" in v.detail
    assert "open (+100.000s)" in v.detail
    # ... but a tenure starting when the run ended overlaps nothing.
    r = rec(tenures=[ten("p1", 0, None, 5), ten("p2", 100, None, 9)])
    assert overlapping_masters(r) == []


def test_open_ended_tenure_without_a_run_end_lasts_for_ever() -> None:
    r = RunRecord("test", 1, start=T0, tenures=[ten("p1", 0, None, 5), ten("p2", 50, 60, 9)])
    assert len(overlapping_masters(r)) == 1


def test_different_slots_and_groups_may_overlap() -> None:
    r = rec(
        tenures=[
            ten("p1", 0, None, 5, slot=0),
            ten("p2", 0, None, 6, slot=1),
            ten("p3", 0, None, 7, group="other"),
            ten("p1", 0, None, 8, group="other2"),  # p1: one slot in each of two groups
        ]
    )
    assert overlapping_masters(r) == []


def test_one_process_holding_two_slots_is_caught() -> None:
    r = rec(tenures=[ten("p1", 0, 10, 5, slot=0), ten("p1", 5, 15, 6, slot=1)])
    [v] = overlapping_masters(r)
    assert "p1 holds two slots (0 and 1)" in v.detail
    assert "from +5.000s to +10.000s" in v.detail


def test_one_belief_recorded_twice_is_not_two_masters() -> None:
    r = rec(tenures=[ten("p1", 0, 10, 5), ten("p1", 2, 8, 5)])
    assert overlapping_masters(r) == []


def test_every_overlapping_pair_is_reported_and_zero_length_overlaps_nothing() -> None:
    r = rec(
        tenures=[
            ten("p1", 0, 30, 5),
            ten("p2", 10, 20, 6),
            ten("p3", 15, 25, 7),
            ten("p4", 40, 40, 8),
            ten("p5", 40, 50, 9),
        ]
    )
    pairs = sorted(
        tuple(p for p in ("p1", "p2", "p3", "p4", "p5") if p in v.detail)
        for v in overlapping_masters(r)
    )
    assert pairs == [("p1", "p2"), ("p1", "p3"), ("p2", "p3")]


def test_malformed_tenure_is_reported() -> None:
    [v] = overlapping_masters(rec(tenures=[ten("p1", 10, 5, 5)]))
    assert "malformed" in v.detail and "p1" in v.detail


# -- tokens_increase -----------------------------------------------------------------------


def test_increasing_tokens_pass() -> None:
    r = rec(
        tenures=[
            ten("p2", 12, 20, 9),
            ten("p1", 0, 10, 5),
            ten("p1", 25, None, 14),
            ten("p3", 0, None, 6, slot=1),
        ]
    )
    assert tokens_increase(r) == []


def test_token_going_backwards_is_caught() -> None:
    r = rec(tenures=[ten("p1", 0, 10, 9), ten("p2", 12, 20, 5)])
    [v] = tokens_increase(r)
    assert v.checker == "tokens_increase"
    assert "group g slot 0: token went backwards" in v.detail
    assert "p2 (slot 0, token 5, +12.000s" in v.detail
    assert "p1 (slot 0, token 9, +0.000s" in v.detail


def test_same_process_reobserving_its_grant_is_allowed() -> None:
    r = rec(tenures=[ten("p1", 0, 10, 5), ten("p1", 11, 20, 5), ten("p2", 30, None, 9)])
    assert tokens_increase(r) == []


def test_stale_grant_believed_again_after_a_newer_one_is_caught() -> None:
    r = rec(tenures=[ten("p1", 0, 10, 5), ten("p2", 11, 20, 9), ten("p1", 21, 25, 5)])
    [v] = tokens_increase(r)
    assert "went backwards" in v.detail and "+21.000s" in v.detail


def test_token_shared_by_two_processes_is_caught() -> None:
    r = rec(tenures=[ten("p1", 0, 10, 5), ten("p2", 12, 20, 5)])
    [v] = tokens_increase(r)
    assert "token 5 shared by" in v.detail and "p1" in v.detail and "p2" in v.detail


def test_token_in_two_slots_is_caught() -> None:
    r = rec(tenures=[ten("p1", 0, 10, 5, slot=0), ten("p2", 0, 10, 5, group="h")])
    [v] = tokens_increase(r)
    assert "token 5 believed for 2 slots" in v.detail
    assert "g/0 by p1" in v.detail and "h/0 by p2" in v.detail


# -- acknowledged_writes_present ------------------------------------------------------------


def test_all_acked_writes_present_passes() -> None:
    r = rec(acked=["k1", "k2"], final={"n1": {"k1", "k2", "k3"}, "n2": {"k1", "k2"}})
    assert acknowledged_writes_present(r) == []


def test_lost_write_on_one_node_is_caught() -> None:
    r = rec(
        acked=["k1", "k2", "k3"],
        final={"n1": {"k1", "k2", "k3"}, "n2": {"k1", "k3"}, "n3": {"k1", "k2", "k3"}},
    )
    [v] = acknowledged_writes_present(r)
    assert v.checker == "acknowledged_writes_present"
    expected = "node n2 lacks 1 of 3 acknowledged keys (0 of them missing on every node): k2"
    assert v.detail == expected


def test_write_lost_everywhere_is_reported_per_node_and_sampled() -> None:
    acked = [f"k{i:02}" for i in range(15)]
    r = rec(acked=acked, final={"n1": set(), "n2": {"k00"}})
    v1, v2 = acknowledged_writes_present(r)
    assert "node n1 lacks 15 of 15" in v1.detail and "14 of them missing on every" in v1.detail
    assert "... and 5 more" in v1.detail
    assert "node n2 lacks 14 of 15" in v2.detail


def test_nothing_read_back_is_a_violation() -> None:
    [v] = acknowledged_writes_present(rec(acked=["k1"]))
    assert "nothing was read back" in v.detail and "1 acknowledged" in v.detail
    assert len(acknowledged_writes_present(rec())) == 1


def test_no_acked_writes_with_reads_passes() -> None:
    assert acknowledged_writes_present(rec(final={"n1": set()})) == []


# -- watch_gap_free --------------------------------------------------------------------------


def watch(revs: list[int], start: int = 5, filtered: bool = False, error: str = "") -> WatchLog:
    return WatchLog("w1", start, revs, filtered, error)


def test_contiguous_and_filtered_watches_pass() -> None:
    r = rec(
        watches=[
            watch([5, 6, 7, 8]),
            watch([]),
            watch([6, 9, 40], filtered=True),
            watch([], filtered=True),
        ]
    )
    assert watch_gap_free(r) == []


def test_gap_and_duplicate_in_an_unfiltered_stream_are_caught() -> None:
    [v] = watch_gap_free(rec(watches=[watch([5, 6, 6, 9, 10, 12])]))
    assert v.checker == "watch_gap_free"
    assert v.detail.startswith("watcher w1 (unfiltered, from revision 5, 6 received): ")
    assert "duplicate revision 6 (#2)" in v.detail
    assert "missing 7..8 (2 revisions)" in v.detail
    assert "missing 11" in v.detail


def test_unfiltered_stream_must_start_at_from_revision() -> None:
    [v] = watch_gap_free(rec(watches=[watch([7, 8])]))
    assert "missing 5..6" in v.detail
    [v] = watch_gap_free(rec(watches=[watch([4, 5, 6])]))
    assert "revision 4 (#0) is below from_revision 5" in v.detail


def test_out_of_order_is_not_also_a_gap() -> None:
    [v] = watch_gap_free(rec(watches=[watch([5, 7, 6, 8])]))
    assert "revision 6 (#2) out of order, after 7" in v.detail
    assert "missing" not in v.detail


def test_filtered_stream_allows_gaps_but_not_duplicates_or_disorder() -> None:
    [v] = watch_gap_free(rec(watches=[watch([6, 9, 9, 8, 20], filtered=True)]))
    assert "filtered" in v.detail
    assert "duplicate revision 9 (#2)" in v.detail
    assert "revision 8 (#3) out of order, after 9" in v.detail
    assert "missing" not in v.detail


def test_compacted_error_is_a_note_not_a_violation() -> None:
    error = "OUT_OF_RANGE: revision 3 was compacted (oldest kept: 10, current: 50)"
    r = rec(watches=[watch([5, 6], error=error)])
    assert watch_gap_free(r) == []
    [note] = watch_notes(r)
    assert "w1 stopped at compaction after 2 revisions (last 6)" in note
    # ... but what it received before is still checked.
    [v] = watch_gap_free(rec(watches=[watch([5, 7, 6], error=error)]))
    assert "out of order" in v.detail and "compacted" not in v.detail


def test_other_watch_error_is_a_violation() -> None:
    [v] = watch_gap_free(rec(watches=[watch([5, 6], error="UNAVAILABLE: no leader")]))
    assert "failed after 2 revisions (last 6): UNAVAILABLE: no leader" in v.detail
    assert watch_notes(rec(watches=[watch([5, 6], error="UNAVAILABLE")])) == []


def test_each_broken_watcher_is_one_violation() -> None:
    w2 = WatchLog("w2", 1, [1, 3])
    vs = watch_gap_free(rec(watches=[watch([5, 5]), watch([5, 6]), w2]))
    assert [v.detail.split(" ")[1] for v in vs] == ["w1", "w2"]


# -- recovered ------------------------------------------------------------------------------


def test_recovery_within_bound_passes() -> None:
    assert recovered(rec(recovered_after_s=3.0), 5.0) == []
    assert recovered(rec(recovered_after_s=5.0), 5.0) == []


def test_recovery_over_bound_is_caught() -> None:
    [v] = recovered(rec(recovered_after_s=7.25), 5.0)
    assert v == Violation(
        "recovered", "recovery took 7.25 s after the heal, over the bound of 5.00 s"
    )


def test_no_recovery_is_caught() -> None:
    [v] = recovered(rec(), 5.0)
    assert "no recovery after the heal" in v.detail


# -- linearizable ---------------------------------------------------------------------------


@dataclass
class FakeResult:
    ok: bool
    key: object = None
    explanation: str = ""
    unknown: bool = False


@pytest.fixture
def fake_lin(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Installs a fake chaos.linearizability whose check returns ``state.result``."""
    state = types.SimpleNamespace(result=FakeResult(ok=True), calls=[])
    module = types.ModuleType("chaos.linearizability")

    def check(history: list[object], init: object = None, timeout_s: float = 30) -> FakeResult:
        state.calls.append((history, timeout_s))
        if isinstance(state.result, Exception):
            raise state.result
        return state.result  # type: ignore[no-any-return]

    module.check = check  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "chaos.linearizability", module)
    return state


def test_linearizable_history_passes(fake_lin: types.SimpleNamespace) -> None:
    history: list[object] = ["op1", "op2"]
    assert linearizable(rec(kv_history=history), timeout_s=2.0) == []
    assert fake_lin.calls == [(history, 2.0)]


def test_non_linearizable_history_is_caught(fake_lin: types.SimpleNamespace) -> None:
    fake_lin.result = FakeResult(ok=False, key="reg", explanation="read 3 after cas 3->4")
    [v] = linearizable(rec(kv_history=["a", "b"]))
    assert v == Violation(
        "linearizable",
        "history of 2 operations is not linearizable (key 'reg'): read 3 after cas 3->4",
    )


def test_undecided_history_is_a_violation(fake_lin: types.SimpleNamespace) -> None:
    fake_lin.result = FakeResult(ok=False, key="reg", unknown=True, explanation="timed out")
    [v] = linearizable(rec(kv_history=["a"]), timeout_s=1.5)
    assert v.detail.startswith("undecided within 1.5 s (1 operations, key 'reg')")


def test_checker_exception_is_a_violation(fake_lin: types.SimpleNamespace) -> None:
    fake_lin.result = ValueError("bad op")
    [v] = linearizable(rec())
    assert "the checker raised on 0 operations: ValueError('bad op')" in v.detail


def test_missing_linearizability_module_is_a_violation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "chaos.linearizability", None)  # import raises
    [v] = linearizable(rec())
    assert v.detail.startswith("cannot import chaos.linearizability")


def test_with_the_real_checker_an_empty_history_passes() -> None:
    pytest.importorskip("chaos.linearizability")
    assert linearizable(rec(), timeout_s=5.0) == []


# -- check_all ------------------------------------------------------------------------------


def clean_record() -> RunRecord:
    return rec(
        tenures=[ten("p1", 0, 10, 5), ten("p2", 10, None, 9)],
        watches=[watch([5, 6, 7])],
        acked=["k1"],
        final={"n1": {"k1"}, "n2": {"k1"}},
        recovered_after_s=2.0,
    )


def test_check_all_clean_record_passes(fake_lin: types.SimpleNamespace) -> None:
    assert check_all(clean_record(), recovery_bound_s=5.0) == []


def test_check_all_collects_every_checker(fake_lin: types.SimpleNamespace) -> None:
    fake_lin.result = FakeResult(ok=False, key="reg", explanation="x")
    r = clean_record()
    r.tenures.append(ten("p3", 15, 16, 3))  # overlaps p2, and its token went backwards
    r.watches.append(WatchLog("w2", 1, [1, 1]))
    r.final["n2"] = set()
    r.recovered_after_s = 9.0
    r.graceful = True
    r.session_losses.append(SessionLoss("s1", T0 + 3, "the cluster said expired"))
    r.writes.append(LoggedWrite("create_group", "g9", T0 + 1, T0 + 2, "ok"))  # never applied
    names = [v.checker for v in check_all(r, recovery_bound_s=5.0)]
    assert names == [
        "overlapping_masters",
        "tokens_increase",
        "acknowledged_writes_present",
        "watch_gap_free",
        "recovered",
        "linearizable",
        *["graceful_no_failover"] * 4,  # the loss, a master change, two ended tenures
        "applied_once",
    ]


def test_empty_record(fake_lin: types.SimpleNamespace) -> None:
    r = RunRecord("empty", 0, start=T0)
    assert overlapping_masters(r) == []
    assert tokens_increase(r) == []
    assert watch_gap_free(r) == []
    assert watch_notes(r) == []
    # Nothing read back, and no recovery measured: an empty run proves nothing.
    assert [v.checker for v in check_all(r, 5.0)] == ["acknowledged_writes_present", "recovered"]


def test_violation_str() -> None:
    assert str(checkers.Violation("x", "y")) == "[x] y"


# -- graceful_no_failover ----------------------------------------------------------------


def graceful(**kwargs: Any) -> RunRecord:
    kwargs.setdefault("stopping", T0 + 90.0)
    return rec(graceful=True, sessions_kept=200, **kwargs)


def test_graceful_run_that_kept_every_session_and_master_passes() -> None:
    r = graceful(
        tenures=[
            ten("p1", 0, 90.5, 5),  # ended when the workload was stopped
            ten("p2", 0, None, 7, slot=1),
            ten("p3", 91, 91.2, 12),  # granted after the stop (p1's slot moved on): ignored
        ],
        session_losses=[SessionLoss("load-1", T0 + 95, "no keepalive acknowledged")],
    )
    assert graceful_no_failover(r) == []


def test_a_run_that_is_not_graceful_is_not_judged() -> None:
    r = rec(
        tenures=[ten("p1", 0, 10, 5), ten("p2", 12, None, 9)],
        session_losses=[SessionLoss("s", T0 + 5, "the cluster said expired")],
    )
    assert graceful_no_failover(r) == []


def test_a_lost_session_is_caught_with_its_name_time_and_cause() -> None:
    r = graceful(
        session_losses=[
            SessionLoss("load-7", T0 + 12.5, "the cluster said expired"),
            SessionLoss("load-3", T0 + 12.25, "no keepalive acknowledged within its TTL"),
        ]
    )
    [v] = graceful_no_failover(r)
    assert v.checker == "graceful_no_failover"
    assert "2 sessions of 200 kept lost" in v.detail
    assert "load-3 at +12.250s (no keepalive acknowledged within its TTL)" in v.detail
    assert "load-7 at +12.500s (the cluster said expired)" in v.detail
    assert v.detail.index("load-3") < v.detail.index("load-7")  # in time order


def test_a_master_change_is_caught_even_without_overlap() -> None:
    r = graceful(tenures=[ten("p1", 0, 30, 5), ten("p2", 31, None, 9)])
    out = graceful_no_failover(r)
    assert [v.checker for v in out] == ["graceful_no_failover"] * 2
    assert "group g slot 0 changed master 1 times" in out[0].detail
    assert "token 5" in out[0].detail and "token 9" in out[0].detail
    assert "p1 (slot 0, token 5, +0.000s..+30.000s) stopped believing" in out[1].detail


def test_a_master_that_stopped_believing_and_won_again_is_caught() -> None:
    # Same process, new grant: still a failover (its session was lost and replaced).
    r = graceful(tenures=[ten("p1", 0, 30, 5), ten("p1", 32, None, 11)])
    details = [v.detail for v in graceful_no_failover(r)]
    assert any("changed master 1 times" in d for d in details)
    assert any("stopped believing before the run ended" in d for d in details)


def test_without_a_recorded_stop_every_end_counts() -> None:
    r = rec(graceful=True, tenures=[ten("p1", 0, 95, 5)])
    [v] = graceful_no_failover(r)
    assert "stopped believing" in v.detail


# -- the bank workload (chaos.bank) ------------------------------------------------------------


def test_bank_audits_that_sum_to_the_total_pass_and_empty_ones_are_before_opening() -> None:
    from chaos.bank import TOTAL, bank_conserved

    r = rec(bank_audits=[(T0, 0, 0, 3), (T0 + 1, 5, TOTAL, 9), (T0 + 2, 5, TOTAL, 12)])
    assert bank_conserved(r) == []


@pytest.mark.parametrize(("accounts", "total"), [(5, 491), (4, 400), (5, 509)])
def test_a_torn_lost_or_doubled_transfer_is_caught(accounts: int, total: int) -> None:
    from chaos.bank import TOTAL, bank_conserved

    r = rec(bank_audits=[(T0, 5, TOTAL, 9), (T0 + 1, accounts, total, 14)])
    (v,) = bank_conserved(r)
    assert v.checker == "bank_conserved" and "first at revision 14" in v.detail
