"""A handle on one group: ``client.group(name)``, the way into groups, members,
campaigns, masters and the group's events.

::

    orders = client.group("orders")
    orders.create(slots=1, exist_ok=True)
    with client.session(ttl_s=5) as session:
        with orders.campaign("orders-1", session, priority=10) as lead:  # registers, waits
            ...
    orders.pause(for_s=600, reason="upgrade")  # maintenance mode; orders.resume()
    orders.edit(failback_hold_ms=30_000)  # a live policy edit
    print(orders.explain())              # who would be chosen now, and why not the others
    orders.switchover("orders-2", at_s=time.time() + 3600)  # scheduled; .cancel_switchover(id)
    orders.spread()                      # the spread rule now, and the plan that restores it
    orders.rebalance()                   # run that plan: one switchover at a time
    orders.masters()                     # the holdings now
    for view in orders.observe(): ...    # the masters after every change
    for event in orders.watch(): ...     # the group's events, gap-free

A Group holds no state and does no I/O when made: every method is one request (or
one resuming stream) through the client, retried as the client retries.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from coord import errors
from coord.client.balancer import Balancer, Policy, Role
from coord.client.client import Client, new_request_id
from coord.client.election import (
    Leadership,
    Member,
    _groups,
    observe_masters,
    policy_differences,
)
from coord.client.session import Session
from coord.v1 import election_pb2, groups_pb2


class Group:
    """The group ``name`` of ``client``'s cluster (it need not exist yet)."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name

    def __repr__(self) -> str:
        return f"Group({self.name!r})"

    def create(self, slots: int = 1, exist_ok: bool = False, **policy: Any) -> groups_pb2.Group:
        """Create the group; ``policy`` takes GroupPolicy fields (failback,
        failback_hold_ms, switchover_timeout_ms, failover_on_unhealthy, ...).

        With ``exist_ok``, a group of that name that already has this policy is returned
        as it is (a program may create its group every time it starts); one with another
        policy raises AlreadyExists naming the differences (a policy is never changed).
        """
        _known_fields(policy)
        wanted = groups_pb2.GroupPolicy(slots=slots, **policy)
        req = election_pb2.CreateGroupRequest(
            name=self.name, policy=wanted, request_id=new_request_id()
        )
        for _ in range(3):  # a group deleted between our create and our read: create again
            try:
                resp: election_pb2.GroupResponse = self.client.call(
                    lambda ch, t: _groups(ch).Create(req, timeout=t)
                )
                return resp.group
            except errors.AlreadyExists:
                if not exist_ok:
                    raise
                try:
                    got = self.get()
                except errors.NotFound:
                    req.request_id = new_request_id()  # a new write, not a retry of the first
                    continue
                if got.deleting:
                    raise
                self._same_policy(wanted, got.policy)
                return got
        raise errors.Unavailable(
            f"group {self.name!r} kept being deleted while it was created: retry"
        )

    def _same_policy(self, wanted: groups_pb2.GroupPolicy, has: groups_pb2.GroupPolicy) -> None:
        differences = policy_differences(wanted, has)
        if differences:
            raise errors.AlreadyExists(
                f"group {self.name!r} exists with another policy ({'; '.join(differences)}): "
                "create it with the policy it has, delete it first (coordctl group rm), "
                "or pick another name"
            ) from None

    def get(self) -> groups_pb2.Group:
        """The group as the leader has it: policy, members, holdings (NotFound if none)."""
        req = election_pb2.GetGroupRequest(name=self.name)
        resp: election_pb2.GroupResponse = self.client.call(
            lambda ch, t: _groups(ch).Get(req, timeout=t)
        )
        return resp.group

    def pause(
        self, until_s: float | None = None, for_s: float | None = None, reason: str = ""
    ) -> groups_pb2.Group:
        """Pause the group (maintenance mode): nothing is failed over, failed back or
        revoked automatically until :meth:`resume`, or until ``until_s`` (wall clock,
        seconds since the epoch: the leader turns it into a wait on its own monotonic
        clock) or for ``for_s`` seconds. A switchover by hand still completes."""
        resp = _pause(self.client, [self.name], False, until_s, for_s, reason)
        return resp.groups[0]

    def resume(self) -> groups_pb2.Group:
        """End a pause: empty slots are filled at once (a group not paused: unchanged)."""
        req = election_pb2.ResumeGroupsRequest(groups=[self.name], request_id=new_request_id())
        self.client.call(lambda ch, t: _groups(ch).Resume(req, timeout=t))
        return self.get()

    def edit(self, **policy: Any) -> groups_pb2.Group:
        """Change policy fields at runtime (GroupPolicy names: ``slots``, ``failback``,
        ``failback_hold_ms``, ``switchover_timeout_ms``, ``downtime_budget_ms``,
        ``failover_on_unhealthy``, ``breaker_failovers`` with ``breaker_window_ms``,
        ``max_lag_on_failover``, ``prefer_most_advanced``, ``synchronous`` (a list of
        member ids; ``[]`` clears it)), checked like create's. Fewer slots ask the
        surplus masters to step down (the normal handover); more slots are filled at
        once. The failover breaker pauses the group after ``breaker_failovers``
        automatic failovers within ``breaker_window_ms`` (both 0: off); :meth:`resume`
        closes it. The spread rule: ``spread_tag`` (a member tag such as ``"zone"``),
        ``spread_max`` (at most that many masters per value, >= 1) and ``spread_family``
        (groups with the same family count their masters together); ``spread_tag=""``
        (with ``spread_max=0``, ``spread_family=""``) turns it off. A name that is not a
        policy field is refused by the cluster (InvalidArgument, nothing changes)."""
        known = {k: v for k, v in policy.items() if k in _POLICY_FIELDS}
        req = election_pb2.EditGroupRequest(
            name=self.name, policy=groups_pb2.GroupPolicy(**known), fields=sorted(policy),
            request_id=new_request_id(),
        )  # fmt: skip
        resp: election_pb2.GroupResponse = self.client.call(
            lambda ch, t: _groups(ch).Edit(req, timeout=t)
        )
        return resp.group

    def edit_member(
        self, member_id: str, priority: int | None = None, nofailover: bool | None = None
    ) -> groups_pb2.Member:
        """An operator changes a member's priority or nofailover; placement uses them at
        once (a failback may follow, after the hold)."""
        req = election_pb2.EditMemberRequest(
            group=self.name, member_id=member_id, priority=priority, nofailover=nofailover,
            request_id=new_request_id(),
        )  # fmt: skip
        resp: election_pb2.MemberResponse = self.client.call(
            lambda ch, t: _groups(ch).EditMember(req, timeout=t)
        )
        return resp.member

    def switchover(
        self, to_member: str = "", at_s: float | None = None
    ) -> groups_pb2.ScheduledSwitchover | None:
        """Ask the master to step down for ``to_member`` (or the best candidate) now, or
        at ``at_s`` (wall clock, seconds since the epoch; in the future, and ``to_member``
        registered): then the leader starts it when its wall clock gets there, or records
        why it cannot (a ``scheduled_switchover_refused`` event), and the scheduled
        switchover is returned (its ``id`` cancels it). Either way it is an ordinary
        switchover: the master resigns, or is revoked after the switchover timeout and
        waited out for its TTL."""
        req = election_pb2.SwitchoverRequest(
            group=self.name, to_member=to_member, request_id=new_request_id(),
            at_ms=round(at_s * 1000) if at_s is not None else 0,
        )  # fmt: skip
        resp: election_pb2.SwitchoverResponse = self.client.call(
            lambda ch, t: _groups(ch).Switchover(req, timeout=t)
        )
        return resp.scheduled if at_s is not None else None

    def scheduled_switchovers(self) -> list[groups_pb2.ScheduledSwitchover]:
        """The switchovers scheduled in this group, by id (oldest first)."""
        return list(self.get().scheduled)

    def cancel_switchover(self, switchover_id: int) -> groups_pb2.ScheduledSwitchover:
        """Cancel a scheduled switchover (NotFound if it is not pending: fired, cancelled
        or unknown); returns it."""
        req = election_pb2.CancelSwitchoverRequest(
            group=self.name, id=switchover_id, request_id=new_request_id()
        )
        resp: election_pb2.CancelSwitchoverResponse = self.client.call(
            lambda ch, t: _groups(ch).CancelSwitchover(req, timeout=t)
        )
        return resp.cancelled

    def explain(self) -> groups_pb2.GroupExplanation:
        """For every slot who would be chosen now and why; for every member why it is
        or is not eligible (the state machine's own rule)."""
        req = election_pb2.ExplainRequest(group=self.name)
        resp: election_pb2.ExplainResponse = self.client.call(
            lambda ch, t: _groups(ch).Explain(req, timeout=t)
        )
        return resp.explanation

    def spread(self) -> groups_pb2.SpreadExplanation:
        """The group's spread rule now (explain's ``spread``): masters per tag value over
        its family, whether the rule is ``violated``, and the ``plan`` of switchovers that
        would restore it (``stuck``: why the rest cannot move). FailedPrecondition if
        the group has no spread rule."""
        x = self.explain()
        if not x.HasField("spread"):
            raise errors.FailedPrecondition(
                f"group {self.name!r} has no spread rule: give it one first (coordctl group "
                f"edit {self.name} --spread-tag zone --spread-max 1)"
            )
        return x.spread

    def rebalance(
        self,
        dry_run: bool = False,
        timeout_s: float = 60.0,
        progress: Callable[[groups_pb2.RebalanceMove, str], None] | None = None,
    ) -> list[groups_pb2.RebalanceMove]:
        """Restore the spread of this group's masters (of its whole family, when it has
        one): run the plan of :meth:`spread`, one switchover at a time
        (:meth:`switchover` to the planned member), each waited for (the master resigned
        and the named member holds the slot) for at most ``timeout_s``, planning again
        before each. Returns the moves run (with ``dry_run``: the plan, nothing run);
        [] when the spread holds. FailedPrecondition when it is violated and nothing
        can improve it (the message says why); ``progress(move, "running"|"done")``
        is called around each move."""
        rule = self.spread()
        if not rule.violated:
            return []
        if not rule.plan:
            raise errors.FailedPrecondition(spread_refusal(self.name, rule))
        if dry_run:
            return list(rule.plan)
        done: list[groups_pb2.RebalanceMove] = []
        for _ in range(len(rule.plan)):  # each move lowers the excess by one
            plan = self.spread().plan
            if not plan:
                break
            move = plan[0]
            if progress is not None:
                progress(move, "running")
            Group(self.client, move.group).switchover(move.to_member)
            _wait_moved(self.client, move, timeout_s)
            done.append(move)
            if progress is not None:
                progress(move, "done")
        return done

    def masters(self) -> list[groups_pb2.Holding]:
        """The group's holdings (slot, member, token) now."""
        req = election_pb2.MastersRequest(group=self.name)
        resp: election_pb2.MastersResponse = self.client.call(
            lambda ch, t: _groups(ch).Masters(req, timeout=t)
        )
        return list(resp.masters)

    def observe(self) -> Iterator[list[groups_pb2.Holding]]:
        """The group's masters now, then after every change (reconnects on node failure)."""
        return observe_masters(self.client, self.name)

    def watch(
        self, from_revision: int = 0, types: Iterable[str] = ()
    ) -> Iterator[groups_pb2.Event]:
        """The group's events (of ``types``, or all) from ``from_revision`` (0: from now),
        gap-free across reconnects: see :meth:`coord.client.Client.watch`."""
        return self.client.watch(from_revision, groups=[self.name], types=types)

    def member(self, member_id: str, session: Session, **options: Any) -> Member:
        """A member of this group bound to ``session``, not registered yet: ``start()`` it
        or use it as a context manager. ``options`` are :class:`Member`'s keywords:
        ``address``, ``priority``, ``weight``, ``tags``, ``metadata``, ``nofailover``,
        ``check``."""
        return Member(self.client, session, self.name, member_id, **options)

    def campaign(
        self, member_id: str, session: Session, timeout_s: float | None = None, **options: Any
    ) -> Leadership:
        """Register ``member_id`` (on ``session``, which must be started) and block until
        it holds a slot, or ``timeout_s`` passes (:meth:`Member.campaign`). ``options``
        are :meth:`member`'s. The holding is a context manager that resigns;
        ``lead.member`` is the member."""
        return self.member(member_id, session, **options).start().campaign(timeout_s)

    def balancer(
        self,
        policy: Policy = "round_robin",
        role: Role = "any",
        tags: dict[str, str] | None = None,
        seed: int | None = None,
    ) -> Balancer:
        """A client-side load balancer over this group's members (it follows the group
        on a thread of its own from now on: close it, or use it as a context manager)."""
        return Balancer(self.client, self.name, policy=policy, role=role, tags=tags, seed=seed)


_POLICY_FIELDS = tuple(f.name for f in groups_pb2.GroupPolicy.DESCRIPTOR.fields)


def _known_fields(policy: dict[str, Any]) -> None:
    """Refuse a keyword that is not a GroupPolicy field, with the closest one."""
    for name in policy:
        if name not in _POLICY_FIELDS:
            close = difflib.get_close_matches(name, _POLICY_FIELDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise errors.InvalidArgument(
                f"unknown policy field {name!r}: {hint}use {', '.join(_POLICY_FIELDS)}"
            )


def spread_refusal(name: str, rule: groups_pb2.SpreadExplanation) -> str:
    """Why a rebalance of group ``name`` (with its family) cannot improve its spread."""
    where = f"family {rule.family}" if rule.family else f"group {name}"
    why = "; ".join(rule.stuck) or "no switchover would lower it"
    return (
        f"the spread of {where} is violated ({rule.excess} master(s) beyond at most "
        f"{rule.max} per {rule.tag}) and no switchover can improve it now: {why}. Start or "
        "tag members where there is room, then run rebalance again"
    )


def _wait_moved(client: Client, move: groups_pb2.RebalanceMove, timeout_s: float) -> None:
    """Until ``move.to_member`` holds ``move.slot`` (a cancelled handover, or the time
    running out, raises with what happened)."""
    g = Group(client, move.group)
    deadline = time.monotonic() + timeout_s
    while True:
        got = g.get()
        h = next((h for h in got.holdings if h.slot == move.slot), None)
        if h is not None and h.member_id == move.to_member and not h.revoked:
            return
        pending = any(ho.slot == move.slot for ho in got.handovers)
        if h is not None and h.member_id == move.from_member and not h.revoked and not pending:
            raise errors.FailedPrecondition(
                f"the switchover of group {move.group!r} from {move.from_member} to "
                f"{move.to_member} was cancelled ({move.to_member} is no longer eligible): "
                "nothing else was moved; run rebalance again to plan afresh"
            )
        if h is not None and h.member_id not in (move.from_member, move.to_member):
            raise errors.FailedPrecondition(
                f"slot {move.slot} of group {move.group!r} went to {h.member_id}, not "
                f"{move.to_member} (it stopped being eligible meanwhile): nothing else was "
                "moved; run rebalance again to plan afresh"
            )
        if time.monotonic() >= deadline:
            raise errors.DeadlineExceeded(
                f"the switchover of group {move.group!r} from {move.from_member} to "
                f"{move.to_member} did not finish within {timeout_s:g} s (it may still: "
                f"coordctl group get {move.group}); nothing else was moved"
            )
        time.sleep(0.05)


def family_groups(client: Client, family: str) -> list[groups_pb2.Group]:
    """The groups whose spread rule names ``family`` (name order); NotFound if none."""
    req = election_pb2.ListGroupsRequest()
    resp: election_pb2.ListGroupsResponse = client.call(
        lambda ch, t: _groups(ch).List(req, timeout=t)
    )
    found = [g for g in resp.groups if g.policy.spread_tag and g.policy.spread_family == family]
    if not found:
        raise errors.NotFound(
            f"no group has spread family {family!r}: give one with --spread-family (coordctl "
            "group edit GROUP --spread-tag zone --spread-max 1 --spread-family NAME)"
        )
    return sorted(found, key=lambda g: g.name)


def pause_all(
    client: Client, until_s: float | None = None, for_s: float | None = None, reason: str = ""
) -> list[groups_pb2.Group]:
    """Pause every group of the cluster (:meth:`Group.pause`); returns them paused."""
    return list(_pause(client, [], True, until_s, for_s, reason).groups)


def scheduled_switchovers(client: Client) -> list[groups_pb2.ScheduledSwitchover]:
    """Every scheduled switchover of the cluster, soonest first."""
    req = election_pb2.ListGroupsRequest()
    resp: election_pb2.ListGroupsResponse = client.call(
        lambda ch, t: _groups(ch).List(req, timeout=t)
    )
    return sorted((s for g in resp.groups for s in g.scheduled), key=lambda s: (s.at_ms, s.id))


def resume_all(client: Client) -> list[str]:
    """Resume every paused group; returns the names of those resumed."""
    req = election_pb2.ResumeGroupsRequest(all=True, request_id=new_request_id())
    resp: election_pb2.PauseGroupsResponse = client.call(
        lambda ch, t: _groups(ch).Resume(req, timeout=t)
    )
    return [g.name for g in resp.groups]


def _pause(
    client: Client,
    names: list[str],
    all_groups: bool,
    until_s: float | None,
    for_s: float | None,
    reason: str,
) -> election_pb2.PauseGroupsResponse:
    req = election_pb2.PauseGroupsRequest(
        groups=names, all=all_groups, reason=reason, request_id=new_request_id(),
        until_ms=round(until_s * 1000) if until_s is not None else 0,
        for_ms=round(for_s * 1000) if for_s is not None else 0,
    )  # fmt: skip
    resp: election_pb2.PauseGroupsResponse = client.call(
        lambda ch, t: _groups(ch).Pause(req, timeout=t)
    )
    return resp
