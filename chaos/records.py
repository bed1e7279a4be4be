"""What a chaos run records, for the checkers. Times are time.monotonic() of the test
process (every recorder and the nemesis run in it, so times compare)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
class Outage:
    """A span without a usable leader or master, seen by the workload (for the table)."""

    what: str  # "kv" or a group name
    start: float
    end: float


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
