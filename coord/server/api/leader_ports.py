"""What the servicers need from the leader's duties, as ports (typing.Protocol).

Servicers never import coord.server.duties (an import contract): the wiring
(coord.server.app) hands them the duty objects, which satisfy these protocols.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from coord.v1 import groups_pb2


class SessionDeadlines(Protocol):
    """The leader's session clock (coord.server.duties.leases.LeaseKeeper)."""

    @property
    def leading(self) -> bool: ...

    @property
    def leading_term(self) -> int | None:
        """The term this node leads in, once its duties there started; else None."""

    def touch(self, session_id: str, arrival: float, load: float | None = None) -> bool:
        """A keepalive arrived at ``arrival`` (monotonic): False if the session is gone."""

    async def ack_barrier(self, timeout: float) -> None:
        """Return once a read barrier begun after the call holds here (everything
        committed before it is applied, and no later leader had taken over then)."""


class ProbeOutcome(Protocol):
    @property
    def ok(self) -> bool: ...

    @property
    def detail(self) -> str: ...

    @property
    def latency_s(self) -> float: ...


class CheckView(Protocol):
    """One checked member as the leader sees it now (not replicated)."""

    @property
    def last(self) -> ProbeOutcome | None: ...

    @property
    def last_time_ms(self) -> int: ...

    @property
    def streak(self) -> int: ...


class MemberCheckResults(Protocol):
    """The leader's running member checks (coord.server.duties.member_checks)."""

    @property
    def targets(self) -> Mapping[tuple[str, str, int], CheckView]:
        """By (group, member id, registered revision)."""


RunProbe = Callable[[groups_pb2.HealthCheck, str], Awaitable[ProbeOutcome]]
