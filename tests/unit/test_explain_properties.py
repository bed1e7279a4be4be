"""Explain says what the state machine then does (coord/state/explain.py).

Random group states (members with random priorities, nofailover, candidacy and
health, sessions expired, closed by an operator, pauses, switchovers, failback
holds, policy and member edits), then:

- after every command no vacant slot of the group has a ``next``: the fill already
  granted everything explain would grant (a paused group: nothing);
- a held slot's ``next`` is the member the state machine grants it when its holder
  resigns now (own session), and nobody when it says nobody;
- every member explain calls eligible is one placement would grant, with the rank
  it gives;
- freshness (reported positions, max_lag_on_failover, prefer_most_advanced, the
  synchronous set, edited at random): a member explain calls eligible is in the
  synchronous set and within the lag of the best position (computed here again),
  one outside it or behind is not, with the reason and "behind by N"; with
  prefer_most_advanced the ranks go by position first;
- explain says "breaker open" exactly when the failover breaker paused the group, and
  the breaker opens exactly when a model that counts the automatic failovers in the
  event log (coord/state/breaker.py's rule, written again) says it must.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from coord.state import breaker
from coord.state.explain import explain
from coord.state.machine import StateMachine
from coord.v1 import groups_pb2 as gp
from coord.v1 import raft_pb2

T0 = 1_700_000_000_000
MEMBERS = ["m0", "m1", "m2", "m3", "m4"]

ACTION = st.one_of(
    st.tuples(
        st.just("join"), st.sampled_from(MEMBERS), st.integers(0, 3), st.booleans(), st.booleans()
    ),
    st.tuples(st.just("expire"), st.sampled_from(MEMBERS)),
    st.tuples(st.just("close_wait_out"), st.sampled_from(MEMBERS)),
    st.tuples(st.just("health"), st.sampled_from(MEMBERS), st.booleans()),
    st.tuples(st.just("resign"), st.sampled_from(MEMBERS)),
    st.tuples(st.just("campaign"), st.sampled_from(MEMBERS)),
    st.tuples(st.just("priority"), st.sampled_from(MEMBERS), st.integers(0, 5)),
    st.tuples(st.just("nofailover"), st.sampled_from(MEMBERS), st.booleans()),
    st.tuples(st.just("switchover"), st.sampled_from(["", *MEMBERS])),
    st.tuples(st.just("pause"), st.booleans()),
    st.tuples(st.just("slots"), st.integers(1, 3)),
    st.tuples(
        st.just("advance"),
    ),
    st.tuples(st.just("report"), st.sampled_from(MEMBERS), st.integers(0, 40)),
    st.tuples(
        st.just("freshness"),
        st.sampled_from([0, 10, 30]),
        st.booleans(),
        st.lists(st.sampled_from(MEMBERS), unique=True, max_size=3),
    ),
)


class World:
    def __init__(self, slots: int, failback: bool, k: int = 0, w: int = 0, **fresh: Any) -> None:
        self.sm = StateMachine()
        self.now = T0
        self.sessions: dict[str, gp.Session] = {}
        policy = gp.GroupPolicy(
            slots=slots, failback=gp.FAILBACK_AUTO if failback else gp.FAILBACK_OFF,
            switchover_timeout_ms=100, breaker_failovers=k, breaker_window_ms=w, **fresh,
        )  # fmt: skip
        self.apply(create_group=gp.CreateGroup(name="g", policy=policy))

    def apply(self, **op: Any) -> raft_pb2.CommandResult:
        self.now += 10
        cmd = raft_pb2.Command(time_ms=self.now, term=1, **op)
        return self.sm.apply(cmd.SerializeToString())

    @property
    def g(self) -> Any:
        return self.sm.groups.groups["g"]

    def member(self, mid: str) -> gp.Member | None:
        m: gp.Member | None = self.g.members.get(mid)
        return m

    def act(self, action: tuple[Any, ...]) -> None:
        kind, *args = action
        m = self.member(args[0]) if args and args[0] in MEMBERS else None
        if kind == "join":
            mid, prio, nofailover, candidate = args
            s = self.apply(open_session=gp.OpenSession(ttl_ms=1000)).session
            if m is not None:
                self.apply(
                    unregister=gp.Unregister(group="g", member_id=mid, session_id=m.session_id)
                )
            member = gp.Member(group="g", id=mid, session_id=s.id, priority=prio,
                               nofailover=nofailover, candidate=candidate)  # fmt: skip
            self.apply(register=gp.Register(member=member))
        elif m is None:
            if kind == "switchover":
                self.apply(switchover=gp.Switchover(group="g", to_member=args[0]))
            elif kind == "pause":
                op = "pause_groups" if args[0] else "resume_groups"
                msg = gp.PauseGroups(groups=["g"]) if args[0] else gp.ResumeGroups(groups=["g"])
                self.apply(**{op: msg})
            elif kind == "slots":
                self.apply(edit_group=gp.EditGroup(
                    group="g", policy=gp.GroupPolicy(slots=args[0]), fields=["slots"]))  # fmt: skip
            elif kind == "advance":
                self.advance_all()
            elif kind == "freshness":
                self.freshness(*args)
            elif kind == "expire_master":  # the session of a master (slot args[0] % n)
                held = sorted(h.member_id for h in self.g.holdings.values() if not h.revoked)
                if held:
                    holder = self.g.members[held[args[0] % len(held)]]
                    s = self.sm.groups.sessions[holder.session_id]
                    self.apply(expire_session=gp.ExpireSession(session_id=s.id, epoch=s.epoch))
        elif kind == "expire":
            s = self.sm.groups.sessions[m.session_id]
            self.apply(expire_session=gp.ExpireSession(session_id=s.id, epoch=s.epoch))
        elif kind == "close_wait_out":
            self.apply(close_session=gp.CloseSession(session_id=m.session_id, wait_out=True))
        elif kind == "health":
            health = gp.SetHealth(group="g", member_id=m.id, healthy=args[1])
            health.registered_revision = m.registered_revision
            self.apply(set_health=health)
        elif kind == "resign":
            self.apply(resign=gp.Resign(group="g", member_id=m.id, session_id=m.session_id))
        elif kind == "campaign":
            self.apply(campaign=gp.Campaign(group="g", member_id=m.id))
        elif kind == "priority":
            self.apply(update_member=gp.UpdateMember(group="g", member_id=m.id, priority=args[1]))
        elif kind == "nofailover":
            self.apply(update_member=gp.UpdateMember(group="g", member_id=m.id, nofailover=args[1]))
        elif kind == "report":  # a step forward from its last position (0: the same)
            update = gp.UpdateMember(group="g", member_id=m.id, session_id=m.session_id)
            update.position = m.position + args[1]
            res = self.apply(update_member=update)
            assert not res.error_reason, res.error_message

    def freshness(self, max_lag: int, prefer: bool, sync: list[str]) -> None:
        policy = gp.GroupPolicy(
            max_lag_on_failover=max_lag, prefer_most_advanced=prefer, synchronous=sync
        )
        fields = ["max_lag_on_failover", "prefer_most_advanced", "synchronous"]
        self.apply(edit_group=gp.EditGroup(group="g", policy=policy, fields=fields))

    def advance_all(self) -> None:
        """End every pending wait at once (the leader after a long while)."""
        from coord.state import waits

        keys = [w.key for w in self.sm.groups.pending_waits()]
        if keys:
            self.apply(advance=gp.Advance(over=[waits.to_proto(k) for k in keys]))


def check_now(w: World) -> None:
    x = explain(w.sm.groups, "g")
    for s in x.slots:
        if not s.holder:
            assert s.next == "", s.why  # the fill granted all it could
    ranked = [m.id for m in w.sm.groups.ranked(w.g)]
    eligible = sorted((v.rank, v.member_id) for v in x.members if v.eligible)
    assert [mid for _, mid in eligible] == ranked
    for v in x.members:
        assert v.eligible == (not v.reason) and bool(v.detail)
    g = w.g
    check_freshness(x, g)
    assert x.breaker_open == (g.pause is not None and bool(g.pause.breaker))
    if x.breaker_open:
        for s in x.slots:
            if not s.next and s.state in ("vacant", "held") and s.slot < g.policy.slots:
                assert "breaker open" in s.why, s.why


def check_freshness(x: gp.GroupExplanation, g: Any) -> None:
    """The freshness rules, written again: eligibility and rank against them."""
    policy = g.policy
    reported = [m.position for m in g.members.values() if m.HasField("position")]
    best = max(reported) if reported else None
    assert x.HasField("best_position") == (best is not None)
    for v in x.members:
        m = g.members[v.member_id]
        outside = bool(policy.synchronous) and m.id not in policy.synchronous
        behind = best - m.position if m.HasField("position") and best is not None else None
        stale = policy.max_lag_on_failover > 0 and (
            behind is None or behind > policy.max_lag_on_failover
        )
        if v.eligible:
            assert not outside and not stale, v.detail
        elif v.reason in ("not_synchronous", "no_position", "lagging"):
            assert outside or stale, v.detail
        if v.reason == "not_synchronous":
            assert outside and "not in the synchronous set" in v.detail
        if v.reason == "lagging":
            assert not outside and f"behind by {behind}" in v.detail
        if v.reason == "no_position":
            assert not outside and behind is None
        if behind is not None:
            assert v.lag == behind
    if policy.prefer_most_advanced:
        ranked = sorted((v.rank, v.member_id) for v in x.members if v.eligible)
        order = [
            g.members[mid].position if g.members[mid].HasField("position") else -1
            for _, mid in ranked
        ]
        assert order == sorted(order, reverse=True), ranked


# Candidates joining and masters expiring, often: failovers to count.
_JOIN = st.tuples(
    st.just("join"), st.sampled_from(MEMBERS), st.integers(0, 3), st.just(False), st.just(True)
)
_EXPIRE_MASTER = st.tuples(st.just("expire_master"), st.integers(0, 2))
_KINDS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "join": _JOIN, "expire_master": _EXPIRE_MASTER, "other": ACTION
}  # fmt: skip
FLAPPING = st.sampled_from(["join"] * 3 + ["expire_master"] * 2 + ["other"] * 2).flatmap(
    lambda kind: _KINDS[kind]
)


BREAKERS = st.sampled_from([(0, 0), (1, 10**6), (2, 60), (2, 10**6), (3, 200)])


@settings(max_examples=300, deadline=None)
@given(
    slots=st.integers(1, 3),
    failback=st.booleans(),
    actions=st.one_of(st.lists(ACTION, max_size=25), st.lists(FLAPPING, max_size=25)),
    pick=st.integers(0, 2),
    kw=BREAKERS,
)
def test_explain_predicts_what_the_state_machine_grants(
    slots: int, failback: bool, actions: list[tuple[Any, ...]], pick: int, kw: tuple[int, int]
) -> None:
    w = World(slots, failback, *kw)
    for action in actions:
        w.act(action)
        check_now(w)
    held = sorted(s for s, h in w.g.holdings.items() if not h.revoked)
    if not held:
        return
    slot = held[pick % len(held)]
    predicted = next(s for s in explain(w.sm.groups, "g").slots if s.slot == slot)
    holder = w.g.members[w.g.holdings[slot].member_id]
    res = w.apply(resign=gp.Resign(group="g", member_id=holder.id, session_id=holder.session_id))
    assert not res.error_reason, res.error_message
    after = w.g.holdings.get(slot)
    assert (after.member_id if after is not None else "") == predicted.next, predicted.why
    check_now(w)


def expected_trips(events: list[gp.Event], k: int, window: int) -> list[int]:
    """The revisions of the grants after which the breaker must open: the automatic
    failovers of group g (cause session_expired or unhealthy) made while it was not
    paused, and not by a resume, counted within ``window`` of each other, forgotten on
    resume."""
    paused, counted, resumed_at, trips = False, [], -1, []
    for e in events:
        if e.group != "g":
            continue
        if e.type in ("group_paused", "breaker_opened"):
            paused = True
        elif e.type == "group_resumed":
            paused, counted, resumed_at = False, [], e.time_ms
        elif (
            e.type == "master_elected"
            and e.cause in ("session_expired", "unhealthy")
            and not paused
            and e.time_ms != resumed_at  # one command, one time: granted by the resume
        ):
            counted = [t for t in counted if t > e.time_ms - window] + [e.time_ms]
            if len(counted) >= k:
                trips.append(e.revision)
                paused = True  # what it must do next
    return trips


@settings(max_examples=200, deadline=None)
@given(
    slots=st.integers(1, 3),
    actions=st.lists(FLAPPING, min_size=4, max_size=40),
    kw=st.sampled_from([(1, 10**6), (2, 60), (2, 10**6), (3, 200), (3, 10**6)]),
)
def test_the_breaker_opens_exactly_when_k_automatic_failovers_fall_within_w(
    slots: int, actions: list[tuple[Any, ...]], kw: tuple[int, int]
) -> None:
    w = World(slots, False, *kw)
    for action in actions:
        w.act(action)
    events = list(w.sm.events.items())
    trips = expected_trips(events, *kw)
    opened = [e for e in events if e.type == "breaker_opened"]
    by_revision = {e.revision: e for e in events}
    assert [e.revision - 1 for e in opened] == trips  # right after the tripping grant
    for e in opened:
        assert by_revision[e.revision - 1].type == "master_elected"
        assert e.cause == breaker.describe(w.g.policy)


# Members reporting positions around the lag limits, policies edited, masters lost.
_STEPS = st.sampled_from([0, 1, 5, 9, 10, 11, 29, 30, 31])
_FRESH_KINDS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "join": _JOIN,
    "expire_master": _EXPIRE_MASTER,
    "report": st.tuples(st.just("report"), st.sampled_from(MEMBERS), _STEPS),
    "other": ACTION,
}
FRESH = st.sampled_from(["join"] * 2 + ["expire_master", "other"] + ["report"] * 4).flatmap(
    lambda kind: _FRESH_KINDS[kind]
)


@settings(max_examples=200, deadline=None)
@given(
    slots=st.integers(1, 2),
    failback=st.booleans(),
    max_lag=st.sampled_from([0, 10, 30]),
    prefer=st.booleans(),
    sync=st.lists(st.sampled_from(MEMBERS), unique=True, max_size=4),
    actions=st.lists(FRESH, max_size=30),
    pick=st.integers(0, 1),
)
def test_explain_predicts_grants_under_the_freshness_rules(
    slots: int, failback: bool, max_lag: int, prefer: bool, sync: list[str],
    actions: list[tuple[Any, ...]], pick: int,
) -> None:  # fmt: skip
    w = World(slots, failback, max_lag_on_failover=max_lag, prefer_most_advanced=prefer,
              synchronous=sync)  # fmt: skip
    for action in actions:
        w.act(action)
        check_now(w)
    held = sorted(s for s, h in w.g.holdings.items() if not h.revoked)
    if not held:
        return
    slot = held[pick % len(held)]
    predicted = next(s for s in explain(w.sm.groups, "g").slots if s.slot == slot)
    holder = w.g.members[w.g.holdings[slot].member_id]
    res = w.apply(resign=gp.Resign(group="g", member_id=holder.id, session_id=holder.session_id))
    assert not res.error_reason, res.error_message
    after = w.g.holdings.get(slot)
    assert (after.member_id if after is not None else "") == predicted.next, predicted.why
    check_now(w)
