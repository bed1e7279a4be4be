"""A linearizability checker for multi-key transaction histories (the bank workload).

The single-key checker (chaos.linearizability) models independent registers. A ``KV.Txn``
that compares two keys and puts both couples them, and an audit that reads a prefix at one
revision reads every key at once: those histories are checked here, as a whole.

Operations (:class:`TxnOp`):

* ``txn``: ``compares`` (key, expected mod revision; 0: the key must be absent), all of
  which must hold, then ``puts`` (key, value), applied together at one new revision. Outcomes:
  ``ok`` (the compares held and the puts were applied, at ``revision``: the response
  header's), ``compare_failed`` (a compare did not hold: nothing applied; ``revision`` is the
  store's revision it was judged at), ``unknown`` (timed out, connection lost: it may have
  taken effect at any time after its call, or never) or ``refused`` (definitely not
  applied: dropped).
* ``read``: ``keys`` read at once at ``revision`` (a range, or one key), returning
  ``result``: (key, value, mod revision) of those present; a key of ``keys`` missing from
  ``result`` was absent. ``ok``, or ``unknown``/``refused`` (dropped: they constrain nothing).

The model
---------

The state is ``{key: (value, mod_revision)}`` (a key absent: no entry) plus ``L``, a lower
bound on the cluster's revision. Revisions are assigned by the cluster and only partially
observed here (other workloads' writes take revisions too), so the model never invents them:

* an ``ok`` txn takes effect at its reported revision R: it needs R > L (the cluster's
  revision only grows, one per applied change), sets every put key to (value, R), L := R;
* a ``compare_failed`` txn or a read at reported revision V needs V >= L, sets L := V (what
  is linearized after it has a higher revision), and sees the state as it is;
* an ``unknown`` txn that took effect did so at a revision nobody reported to it. Either
  somebody observed that revision M (a read returned a key with mod revision M, a compare
  expected it) and no ``ok`` txn reported M: then M is one of its candidate revisions if its
  puts agree with every observation of M (each (key, value) read at M is one of its puts);
  linearized with it, it needs M > L and sets L := M. Or its revision was never observed:
  its keys then hold a value no read can return and no compare can expect (``FRESH``), and
  L stays as it is (there is room for it, or the cluster's revision gaps are not known
  here: a relaxation).

A compare is on the mod revision, exactly as the cluster evaluates it. Comparing the values
the teller read instead would be unsound both ways (balances repeat: a transfer out and back
restores a value, so a compare that failed on the cluster could hold on values), and this
way a key written twice with equal values, a write at a revision that was already used
(two txns succeeding on one compare), or a read whose revision and values disagree are all
caught.

Soundness: a history recorded from a linearizable cluster is accepted. Take its real order
of application (revisions increase along it, each op applied within its call and return):
every ``ok`` txn applied at its reported revision, every read and failed compare at the
revision it reported; each applied ``unknown`` txn either had its revision M observed (then
every observation of M is of its puts, and no ``ok`` txn reports M: M is a candidate) or not
(then FRESH behaves as M would: nothing compares or reads M). Along that order the model's
L is never above the real revision, so every step the cluster took is a legal model step.
Conversely, an accepted history has a linearization in this model: a total order consistent
with real time, each txn all-or-nothing at one revision, each read seeing one state. (Two
relaxations make it weaker than the cluster, never stricter: unobserved unknown txns do not
move L, and each partition has its own L, though the cluster's revision is global.)

The search
----------

As in chaos.linearizability (Wing & Gong's search with Lowe's improvements, as in
porcupine): the history is split into independent partitions (connected components of the
keys ops touch, by union-find: the bank's five accounts are one), and each is searched
depth first over configurations (ops linearized, as a bitmask; state; L), trying at each
only the ops invoked before the earliest return of a completed op not yet linearized, and
memoizing configurations so that none is explored twice. Unknown txns are optional (the
search succeeds once every completed op is linearized) and tried only where they can matter:

* bound to an observed revision M, only while some candidate completed op has a revision
  >= M (after it, M can no longer be used; before that, the op can wait, as nothing but an
  op with a revision >= M can follow it);
* with a FRESH revision, only right before a ``compare_failed`` txn comparing a key it puts
  (a FRESH key can never be read or compared equal again, and when every txn compares
  exactly the keys it puts — the bank's do — nothing can overwrite it either; otherwise
  FRESH is tried wherever the op may go).

The effort is bounded (``timeout_s``, ``max_states`` configurations): beyond it the result is
``unknown`` (inconclusive), never a pass.

:class:`TxnHistory` records a history from several threads; :func:`dump_jsonl` /
:func:`load_jsonl` write and read it as JSON lines (what ``chaos/porcupine`` checks too).
``python -m chaos.txn_linearizability HISTORY.jsonl`` checks a saved history.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Literal

__all__ = [
    "Kind",
    "Outcome",
    "Result",
    "TxnHistory",
    "TxnOp",
    "check",
    "dump_jsonl",
    "load_jsonl",
]

Kind = Literal["txn", "read"]
Outcome = Literal["ok", "compare_failed", "unknown", "refused"]

_KINDS: Final = frozenset({"txn", "read"})
_OUTCOMES: Final = frozenset({"ok", "compare_failed", "unknown", "refused"})


@dataclass(frozen=True, slots=True, kw_only=True)
class TxnOp:
    """One operation. ``call``/``ret``: ``time.monotonic()`` before the request was sent and
    after its answer arrived (``ret`` is ignored for ``unknown`` ops)."""

    process: int
    kind: Kind
    call: float
    ret: float | None = None
    outcome: Outcome = "unknown"
    compares: tuple[tuple[str, int], ...] = ()  # (key, expected mod revision; 0: absent)
    puts: tuple[tuple[str, str], ...] = ()  # (key, value)
    keys: tuple[str, ...] = ()  # read: the keys it read
    result: tuple[tuple[str, str, int], ...] = ()  # read: (key, value, mod revision) present
    revision: int | None = None  # the response header's revision

    @classmethod
    def txn(
        cls,
        process: int,
        compares: Iterable[tuple[str, int]],
        puts: Iterable[tuple[str, str]],
        call: float,
        ret: float | None,
        outcome: Outcome = "ok",
        revision: int | None = None,
    ) -> TxnOp:
        return cls(
            process=process, kind="txn", call=call, ret=ret, outcome=outcome,
            compares=tuple(compares), puts=tuple(puts), revision=revision,
        )  # fmt: skip

    @classmethod
    def read(
        cls,
        process: int,
        keys: Iterable[str],
        result: Iterable[tuple[str, str, int]],
        call: float,
        ret: float | None,
        revision: int | None = None,
        outcome: Outcome = "ok",
    ) -> TxnOp:
        return cls(
            process=process, kind="read", call=call, ret=ret, outcome=outcome,
            keys=tuple(keys), result=tuple(result), revision=revision,
        )  # fmt: skip

    def touched(self) -> set[str]:
        return {k for k, _ in self.compares} | {k for k, _ in self.puts} | set(self.keys)

    def to_json(self) -> dict[str, object]:
        return {
            "process": self.process, "kind": self.kind, "call": self.call, "ret": self.ret,
            "outcome": self.outcome, "compares": [list(c) for c in self.compares],
            "puts": [list(p) for p in self.puts], "keys": list(self.keys),
            "result": [list(r) for r in self.result], "revision": self.revision,
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, object]) -> TxnOp:
        def rows(name: str) -> list[list[object]]:
            v = d.get(name) or []
            assert isinstance(v, list)
            return v

        ret, rev = d.get("ret"), d.get("revision")
        return cls(
            process=int(str(d["process"])),
            kind=str(d["kind"]),  # type: ignore[arg-type]  # checked by check()
            call=float(str(d["call"])),
            ret=None if ret is None else float(str(ret)),
            outcome=str(d["outcome"]),  # type: ignore[arg-type]  # checked by check()
            compares=tuple((str(k), int(str(m))) for k, m in rows("compares")),
            puts=tuple((str(k), str(v)) for k, v in rows("puts")),
            keys=tuple(str(k) for k in rows("keys")),
            result=tuple((str(k), str(v), int(str(m))) for k, v, m in rows("result")),
            revision=None if rev is None else int(str(rev)),
        )


def dump_jsonl(ops: Iterable[TxnOp], path: str | Path) -> None:
    with open(path, "w") as f:
        for op in ops:
            f.write(json.dumps(op.to_json()) + "\n")


def load_jsonl(path: str | Path) -> list[TxnOp]:
    with open(path) as f:
        return [TxnOp.from_json(json.loads(line)) for line in f if line.strip()]


@dataclass(frozen=True, slots=True)
class Result:
    """``ok``: every partition is linearizable. ``unknown``: the search's effort bound ran out
    first (then ``ok`` is False: inconclusive, not a pass). ``keys``: the partition found not
    linearizable (or being checked when the bound ran out). ``explanation``: for people."""

    ok: bool
    explanation: str = ""
    unknown: bool = False
    keys: tuple[str, ...] = ()
    elapsed_s: float = 0.0
    ops: int = 0  # ops checked (refused ones and unknown reads are dropped)
    partitions: int = 0


# -- recording ------------------------------------------------------------------------------


class TxnHistory:
    """A thread-safe recorder, appending to ``ops`` (e.g. ``RunRecord.bank_history``)::

        h = TxnHistory(record.bank_history)
        t = h.invoke(TxnOp.txn(p, compares, puts, 0, None))   # times are the recorder's
        try:
            resp = client.txn(...)
        except CoordError:
            h.complete(t, "unknown")
        else:
            h.complete(t, "ok" if resp.succeeded else "compare_failed", resp.header.revision)

    An invocation never completed stays ``unknown``. A process should not invoke again after
    an unknown outcome (its request may still be in flight): give it a new id. Recorders
    share one lock, so several may append to one list.
    """

    _lock = threading.Lock()

    def __init__(
        self, ops: list[TxnOp] | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ops: list[TxnOp] = [] if ops is None else ops
        self._clock = clock

    def invoke(self, op: TxnOp) -> int:
        """Record ``op``'s call (its times and outcome are set here); returns its handle."""
        if op.kind not in _KINDS:
            raise ValueError(f"unknown kind {op.kind!r}")
        with self._lock:
            self.ops.append(replace(op, call=self._clock(), ret=None, outcome="unknown"))
            return len(self.ops) - 1

    def complete(
        self,
        handle: int,
        outcome: Outcome,
        revision: int | None = None,
        result: Iterable[tuple[str, str, int]] = (),
        keys: Iterable[str] | None = None,
    ) -> None:
        """``keys``: a read's keys, when known only from its answer (a prefix's)."""
        with self._lock:
            op = self.ops[handle]
            assert isinstance(op, TxnOp)
            if op.ret is not None:
                raise ValueError(f"operation {handle} already completed")
            self.ops[handle] = replace(
                op, ret=self._clock(), outcome=outcome, revision=revision, result=tuple(result),
                keys=op.keys if keys is None else tuple(keys),
            )  # fmt: skip


# -- preparing ------------------------------------------------------------------------------

_OK: Final = 0  # txn, compares held, applied at its revision
_FAILED: Final = 1  # txn, a compare failed
_READ: Final = 2
_UNKNOWN: Final = 3  # txn with puts, outcome unknown

_INF: Final = math.inf


class _Fresh:
    """A key's state after an unknown txn applied at a revision nobody observed: no read
    returns it and no compare expects it (they all name an observed revision, or 0)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<written at an unobserved revision>"


FRESH: Final = _Fresh()

# A key's state: None (absent), (value, mod revision), or FRESH.
_Entry = tuple[str, int] | _Fresh | None
_State = tuple[_Entry, ...]


@dataclass(slots=True)
class _P:
    index: int  # position in the input history
    op: TxnOp
    code: int
    call: float
    ret: float  # +inf for unknown
    rev: float  # revision; +inf when not reported (no constraint)


def _prepare(index: int, op: TxnOp) -> _P | None:
    if op.kind not in _KINDS:
        raise ValueError(f"op #{index}: unknown kind {op.kind!r}")
    if op.outcome not in _OUTCOMES:
        raise ValueError(f"op #{index}: unknown outcome {op.outcome!r}")
    if op.outcome == "refused":
        return None
    if op.kind == "read":
        if op.outcome == "unknown":
            return None
        if op.outcome != "ok":
            raise ValueError(f"op #{index}: a read is ok, unknown or refused")
        if op.compares or op.puts:
            raise ValueError(f"op #{index}: a read has no compares or puts")
        if not op.keys:
            return None
        for k, _v, m in op.result:
            if k not in op.keys:
                raise ValueError(f"op #{index}: result key {k!r} is not one of the keys read")
            if m <= 0:
                raise ValueError(f"op #{index}: key {k!r} read with mod revision {m}")
        if len({k for k, _, _ in op.result}) != len(op.result):
            raise ValueError(f"op #{index}: a key twice in the result")
        code = _READ
    else:
        if op.keys or op.result:
            raise ValueError(f"op #{index}: a txn has no keys read or result")
        if len({k for k, _ in op.puts}) != len(op.puts):
            raise ValueError(f"op #{index}: a key put twice")
        if any(m < 0 for _, m in op.compares):
            raise ValueError(f"op #{index}: a compare expects a negative revision")
        if op.outcome == "unknown":
            if not op.puts:
                return None  # no effect either way
            code = _UNKNOWN
        elif op.outcome == "ok":
            code = _OK
            if op.puts and op.revision is None:
                raise ValueError(f"op #{index}: an ok txn with puts needs its revision")
        else:
            code = _FAILED
            if not op.compares:
                raise ValueError(f"op #{index}: compare_failed without a compare")
    if code == _UNKNOWN:
        ret = _INF
    else:
        if op.ret is None:
            raise ValueError(f"op #{index}: a completed op needs a return time")
        if op.ret < op.call:
            raise ValueError(f"op #{index}: returns ({op.ret}) before its call ({op.call})")
        ret = op.ret
    rev = _INF if op.revision is None or code == _UNKNOWN else float(op.revision)
    return _P(index, op, code, op.call, ret, rev)


def _partitions(ps: list[_P]) -> list[tuple[list[str], list[_P]]]:
    """Connected components of the keys ops touch (union-find), in order of first
    appearance, each with its ops."""
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        parent.setdefault(k, k)
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for p in ps:
        ks = sorted(p.op.touched())
        for k in ks:
            find(k)
        for a, b in itertools.pairwise(ks):
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[rb] = ra
    groups: dict[str, tuple[list[str], list[_P]]] = {}
    for k in parent:
        groups.setdefault(find(k), ([], []))[0].append(k)
    for p in ps:
        touched = p.op.touched()
        if touched:
            groups[find(next(iter(touched)))][1].append(p)
    return [(sorted(keys), ops) for keys, ops in groups.values() if ops]


# -- the search -----------------------------------------------------------------------------


def _matches(e: _Entry, m: int) -> bool:
    """Whether a key in state ``e`` has mod revision ``m`` (0: absent)."""
    if m == 0:
        return e is None
    return isinstance(e, tuple) and e[1] == m


class _Exhausted(Exception):
    pass


_Choice = int | _Fresh | None  # completed op: None; unknown: a bound revision, or FRESH


@dataclass(slots=True)
class _Failure:
    blocking: int  # op whose return could not be passed (search index)
    path: list[tuple[int, _Choice]]  # a longest linearization found
    state: _State
    low: float  # L there


class _Search:
    """One partition's search (see the module docstring). Ops are indexed in call order."""

    def __init__(self, ps: list[_P], keys: list[str], deadline: float, max_states: int) -> None:
        ps.sort(key=lambda p: (p.call, p.ret))
        self.ps, self.keys = ps, keys
        self.deadline, self.max_states = deadline, max_states
        ki = {k: i for i, k in enumerate(keys)}
        n = len(ps)
        self.n = n
        self.call = [p.call for p in ps]
        self.ret = [p.ret for p in ps]
        self.code = [p.code for p in ps]
        self.rev = [p.rev for p in ps]
        self.cmp = [tuple((ki[k], m) for k, m in p.op.compares) for p in ps]
        self.cmpkeys = [frozenset(i for i, _ in c) for c in self.cmp]
        self.put = [tuple((ki[k], v) for k, v in p.op.puts) for p in ps]
        self.putkeys = [frozenset(i for i, _ in u) for u in self.put]
        self.read: list[tuple[tuple[int, _Entry], ...]] = []
        for p in ps:
            got = {k: (v, m) for k, v, m in p.op.result}
            self.read.append(tuple((ki[k], got.get(k)) for k in p.op.keys))
        # Every txn compares exactly the keys it puts (the bank's do): then a FRESH key can
        # never be overwritten, and FRESH is tried only before a failed compare it explains.
        self.exact = all(
            self.cmpkeys[j] == self.putkeys[j] for j in range(n) if self.code[j] != _READ
        )
        self.choices = self._choices()
        done = [j for j in range(n) if ps[j].code != _UNKNOWN]
        self.unknown = [j for j in range(n) if ps[j].code == _UNKNOWN]
        by_ret = sorted(done, key=lambda j: (self.ret[j], self.call[j]))
        self.rank = {j: r for r, j in enumerate(by_ret)}
        self.remaining = self.completed = len(done)
        self.H, self.T = n, n + 1
        self.cnext, self.cprev = [0] * (n + 2), [0] * (n + 2)
        self.rnext, self.rprev = [0] * (n + 2), [0] * (n + 2)
        for nxt, prv, order in ((self.cnext, self.cprev, done), (self.rnext, self.rprev, by_ret)):
            for x, y in itertools.pairwise([n, *order, n + 1]):
                nxt[x], prv[y] = y, x
        self.lin = 0
        self.state: _State = (None,) * len(keys)
        self.low: float = 0.0
        self.seen: set[tuple[int, _State, float]] = set()
        self.best: _Failure | None = None
        self.best_rank = -1
        self.steps = 0

    def _choices(self) -> list[list[int]]:
        """Per unknown txn, the observed revisions it may have been applied at (see the
        module docstring): observed, reported by no ok txn, and agreeing with its puts."""
        produced = {int(self.rev[j]) for j in range(self.n) if self.code[j] == _OK}
        seen_values: dict[int, set[tuple[int, str]]] = {}
        seen_keys: dict[int, set[int]] = {}
        for j in range(self.n):
            for i, e in self.read[j]:
                if isinstance(e, tuple):
                    seen_values.setdefault(e[1], set()).add((i, e[0]))
            for i, m in self.cmp[j]:
                if m > 0:
                    seen_keys.setdefault(m, set()).add(i)
        observed = sorted((set(seen_values) | set(seen_keys)) - produced)
        out: list[list[int]] = [[] for _ in range(self.n)]
        for j in range(self.n):
            if self.code[j] != _UNKNOWN:
                continue
            puts = set(self.put[j])
            for m in observed:
                if seen_values.get(m, set()) <= puts and seen_keys.get(m, set()) <= self.putkeys[j]:
                    out[j].append(m)
        return out

    # -- steps

    def holds(self, j: int, s: _State) -> bool:
        return all(_matches(s[i], m) for i, m in self.cmp[j])

    def step(self, j: int, choice: _Choice, s: _State, low: float) -> tuple[_State, float] | None:
        """The state and L after op j (with ``choice``), or None if it cannot take effect."""
        code = self.code[j]
        if code == _READ:
            r = self.rev[j]
            if r < low or any(s[i] != e for i, e in self.read[j]):
                return None
            return s, (low if r == _INF else r)
        if code == _FAILED:
            r = self.rev[j]
            if r < low or self.holds(j, s):
                return None
            return s, (low if r == _INF else r)
        if not self.holds(j, s):
            return None
        if code == _OK:
            r = self.rev[j]
            if not self.put[j]:  # compares only: it changed nothing, like a read
                return None if r < low else (s, low if r == _INF else r)
            if r <= low:
                return None
            new = list(s)
            for i, v in self.put[j]:
                new[i] = (v, int(r))
            return tuple(new), r
        new = list(s)
        if isinstance(choice, int):
            if choice <= low:
                return None
            for i, v in self.put[j]:
                new[i] = (v, choice)
            return tuple(new), float(choice)
        for i, _ in self.put[j]:
            new[i] = FRESH
        return tuple(new), low

    def candidates(self) -> tuple[list[tuple[int, _Choice]], int]:
        first = self.rnext[self.H]
        due = self.ret[first]
        call, code = self.call, self.code
        cands: list[tuple[int, _Choice]] = []
        top = -_INF  # the highest revision of a candidate completed op
        negative: set[int] = set()  # keys compared by candidate compare_failed txns
        j = self.cnext[self.H]
        while j != self.T and call[j] <= due:
            cands.append((j, None))
            top = max(top, self.rev[j])
            if code[j] == _FAILED:
                negative |= self.cmpkeys[j]
            j = self.cnext[j]
        for u in self.unknown:
            if call[u] > due:
                break
            if (self.lin >> u) & 1 or not self.holds(u, self.state):
                continue
            cands += [(u, m) for m in self.choices[u] if self.low < m <= top]
            if not self.exact or self.putkeys[u] & negative:
                cands.append((u, FRESH))
        return cands, first

    def lift(self, j: int) -> None:
        if self.code[j] != _UNKNOWN:
            cn, cp, rn, rp = self.cnext, self.cprev, self.rnext, self.rprev
            cn[cp[j]], cp[cn[j]] = cn[j], cp[j]
            rn[rp[j]], rp[rn[j]] = rn[j], rp[j]

    def unlift(self, j: int) -> None:
        if self.code[j] != _UNKNOWN:
            cn, cp, rn, rp = self.cnext, self.cprev, self.rnext, self.rprev
            cn[cp[j]] = cp[cn[j]] = j
            rn[rp[j]] = rp[rn[j]] = j

    def run(self) -> _Failure | None:
        """None if linearizable. Raises _Exhausted past the effort bound."""
        if self.remaining == 0:
            return None
        # Frames: (candidates, next candidate, blocking op, (op, choice), state, L before it).
        stack: list[tuple[list[tuple[int, _Choice]], int, int, tuple[int, _Choice], _State, float]]
        stack = []
        cands, blocking = self.candidates()
        i = 0
        while True:
            self.steps += 1
            if self.steps & 1023 == 0 and (
                time.monotonic() > self.deadline or len(self.seen) > self.max_states
            ):
                raise _Exhausted
            while i < len(cands):
                j, choice = cands[i]
                i += 1
                after = self.step(j, choice, self.state, self.low)
                if after is None:
                    continue
                lin2 = self.lin | (1 << j)
                key = (lin2, after[0], after[1])
                if key in self.seen:
                    continue
                self.seen.add(key)
                stack.append((cands, i, blocking, (j, choice), self.state, self.low))
                self.lift(j)
                self.lin = lin2
                self.state, self.low = after
                if self.code[j] != _UNKNOWN:
                    self.remaining -= 1
                    if self.remaining == 0:
                        return None
                cands, blocking = self.candidates()
                i = 0
                break
            else:
                if self.rank[blocking] > self.best_rank:
                    self.best_rank = self.rank[blocking]
                    self.best = _Failure(blocking, [f[3] for f in stack], self.state, self.low)
                if not stack:
                    break
                cands, i, blocking, (j, _), self.state, self.low = stack.pop()
                self.unlift(j)
                self.lin ^= 1 << j
                if self.code[j] != _UNKNOWN:
                    self.remaining += 1
        assert self.best is not None
        return self.best


def check(history: Iterable[TxnOp], timeout_s: float = 30.0, max_states: int = 500_000) -> Result:
    """Check that ``history`` is linearizable (all keys absent before it), partition by
    partition. Returns at the first partition found not linearizable, or with
    ``unknown=True`` when ``timeout_s`` or ``max_states`` (configurations memoized in one
    partition) runs out. Raises ValueError for malformed ops."""
    start = time.monotonic()
    deadline = start + timeout_s
    ops = list(history)
    ps = [p for i, op in enumerate(ops) if (p := _prepare(i, op)) is not None]
    parts = _partitions(ps)
    t0 = min((op.call for op in ops), default=0.0)
    checked = sum(len(p) for _, p in parts)
    for done, (keys, pops) in enumerate(parts):
        search = _Search(pops, keys, deadline, max_states)
        try:
            failure = search.run()
        except _Exhausted:
            elapsed = time.monotonic() - start
            why = (
                f"{len(search.seen)} configurations"
                if len(search.seen) > max_states
                else f"{elapsed:.2f} s"
            )
            furthest = ""
            if search.best is not None:
                furthest = (
                    f"; the furthest dead end so far is the return of op "
                    f"#{search.ps[search.best.blocking].index} (completed op "
                    f"{search.best_rank + 1} of {search.completed} in return order)"
                )
            return Result(
                ok=False, unknown=True, keys=tuple(keys), elapsed_s=elapsed, ops=checked,
                partitions=len(parts),
                explanation=(
                    f"inconclusive: the search bound ran out after {why} checking keys "
                    f"{_keys(keys)} ({len(pops)} ops); {done} of {len(parts)} partitions were "
                    f"found linearizable before it{furthest}"
                ),
            )  # fmt: skip
        if failure is not None:
            return Result(
                ok=False, keys=tuple(keys), elapsed_s=time.monotonic() - start, ops=checked,
                partitions=len(parts), explanation=_explain(search, failure, t0),
            )  # fmt: skip
    return Result(
        ok=True, elapsed_s=time.monotonic() - start, ops=checked, partitions=len(parts),
        explanation=(
            f"linearizable: {checked} ops in {len(parts)} partitions ({len(ops)} recorded)"
        ),
    )  # fmt: skip


# -- explanations ---------------------------------------------------------------------------


def _keys(keys: Sequence[str]) -> str:
    return ", ".join(keys) if len(keys) <= 6 else f"{', '.join(keys[:6])} ... ({len(keys)})"


def _entry(e: _Entry) -> str:
    if e is None:
        return "absent"
    if isinstance(e, _Fresh):
        return "?@unobserved"
    return f"{e[0]}@{e[1]}"


def _short(k: str) -> str:
    return k.rsplit("/", 1)[-1]


def describe(op: TxnOp, t0: float = 0.0, index: int | None = None) -> str:
    """One op, for people: ``#12 p1 txn [a0@105 a3=absent] put a0=80 a3=118 -> ok at
    r130 [+1.234567, +1.245678]``."""
    at = "" if op.revision is None else f" at r{op.revision}"
    if op.kind == "read":
        got = {k: (v, m) for k, v, m in op.result}
        seen = " ".join(f"{_short(k)}={_entry(got.get(k))}" for k in op.keys)
        what = f"read {seen}{at}"
    else:
        cmps = " ".join(f"{_short(k)}@{m}" if m else f"{_short(k)}=absent" for k, m in op.compares)
        puts = " ".join(f"{_short(k)}={v}" for k, v in op.puts)
        what = f"txn [{cmps}] put {puts} -> {op.outcome}"
        what += at if op.outcome in ("ok", "compare_failed") else ""
    when = f"[{op.call - t0:+.6f}, "
    when += "?]" if op.outcome == "unknown" or op.ret is None else f"{op.ret - t0:+.6f}]"
    return f"{'' if index is None else f'#{index} '}p{op.process} {what} {when}"


_SHOWN: Final = 12


def _state(keys: Sequence[str], s: _State, low: float) -> str:
    shown = ", ".join(f"{_short(k)}={_entry(e)}" for k, e in zip(keys, s, strict=True))
    return f"{shown} (revision >= {low:g})"


def _why(search: _Search, j: int, s: _State, low: float) -> str:
    """Why op j cannot take effect from (s, L)."""
    keys, code, rev = search.keys, search.code[j], search.rev[j]
    if search.step(j, None, s, low) is not None:
        return "it can take effect there, but every way on from there was a dead end"
    if code == _READ:
        diff = [
            f"{_short(keys[i])}: read {_entry(e)}, the state has {_entry(s[i])}"
            for i, e in search.read[j]
            if s[i] != e
        ]
        if diff:
            return "it read a state that is not the current one: " + "; ".join(diff)
        return f"its revision {rev:g} is below {low:g}, the revision the state already has"
    if code == _FAILED:
        if rev < low:
            return f"its revision {rev:g} is below {low:g}, the revision the state already has"
        return "it says a compare failed, but every compare holds in the state"
    if not search.holds(j, s):
        bad = [
            f"{_short(keys[i])} expected {'absent' if m == 0 else f'at r{m}'}, is {_entry(s[i])}"
            for i, m in search.cmp[j]
            if not _matches(s[i], m)
        ]
        return "its compare does not hold: " + "; ".join(bad)
    return f"its revision {rev:g} is not above {low:g}, the revision the state already has"


def _explain(search: _Search, f: _Failure, t0: float) -> str:
    ps, keys = search.ps, search.keys
    b = ps[f.blocking]
    n_unknown = len(search.unknown)
    prefix = sum(p.call <= b.ret for p in ps)
    lines = [
        f"keys {_keys(keys)} are not linearizable ({len(ps)} ops checked, {n_unknown} of "
        "unknown outcome; every key absent before them).",
        f"The shortest non-linearizable prefix ({prefix} ops invoked) ends when this op returned:",
        f"  {describe(b.op, t0, b.index)}",
        "No order of the ops consistent with real time lets it take effect; after a longest "
        f"linearization found, {_why(search, f.blocking, f.state, f.low)}.",
        f"That linearization ({len(f.path)} ops"
        + (f", last {_SHOWN} shown" if len(f.path) > _SHOWN else "")
        + "):",
    ]
    for j, choice in f.path[-_SHOWN:]:
        note = ""
        if isinstance(choice, int):
            note = f"  (taken as applied at r{choice})"
        elif isinstance(choice, _Fresh):
            note = "  (taken as applied, at a revision nobody observed)"
        lines.append(f"  {describe(ps[j].op, t0, ps[j].index)}{note}")
    lines.append(f"  => {_state(keys, f.state, f.low)}")
    in_path = {j for j, _ in f.path}
    concurrent = [
        p
        for j, p in enumerate(ps)
        if j != f.blocking and j not in in_path and p.call <= b.ret and p.ret >= b.call
    ]
    if concurrent:
        lines.append("Ops concurrent with it and not in that linearization:")
        lines += [f"  {describe(p.op, t0, p.index)}" for p in concurrent[:_SHOWN]]
        if len(concurrent) > _SHOWN:
            lines.append(f"  ... and {len(concurrent) - _SHOWN} more")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Check a saved multi-key history (JSON lines).")
    p.add_argument("history")
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args(argv)
    ops = load_jsonl(args.history)
    res = check(ops, timeout_s=args.timeout)
    print(res.explanation)
    print(f"({res.ops} ops checked in {res.elapsed_s:.3f} s)")
    return 0 if res.ok else (2 if res.unknown else 1)


if __name__ == "__main__":
    sys.exit(main())
