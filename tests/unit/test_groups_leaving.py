"""A master that is leaving keeps being asked to step down; cancelled handovers say what
they cancelled.

A master unregistered by another session (an operator) is ``leaving``: it is asked to
step down (cause member_left) and leaves with its slot. If a failback or a switchover
was already pending for its slot, that request stands in for the member_left one; when
it would be cancelled (its successor stopped being eligible), it becomes the holder's
member_left request instead, so the slot still moves (or is released after the
switchover timeout plus the holder's TTL). Driven through ``StateMachine.apply`` with
the helpers of test_groups.py.
"""

from __future__ import annotations

import pytest
from test_groups import AUTO, OFF, Driver, master_standby

from coord.v1 import groups_pb2 as gp

KINDS = ["named switchover", "best switchover", "failback"]


def unregister_by_operator(d: Driver, member: str, group: str = "g") -> None:
    d.ok(unregister=gp.Unregister(group=group, member_id=member, session_id=""))


def handover(d: Driver, slot: int = 0, group: str = "g") -> gp.Handover | None:
    ho = d.sm.groups.groups[group].handovers.get(slot)
    if ho is None:
        return None
    out = gp.Handover()
    out.CopyFrom(ho)
    return out


def withdraw(d: Driver, member: str, priority: int) -> None:
    """The member re-registers as no candidate: it stops being eligible."""
    d.join(member, d.s[member], priority=priority, candidate=False)


def low_master_with_a_pending(kind: str, timeout: int = 300) -> tuple[Driver, gp.Handover]:
    """Group g (1 slot): "a" (priority 1, TTL 1000) holds it; "b" (priority 5), the only
    other candidate, is the successor of a pending handover of ``kind``."""
    d = Driver()
    d.group(failback=AUTO if kind == "failback" else OFF, hold=0, timeout=timeout)
    for name, prio in (("a", 1), ("b", 5)):
        d.s[name] = d.session(1000)
        d.join(name, d.s[name], priority=prio)
    assert d.holders() == {0: "a"}
    if kind == "failback":
        assert d.advance() == [("stepdown_requested", "a", 0, "failback")]
    else:
        assert not d.switchover("b" if kind == "named switchover" else "").error_reason
    ho = handover(d)
    assert ho is not None
    assert (ho.from_member, ho.to_member, ho.named) == ("a", "b", kind == "named switchover")
    return d, ho


# -- a leaving master's request is not cancelled ------------------------------------------


def test_named_switchover_of_a_leaving_master_goes_to_the_next_candidate() -> None:
    """a is asked to make way for b (named); an operator unregisters a (the switchover
    stands for its member_left request); b withdraws. Before: the switchover was
    cancelled and a, leaving, kept the slot for good. Now a is asked to make way for c."""
    d = master_standby(timeout=300)
    assert not d.switchover("b").error_reason
    unregister_by_operator(d, "a")
    before = handover(d)
    assert before is not None and (before.to_member, before.named) == ("b", True)  # stands
    assert d.sm.groups.groups["g"].members["a"].leaving
    mark = d.sm.revision
    withdraw(d, "b", 2)
    assert d.since(mark) == [
        ("member_updated", "b", 0, ""),
        ("stepdown_requested", "a", 0, "member_left"),
    ]
    want = gp.Handover(
        slot=0, from_member="a", to_member="c", cause="member_left",
        deadline_ms=before.deadline_ms, named=False,
        requested_revision=before.requested_revision, timeout_ms=before.timeout_ms,
    )  # fmt: skip
    assert handover(d) == want
    assert d.events(mark)[-1].handover == want
    mark = d.sm.revision
    d.resign("a")  # a heard and lets go: it leaves with its slot
    assert d.since(mark) == [
        ("master_lost", "a", 0, "member_left"),
        ("member_left", "a", 0, "member_left"),
        ("master_elected", "c", 0, "member_left"),
    ]
    assert "a" not in d.sm.groups.groups["g"].members


@pytest.mark.parametrize("kind", KINDS)
def test_a_leaving_master_with_nobody_left_to_follow_is_released_after_timeout_and_ttl(
    kind: str,
) -> None:
    """As the plain member_left request for nobody: revoked at the (unchanged) deadline,
    released once a's TTL has passed, and a leaves. Before: the handover was cancelled
    and a kept the slot (and its membership) for good."""
    d, ho = low_master_with_a_pending(kind)
    unregister_by_operator(d, "a")
    assert handover(d) == ho  # the pending request stands for the member_left one
    mark = d.sm.revision
    withdraw(d, "b", 5)
    assert d.since(mark) == [
        ("member_updated", "b", 0, ""),
        ("stepdown_requested", "a", 0, "member_left"),
    ]
    want = gp.Handover(
        slot=0, from_member="a", to_member="", cause="member_left",
        deadline_ms=ho.deadline_ms, named=False,
        requested_revision=ho.requested_revision, timeout_ms=ho.timeout_ms,
    )  # fmt: skip
    assert handover(d) == want
    assert d.next_timer_ms() == ho.deadline_ms
    assert d.advance(at=ho.deadline_ms - 1) == []
    assert d.advance(at=ho.deadline_ms) == [("master_revoked", "a", 0, "member_left")]
    t = ho.deadline_ms + 1000  # a's TTL
    assert d.advance(at=t - 1) == []
    assert d.advance(at=t) == [
        ("master_lost", "a", 0, "member_left"),
        ("member_left", "a", 0, "member_left"),
    ]
    assert d.holders() == {}
    assert "a" not in d.sm.groups.groups["g"].members
    assert d.sm.groups.groups["g"].handovers == {}
    assert d.next_timer_ms() is None
    mark = d.sm.revision
    d.ok(campaign=gp.Campaign(group="g", member_id="b"))  # the vacancy's cause carries over
    assert d.since(mark)[-1] == ("master_elected", "b", 0, "member_left")


def test_a_leaving_masters_successor_taking_another_slot_hands_over_to_the_next() -> None:
    """Two slots: a (slot 0) is asked to make way for c (named), then unregistered by an
    operator; b's session expires and its slot 1 goes to c. Before: a's switchover was
    cancelled (c took another slot) and a kept slot 0. Now a makes way for d."""
    d = Driver()
    d.group(slots=2, timeout=300)
    for name, prio in (("a", 3), ("b", 2), ("c", 1), ("d", 0)):
        d.s[name] = d.session(1000)
        d.join(name, d.s[name], priority=prio)
    assert d.holders() == {0: "a", 1: "b"}
    assert not d.switchover("c").error_reason
    unregister_by_operator(d, "a")
    before = handover(d)
    assert before is not None
    mark = d.sm.revision
    d.expire(d.s["b"])
    assert ("stepdown_requested", "a", 0, "member_left") in d.since(mark)
    assert ("stepdown_cancelled", "a", 0, "switchover") not in d.since(mark)
    assert d.holders() == {0: "a", 1: "c"}
    assert handover(d) == gp.Handover(
        slot=0, from_member="a", to_member="d", cause="member_left",
        deadline_ms=before.deadline_ms, named=False,
        requested_revision=before.requested_revision, timeout_ms=before.timeout_ms,
    )  # fmt: skip
    d.advance(at=before.deadline_ms)  # revoked at the deadline
    d.advance(at=before.deadline_ms + 1000)  # released after a's TTL
    assert d.holders() == {0: "d", 1: "c"}
    assert "a" not in d.sm.groups.groups["g"].members


def test_a_leaving_masters_converted_request_is_retargeted_like_any_member_left() -> None:
    """Once it is a member_left request, its successor withdrawing re-targets it (to the
    next, then to nobody): it is never cancelled."""
    d = Driver()
    d.group(timeout=300)
    for name, prio in (("a", 1), ("b", 5), ("c", 4), ("e", 3)):
        d.s[name] = d.session(1000)
        d.join(name, d.s[name], priority=prio)
    assert not d.switchover("b").error_reason
    unregister_by_operator(d, "a")
    withdraw(d, "b", 5)
    assert handover(d).to_member == "c"  # type: ignore[union-attr]
    withdraw(d, "c", 4)
    assert handover(d).to_member == "e"  # type: ignore[union-attr]
    mark = d.sm.revision
    withdraw(d, "e", 3)
    assert d.since(mark)[-1] == ("stepdown_requested", "a", 0, "member_left")
    ho = handover(d)
    assert ho is not None and (ho.to_member, ho.cause) == ("", "member_left")


def test_a_made_over_request_already_past_its_deadline_is_revoked_in_the_same_advance() -> None:
    """The request keeps its deadline: when the release that takes its successor and the
    deadline fall due in one Advance, the refill makes it a's member_left request and the
    deadline then revokes a, with cause member_left (the cause its slot's grant gets)."""
    d = Driver()
    d.group(slots=2, timeout=300)
    for name, prio in (("x", 9), ("a", 8), ("c", 5), ("e", 1)):
        d.s[name] = d.session(1000)
        d.join(name, d.s[name], priority=prio)
    assert d.holders() == {0: "x", 1: "a"}
    d.ok(revoke_holding=gp.RevokeHolding(group="g", slot=0))
    released = d.holding(0).release_after_ms
    assert not d.switchover("c").error_reason  # slot 1: a makes way for c (named)
    unregister_by_operator(d, "a")
    before = handover(d, 1)
    assert before is not None and before.deadline_ms < released
    assert d.advance(at=released) == [
        ("master_lost", "x", 0, "admin_revoke"),
        ("master_elected", "c", 0, "admin_revoke"),
        ("stepdown_requested", "a", 1, "member_left"),
        ("master_revoked", "a", 1, "member_left"),
    ]
    assert handover(d, 1) == gp.Handover(
        slot=1, from_member="a", to_member="e", cause="member_left",
        deadline_ms=before.deadline_ms, named=False,
        requested_revision=before.requested_revision, timeout_ms=before.timeout_ms,
    )  # fmt: skip
    assert d.advance(at=released + 1000) == [
        ("master_lost", "a", 1, "member_left"),
        ("member_left", "a", 0, "member_left"),
        ("master_elected", "e", 1, "member_left"),
    ]
    assert d.holders() == {0: "c", 1: "e"}


@pytest.mark.parametrize("kind", KINDS)
def test_a_master_that_is_not_leaving_keeps_its_slot_when_the_handover_is_cancelled(
    kind: str,
) -> None:
    """Unchanged: only a leaving holder's request survives its successor."""
    d, ho = low_master_with_a_pending(kind)
    mark = d.sm.revision
    withdraw(d, "b", 5)
    assert d.since(mark)[-1] == ("stepdown_cancelled", "a", 0, ho.cause)
    assert d.sm.groups.groups["g"].handovers == {}
    d.advance(5000)
    assert d.holders() == {0: "a"}
    assert not d.holding().revoked


# -- stepdown_cancelled carries the handover it cancelled ---------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_stepdown_cancelled_carries_the_handover_as_it_was(kind: str) -> None:
    """Before: an unnamed switchover's cancellation said to_member "" (cleared for the
    search), a named one's and a failback's the old target. Now all carry the old one."""
    d, ho = low_master_with_a_pending(kind)
    mark = d.sm.revision
    withdraw(d, "b", 5)
    cancelled = d.events(mark)[-1]
    assert cancelled.type == "stepdown_cancelled"
    assert (cancelled.member, cancelled.slot, cancelled.cause) == ("a", 0, ho.cause)
    assert cancelled.token == d.holding().token
    assert cancelled.handover == ho
    assert cancelled.handover.to_member == "b"


# -- an operator's resign while another handover is pending ---------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_an_operator_resign_during_a_pending_handover_is_not_lost(kind: str) -> None:
    d, _ = low_master_with_a_pending(kind)
    assert not d.resign("a", by="").error_reason  # an operator asks a to step down
    withdraw(d, "b", 5)
    d.advance(5000)  # the deadline: revoked
    d.advance(5000)  # a's TTL: released
    assert d.holders() != {0: "a"}
