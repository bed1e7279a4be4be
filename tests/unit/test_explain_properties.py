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
  event log (coord/state/breaker.py's rule, written again) says it must;
- the spread rule (members tagged with zones, some without; at most K masters per zone
  over a family shared with a second group whose masters come and go; tags and the
  rule edited at random): a held slot's ``next`` is the best-ranked member whose zone
  has room counting the family's masters but that slot (or the best one when none
  has), the excess explain reports is the one counted here again, and the rebalance
  plan, run switchover by switchover with the master resigning as the library does,
  goes exactly as planned, planning again after each move gives the rest of the plan,
  and every move lowers the excess by one.
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
    def __init__(
        self,
        slots: int,
        failback: bool,
        k: int = 0,
        w: int = 0,
        zones: dict[str, str] | None = None,
        **fresh: Any,
    ) -> None:
        self.sm = StateMachine()
        self.now = T0
        self.sessions: dict[str, gp.Session] = {}
        self.zones = zones or {}  # member -> its zone tag ("": no tag)
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
        if kind in ("spread", "h_cycle", "rebalance", "retag"):
            self.act_spread(kind, *args)
        else:
            self.act_group(kind, *args)

    def act_group(self, kind: str, *args: Any) -> None:
        m = self.member(args[0]) if args and args[0] in MEMBERS else None
        if kind == "join":
            mid, prio, nofailover, candidate = args
            s = self.apply(open_session=gp.OpenSession(ttl_ms=1000)).session
            if m is not None:
                self.apply(
                    unregister=gp.Unregister(group="g", member_id=mid, session_id=m.session_id)
                )
            zone = self.zones.get(mid)
            member = gp.Member(group="g", id=mid, session_id=s.id, priority=prio,
                               nofailover=nofailover, candidate=candidate,
                               tags={"zone": zone} if zone else {})  # fmt: skip
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

    def act_spread(self, kind: str, *args: Any) -> None:
        if kind == "spread":  # the rule edited (K 0: off)
            self.spread_rule(*args)
        elif kind == "h_cycle":  # a member of the family's other group dies, returns
            self.h_cycle(*args)
        elif kind == "rebalance" and self.g.policy.spread_tag:
            run_rebalance(self)
        elif kind == "retag" and self.member(args[0]) is not None:  # to another zone
            m = self.g.members[args[0]]
            update = gp.UpdateMember(group="g", member_id=m.id, session_id=m.session_id)
            update.tags["zone"] = args[1]  # "": the tag removed
            self.apply(update_member=update)

    def spread_rule(self, k: int, family: bool) -> None:
        policy = gp.GroupPolicy(spread_tag="zone" if k else "", spread_max=k,
                                spread_family="fam" if k and family else "")  # fmt: skip
        fields = ["spread_tag", "spread_max", "spread_family"]
        self.apply(edit_group=gp.EditGroup(group="g", policy=policy, fields=fields))

    def h_cycle(self, i: int, zone: str) -> None:
        """Group h (family fam, 2 slots): member h<i> loses its session (its slot goes
        to another member of h, or stays empty) and registers again with ``zone``."""
        h = self.sm.groups.groups.get("h")
        if h is None:
            policy = gp.GroupPolicy(slots=2, spread_tag="zone", spread_max=1, spread_family="fam")
            self.apply(create_group=gp.CreateGroup(name="h", policy=policy))
            h = self.sm.groups.groups["h"]
        old = h.members.get(f"h{i}")
        if old is not None:
            s = self.sm.groups.sessions[old.session_id]
            self.apply(expire_session=gp.ExpireSession(session_id=s.id, epoch=s.epoch))
        s = self.apply(open_session=gp.OpenSession(ttl_ms=1000)).session
        member = gp.Member(group="h", id=f"h{i}", session_id=s.id, candidate=True)
        if zone:
            member.tags["zone"] = zone
        self.apply(register=gp.Register(member=member))

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


# -- the spread rule ------------------------------------------------------------------

ZONES = st.sampled_from(["a", "a", "a", "b", "b", "c", ""])
_SPREAD_KINDS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "join": _JOIN,
    "expire_master": _EXPIRE_MASTER,
    "retag": st.tuples(st.just("retag"), st.sampled_from(MEMBERS), ZONES),
    "h_cycle": st.tuples(st.just("h_cycle"), st.integers(0, 2), ZONES),
    "spread": st.tuples(st.just("spread"), st.sampled_from([0, 1, 1, 2]), st.booleans()),
    "rebalance": st.tuples(st.just("rebalance")),
    "other": ACTION,
}
SPREAD = st.sampled_from(
    ["join"] * 4
    + ["expire_master"] * 2
    + ["retag"] * 2
    + ["h_cycle"] * 3
    + ["spread", "rebalance", "other"]
).flatmap(lambda kind: _SPREAD_KINDS[kind])


def family_masters(w: World, skip: tuple[str, int] | None = None) -> dict[str, int]:
    """The serving masters per zone of g's family (or g alone), written again."""
    policy = w.g.policy
    groups = [
        gg for gg in w.sm.groups.groups.values()
        if gg.name == "g" or (policy.spread_family
                              and gg.policy.spread_family == policy.spread_family)
    ]  # fmt: skip
    out: dict[str, int] = {}
    for gg in groups:
        for slot, h in gg.holdings.items():
            if h.revoked or (gg.name, slot) == skip:
                continue
            v = gg.members[h.member_id].tags.get("zone", "")
            out[v] = out.get(v, 0) + 1
    return out


def check_spread(w: World) -> None:
    x = explain(w.sm.groups, "g")
    g = w.g
    k = g.policy.spread_max
    assert x.HasField("spread") == bool(g.policy.spread_tag)
    if not g.policy.spread_tag:
        return
    counts = family_masters(w)
    assert x.spread.excess == sum(max(0, n - k) for n in counts.values())
    assert {v.value: v.masters for v in x.spread.values} == counts
    assert x.spread.violated == (x.spread.excess > 0)
    ranked = w.sm.groups.ranked(g)
    for s in x.slots:
        if s.state != "held" or g.pause is not None or not ranked:
            continue
        room = family_masters(w, skip=("g", s.slot))
        keep = [m for m in ranked if room.get(m.tags.get("zone", ""), 0) < k]
        assert s.next == (keep or ranked)[0].id, s.why


def run_rebalance(w: World) -> None:
    """The plan, as coordctl rebalance runs it: one switchover at a time, each master
    resigning at once (the client library does), planning again after each."""
    first = list(explain(w.sm.groups, "g").spread.plan)
    excess = explain(w.sm.groups, "g").spread.excess
    for i, move in enumerate(first):
        assert list(explain(w.sm.groups, "g").spread.plan) == first[i:]
        res = w.apply(switchover=gp.Switchover(group=move.group, to_member=move.to_member))
        assert not res.error_reason, res.error_message
        gg = w.sm.groups.groups[move.group]
        ho = gg.handovers[move.slot]
        assert (ho.from_member, ho.to_member) == (move.from_member, move.to_member)
        holder = gg.members[move.from_member]
        res = w.apply(resign=gp.Resign(group=move.group, member_id=holder.id,
                                       session_id=holder.session_id))  # fmt: skip
        assert not res.error_reason, res.error_message
        assert gg.holdings[move.slot].member_id == move.to_member
        now = explain(w.sm.groups, "g").spread.excess
        assert now == excess - 1, (now, excess)
        excess = now
    after = explain(w.sm.groups, "g").spread
    assert list(after.plan) == []
    assert bool(after.stuck) == (after.excess > 0)


@settings(max_examples=200, deadline=None)
@given(
    slots=st.integers(1, 3),
    failback=st.booleans(),
    k=st.sampled_from([1, 1, 2]),
    family=st.booleans(),
    zones=st.permutations(["a", "a", "b", "c", ""]).map(
        lambda z: dict(zip(MEMBERS, z, strict=True))
    ),
    actions=st.lists(SPREAD, min_size=3, max_size=40),
    pick=st.integers(0, 2),
    rebalance=st.booleans(),
)
def test_explain_predicts_grants_under_the_spread_rule(
    slots: int, failback: bool, k: int, family: bool, zones: dict[str, str],
    actions: list[tuple[Any, ...]], pick: int, rebalance: bool,
) -> None:  # fmt: skip
    """The spread rule (module docstring); ``rebalance`` actions run the plan."""
    w = World(slots, failback, zones=zones, spread_tag="zone", spread_max=k,
              spread_family="fam" if family else "")  # fmt: skip
    for action in actions:
        w.act(action)
        check_now(w)
        check_spread(w)
    if rebalance and w.g.policy.spread_tag:
        run_rebalance(w)
        check_now(w)
        check_spread(w)
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
    check_spread(w)
