"""Checker: each logical write was applied once, however often the library retried it
(docs/design.md, the safety argument, point 9: every write carries a request id; a retry
returns the first result).

Input: the every-kind writer's logged writes (``record.writes``, chaos.every_write) and a
note of every event of the run (``record.events``, from an unfiltered watcher). Each
logged write names what it is about (a group, a session name, ``group/member``, a key)
and no other logical write in the run is about the same thing, so its effect can be
counted in the event log:

====================  =================================================================
write                 its effect
====================  =================================================================
create_group g        group_created g
delete_group g        group_deleted g
open_session name     session_opened of a session with that name
register g/m          member_joined g m
switchover g          stepdown_requested g, cause switchover
resign g/m            master_lost g m, cause resign or switchover (its pending handover)
put / delete k        kv_put / kv_delete of k
====================  =================================================================

(A campaign, an update and a close are idempotent by nature: a second application
changes nothing and emits nothing, so there is nothing to count.)

Violations:

- an effect that appears more than once (e.g. two sessions opened by one call);
- a write acknowledged (``ok``) whose effect is not in the log (an acknowledged write lost);
- a write refused (a definite error such as ALREADY_EXISTS or FAILED_PRECONDITION) whose
  effect *is* in the log: its first attempt was applied, its answer lost, and the retry
  was applied again and refused, so the caller was told the opposite of what happened;
- for a registered member, a member_updated event that changes nothing a client sets
  (a registration applied a second time);
- an event log that is not complete (revisions missing): nothing can be counted, so the
  run is not vouched for.

A write whose outcome is unknown (it timed out) may have applied once or not at all.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable

from chaos.checkers import Violation
from chaos.records import EventNote, LoggedWrite, RunRecord

NAME = "applied_once"
_SAMPLE = 10

Effect = Callable[[EventNote, str], bool]

EFFECTS: dict[str, Effect] = {
    "create_group": lambda e, s: e.type == "group_created" and e.group == s,
    "delete_group": lambda e, s: e.type == "group_deleted" and e.group == s,
    "open_session": lambda e, s: e.type == "session_opened" and e.session_name == s,
    "register": lambda e, s: e.type == "member_joined" and f"{e.group}/{e.member}" == s,
    "switchover": lambda e, s: (
        e.type == "stepdown_requested" and e.cause == "switchover" and e.group == s
    ),
    "resign": lambda e, s: (
        e.type == "master_lost"
        and e.cause in ("resign", "switchover")
        and f"{e.group}/{e.member}" == s
    ),
    "put": lambda e, s: e.type == "kv_put" and s in e.keys,
    "delete": lambda e, s: e.type == "kv_delete" and s in e.keys,
}


def applied_once(record: RunRecord) -> list[Violation]:
    if not record.writes:
        return []
    missing = _holes(record.events)
    if missing:
        return [
            Violation(
                NAME,
                f"the event log recorded is not complete ({missing}): {len(record.writes)} "
                "logical writes not vouched for",
            )
        ]
    index = _Index(record.events)
    problems: list[tuple[str, str]] = []  # (kind, what happened)
    for w in record.writes:
        effect = EFFECTS.get(w.kind)
        if effect is not None:
            problems += [(w.kind, p) for p in _judge(w, index.matching(w, effect))]
    problems += [("register", p) for p in _reregistered(record, index)]
    if not problems:
        return []
    kinds = Counter(kind for kind, _ in problems)
    by_kind = ", ".join(f"{kind} {n}" for kind, n in kinds.most_common())
    shown = "; ".join(p for _, p in problems[:_SAMPLE])
    more = f" ... and {len(problems) - _SAMPLE} more" if len(problems) > _SAMPLE else ""
    return [
        Violation(
            NAME,
            f"{len(problems)} writes not applied exactly once ({by_kind}): {shown}{more}",
        )
    ]


def _judge(w: LoggedWrite, hits: list[EventNote]) -> list[str]:
    revs = ", ".join(str(e.revision) for e in hits)
    what = f"{w.kind} {w.subject}"
    if len(hits) > 1:
        return [f"{what} (answered {w.outcome}) applied {len(hits)} times (revisions {revs})"]
    if w.outcome == "ok" and not hits:
        return [f"{what} was acknowledged but never applied"]
    if w.outcome not in ("ok", "unknown") and hits:
        return [
            f"{what} answered {w.outcome}, yet was applied (revision {revs}): a retry of the "
            "applied write was applied again and refused"
        ]
    return []


def _reregistered(record: RunRecord, index: _Index) -> list[str]:
    """member_updated events of registered members that change nothing a client sets."""
    out = []
    for w in record.writes:
        if w.kind != "register":
            continue
        previous: tuple[object, ...] | None = None
        for e in index.member_events(w.subject):
            if e.type == "member_updated" and previous is not None and e.member_fields == previous:
                out.append(
                    f"register {w.subject} (answered {w.outcome}) applied again at revision "
                    f"{e.revision}: a member_updated that changes nothing"
                )
            previous = e.member_fields  # the member as this event left it
    return out


class _Index:
    """Events by what they are about, so that each write looks at a few, not all."""

    def __init__(self, events: Iterable[EventNote]) -> None:
        self.by_subject: dict[str, list[EventNote]] = defaultdict(list)
        for e in sorted(events, key=lambda e: e.revision):
            for subject in _subjects(e):
                self.by_subject[subject].append(e)

    def matching(self, w: LoggedWrite, effect: Effect) -> list[EventNote]:
        return [e for e in self.by_subject.get(w.subject, []) if effect(e, w.subject)]

    def member_events(self, subject: str) -> list[EventNote]:
        return [
            e
            for e in self.by_subject.get(subject, [])
            if e.type in ("member_joined", "member_updated")
        ]


def _subjects(e: EventNote) -> set[str]:
    out = set(e.keys)
    if e.group:
        out.add(e.group)
        if e.member:
            out.add(f"{e.group}/{e.member}")
    if e.session_name:
        out.add(e.session_name)
    return out


def _holes(events: list[EventNote]) -> str:
    """Which revisions are missing between the first and the last event noted ("" if none)."""
    revs = sorted(e.revision for e in events)
    if not revs:
        return "no events"
    gaps = [(a, b) for a, b in itertools.pairwise(revs) if b > a + 1]
    if not gaps:
        return ""
    listed = ", ".join(f"{a + 1}..{b - 1}" if b - a > 2 else str(a + 1) for a, b in gaps[:5])
    return f"revisions {listed} missing"
