"""What a Session's acknowledgements say about a slot it was granted (no network).

Regression (issue 13, hole 2): ``Session.holds()`` trusted every acknowledgement sent
at or before the grant was seen here, so a view that already showed the slot revoked,
re-granted under a higher token, or gone, was ignored by a ``Leadership`` constructed
after it arrived: a deposed master went on acting until the next keepalive.
"""

from __future__ import annotations

import time

import pytest

from coord.client import Session, SessionState, clock
from coord.client.election import Leadership, Member
from coord.v1 import common_pb2, election_pb2, groups_pb2

GROUP = "db"
TOKEN = 90  # the revision at which the slot was granted


def offline_session(ttl_s: float = 5.0) -> Session:
    """A Session as ``start()`` leaves it once Open answered, without the RPC or the
    background threads (its constructor does no I/O): the tests drive its
    acknowledgement handling directly."""
    s = Session(_Answering(), ttl_s=ttl_s)  # type: ignore[arg-type]
    s._id, s._state = "s1", SessionState.CONNECTED
    now = clock.now()
    s._valid_until, s._last_ack = now + ttl_s, now
    return s


def ack(revision: int, *held: tuple[int, int, bool]) -> election_pb2.KeepAliveResponse:
    """An acknowledgement whose holdings view was read at ``revision``."""
    return election_pb2.KeepAliveResponse(
        header=common_pb2.ResponseHeader(revision=revision),
        held=[
            election_pb2.Held(group=GROUP, slot=slot, token=token, revoked=revoked)
            for slot, token, revoked in held
        ],
    )


def holds_after_early_ack(resp: election_pb2.KeepAliveResponse) -> bool:
    """Whether the slot granted at TOKEN is held, when ``resp`` (to a keepalive sent
    before the grant was seen here) arrived before the Leadership was built."""
    s = offline_session()
    s._acked(clock.now(), resp)
    granted_at = clock.now()
    return s.holds(GROUP, 0, TOKEN, granted_at)


def test_an_early_ack_that_shows_the_token_revoked_ends_mastership() -> None:
    assert not holds_after_early_ack(ack(TOKEN + 1, (0, TOKEN, True)))


def test_an_early_ack_that_shows_a_higher_token_ends_mastership() -> None:
    assert not holds_after_early_ack(ack(TOKEN + 5, (0, TOKEN + 5, False)))


def test_an_early_ack_as_new_as_the_grant_without_the_slot_ends_mastership() -> None:
    assert not holds_after_early_ack(ack(TOKEN + 3))


def test_an_early_ack_older_than_the_grant_says_nothing_about_it() -> None:
    assert holds_after_early_ack(ack(TOKEN - 1))  # read before the grant: no slot yet
    assert holds_after_early_ack(ack(TOKEN - 1, (0, TOKEN - 10, False)))  # the old holder


def test_an_early_ack_that_shows_the_grant_keeps_it() -> None:
    assert holds_after_early_ack(ack(TOKEN, (0, TOKEN, False)))


def test_a_later_ack_that_shows_the_slot_revoked_ends_mastership() -> None:
    s = offline_session()
    granted_at = clock.now()
    s._acked(clock.now(), ack(TOKEN + 1, (0, TOKEN, False)))
    assert s.holds(GROUP, 0, TOKEN, granted_at)
    s._acked(clock.now(), ack(TOKEN + 2, (0, TOKEN, True)))
    assert not s.holds(GROUP, 0, TOKEN, granted_at)


def test_an_older_view_arriving_late_does_not_undo_a_newer_one() -> None:
    """Acks are kept by the revision their view was read at: a slow answer from
    before the revoke must not make the slot look held again."""
    s = offline_session()
    granted_at = clock.now()
    sent_first = clock.now()
    s._acked(clock.now(), ack(TOKEN + 2, (0, TOKEN, True)))
    s._acked(sent_first, ack(TOKEN + 1, (0, TOKEN, False)))
    assert not s.holds(GROUP, 0, TOKEN, granted_at)


def test_validity_runs_on_a_clock_that_counts_suspended_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A machine suspended for longer than the TTL must resume with its lease over:
    ``CLOCK_MONOTONIC`` stops during a suspend, ``CLOCK_BOOTTIME`` does not."""
    read: list[int] = []

    def fake(clock_id: int) -> float:
        read.append(clock_id)
        return 1000.0

    monkeypatch.setattr(time, "clock_gettime", fake)
    assert clock.now() == 1000.0 and read == [time.CLOCK_BOOTTIME]
    s = offline_session(ttl_s=5.0)
    s._valid_until = 0.0  # no acknowledgement yet
    s._acked(990.0, ack(TOKEN))  # sent, then 10 s suspended before the ack was read
    assert s.valid_for_s() == 0.0 and not s.is_valid()


class _Answering:
    """A client whose every call succeeds (the cluster released the slot)."""

    def __init__(self) -> None:
        self.requests: list[object] = []

    def call(self, fn: object, *args: object, **kwargs: object) -> None:
        self.requests.append(fn)


def _leadership_of_a_member() -> tuple[Member, Leadership]:
    s = offline_session()
    s._stepdown_hooks, s._on_stepdown, s.stepdown_grace_s = [], None, 0.0
    s._acked(clock.now(), ack(TOKEN, (0, TOKEN, False)))  # the slot is ours
    m = Member(_Answering(), s, GROUP, "db-1")  # type: ignore[arg-type]
    m.registered = True
    lead = Leadership(m, groups_pb2.Holding(slot=0, token=TOKEN, member_id="db-1"))
    assert lead.is_master()
    return m, lead


def test_a_members_resign_ends_its_leadership_before_the_slot_moves() -> None:
    """The holder's own resign releases the slot and grants the successor in the same
    apply: the process must have stopped acting on the grant before it asks."""
    m, lead = _leadership_of_a_member()
    m.resign()
    assert not lead.is_master()


def test_a_members_leave_ends_its_leadership_before_the_slot_moves() -> None:
    m, lead = _leadership_of_a_member()
    m.leave()
    assert not lead.is_master()


def test_a_resign_for_an_older_token_leaves_a_newer_grant_acting() -> None:
    m, lead = _leadership_of_a_member()
    m.resign(token=TOKEN - 10)
    assert lead.is_master()
