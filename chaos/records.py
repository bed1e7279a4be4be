"""What a chaos run records, for the checkers. Times are time.monotonic() of the test
process (every recorder and the nemesis run in it, so times compare)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chaos.txn_linearizability import TxnOp


@dataclass
class Tenure:
    """A span during which a campaigner's own library said it was master of a slot.

    ``start``: when its campaign returned elected (the library believes from then on).
    ``end``: the first time ``Leadership.is_master()`` was seen False afterwards (a
    conservative end: belief stopped at or before it); None if still master at the
    end of the run (closed by the runner at its end time).
    """

    process: str
    group: str
    slot: int
    token: int
    start: float
    end: float | None = None


@dataclass
class WatchLog:
    """The revisions one watcher received, in order, and the range it asked for."""

    watcher: str
    from_revision: int
    revisions: list[int] = field(default_factory=list)
    # Revisions the watcher was told were skipped by its filter: each watch response
    # header says "filtered up to R"; a watcher with no filter needs none.
    filtered: bool = False
    error: str = ""


@dataclass
class SessionLoss:
    """A session the workload kept alive whose library reported it LOST."""

    session: str  # its name
    at: float
    why: str  # "the cluster said expired", or "no keepalive acknowledged within its TTL"


@dataclass(frozen=True)
class EventNote:
    """What the write checker needs of one event of the cluster's event log."""

    revision: int
    type: str
    group: str = ""
    member: str = ""
    cause: str = ""
    session_id: str = ""
    session_name: str = ""  # session_opened only
    keys: tuple[str, ...] = ()  # kv_put / kv_delete
    # member_joined / member_updated: what a client sets on a member, to tell an
    # update that changed something from a registration applied again.
    member_fields: tuple[object, ...] = ()


@dataclass
class LoggedWrite:
    """One logical write of the every-kind writer (one library call, however many
    attempts the library made): what it was about, and how it ended."""

    kind: str  # create_group, open_session, register, campaign, update, switchover, ...
    subject: str  # the group, session name, "group/member" or key it is about
    start: float
    end: float = 0.0
    # "ok"; "unknown" (timed out / unavailable: it may or may not have applied); or the
    # error class name of a definite refusal (AlreadyExists, FailedPrecondition, ...).
    outcome: str = "unknown"


@dataclass
class Outage:
    """A span without a usable leader or master, seen by the workload (for the table)."""

    what: str  # "kv" or a group name
    start: float
    end: float


@dataclass
class HealSample:
    """What every member's commit index did after one heal (chaos.convergence samples
    it; the ``converged`` checker judges it).

    ``target`` is the leader's commit index at the heal (the highest any member had:
    a stale leader's is never higher), read at ``at`` or, if no member answered then,
    at the first answer. A member's window starts at the heal, or, for one not
    answering then (a restarted process still starting), when it first answered.
    """

    at: float  # time.monotonic() of the heal
    members: list[str]
    target: int = 0
    leader: str = ""  # who had the target ("" if nobody answered)
    answered: dict[str, float] = field(default_factory=dict)  # member -> first answer
    passed: dict[str, float] = field(default_factory=dict)  # member -> commit >= target
    last_commit: dict[str, int] = field(default_factory=dict)  # member -> last seen
    sampled_until: float = 0.0  # the last sample


@dataclass
class RunRecord:
    scenario: str
    seed: int
    start: float
    end: float = 0.0
    tenures: list[Tenure] = field(default_factory=list)
    watches: list[WatchLog] = field(default_factory=list)
    # Write-once keys whose put was acknowledged, and the keys each node holds after
    # the heal (a linearizable range read through that node, then a serializable one).
    acked: list[str] = field(default_factory=list)
    final: dict[str, set[str]] = field(default_factory=dict)
    # The compare-and-set register history (chaos.linearizability.History.ops).
    kv_history: list[object] = field(default_factory=list)
    # After heal: seconds until one leader and every group with all its masters
    # (None: not within the bound).
    recovered_after_s: float | None = None
    failovers: int = 0
    operations: int = 0
    notes: list[str] = field(default_factory=list)
    # When the runner told the workload to stop (tenures ending after it are not losses).
    stopping: float | None = None
    # A graceful scenario (leadership transfers, rolling restart): no session may be
    # lost and no slot may change master during the whole run.
    graceful: bool = False
    sessions_kept: int = 0  # sessions the session load kept alive
    session_losses: list[SessionLoss] = field(default_factory=list)
    # The every-kind writer's logical writes, and the events of the whole run.
    writes: list[LoggedWrite] = field(default_factory=list)
    events: list[EventNote] = field(default_factory=list)
    # Each heal's commit indexes (the ``converged`` checker).
    heals: list[HealSample] = field(default_factory=list)
    # The bank workload (chaos.bank): audits (time, accounts seen, their total, revision)
    # and how many transfers were acknowledged.
    bank_audits: list[tuple[float, int, int, int]] = field(default_factory=list)
    bank_transfers: int = 0
    # Every bank operation (chaos.txn_linearizability.TxnOp): the tellers' reads and
    # transactions, the auditor's reads, with times, outcomes and revisions, for the
    # multi-key linearizability checker (``bank_linearizable``).
    bank_history: list[TxnOp] = field(default_factory=list)
