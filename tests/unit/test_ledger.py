"""The availability ledger: outages, FTSD, MTTR, MTBF, failovers and budget from events."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coord.state import ledger as L
from coord.v1 import groups_pb2

H = 3600 * 1000
S = 1000


class Feed:
    def __init__(self, slots: int = 1, budget_ms: int = 0, t0: int = 1_000_000) -> None:
        self.ledger = L.Ledger()
        self.rev = 0
        self.t = t0
        self.emit(
            "group_created",
            policy=groups_pb2.GroupPolicy(slots=slots, downtime_budget_ms=budget_ms),
        )

    def emit(self, kind: str, dt: int = 0, **fields: object) -> None:
        self.t += dt
        self.rev += 1
        fields.setdefault("group", "db")
        self.ledger.on_event(
            groups_pb2.Event(revision=self.rev, time_ms=self.t, type=kind, **fields)
        )  # type: ignore[arg-type]

    def up(self, slot: int = 0, dt: int = 0, cause: str = "initial", member: str = "a") -> None:
        self.emit("master_elected", dt, slot=slot, cause=cause, member=member)

    def down(
        self,
        slot: int = 0,
        dt: int = 0,
        cause: str = "session_expired",
        kind: str = "master_lost",
        since: int = 0,
    ) -> None:
        self.emit(kind, dt, slot=slot, cause=cause, member="a", lost_since_ms=since)

    @property
    def g(self):  # type: ignore[no-untyped-def]
        return self.ledger.groups["db"]


def test_no_accounting_before_the_first_master() -> None:
    f = Feed(budget_ms=30 * 60 * S)
    r = f.ledger.report("db", f.t + H)
    w = r.windows[0]
    assert (w.observed_ms, w.downtime_ms, w.ftsd, w.outages) == (0, 0, 0.0, 0)
    assert w.budget_remaining_ms == w.budget_ms > 0


def test_three_outages_downtime_mttr_mtbf() -> None:
    f = Feed()
    f.up()
    gaps = [2_000, 3_000, 4_000]
    for gap in gaps:
        f.down(dt=10 * S)
        f.up(dt=gap, cause="session_expired", member="b")
    now = f.t + 10 * S
    w = f.ledger.report("db", now, [3600]).windows[0]
    assert w.outages == w.outages_started == 3
    assert w.downtime_ms == sum(gaps)
    assert w.mttr_ms == pytest.approx(sum(gaps) / 3)
    assert w.observed_ms == now - f.g.tracking_since_ms
    assert w.ftsd == pytest.approx(sum(gaps) / w.observed_ms)
    assert w.mtbf_ms == pytest.approx((w.observed_ms - sum(gaps)) / 3)
    assert dict(w.failovers_by_cause) == {"session_expired": 3}
    assert f.g.outage_count == 3 and f.g.downtime_ms == sum(gaps)


def test_an_open_outage_counts_up_to_now_and_is_on_the_timeline() -> None:
    f = Feed()
    f.up()
    f.down(dt=S, cause="unhealthy")
    r = f.ledger.report("db", f.t + 5 * S, [3600])
    assert r.outage_open
    assert r.windows[0].downtime_ms == 5 * S
    assert r.windows[0].mttr_ms == 0  # nothing repaired yet
    assert [o.cause for o in r.timeline] == ["unhealthy"]
    assert r.timeline[-1].end_ms == 0


def test_revoke_then_release_is_one_outage_from_the_revoke() -> None:
    f = Feed()
    f.up()
    f.down(dt=S, cause="switchover", kind="master_revoked")
    t_revoke = f.t
    f.down(dt=2 * S, cause="switchover")  # the slot is released after the TTL
    f.up(dt=10, cause="switchover", member="b")
    (o,) = f.g.outages
    assert (o.start_ms, o.end_ms) == (t_revoke, t_revoke + 2 * S + 10)
    assert f.g.outage_count == 1


def test_multi_slot_outage_lasts_while_any_slot_is_down() -> None:
    f = Feed(slots=3)
    for s in range(3):
        f.up(slot=s)
    f.down(slot=0, dt=S)
    f.down(slot=1, dt=S)
    f.up(slot=0, dt=S, cause="session_expired")
    assert f.g.open_outage.start_ms  # slot 1 is still down
    f.up(slot=1, dt=S, cause="session_expired")
    (o,) = f.g.outages
    assert o.end_ms - o.start_ms == 3 * S


def test_a_slot_that_never_had_a_master_is_not_an_outage() -> None:
    f = Feed(slots=2)
    f.up(slot=0)  # slot 1: no second member yet
    assert not f.g.open_outage.start_ms
    assert f.ledger.report("db", f.t + H, [3600]).windows[0].downtime_ms == 0


def test_window_clips_old_outages_and_budget_scales() -> None:
    f = Feed(budget_ms=30 * 60 * S)  # 30 min per 30 days = 1 min per day, 2.5 s per hour
    f.up()
    f.down(dt=2 * H)
    f.up(dt=60 * S, cause="session_expired")  # a 60 s outage, 2 h ago
    now = f.t + 2 * H
    hour, day = f.ledger.report("db", now, [3600, 86400]).windows
    assert hour.downtime_ms == 0 and hour.outages == 0
    assert day.downtime_ms == 60 * S
    assert hour.budget_ms == 2_500
    assert day.budget_ms == 60 * S
    assert day.budget_remaining_ms == 0
    # Half the outage falls in a window that starts in its middle.
    start = f.g.outages[0].start_ms
    w = L.report(f.g, start + 30 * S + 3600 * S, [3600]).windows[0]
    assert w.downtime_ms == 30 * S


def test_group_deleted_drops_its_ledger_and_snapshot_round_trips() -> None:
    f = Feed()
    f.up()
    f.down(dt=S)
    copy = L.Ledger()
    copy.load(f.ledger.to_proto())
    assert copy.to_proto() == f.ledger.to_proto()
    f.emit("group_deleted")
    assert "db" not in f.ledger.groups
    assert "db" in copy.groups  # a loaded copy is independent


def test_history_is_bounded() -> None:
    f = Feed()
    f.up()
    for _ in range(L.MAX_OUTAGES + 20):
        f.down(dt=S)
        f.up(dt=S, cause="resign")
    assert len(f.g.outages) == L.MAX_OUTAGES
    assert f.g.outage_count == L.MAX_OUTAGES + 20
    f.down(dt=31 * 24 * H)  # a month later every closed outage is past the horizon
    f.up(dt=S, cause="resign")
    assert len(f.g.outages) == 1
    assert len(f.g.failovers) == 1


@given(st.lists(st.tuples(st.integers(0, 2), st.booleans(), st.integers(1, 10 * S)), max_size=40))
def test_downtime_equals_the_measure_of_time_with_a_down_slot(
    steps: list[tuple[int, bool, int]],
) -> None:
    """A brute-force model: walk the steps, add up the time during which some slot that
    has had a master has none; the ledger's total downtime must match it exactly."""
    f = Feed(slots=3)
    up: set[int] = set()
    ever: set[int] = set()
    model = 0
    last = f.t
    for slot, going_up, dt in steps:
        if any(s in ever and s not in up for s in range(3)):
            model += dt
        if going_up:
            f.up(slot=slot, dt=dt, cause="initial" if slot not in ever else "resign")
            up.add(slot)
            ever.add(slot)
        else:
            f.down(slot=slot, dt=dt)
            up.discard(slot)
        last = f.t
    total = f.ledger.report("db", last, [3600 * 24 * 365]).downtime_ms_total
    assert total == model


def test_an_expired_master_is_down_from_its_last_renewal() -> None:
    f = Feed()
    f.up()
    t_up = f.t
    # Killed; its 2 s session expires at t (the leader stamps lost_since = t - TTL), and
    # the standby is elected in the same command.
    f.t += 60 * S
    f.down(since=f.t - 2 * S)
    f.up(cause="session_expired", member="b")
    (o,) = f.g.outages
    assert (o.start_ms, o.end_ms) == (f.t - 2 * S, f.t)
    # Never before the master was elected, nor before the previous outage ended.
    f.t += 500
    f.down(since=f.t - 2 * S)
    f.up(cause="session_expired")
    assert f.g.outages[-1].start_ms == f.t - 500
    assert t_up < f.g.outages[0].start_ms


def test_a_handover_in_one_command_is_a_failover_not_an_outage() -> None:
    f = Feed()
    f.up()
    f.down(dt=S, cause="resign")
    f.up(cause="resign", member="b")
    assert f.g.outage_count == 0 and not f.g.outages and not f.g.open_outage.start_ms
    assert dict(f.g.failovers_by_cause) == {"resign": 1}
