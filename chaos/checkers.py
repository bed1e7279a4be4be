"""Checkers over a :class:`chaos.records.RunRecord`: pure functions, each returning the
violations it found (an empty list is a pass).

Times in messages are seconds relative to ``record.start`` (``+12.345s``).

Rules (where the record alone leaves a choice):

- Tenures are half-open intervals ``[start, end)``; an open tenure (``end`` None) lasts
  until ``record.end``, or for ever if ``record.end`` is before its start (the run's
  end was not recorded: belief never stopped, so assume the worst). Touching tenures
  (one's end == the other's start) do not overlap, and a zero-length tenure overlaps
  nothing. A tenure that ends before it starts is reported as malformed.
- Two masters: overlapping tenures of *different* processes for one (group, slot).
  Two slots: overlapping tenures of one process for different slots of one group.
  Overlapping tenures of one process for the same slot are one belief recorded twice
  (e.g. a re-sent campaign): not reported.
- Tokens: the server's fencing token is the revision of the grant, so every grant has
  its own token and tokens increase per slot and cluster-wide. Per (group, slot),
  walking tenures by start, each token must exceed the highest seen so far, except
  that the *same process* may repeat the current highest token (it re-observed the
  grant it holds: campaigning is idempotent). A lower token is "went backwards" (even
  the same process re-believing an older grant after a newer one was given out); an
  equal token from another process is "shared". A token that appears under two
  different (group, slot) pairs is also shared.
- Watches: unfiltered, the revisions must be exactly ``from_revision,
  from_revision + 1, ...`` up to the last received; filtered, strictly increasing and
  none below ``from_revision``. An ``error`` mentioning "compacted" (OUT_OF_RANGE:
  the revisions needed were compacted away) is a legitimate end of a watch, not a
  violation (see :func:`watch_notes`); the revisions received before it are checked
  as usual. Any other error is a violation.
- Linearizability: a history the checker could not decide (``unknown``) is reported
  as a violation too: the run is not vouched for. The same holds for the bank's
  multi-key history (``bank_linearizable``, chaos.txn_linearizability).
- Graceful runs (``record.graceful``: leadership transfers, a rolling restart): no
  session the workload kept may be reported LOST by its library, and no slot may change
  master: one token per (group, slot) among the tenures that began before the workload
  was told to stop (``record.stopping``; with no stop recorded, all of them), and no
  master's belief may end before that. A graceful handover must not cost a failover.
- Writes applied once: chaos.applied_once.
- Convergence (``record.heals``, sampled by chaos.convergence): after every heal, every
  member's commit index must reach the leader's heal-time commit index within the
  bound (2 s) of the member's window start (the heal, or its first answer after the
  heal if it was not answering then: a restarted process). A member that never
  answered, or never reached it while sampled, is a violation; so is a heal after
  which no member answered at all.
"""

from __future__ import annotations

import importlib
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from chaos.records import HealSample, RunRecord, Tenure, WatchLog

# How many items (keys, anomalies) a message lists before "... and N more".
_SAMPLE = 10


@dataclass(frozen=True)
class Violation:
    checker: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.checker}] {self.detail}"


# -- formatting ------------------------------------------------------------------


def _rel(record: RunRecord, t: float) -> str:
    if math.isinf(t):
        return "+inf"
    return f"+{t - record.start:.3f}s"


def _sample(items: Sequence[str], sep: str = ", ", n: int = _SAMPLE) -> str:
    shown = sep.join(items[:n])
    return shown if len(items) <= n else f"{shown} ... and {len(items) - n} more"


def _end(record: RunRecord, t: Tenure) -> float:
    if t.end is not None:
        return t.end
    return record.end if record.end >= t.start else math.inf


def _describe(record: RunRecord, t: Tenure) -> str:
    end = _rel(record, t.end) if t.end is not None else f"open ({_rel(record, _end(record, t))})"
    return f"{t.process} (slot {t.slot}, token {t.token}, {_rel(record, t.start)}..{end})"


# -- 1. at most one master per slot, at most one slot per process ------------------


def overlapping_masters(record: RunRecord) -> list[Violation]:
    name = "overlapping_masters"
    out: list[Violation] = []
    by_group: dict[str, list[Tenure]] = defaultdict(list)
    for t in record.tenures:
        if t.end is not None and t.end < t.start:
            out.append(
                Violation(
                    name,
                    f"group {t.group}: malformed tenure of {t.process} (slot {t.slot}, "
                    f"token {t.token}) ends at {_rel(record, t.end)} before it starts at "
                    f"{_rel(record, t.start)}",
                )
            )
            continue
        by_group[t.group].append(t)
    for group in sorted(by_group):
        tenures = sorted(by_group[group], key=lambda t: (t.start, t.slot, t.token, t.process))
        for i, a in enumerate(tenures):
            a_end = _end(record, a)
            for b in tenures[i + 1 :]:
                if b.start >= a_end:
                    break  # sorted by start: no later tenure overlaps a either
                b_end = _end(record, b)
                if not (a.start < b_end and b.start < a_end):
                    continue
                if a.slot == b.slot and a.process != b.process:
                    what = f"slot {a.slot} has two masters"
                elif a.slot != b.slot and a.process == b.process:
                    what = f"{a.process} holds two slots ({a.slot} and {b.slot})"
                else:
                    continue
                lo, hi = max(a.start, b.start), min(a_end, b_end)
                out.append(
                    Violation(
                        name,
                        f"group {group}: {what} from {_rel(record, lo)} to {_rel(record, hi)} "
                        f"({hi - lo:.3f} s): {_describe(record, a)} and {_describe(record, b)}",
                    )
                )
    return out


# -- 2. fencing tokens ---------------------------------------------------------------


def tokens_increase(record: RunRecord) -> list[Violation]:
    name = "tokens_increase"
    out: list[Violation] = []
    by_slot: dict[tuple[str, int], list[Tenure]] = defaultdict(list)
    for t in record.tenures:
        by_slot[(t.group, t.slot)].append(t)
    for group, slot in sorted(by_slot):
        tenures = sorted(by_slot[(group, slot)], key=lambda t: (t.start, t.token, t.process))
        top: Tenure | None = None  # the tenure with the highest token so far
        for t in tenures:
            if top is None or t.token > top.token:
                top = t
            elif t.token == top.token:
                if t.process != top.process:
                    out.append(
                        Violation(
                            name,
                            f"group {group} slot {slot}: token {t.token} shared by "
                            f"{_describe(record, top)} and {_describe(record, t)}",
                        )
                    )
            else:
                out.append(
                    Violation(
                        name,
                        f"group {group} slot {slot}: token went backwards: "
                        f"{_describe(record, t)} started after {_describe(record, top)}",
                    )
                )
    # Cluster-wide: a token is one grant, of one slot.
    slots_of: dict[int, dict[tuple[str, int], Tenure]] = defaultdict(dict)
    for t in sorted(record.tenures, key=lambda t: (t.start, t.process)):
        slots_of[t.token].setdefault((t.group, t.slot), t)
    for token in sorted(slots_of):
        where = slots_of[token]
        if len(where) > 1:
            listed = "; ".join(
                f"{g}/{s} by {_describe(record, t)}" for (g, s), t in sorted(where.items())
            )
            out.append(Violation(name, f"token {token} believed for {len(where)} slots: {listed}"))
    return out


# -- 3. acknowledged writes survive ---------------------------------------------------


def acknowledged_writes_present(record: RunRecord) -> list[Violation]:
    name = "acknowledged_writes_present"
    acked = set(record.acked)
    if not record.final:
        return [
            Violation(
                name,
                f"nothing was read back after the heal (record.final is empty): "
                f"{len(acked)} acknowledged writes unverified",
            )
        ]
    out: list[Violation] = []
    lost_everywhere = acked.difference(*record.final.values())
    for node in sorted(record.final):
        missing = sorted(acked - record.final[node])
        if missing:
            everywhere = sum(1 for k in missing if k in lost_everywhere)
            out.append(
                Violation(
                    name,
                    f"node {node} lacks {len(missing)} of {len(acked)} acknowledged keys "
                    f"({everywhere} of them missing on every node): {_sample(missing)}",
                )
            )
    return out


# -- 4. watches: ordered, no duplicates, no gaps ---------------------------------------


def _compacted(w: WatchLog) -> bool:
    return "compacted" in w.error.lower()


def _ranges(missing: Iterable[tuple[int, int]]) -> list[str]:
    return [
        f"missing {lo}" if lo == hi else f"missing {lo}..{hi} ({hi - lo + 1} revisions)"
        for lo, hi in missing
    ]


def _watch_problems(w: WatchLog) -> list[str]:
    problems: list[str] = []
    seen: set[int] = set()
    hi: int | None = None
    for i, r in enumerate(w.revisions):
        if r in seen:
            problems.append(f"duplicate revision {r} (#{i})")
        elif r < w.from_revision:
            problems.append(f"revision {r} (#{i}) is below from_revision {w.from_revision}")
        elif hi is not None and r < hi:
            problems.append(f"revision {r} (#{i}) out of order, after {hi}")
        seen.add(r)
        hi = r if hi is None else max(hi, r)
    if not w.filtered and hi is not None:
        gaps: list[tuple[int, int]] = []
        expected = w.from_revision
        for r in sorted(x for x in seen if x >= w.from_revision):
            if r > expected:
                gaps.append((expected, r - 1))
            expected = r + 1
        problems += _ranges(gaps)
    if w.error and not _compacted(w):
        last = f"last {w.revisions[-1]}" if w.revisions else "none received"
        problems.append(f"failed after {len(w.revisions)} revisions ({last}): {w.error}")
    return problems


def watch_gap_free(record: RunRecord) -> list[Violation]:
    out: list[Violation] = []
    for w in record.watches:
        problems = _watch_problems(w)
        if problems:
            kind = "filtered" if w.filtered else "unfiltered"
            out.append(
                Violation(
                    "watch_gap_free",
                    f"watcher {w.watcher} ({kind}, from revision {w.from_revision}, "
                    f"{len(w.revisions)} received): {_sample(problems, '; ')}",
                )
            )
    return out


def watch_notes(record: RunRecord) -> list[str]:
    """Not violations: watches that ended because their revisions were compacted."""
    notes = []
    for w in record.watches:
        if w.error and _compacted(w):
            last = f"last {w.revisions[-1]}" if w.revisions else "none received"
            notes.append(
                f"watcher {w.watcher} stopped at compaction after {len(w.revisions)} "
                f"revisions ({last}): {w.error}"
            )
    return notes


# -- 5. recovery ----------------------------------------------------------------------


def recovered(record: RunRecord, bound_s: float) -> list[Violation]:
    name = "recovered"
    if record.recovered_after_s is None:
        return [
            Violation(
                name,
                f"no recovery after the heal (one leader and every group's masters not seen "
                f"within the workload's wait; bound {bound_s:.2f} s)",
            )
        ]
    if record.recovered_after_s > bound_s:
        return [
            Violation(
                name,
                f"recovery took {record.recovered_after_s:.2f} s after the heal, over the "
                f"bound of {bound_s:.2f} s",
            )
        ]
    return []


# -- 6. linearizability of the compare-and-set register ----------------------------------


def linearizable(record: RunRecord, timeout_s: float = 30.0) -> list[Violation]:
    """Runs ``chaos.linearizability.check`` on ``record.kv_history`` (imported here, so
    the other checkers work without it). An import failure, an exception from the
    checker, an undecided result and a non-linearizable one are all violations."""
    return _search("linearizable", "chaos.linearizability", record.kv_history, timeout_s)


# -- 6b. linearizability of the bank's multi-key transactions -----------------------------


def bank_linearizable(record: RunRecord, timeout_s: float = 30.0) -> list[Violation]:
    """Runs ``chaos.txn_linearizability.check`` on ``record.bank_history`` (the bank
    workload's reads, transactions and audits), like :func:`linearizable`: an import
    failure, an exception from the checker, an inconclusive result (the search bound ran
    out) and a non-linearizable history are all violations. An empty history passes
    (as for ``bank_conserved``)."""
    return _search(
        "bank_linearizable",
        "chaos.txn_linearizability",
        record.bank_history,
        timeout_s,
        what="the bank's history",
        undecided="inconclusive",
    )


def _search(
    name: str,
    module: str,
    history: Any,
    timeout_s: float,
    what: str = "history",
    undecided: str = "undecided",
) -> list[Violation]:
    """``module.check(history)`` as checker ``name``'s violations."""
    n = len(history)
    try:
        lin: Any = importlib.import_module(module)
    except ImportError as e:
        return [Violation(name, f"cannot import {module}: {e}")]
    try:
        res: Any = lin.check(history, timeout_s=timeout_s)
    except Exception as e:
        return [Violation(name, f"the checker raised on {n} operations: {e!r}")]
    key = getattr(res, "key", None)  # the per-key search says which key
    has_key = hasattr(res, "key")
    if getattr(res, "unknown", False) is True:
        return [
            Violation(
                name,
                f"{undecided} within {timeout_s:g} s ({n} operations"
                f"{f', key {key!r}' if has_key else ''}): "
                f"{getattr(res, 'explanation', '')}",
            )
        ]
    if not res.ok:
        return [
            Violation(
                name,
                f"{what} of {n} operations is not linearizable"
                f"{f' (key {key!r})' if has_key else ''}: "
                f"{getattr(res, 'explanation', '')}",
            )
        ]
    return []


# -- 7. graceful operations cost no session and no master ----------------------------------


def graceful_no_failover(record: RunRecord) -> list[Violation]:
    name = "graceful_no_failover"
    if not record.graceful:
        return []
    stop = record.stopping if record.stopping is not None else math.inf
    out: list[Violation] = []
    lost = sorted((x for x in record.session_losses if x.at < stop), key=lambda x: x.at)
    if lost:
        listed = [f"{x.session} at {_rel(record, x.at)} ({x.why})" for x in lost]
        kept = f" of {record.sessions_kept} kept" if record.sessions_kept else ""
        out.append(Violation(name, f"{len(lost)} sessions{kept} lost: {_sample(listed)}"))
    by_slot: dict[tuple[str, int], list[Tenure]] = defaultdict(list)
    for t in record.tenures:
        if t.start < stop:  # a grant after the stop: a stopping master's slot moved on
            by_slot[(t.group, t.slot)].append(t)
    for group, slot in sorted(by_slot):
        tenures = sorted(by_slot[(group, slot)], key=lambda t: (t.start, t.process))
        changes = len({t.token for t in tenures}) - 1
        if changes:
            listed = [_describe(record, t) for t in tenures]
            out.append(
                Violation(
                    name,
                    f"group {group} slot {slot} changed master {changes} times: "
                    f"{_sample(listed, '; ')}",
                )
            )
        for t in tenures:
            if t.end is not None and t.end < stop:
                out.append(
                    Violation(
                        name,
                        f"group {group}: {_describe(record, t)} stopped believing before "
                        "the run ended",
                    )
                )
    return out


# -- 8. every member catches up after a heal -----------------------------------------------

CONVERGE_S = 2.0


def converged(record: RunRecord, bound_s: float = CONVERGE_S) -> list[Violation]:
    name = "converged"
    out: list[Violation] = []
    for k, h in enumerate(record.heals, 1):
        where = f"heal #{k} at {_rel(record, h.at)}"
        if not h.leader:
            out.append(Violation(name, f"{where}: no member answered (members {h.members})"))
            continue
        late = [_late(record, h, m, bound_s) for m in h.members]
        out += [Violation(name, f"{where}: {why}") for why in late if why]
    return out


def _late(record: RunRecord, h: HealSample, member: str, bound_s: float) -> str | None:
    """Why ``member`` did not converge after heal ``h`` in time (None if it did)."""
    target = f"the leader {h.leader}'s heal-time commit index {h.target}"
    start = h.answered.get(member)
    if start is None:
        return (
            f"{member} did not answer (sampled until {_rel(record, h.sampled_until)}), "
            f"so never shown past {target}"
        )
    since = "the heal" if start == h.at else f"it first answered at {_rel(record, start)}"
    passed = h.passed.get(member)
    if passed is not None and passed - start <= bound_s:
        return None
    last = h.last_commit.get(member)
    took = (
        f"passed it {passed - start:.3f} s after {since}"
        if passed is not None
        else f"was still at commit {last} when last sampled, at {_rel(record, h.sampled_until)}"
    )
    return f"{member} behind {target} for more than {bound_s:g} s after {since}: {took}"


# -- all ---------------------------------------------------------------------------------


def check_all(
    record: RunRecord,
    recovery_bound_s: float,
    linearizability_timeout_s: float = 30.0,
    convergence_bound_s: float = CONVERGE_S,
) -> list[Violation]:
    from chaos.applied_once import applied_once  # it builds on this module's Violation
    from chaos.bank import bank_conserved  # likewise

    return [
        *overlapping_masters(record),
        *tokens_increase(record),
        *acknowledged_writes_present(record),
        *watch_gap_free(record),
        *recovered(record, recovery_bound_s),
        *linearizable(record, linearizability_timeout_s),
        *graceful_no_failover(record),
        *applied_once(record),
        *converged(record, convergence_bound_s),
        *bank_conserved(record),
        *bank_linearizable(record, linearizability_timeout_s),
    ]
