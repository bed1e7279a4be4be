"""The balancer's member table and picking policies (``coord.client.balancer.Picker``).

No cluster and no I/O: each test builds the group (and its sessions) as the
cluster would return them, and feeds the events a watch stream would deliver.
Random picks use a fixed seed, so every run picks the same members.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable

import pytest

from coord import errors
from coord.client.balancer import POLICIES, Picker
from coord.v1 import groups_pb2 as gp

G = "api"


def member(
    mid: str,
    weight: int = 1,
    *,
    healthy: bool = True,
    leaving: bool = False,
    tags: dict[str, str] | None = None,
    group: str = G,
) -> gp.Member:
    """A member record as the cluster stores it (its session is ``s-<id>``)."""
    return gp.Member(
        group=group, id=mid, session_id=f"s-{mid}", address=f"10.0.0.1:{ord(mid[0])}",
        weight=weight, healthy=healthy, leaving=leaving, tags=tags or {}, candidate=True,
    )  # fmt: skip


def picker(
    members: Iterable[gp.Member],
    policy: str = "round_robin",
    role: str = "any",
    tags: dict[str, str] | None = None,
    holdings: Iterable[gp.Holding] = (),
    loads: dict[str, float] | None = None,
    seed: int | None = 7,
) -> Picker:
    """A Picker loaded with the group (``loads``: member id -> its session's load)."""
    p = Picker(G, policy, role, tags, seed)  # type: ignore[arg-type]
    group = gp.Group(name=G, members=list(members), holdings=list(holdings))
    sessions = [gp.Session(id=f"s-{mid}", load=x) for mid, x in (loads or {}).items()]
    p.load(group, sessions)
    return p


def event(kind: str, mid: str = "", record: gp.Member | None = None, **fields: object) -> gp.Event:
    fields.setdefault("group", G)
    return gp.Event(type=kind, member=mid, member_record=record, **fields)  # type: ignore[arg-type]


def picks(p: Picker, n: int) -> list[str]:
    return [p.pick().id for _ in range(n)]


def counts(p: Picker, n: int) -> dict[str, int]:
    return dict(collections.Counter(picks(p, n)))


# -- smooth weighted round robin ---------------------------------------------------------


def test_weighted_shares_are_exact_over_whole_cycles() -> None:
    p = picker([member("a", 1), member("b", 2), member("c", 3)], "weighted")
    seq = picks(p, 6000)
    assert collections.Counter(seq) == {"a": 1000, "b": 2000, "c": 3000}
    # Exact in every cycle of 6, not only overall: the state returns to zero each cycle.
    for i in range(0, 6000, 6):
        assert collections.Counter(seq[i : i + 6]) == {"a": 1, "b": 2, "c": 3}, i


def test_weighted_interleaves_like_nginx() -> None:
    """nginx's smooth weighted round robin (commit 27e9498 "Upstream: smooth weighted
    round-robin balancing"): weights { 5, 1, 1 } give { a, a, b, a, c, a, a }."""
    p = picker([member("a", 5), member("b", 1), member("c", 1)], "weighted")
    assert "".join(picks(p, 70)) == "aabacaa" * 10
    # 1:2:3 interleaves too: never three of the heaviest in a row.
    p = picker([member("a", 1), member("b", 2), member("c", 3)], "weighted")
    assert "".join(picks(p, 12)) == "cbacbc" * 2


def test_weight_zero_is_never_picked() -> None:
    p = picker([member("a", 0), member("b", 1), member("c", 2)], "weighted")
    assert counts(p, 3000) == {"b": 1000, "c": 2000}
    # Only weight-0 members left: nobody to pick, with a message naming the group.
    p = picker([member("a", 0), member("b", 0)], "weighted")
    with pytest.raises(errors.Unavailable, match=f"group '{G}'"):
        p.pick()


def test_a_weight_change_by_member_updated_takes_effect() -> None:
    p = picker([member("a", 1), member("b", 2), member("c", 3)], "weighted")
    picks(p, 4)  # mid-cycle: the current weights are not all zero
    p.apply(event("member_updated", "a", member("a", 6)))
    # Total 11: over 1,100 picks each share is within one pick of its weight's share
    # (count - n * w / total == (current at start - current at end) / total).
    got = counts(p, 1100)
    for mid, want in {"a": 600, "b": 200, "c": 300}.items():
        assert abs(got[mid] - want) <= 1, got
    # Down to 0: never picked again; back to 1: picked again.
    p.apply(event("member_updated", "c", member("c", 0)))
    assert set(picks(p, 700)) == {"a", "b"}
    p.apply(event("member_updated", "c", member("c", 1)))
    got = counts(p, 900)
    assert abs(got["c"] - 100) <= 1, got


# -- round robin and random ----------------------------------------------------------------


def test_round_robin_cycles_in_registration_order() -> None:
    # Registration order, not id order.
    p = picker([member("c"), member("a"), member("b")])
    assert picks(p, 9) == ["c", "a", "b"] * 3
    # A newcomer joins at the end; a member that rejoins goes to the end too.
    p.apply(event("member_joined", "d", member("d")))
    assert [m.id for m in p.eligible()] == ["c", "a", "b", "d"]
    p.apply(event("member_left", "c"))
    p.apply(event("member_joined", "c", member("c")))
    assert [m.id for m in p.eligible()] == ["a", "b", "d", "c"]
    seq = picks(p, 40)
    assert collections.Counter(seq) == {"a": 10, "b": 10, "d": 10, "c": 10}
    start = seq.index("a")
    assert seq[start : start + 8] == ["a", "b", "d", "c"] * 2
    # An update keeps the member's place.
    p.apply(event("member_updated", "a", member("a", 5)))
    assert [m.id for m in p.eligible()] == ["a", "b", "d", "c"]


def test_round_robin_skips_ineligible_members() -> None:
    p = picker([member("a"), member("b", healthy=False), member("c")])
    assert picks(p, 6) == ["a", "c"] * 3


def test_random_is_uniform_and_reproducible_with_a_seed() -> None:
    ids = ["a", "b", "c", "d", "e"]
    n = 50_000
    p = picker([member(x) for x in ids], "random", seed=12345)
    got = counts(p, n)
    assert set(got) == set(ids)
    expected = n / len(ids)
    chi2 = sum((got[x] - expected) ** 2 / expected for x in ids)
    # 4 degrees of freedom: P(chi2 > 18.47) = 0.001 for a uniform source.
    assert chi2 < 18.47, (chi2, got)
    for x in ids:
        assert abs(got[x] - expected) / expected < 0.03, got
    # The same seed picks the same sequence; another seed another one.
    same = picker([member(x) for x in ids], "random", seed=12345)
    other = picker([member(x) for x in ids], "random", seed=54321)
    first = picks(same, 200)
    assert first == picks(picker([member(x) for x in ids], "random", seed=12345), 200)
    assert first != picks(other, 200)


def test_random_never_picks_an_unhealthy_member() -> None:
    p = picker([member("a"), member("b"), member("c", healthy=False)], "random", seed=1)
    got = counts(p, 2000)
    assert set(got) == {"a", "b"}
    assert 900 < got["a"] < 1100


# -- least load ----------------------------------------------------------------------------


def test_least_load_prefers_the_lowest_reported_load_from_the_session_table() -> None:
    p = picker(
        [member("a"), member("b"), member("c")], "least_load", loads={"a": 5, "b": 1, "c": 3}
    )
    assert picks(p, 20) == ["b"] * 20


def test_least_load_follows_loads_reported_events() -> None:
    p = picker(
        [member("a"), member("b"), member("c")], "least_load", loads={"a": 5, "b": 1, "c": 3}
    )
    # A loads_reported event has no group: it applies whatever the group.
    p.apply(gp.Event(type="loads_reported", loads=[gp.SessionLoad(session_id="s-b", load=9)]))
    assert picks(p, 10) == ["c"] * 10
    p.apply(
        gp.Event(
            type="loads_reported",
            loads=[
                gp.SessionLoad(session_id="s-a", load=0.5),
                gp.SessionLoad(session_id="s-c", load=4),
            ],
        )
    )
    assert picks(p, 10) == ["a"] * 10


def test_least_load_counts_requests_in_flight() -> None:
    p = picker(
        [member("a"), member("b"), member("c")], "least_load", loads={"a": 5, "b": 1, "c": 3}
    )
    p.inflight["b"] = 1  # score 2 < 3
    assert picks(p, 4) == ["b"] * 4
    p.inflight["b"] = 3  # score 4 > 3
    assert picks(p, 4) == ["c"] * 4
    p.inflight["c"] = 3  # b 4, c 6, a 5
    assert picks(p, 4) == ["b"] * 4
    p.inflight.update(b=0, c=0)
    assert picks(p, 4) == ["b"] * 4


def test_least_load_ties_go_round_robin() -> None:
    # No loads reported: all tie at 0.
    p = picker([member("a"), member("b"), member("c")], "least_load")
    seq = picks(p, 30)
    assert collections.Counter(seq) == {"a": 10, "b": 10, "c": 10}
    assert all(x != y for x, y in itertools.pairwise(seq))
    # A tie among two of three: the two alternate, the third is never picked.
    p.apply(gp.Event(type="loads_reported", loads=[gp.SessionLoad(session_id="s-b", load=2)]))
    seq = picks(p, 20)
    assert collections.Counter(seq) == {"a": 10, "c": 10}
    assert all(x != y for x, y in itertools.pairwise(seq))


# -- role and tag filters ------------------------------------------------------------------


def test_role_filters_from_holdings_skip_revoked_holdings() -> None:
    members = [member("a"), member("b"), member("c")]
    holdings = [
        gp.Holding(slot=0, member_id="a", token=10),
        gp.Holding(slot=1, member_id="b", token=11, revoked=True, revoked_time_ms=5),
    ]
    p = picker(members, role="master", holdings=holdings)
    assert set(picks(p, 10)) == {"a"}
    p = picker(members, role="standby", holdings=holdings)
    assert [m.id for m in p.eligible()] == ["b", "c"]
    p = picker(members, role="any", holdings=holdings)
    assert [m.id for m in p.eligible()] == ["a", "b", "c"]


def test_role_filters_follow_master_events() -> None:
    members = [member("a"), member("b"), member("c")]
    master = picker(members, role="master", holdings=[gp.Holding(slot=0, member_id="a")])
    standby = picker(members, role="standby", holdings=[gp.Holding(slot=0, member_id="a")])

    def apply(e: gp.Event) -> tuple[list[str], list[str]]:
        master.apply(e)
        standby.apply(e)
        return [m.id for m in master.eligible()], [m.id for m in standby.eligible()]

    assert apply(event("master_elected", "c", slot=1)) == (["a", "c"], ["b"])
    assert apply(event("master_revoked", "a", slot=0)) == (["c"], ["a", "b"])
    assert set(picks(master, 5)) == {"c"}
    assert apply(event("master_lost", "a", slot=0)) == (["c"], ["a", "b"])
    assert apply(event("master_elected", "b", slot=0)) == (["b", "c"], ["a"])
    assert apply(event("master_lost", "c", slot=1)) == (["b"], ["a", "c"])
    # A master that leaves is no master any more (and not picked either way).
    assert apply(event("member_left", "b")) == ([], ["a", "c"])
    with pytest.raises(errors.Unavailable) as info:
        master.pick()
    assert f"no master member of group '{G}'" in info.value.message
    # The events of another group change nothing.
    assert apply(event("master_elected", "a", group="other")) == ([], ["a", "c"])


def test_tag_filter() -> None:
    members = [
        member("a", tags={"zone": "eu", "tier": "gold"}),
        member("b", tags={"zone": "us", "tier": "gold"}),
        member("c", tags={"zone": "eu"}),
        member("d"),
    ]
    p = picker(members, tags={"zone": "eu"})
    assert picks(p, 6) == ["a", "c"] * 3
    p = picker(members, tags={"zone": "eu", "tier": "gold"})
    assert set(picks(p, 6)) == {"a"}
    # A tag changed by member_updated moves a member in or out.
    p.apply(event("member_updated", "a", member("a", tags={"zone": "us", "tier": "gold"})))
    p.apply(event("member_updated", "c", member("c", tags={"zone": "eu", "tier": "gold"})))
    assert set(picks(p, 6)) == {"c"}
    p = picker(members, tags={"zone": "ap"})
    with pytest.raises(errors.Unavailable) as info:
        p.pick()
    assert f"group '{G}'" in info.value.message and "zone" in info.value.message


# -- never picked: unhealthy, left, leaving ------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_unhealthy_left_and_leaving_members_are_never_picked(policy: str) -> None:
    ids = ["a", "b", "c", "d", "e"]
    p = picker([member(x) for x in ids], policy, loads=dict.fromkeys(ids, 1.0))
    assert set(picks(p, 50)) == set(ids)
    p.apply(event("member_unhealthy", "a", member("a", healthy=False)))
    p.apply(event("member_left", "b", cause="session_expired"))
    p.apply(event("member_updated", "c", member("c", leaving=True)))
    # The lowest load would win under least_load: the unhealthy, gone and leaving ones
    # report none.
    p.apply(
        gp.Event(
            type="loads_reported",
            loads=[gp.SessionLoad(session_id=f"s-{x}", load=0) for x in "abc"],
        )
    )
    assert set(picks(p, 300)) == {"d", "e"}
    # Healthy again: picked again.
    p.apply(event("member_healthy", "a", member("a")))
    assert "a" in set(picks(p, 50))
    for x in ("a", "d", "e"):
        p.apply(event("member_unhealthy", x, member(x, healthy=False)))
    with pytest.raises(errors.Unavailable) as info:
        p.pick()
    assert f"group '{G}'" in info.value.message


def test_a_deleted_group_has_nobody_to_pick() -> None:
    p = picker([member("a"), member("b")])
    p.apply(event("group_deleted"))
    with pytest.raises(errors.Unavailable, match=f"group '{G}'"):
        p.pick()


def test_an_empty_group_is_unavailable_naming_the_group() -> None:
    for policy in POLICIES:
        with pytest.raises(errors.Unavailable) as info:
            picker([], policy).pick()
        assert f"group '{G}'" in info.value.message
        assert info.value.retryable


# -- bad arguments -------------------------------------------------------------------------


def test_unknown_policy_or_role_is_invalid_argument() -> None:
    with pytest.raises(errors.InvalidArgument, match="'fastest'"):
        Picker(G, "fastest")  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument, match="'leader'"):
        Picker(G, role="leader")  # type: ignore[arg-type]
    assert not errors.InvalidArgument.retryable
