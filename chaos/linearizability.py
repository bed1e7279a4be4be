"""A linearizability checker for key-value histories recorded by chaos tests.

The store is modelled as independent registers, one per key, each holding a value
(``bytes``, or ``None`` when the key is absent). Revisions are deliberately not part of the
model: a chaos workload that does compare-and-set by ``expected_mod_revision`` records it here
as "CAS from the value it read at that revision". That translation is exact only when every
written value is unique (e.g. ``b"p3-17"``), so workloads should never write a value twice.

Operations (:class:`Op`):

* ``write(value)`` -- a put; always succeeds when it takes effect (its result, e.g. the new
  revision, is not checked);
* ``read() -> value`` -- a get; ``None`` means the key was absent;
* ``cas(expected, value) -> bool`` -- a put guarded by the current value (``expected=None``:
  the key must be absent). ``True``: it matched and wrote ``value``; ``False``: the
  precondition failed, which is itself an observation (the value was not ``expected``);
* ``delete() -> existed`` -- the result is ``None`` (not checked) or ``bool``/``int`` (the
  ``deleted`` count: whether the key existed).

Statuses: ``"ok"`` completed with ``result``; ``"fail"`` definitely not applied (rejected
before being applied) -- dropped; ``"info"`` outcome unknown (timeout, lost connection): the
operation may take effect at any time after its call, or never. As in Knossos, its return
time is taken as +infinity and its result is unknown. ``info`` reads constrain nothing and
are dropped.

The check (:func:`check`) is Wing & Gong's linearizability search with Lowe's improvements,
as in porcupine: the history is split per key (registers are independent, so the history is
linearizable iff each key's sub-history is -- P-compositionality), and each key is searched
depth first over configurations (ops linearized, as a bitmask; register value), trying at
each configuration only the ops that may take effect next (those invoked before the earliest
return of a completed op not yet linearized), and memoizing configurations so that none is
explored twice. When it fails, the explanation names the op whose return ends the shortest
prefix of the key's history that has no linearization, and shows a longest linearization
found up to it.

Ops with unknown outcome make that search exponential if treated naively (each may or may
not have happened, at any point after its call). The search therefore:

* succeeds as soon as every completed op is linearized (info ops are optional), and tries
  info ops only after the completed candidates;
* linearizes an info op only "just in time": right before an op whose step it changes (a
  read of the value it writes, a cas expecting it, a failed cas or delete it makes
  possible, or an info cas it enables, and so on). Any linearization can be rewritten into
  that form by dropping the info ops that make no difference to the next op;
* tries only one of several interchangeable info ops (same effect), the earliest called;
* merges register values that no op left to linearize compares with (they cannot be told
  apart any more), and skips a configuration when one with the same completed ops, the same
  value and a subset of its info ops (so at least its options) was explored already.

With these, histories of the usual chaos workloads (a few processes over several keys,
a few percent of info ops) check in milliseconds per thousand ops. A single very hot key
with many concurrent clients and many info ops can still take long to *refute* (every
alternative has to be ruled out): then the result is ``unknown`` once ``timeout_s`` is spent.

:class:`History` records a history from several threads.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final, Literal

__all__ = ["History", "Kind", "Op", "Result", "Status", "Value", "check"]

Value = bytes | None
Kind = Literal["read", "write", "cas", "delete"]
Status = Literal["ok", "fail", "info"]

_KINDS: Final = frozenset({"read", "write", "cas", "delete"})
_STATUSES: Final = frozenset({"ok", "fail", "info"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Op:
    """One operation of a history.

    ``value`` is the value written (``write``) or the new value (``cas``); ``expected`` is a
    ``cas``'s expected value. ``call``/``ret`` are ``time.monotonic()`` readings taken before
    the request was sent and after its answer arrived; ``ret`` is ignored for ``info`` ops.
    """

    process: int
    kind: Kind
    key: str
    call: float
    ret: float | None = None
    result: object = None
    status: Status = "ok"
    value: Value = None
    expected: Value = None

    @classmethod
    def write(
        cls,
        process: int,
        key: str,
        value: bytes,
        call: float,
        ret: float | None,
        status: Status = "ok",
        result: object = None,
    ) -> Op:
        return cls(
            process=process,
            kind="write",
            key=key,
            value=value,
            call=call,
            ret=ret,
            status=status,
            result=result,
        )

    @classmethod
    def read(
        cls,
        process: int,
        key: str,
        result: Value,
        call: float,
        ret: float | None,
        status: Status = "ok",
    ) -> Op:
        return cls(
            process=process, kind="read", key=key, result=result, call=call, ret=ret, status=status
        )

    @classmethod
    def cas(
        cls,
        process: int,
        key: str,
        expected: Value,
        new: bytes,
        ok: bool | None,
        call: float,
        ret: float | None,
        status: Status = "ok",
    ) -> Op:
        return cls(
            process=process,
            kind="cas",
            key=key,
            expected=expected,
            value=new,
            result=ok,
            call=call,
            ret=ret,
            status=status,
        )

    @classmethod
    def delete(
        cls,
        process: int,
        key: str,
        call: float,
        ret: float | None,
        status: Status = "ok",
        existed: bool | int | None = None,
    ) -> Op:
        return cls(
            process=process,
            kind="delete",
            key=key,
            result=existed,
            call=call,
            ret=ret,
            status=status,
        )


@dataclass(frozen=True, slots=True)
class Result:
    """``ok``: every key's history is linearizable. ``unknown``: the check timed out (then
    ``ok`` is False and ``key`` is the key being checked). ``key``: the first key found not
    linearizable. ``explanation``: human-readable details."""

    ok: bool
    key: str | None = None
    explanation: str = ""
    unknown: bool = False
    elapsed_s: float = 0.0


# -- recording -----------------------------------------------------------------------------


class History:
    """A thread-safe history recorder.

    ::

        h = History()
        t = h.invoke(process, "cas", "k", expected=b"a", value=b"b")
        try:
            ok = do_cas(...)
        except Timeout:
            h.info(t)
        else:
            h.ok(t, ok)

    Invocations never completed show up as ``info`` in :meth:`ops`. A process should not
    invoke again after an ``info`` (its request may still be in flight): give it a new id.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ops: list[Op] = []
        self._done: list[bool] = []

    def invoke(
        self,
        process: int,
        kind: Kind,
        key: str,
        *,
        value: Value = None,
        expected: Value = None,
    ) -> int:
        """Record a call; returns the handle to complete it with."""
        if kind not in _KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        with self._lock:
            op = Op(
                process=process,
                kind=kind,
                key=key,
                value=value,
                expected=expected,
                call=self._clock(),
                status="info",
            )
            self._ops.append(op)
            self._done.append(False)
            return len(self._ops) - 1

    def ok(self, handle: int, result: object = None) -> None:
        self._complete(handle, "ok", result)

    def fail(self, handle: int) -> None:
        self._complete(handle, "fail", None)

    def info(self, handle: int) -> None:
        self._complete(handle, "info", None)

    def _complete(self, handle: int, status: Status, result: object) -> None:
        with self._lock:
            if self._done[handle]:
                raise ValueError(f"operation {handle} already completed")
            self._done[handle] = True
            self._ops[handle] = replace(
                self._ops[handle], ret=self._clock(), status=status, result=result
            )

    def ops(self) -> list[Op]:
        """A snapshot of the history (pending invocations have status ``info``)."""
        with self._lock:
            return list(self._ops)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)


# -- checking ------------------------------------------------------------------------------

# Step codes.
_READ: Final = 0
_WRITE: Final = 1
_CAS_OK: Final = 2  # ok, result True
_CAS_FAILED: Final = 3  # ok, result False: the value was not `expected`
_CAS_UNKNOWN: Final = 4  # info
_DELETE: Final = 5  # result not checked / info
_DELETE_EXISTED: Final = 6
_DELETE_ABSENT: Final = 7

_INF: Final = math.inf


@dataclass(slots=True)
class _KOp:
    index: int  # position in the input history
    op: Op
    code: int
    a: Value  # read result / written value / cas expected
    b: Value  # cas new value
    call: float
    ret: float  # +inf for info
    info: bool


def _prepare(index: int, op: Op) -> _KOp | None:
    """Validate ``op``; None when it constrains nothing (failed, or an unknown read)."""
    if op.kind not in _KINDS:
        raise ValueError(f"op #{index}: unknown kind {op.kind!r}")
    if op.status not in _STATUSES:
        raise ValueError(f"op #{index}: unknown status {op.status!r}")
    if op.status == "fail" or (op.status == "info" and op.kind == "read"):
        return None
    info = op.status == "info"
    if info:
        ret = _INF
    else:
        if op.ret is None:
            raise ValueError(f"op #{index}: an ok op needs a return time")
        if op.ret < op.call:
            raise ValueError(f"op #{index}: returns ({op.ret}) before its call ({op.call})")
        ret = op.ret
    a: Value = None
    b: Value = None
    if op.kind == "read":
        if not (op.result is None or isinstance(op.result, bytes)):
            raise ValueError(f"op #{index}: a read's result must be bytes or None")
        code, a = _READ, op.result
    elif op.kind == "write":
        if not isinstance(op.value, bytes):
            raise ValueError(f"op #{index}: a write needs a bytes value (use delete)")
        code, a = _WRITE, op.value
    elif op.kind == "cas":
        if not isinstance(op.value, bytes):
            raise ValueError(f"op #{index}: a cas needs a bytes new value")
        if not (op.expected is None or isinstance(op.expected, bytes)):
            raise ValueError(f"op #{index}: a cas's expected value must be bytes or None")
        a, b = op.expected, op.value
        if info:
            code = _CAS_UNKNOWN
        elif isinstance(op.result, bool):
            code = _CAS_OK if op.result else _CAS_FAILED
        else:
            raise ValueError(f"op #{index}: an ok cas's result must be a bool")
    elif info or op.result is None:
        code = _DELETE
    elif isinstance(op.result, int):  # bool or the deleted count
        code = _DELETE_EXISTED if op.result else _DELETE_ABSENT
    else:
        raise ValueError(f"op #{index}: a delete's result must be None, bool or int")
    return _KOp(index, op, code, a, b, op.call, ret, info)


class _Unread:
    """The register state for every value that no op left to linearize compares with (no
    read returns it, no cas expects it): such values are indistinguishable from then on, so
    the search merges them."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<a value no remaining op reads>"


_UNREAD: Final = _Unread()

# A register state: a Value, or _UNREAD.
_State = object


def _step(code: int, a: _State, b: _State, s: _State) -> tuple[bool, _State]:
    if code == _READ:
        return s == a, s
    if code == _WRITE:
        return True, a
    if code == _CAS_OK:
        return s == a, b
    if code == _CAS_FAILED:
        return s != a, s
    if code == _CAS_UNKNOWN:
        return True, (b if s == a else s)
    if code == _DELETE:
        return True, None
    if code == _DELETE_EXISTED:
        return s is not None, None
    return s is None, None  # _DELETE_ABSENT


class _Timeout(Exception):
    pass


@dataclass(slots=True)
class _Failure:
    """Where the search of one key got furthest before failing."""

    blocking: int  # call-order index of the op whose return could not be passed
    path: list[int]  # a longest linearization found (call-order indices)
    tried: set[_State] = field(default_factory=set)  # values `blocking` was tried against


_MAX_TRIED: Final = 8


_SKIP: Final = object()  # _Search.child: not worth entering


class _Search:
    """The search of one key's history (see the module docstring).

    Ops are indexed in call order. A configuration is the set of ops linearized (``lin``, a
    bitmask) and the register state ``s``; memoized are those reached by linearizing a
    completed op: (completed ops linearized, state) -> the sets of info ops linearized with
    them.
    """

    def __init__(self, ops: list[_KOp], init: Value) -> None:
        ops.sort(key=lambda o: (o.call, o.ret))
        n = len(ops)
        self.call = [o.call for o in ops]
        self.ret = [o.ret for o in ops]
        self.info = info = [o.info for o in ops]
        self.code = code = [o.code for o in ops]
        self.a_arg = a_arg = [o.a for o in ops]
        self.b_arg = [o.b for o in ops]
        done_order = [j for j in range(n) if not info[j]]
        self.info_order = [j for j in range(n) if info[j]]
        by_ret = sorted(done_order, key=lambda j: (self.ret[j], self.call[j]))
        self.remaining = self.completed = len(by_ret)
        self.rank = {j: r for r, j in enumerate(by_ret)}
        self.info_mask = sum(1 << j for j in self.info_order)
        # Info ops by the value they may write, and the info deletes.
        self.writers: dict[_State, list[int]] = {}
        self.deleters: list[int] = []
        for j in self.info_order:
            if code[j] == _DELETE:
                self.deleters.append(j)
            else:
                v = a_arg[j] if code[j] == _WRITE else self.b_arg[j]
                self.writers.setdefault(v, []).append(j)
        # Register values that no op left to linearize compares the register with are
        # indistinguishable from then on: states holding them are canonicalized to _UNREAD.
        # `watchers` counts, per value, the completed ops not yet linearized that compare
        # with it, plus (for good) every info cas expecting it.
        self.watches = [c in (_READ, _CAS_OK, _CAS_FAILED) for c in code]
        self.watchers: dict[_State, int] = {}
        for j in range(n):
            if self.watches[j] or code[j] == _CAS_UNKNOWN:
                self.watchers[a_arg[j]] = self.watchers.get(a_arg[j], 0) + 1
        # Doubly linked lists (dancing links) of the completed ops not yet linearized, in
        # call order and in return order. Sentinels: head H, tail T.
        self.H, self.T = n, n + 1
        self.cnext, self.cprev = [0] * (n + 2), [0] * (n + 2)
        self.rnext, self.rprev = [0] * (n + 2), [0] * (n + 2)
        for nxt, prv, order in (
            (self.cnext, self.cprev, done_order),
            (self.rnext, self.rprev, by_ret),
        ):
            for x, y in itertools.pairwise([n, *order, n + 1]):
                nxt[x], prv[y] = y, x
        self.lin = 0
        self.s = self.canon(init)
        self.seen: dict[tuple[int, _State], list[int]] = {(0, self.s): [0]}
        # Whether the current configuration was reached by linearizing an info op, and the
        # state before that op: then only ops whose step it changes may follow.
        self.after_info = False
        self.before: _State = None
        self.tried: dict[int, set[_State]] = {}
        # The furthest any configuration got: the rank (in return order) of its blocking op.
        self.best: _Failure | None = None
        self.best_rank = -1

    def canon(self, v: _State) -> _State:
        return v if v is None or self.watchers.get(v, 0) > 0 else _UNREAD

    def lift(self, j: int) -> None:
        if not self.info[j]:
            cnext, cprev, rnext, rprev = self.cnext, self.cprev, self.rnext, self.rprev
            cnext[cprev[j]], cprev[cnext[j]] = cnext[j], cprev[j]
            rnext[rprev[j]], rprev[rnext[j]] = rnext[j], rprev[j]
            if self.watches[j]:
                self.watchers[self.a_arg[j]] -= 1

    def unlift(self, j: int) -> None:
        if not self.info[j]:
            cnext, cprev, rnext, rprev = self.cnext, self.cprev, self.rnext, self.rprev
            cnext[cprev[j]] = cprev[cnext[j]] = j
            rnext[rprev[j]] = rprev[rnext[j]] = j
            if self.watches[j]:
                self.watchers[self.a_arg[j]] += 1

    def candidates(self) -> tuple[list[int], int]:
        """The ops worth trying next from the current configuration, and the blocking op:
        the completed op not yet linearized that returns first. All ops invoked before it
        returns may take effect next: the completed ones are tried first, then the info
        ops whose effect one of those could observe, one per distinct effect (the others
        are interchangeable with it)."""
        s, code, a_arg, call = self.s, self.code, self.a_arg, self.call
        first = self.rnext[self.H]
        due = self.ret[first]
        cands: list[int] = []
        equal: set[_State] = set()  # values some candidate compares equal
        negative = False  # some candidate needs the register not to hold s
        absent = False  # some delete needs the key absent
        j = self.cnext[self.H]
        while j != self.T and call[j] <= due:
            cands.append(j)
            c = code[j]
            if c in (_READ, _CAS_OK):
                equal.add(a_arg[j])
            elif c == _CAS_FAILED:
                negative = negative or a_arg[j] == s
            elif c == _DELETE_EXISTED:
                negative = negative or s is None
            elif c == _DELETE_ABSENT:
                absent = True
            j = self.cnext[j]
        if self.info_order and call[self.info_order[0]] <= due:
            cands += self.info_candidates(due, equal, negative, absent)
        return cands, first

    def info_candidates(
        self, due: float, equal: set[_State], negative: bool, absent: bool
    ) -> list[int]:
        s, lin, code, a_arg, call = self.s, self.lin, self.code, self.a_arg, self.call
        if negative:  # then any info op that changes the state is worth trying
            pool: Iterable[int] = self.info_order
        else:
            # The info ops writing a value some candidate compares with, or a value some
            # such info cas expects, and so on.
            found: set[int] = set()
            wanted: list[_State] = [*equal, None] if absent else list(equal)
            while wanted:
                v = wanted.pop()
                for j in self.deleters if v is None else self.writers.get(v, ()):
                    if j in found or call[j] > due or (lin >> j) & 1:
                        continue
                    found.add(j)
                    if code[j] == _CAS_UNKNOWN and a_arg[j] not in equal:
                        equal.add(a_arg[j])
                        wanted.append(a_arg[j])
            pool = sorted(found)
        cands: list[int] = []
        effects: set[tuple[int, _State, _State]] = set()
        for j in pool:
            if call[j] > due:
                break
            if (lin >> j) & 1:
                continue
            c, b = code[j], self.b_arg[j]
            s2 = self.canon(_step(c, a_arg[j], b, s)[1])
            if s2 == s or not (negative or s2 in equal or (absent and s2 is None)):
                continue  # a no-op, or no candidate would see the difference
            e = (c, self.canon(a_arg[j]) if c == _WRITE else a_arg[j], self.canon(b))
            if e not in effects:
                effects.add(e)
                cands.append(j)
        return cands

    def child(self, j: int) -> _State:
        """Linearize op j from the current configuration if that is worth exploring: lifts
        it and returns the new (canonical) state; otherwise returns _SKIP."""
        c, a, b, s = self.code[j], self.a_arg[j], self.b_arg[j], self.s
        ok, s2 = _step(c, a, b, s)
        if not ok:
            t = self.tried.setdefault(j, set())
            if len(t) < _MAX_TRIED:
                t.add(s)
            return _SKIP
        self.lift(j)
        s2 = self.canon(s2)
        if self.after_info:
            ok0, s0 = _step(c, a, b, self.before)
            if ok0 and self.canon(s0) == s2:
                self.unlift(j)
                return _SKIP  # the info op just linearized made no difference to this one
        if not self.info[j]:
            lin2 = self.lin | (1 << j)
            k = (lin2 & ~self.info_mask, s2)
            used = lin2 & self.info_mask
            variants = self.seen.get(k)
            if variants is None:
                self.seen[k] = [used]
            elif any(m & ~used == 0 for m in variants):
                # Seen with a subset of these info ops (so with at least these options), and
                # fully explored: it cannot be an ancestor, which has fewer completed ops.
                self.unlift(j)
                return _SKIP
            else:
                variants.append(used)
        return s2

    def run(self, deadline: float) -> _Failure | None:
        """None if linearizable. Raises _Timeout."""
        if self.remaining == 0:
            return None
        info = self.info
        # Frames: (candidates, next candidate, blocking op, op linearized, state before it).
        stack: list[tuple[list[int], int, int, int, _State]] = []
        cands, blocking = self.candidates()
        i = 0
        steps = 0
        while True:
            steps += 1
            if steps & 1023 == 0 and time.monotonic() > deadline:
                raise _Timeout
            while i < len(cands):
                j = cands[i]
                i += 1
                s2 = self.child(j)
                if s2 is _SKIP:
                    continue
                stack.append((cands, i, blocking, j, self.s))
                self.after_info, self.before = info[j], self.s
                self.lin |= 1 << j
                self.s = s2
                if not info[j]:
                    self.remaining -= 1
                    if self.remaining == 0:
                        return None
                cands, blocking = self.candidates()
                i = 0
                break
            else:
                # Every way on from this configuration failed.
                if self.rank[blocking] > self.best_rank:
                    self.best_rank = self.rank[blocking]
                    self.best = _Failure(blocking, [f[3] for f in stack])
                if not stack:
                    break
                cands, i, blocking, j, self.s = stack.pop()
                self.unlift(j)
                self.lin ^= 1 << j
                if not info[j]:
                    self.remaining += 1
                self.after_info = bool(stack) and info[stack[-1][3]]
                if self.after_info:
                    self.before = stack[-1][4]
        best = self.best
        assert best is not None
        best.tried = self.tried.get(best.blocking, set())
        return best


def check(
    history: Iterable[Op],
    init: Mapping[str, Value] | None = None,
    timeout_s: float = 30,
) -> Result:
    """Check that ``history`` is linearizable, key by key (in order of first appearance).

    ``init``: the values before the history (absent keys: ``None``). Returns at the first
    key found not linearizable, or with ``unknown=True`` when ``timeout_s`` runs out.
    Raises ValueError for malformed ops.
    """
    start = time.monotonic()
    deadline = start + timeout_s
    ops = list(history)
    per_key: dict[str, list[_KOp]] = {}
    for index, op in enumerate(ops):
        kop = _prepare(index, op)
        if kop is not None:
            per_key.setdefault(op.key, []).append(kop)
    t0 = min((op.call for op in ops), default=0.0)
    init = init or {}
    for checked, (key, kops) in enumerate(per_key.items()):
        search = _Search(kops, init.get(key))
        try:
            if time.monotonic() >= deadline:
                raise _Timeout
            failure = search.run(deadline)
        except _Timeout:
            elapsed = time.monotonic() - start
            return Result(
                ok=False,
                key=key,
                unknown=True,
                explanation=(
                    f"timed out after {elapsed:.2f}s checking key {key!r} ({len(kops)} ops); "
                    f"{checked} of {len(per_key)} keys were found linearizable before it"
                    + (
                        ""
                        if search.best is None
                        else f"; the furthest dead end so far is the return of op "
                        f"#{kops[search.best.blocking].index} (completed op "
                        f"{search.best_rank + 1} of {search.completed} in return order)"
                    )
                ),
                elapsed_s=elapsed,
            )
        if failure is not None:
            return Result(
                ok=False,
                key=key,
                explanation=_explain(key, kops, init.get(key), failure, t0),
                elapsed_s=time.monotonic() - start,
            )
    return Result(
        ok=True,
        explanation=(
            f"linearizable: {sum(map(len, per_key.values()))} ops over {len(per_key)} keys "
            f"({len(ops)} recorded)"
        ),
        elapsed_s=time.monotonic() - start,
    )


# -- explanations ---------------------------------------------------------------------------


def _v(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(o: _KOp, t0: float) -> str:
    op = o.op
    if op.kind == "read":
        what = f"read() -> {_v(op.result)}"
    elif op.kind == "write":
        what = f"write({_v(op.value)})"
    elif op.kind == "cas":
        what = f"cas({_v(op.expected)} -> {_v(op.value)})"
        if not o.info:
            what += f" -> {'ok' if op.result else 'precondition failed'}"
    else:
        what = "delete()" + ("" if o.code == _DELETE else f" -> existed={bool(op.result)}")
    when = f"[{op.call - t0:+.6f}, "
    when += "?, unknown outcome]" if o.info else f"{o.ret - t0:+.6f}]"
    return f"#{o.index} p{op.process} {what} {when}"


_SHOWN: Final = 12


def _explain(key: str, ops: list[_KOp], init: Value, f: _Failure, t0: float) -> str:
    blocking = ops[f.blocking]
    n_info = sum(o.info for o in ops)
    prefix = sum(o.call <= blocking.ret for o in ops)
    lines = [
        f"key {key!r} is not linearizable ({len(ops)} ops checked, {n_info} of unknown outcome;"
        f" initial value {_v(init)}).",
        f"The shortest non-linearizable prefix of its history ({prefix} ops invoked) ends when"
        " this op returned:",
        f"  {_describe(blocking, t0)}",
        "No order of the ops consistent with real time lets it take effect; it was tried "
        f"against register value(s): {', '.join(sorted(map(_v, f.tried))) or '(none)'}.",
        f"A longest linearization found before it ({len(f.path)} ops"
        + (f", last {_SHOWN} shown" if len(f.path) > _SHOWN else "")
        + "):",
    ]
    lines += [f"  {_describe(ops[j], t0)}" for j in f.path[-_SHOWN:]]
    state: _State = init
    for j in f.path:
        state = _step(ops[j].code, ops[j].a, ops[j].b, state)[1]
    lines.append(f"  => register value {_v(state)}")
    in_path = set(f.path)
    concurrent = [
        o
        for j, o in enumerate(ops)
        if j != f.blocking
        and j not in in_path
        and o.call <= blocking.ret
        and o.ret >= blocking.call
    ]
    if concurrent:
        lines.append("Ops concurrent with it and not in that linearization:")
        lines += [f"  {_describe(o, t0)}" for o in concurrent[:_SHOWN]]
        if len(concurrent) > _SHOWN:
            lines.append(f"  ... and {len(concurrent) - _SHOWN} more")
    return "\n".join(lines)
