"""Raft's append-entries rule on top of pysyncobj's follower code.

pysyncobj 0.3.17's follower deletes every entry after ``prevLogIdx`` whenever
it holds more, conflict or not, and then sets its commit index to
``min(leaderCommit, its own last index)``. The leader resends in-flight entries
(it moves nextIndex back to each lagging acknowledgement), so under load a
follower routinely cuts entries it has already acknowledged - entries the leader
may have counted towards a commit (docs/raft-hardening.md has the figures). That
breaks the majority intersection Raft's safety rests on.

Raft (Figure 2, AppendEntries 3-5) says: skip entries already present with the
same term; truncate only at the first conflicting entry; commit at most up to
the last entry this message verified. :func:`rewrite` turns a leader's message
into one for which pysyncobj's code does exactly that:

- the matching prefix of ``entries`` is dropped and ``prevLogIdx`` advanced
  over it (pysyncobj then acknowledges up to the verified index, no further);
- truncation is allowed only from the first conflicting index; anything else
  pysyncobj would delete is vetoed (the ``__deleteEntriesFrom`` override in
  ``coord.raft.syncobj_adapter``);
- ``commit_index`` is clamped to the last verified index, so entries of ours
  that the leader has not vouched for are never applied;
- a message without ``prevLogIdx`` (a snapshot chunk, or ``serialized: None``: the
  leader has a snapshot for us but is still writing it) verifies none of our entries:
  its ``commit_index`` is clamped to our own. pysyncobj would otherwise commit up to
  ``min(leaderCommit, our last index)``, and a deposed leader would apply (and
  acknowledge to its clients) the uncommitted tail the snapshot is about to replace.
  After an install our commit index may trail the applied index until the next
  append verifies it; a snapshot holds only committed state.
- a snapshot whose last entry our log already holds (same index and term), or that our
  own dump went past, is not installed (Raft §7: "if existing log entry has same index
  and term as snapshot's last included entry, retain log entries following it").
  pysyncobj clears the log on every install: a leader that sent a snapshot while a
  pipelined append was catching us up past it (its nextIndex was below its log start
  when it began) wiped entries we had acknowledged, and may have counted
  (:func:`snapshot_is_covered`; coord.raft.background_dump refuses the file).

Thread: the tick thread (inside pysyncobj's message handling).
"""

from __future__ import annotations

from typing import Any


def rewrite(log: Any, message: dict[str, Any], commit: int) -> tuple[dict[str, Any], int | None]:
    """Return the message pysyncobj should see, and the index truncation may start at;
    ``commit`` is our commit index."""
    if "prevLogIdx" not in message:
        if message.get("commit_index", 0) <= commit:
            return message, None
        return {**message, "commit_index": commit}, None
    if "transmission" in message:
        return message, None
    prev, prev_term = message["prevLogIdx"], message["prevLogTerm"]
    first, last = log[0][1], log[-1][1]
    if prev is None or not first <= prev <= last or log[prev - first][2] != prev_term:
        return message, None  # pysyncobj answers "reset" and truncates nothing
    entries = message.get("entries") or []
    i = 0
    conflict: int | None = None
    while i < len(entries):
        idx, term = entries[i][1], entries[i][2]
        if idx > last:
            break
        if log[idx - first][2] != term:
            conflict = idx
            break
        i += 1
    if i:
        prev, prev_term = entries[i - 1][1], entries[i - 1][2]
    rest = entries[i:]
    verified = rest[-1][1] if rest else prev
    out = dict(message)
    out.update(
        prevLogIdx=prev,
        prevLogTerm=prev_term,
        entries=rest,
        commit_index=min(message["commit_index"], verified),
    )
    return out, conflict


def snapshot_is_covered(log: Any, last: tuple[Any, int, int]) -> bool:
    """Whether a snapshot ending at ``last`` (command, index, term) adds nothing to ``log``
    (pysyncobj's, ``(command, index, term)`` entries): our log holds that entry with the
    same term (by Log Matching, everything before it too), or begins after it (our own
    dump, of committed entries only, covers more)."""
    if not len(log):
        return False
    first = int(log[0][1])
    index, term = int(last[1]), int(last[2])
    if index < first:
        return True
    pos = index - first
    return pos < len(log) and int(log[pos][2]) == term
