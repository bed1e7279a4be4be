"""Spreading masters across hosts (coord/state/spread.py, rebalance.py), as properties.

A sharded service: S groups (one per shard, one slot each) in one spread family, at
most one master per host; every host runs one member of every shard (priorities at
random). Hosts die (every session on them expires, one after the other, in random
order) and return (their members register again and campaign) at random; between
them an operator runs ``coordctl rebalance`` (the plan's switchovers one at a time,
each master resigning at once as the client library does, then campaigning again as
a member process does). Then:

- the spread holds after every host death that left at least S hosts alive, if it
  held before: the fill never needs a rebalance to keep what the members allow;
- once rebalanced, the masters beyond the limit are exactly max(0, S - live hosts)
  (with a host alive):
  the plan restores the spread whenever the members allow it, and otherwise gets as
  close as they allow;
- every move goes as planned (the switchover asks that master, the named member is
  granted) and lowers the excess by one; and explain's ``next`` for every held slot is
  the best-ranked member on a host with room (the rule written again).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from coord.state.explain import explain
from coord.state.machine import StateMachine
from coord.v1 import groups_pb2 as gp
from coord.v1 import raft_pb2

T0 = 1_700_000_000_000
HOSTS = ["h0", "h1", "h2", "h3"]


class Fleet:
    def __init__(self, shards: int, hosts: int, priorities: list[int]) -> None:
        self.sm = StateMachine()
        self.now = T0
        self.shards = [f"s{i}" for i in range(shards)]
        self.hosts = HOSTS[:hosts]
        self.priority = {h: priorities[i] for i, h in enumerate(self.hosts)}
        self.alive: set[str] = set()
        for name in self.shards:
            policy = gp.GroupPolicy(slots=1, spread_tag="host", spread_max=1,
                                    spread_family="shards", switchover_timeout_ms=1000)  # fmt: skip
            self.ok(create_group=gp.CreateGroup(name=name, policy=policy))

    def ok(self, **op: Any) -> raft_pb2.CommandResult:
        self.now += 10
        cmd = raft_pb2.Command(time_ms=self.now, term=1, **op)
        res = self.sm.apply(cmd.SerializeToString())
        assert not res.error_reason, res.error_message
        return res

    def start(self, host: str) -> None:
        """The host's member of every shard registers and campaigns."""
        for shard in self.shards:
            s = self.ok(open_session=gp.OpenSession(ttl_ms=1000, name=host)).session
            m = gp.Member(
                group=shard, id=f"{shard}-{host}", session_id=s.id,
                priority=self.priority[host], candidate=True, tags={"host": host},
            )  # fmt: skip
            self.ok(register=gp.Register(member=m))
        self.alive.add(host)

    def kill(self, host: str, order: list[int]) -> None:
        """Every session of the host expires (one command each, in ``order``)."""
        sessions = sorted(
            (s for s in self.sm.groups.sessions.values() if s.name == host), key=lambda s: s.id
        )
        for i in order[: len(sessions)] + list(range(len(order), len(sessions))):
            s = sessions[i % len(sessions)]
            if s.id in self.sm.groups.sessions:
                self.ok(expire_session=gp.ExpireSession(session_id=s.id, epoch=s.epoch))
        for s in sessions:
            if s.id in self.sm.groups.sessions:
                self.ok(expire_session=gp.ExpireSession(session_id=s.id, epoch=s.epoch))
        self.alive.discard(host)

    def spread(self) -> gp.SpreadExplanation:
        return explain(self.sm.groups, self.shards[0]).spread

    def rebalance(self) -> None:
        plan = list(self.spread().plan)
        excess = self.spread().excess
        for i, move in enumerate(plan):
            assert list(self.spread().plan) == plan[i:]  # planning again: the rest
            self.ok(switchover=gp.Switchover(group=move.group, to_member=move.to_member))
            g = self.sm.groups.groups[move.group]
            assert g.handovers[move.slot].from_member == move.from_member
            holder = g.members[move.from_member]
            self.ok(resign=gp.Resign(group=move.group, member_id=holder.id,
                                     session_id=holder.session_id))  # fmt: skip
            assert g.holdings[move.slot].member_id == move.to_member
            self.ok(campaign=gp.Campaign(group=move.group, member_id=holder.id))
            assert self.spread().excess == excess - 1
            excess -= 1

    def check_explain(self) -> None:
        """Every held slot's ``next``: the best-ranked member on a host with room."""
        for shard in self.shards:
            g = self.sm.groups.groups[shard]
            ranked = self.sm.groups.ranked(g)
            for s in explain(self.sm.groups, shard).slots:
                if s.state != "held" or not ranked:
                    continue
                used = {
                    o.members[h.member_id].tags["host"]
                    for o in self.sm.groups.groups.values()
                    for slot, h in o.holdings.items()
                    if not h.revoked and (o.name, slot) != (shard, s.slot)
                }
                keep = [m for m in ranked if m.tags["host"] not in used]
                assert s.next == (keep or ranked)[0].id, s.why


STEP = st.one_of(
    st.tuples(st.just("kill"), st.integers(0, 3), st.permutations(range(3))),
    st.tuples(st.just("start"), st.integers(0, 3)),
    st.tuples(st.just("rebalance")),
)


@settings(max_examples=150, deadline=None)
@given(
    shards=st.integers(2, 3),
    hosts=st.integers(2, 4),
    priorities=st.lists(st.integers(0, 3), min_size=4, max_size=4),
    steps=st.lists(STEP, min_size=1, max_size=14),
)
def test_the_spread_holds_while_the_hosts_allow_and_rebalance_restores_it(
    shards: int, hosts: int, priorities: list[int], steps: list[tuple[Any, ...]]
) -> None:
    f = Fleet(shards, hosts, priorities)
    for h in f.hosts:
        f.start(h)
    f.rebalance()  # members registered one by one: the first of each shard got it
    assert f.spread().excess == max(0, shards - hosts)
    for step in steps:
        kind, *args = step
        if kind == "kill":
            host = f.hosts[args[0] % len(f.hosts)]
            if host not in f.alive:
                continue
            held_before = f.spread().excess == 0
            f.kill(host, list(args[1]))
            if held_before and len(f.alive) >= shards:
                assert f.spread().excess == 0, f.spread()
        elif kind == "start":
            host = f.hosts[args[0] % len(f.hosts)]
            if host not in f.alive:
                f.start(host)
        else:
            f.rebalance()
            least = max(0, shards - len(f.alive)) if f.alive else 0  # no host: no master
            assert f.spread().excess == least, f.spread()
            assert bool(f.spread().stuck) == (f.spread().excess > 0)
        f.check_explain()
