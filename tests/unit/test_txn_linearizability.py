"""The multi-key (bank) linearizability checker, chaos.txn_linearizability: planted
violations that keep every audit's sum right (so ``bank_conserved`` misses them), valid
histories with concurrency and unknown outcomes, properties (histories of a sequential
model with random real-time overlaps are accepted, and rejected after one mutation; the
search agrees with a brute-force reference), the effort bound, recording and wiring."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaos.checkers import bank_linearizable, check_all
from chaos.records import RunRecord
from chaos.txn_linearizability import (
    FRESH,
    Outcome,
    TxnHistory,
    TxnOp,
    check,
    dump_jsonl,
    load_jsonl,
    main,
)

A = [f"bank/a{i}" for i in range(5)]
T = TxnOp.txn
R = TxnOp.read
Entry = tuple[str, int] | None


def opening(call: float = 0, ret: float | None = 1, rev: int = 5, outcome: Outcome = "ok") -> TxnOp:
    """The bank's opening txn: every account absent -> 100."""
    return T(0, [(k, 0) for k in A], [(k, "100") for k in A], call, ret, outcome, rev)


def transfer(
    p: int,
    src: int,
    dst: int,
    seen: tuple[Entry, Entry],
    amount: int,
    call: float,
    ret: float | None,
    outcome: Outcome = "ok",
    rev: int | None = None,
) -> TxnOp:
    """A teller's txn: compare both accounts' mod revisions as read, put both balances."""
    (va, ma), (vb, mb) = seen  # type: ignore[misc]
    puts = [(A[src], str(int(va) - amount)), (A[dst], str(int(vb) + amount))]
    return T(p, [(A[src], ma), (A[dst], mb)], puts, call, ret, outcome, rev)


def audit(entries: list[Entry], call: float, ret: float, rev: int, p: int = 9) -> TxnOp:
    """The auditor's read of every account at one revision."""
    got = [(k, e[0], e[1]) for k, e in zip(A, entries, strict=True) if e is not None]
    return R(p, A, got, call, ret, rev)


OPEN = ("100", 5)


def assert_rejected(history: list[TxnOp], culprit: int | None = None) -> str:
    audits = [op for op in history if op.kind == "read" and op.keys == tuple(A)]
    sums = [sum(int(v) for _, v, _ in op.result) for op in audits]
    assert all(s in (0, 500) for s in sums), sums  # bank_conserved sees nothing wrong
    res = check(history)
    assert not res.ok and not res.unknown, res.explanation
    if culprit is not None:
        assert f"#{culprit} " in res.explanation.splitlines()[2], res.explanation
    return res.explanation


def assert_accepted(history: list[TxnOp]) -> None:
    res = check(history)
    assert res.ok and not res.unknown, res.explanation


# -- planted violations (every audit sums to 500) ----------------------------------------------


def test_a_stale_audit_after_a_completed_transfer_is_caught() -> None:
    t1 = transfer(1, 0, 1, (OPEN, OPEN), 10, 2, 3, rev=7)
    explanation = assert_rejected([opening(), t1, audit([OPEN] * 5, 4, 5, 7)], culprit=2)
    assert "a0: read 100@5, the state has 90@7" in explanation


def test_an_audit_of_a_state_that_never_existed_is_caught() -> None:
    # t2 (r7) then t1 (r8); the audit sees t1's balances but not t2's, which came first.
    t1 = transfer(1, 0, 1, (OPEN, OPEN), 10, 2, 3, rev=8)
    t2 = transfer(2, 2, 3, (OPEN, OPEN), 20, 1.5, 2.5, rev=7)
    seen = [("90", 8), ("110", 8), OPEN, OPEN, OPEN]
    assert_rejected([opening(), t1, t2, audit(seen, 4, 5, 8)], culprit=3)


def test_an_audit_whose_revision_disagrees_with_its_values_is_caught() -> None:
    t1 = transfer(1, 0, 1, (OPEN, OPEN), 10, 2, 3, rev=7)
    seen = [("90", 7), ("110", 7), OPEN, OPEN, OPEN]
    assert_accepted([opening(), t1, audit(seen, 4, 5, 9)])
    assert_rejected([opening(), t1, audit(seen, 4, 5, 6)], culprit=2)


def test_transactions_applied_in_part_are_caught() -> None:
    # Two transfers of 10, each with only one of its puts applied: the sum is still 500.
    t1 = transfer(1, 0, 1, (OPEN, OPEN), 10, 2, 3, rev=7)
    t2 = transfer(2, 2, 3, (OPEN, OPEN), 10, 2, 3, rev=8)
    seen = [("90", 7), OPEN, OPEN, ("110", 8), OPEN]
    assert_rejected([opening(), t1, t2, audit(seen, 4, 5, 8)], culprit=3)


def test_a_lost_acknowledged_transfer_is_caught() -> None:
    # t1 was acknowledged; t2 then succeeded on the revisions from before it (t1 was lost),
    # and the audit agrees with t2: 95 + 100 + 105 + 100 + 100.
    t1 = transfer(1, 0, 1, (OPEN, OPEN), 10, 2, 3, rev=7)
    t2 = transfer(2, 2, 0, (OPEN, OPEN), 5, 4, 5, rev=9)
    seen = [("105", 9), OPEN, ("95", 9), OPEN, OPEN]
    explanation = assert_rejected([opening(), t1, t2, audit(seen, 6, 7, 9)], culprit=2)
    assert "a0 expected at r5, is 90@7" in explanation


def test_two_transfers_succeeding_on_one_compare_are_caught() -> None:
    # Both compared a0 and a1 at r5 and both succeeded; the second undoes half the first,
    # so the total stays 500 (105 + 95).
    t1 = transfer(1, 0, 1, (OPEN, OPEN), 10, 2, 3, rev=7)
    t2 = transfer(2, 1, 0, (OPEN, OPEN), 5, 2.5, 3.5, rev=8)
    seen = [("105", 8), ("95", 8), OPEN, OPEN, OPEN]
    assert_rejected([opening(), t1, t2, audit(seen, 4, 5, 8)])
    # Concurrent, one of them refused: fine.
    assert_accepted([opening(), t1, replace(t2, outcome="compare_failed", revision=7)])


def test_a_revision_given_to_two_transfers_is_caught() -> None:
    t1 = transfer(1, 0, 1, (OPEN, OPEN), 10, 2, 3, rev=7)
    t2 = transfer(2, 2, 3, (OPEN, OPEN), 10, 2, 3, rev=7)
    assert_rejected([opening(), t1, t2])


def test_a_compare_failure_nothing_explains_is_caught() -> None:
    t1 = transfer(1, 0, 1, (OPEN, OPEN), 10, 2, 3, "compare_failed", rev=5)
    assert_rejected([opening(), t1], culprit=1)
    # ... unless a concurrent transfer changed an account it compared, before it.
    t2 = transfer(2, 1, 4, (OPEN, OPEN), 10, 1.5, 2.5, rev=6)
    assert_accepted([opening(), replace(t1, revision=6), t2])
    assert_rejected([opening(), t1, t2])  # t1 was judged at r5, before t2's r6


def test_an_unknown_transfer_seen_before_it_was_sent_is_caught() -> None:
    t1 = transfer(1, 0, 1, (OPEN, OPEN), 10, 6, None, "unknown")
    seen = [("90", 7), ("110", 7), OPEN, OPEN, OPEN]
    assert_rejected([opening(), t1, audit(seen, 2, 3, 7)], culprit=2)


def test_a_write_nobody_made_is_caught() -> None:
    seen = [("90", 7), ("110", 7), OPEN, OPEN, OPEN]  # r7 reported by no txn
    unknown = transfer(1, 0, 1, (OPEN, OPEN), 5, 1, None, "unknown")  # puts 95 / 105
    assert_rejected([opening(), unknown, audit(seen, 2, 3, 7)], culprit=2)


# -- valid histories ---------------------------------------------------------------------------


def test_concurrent_transfers_and_audits_linearize() -> None:
    t1 = transfer(1, 0, 1, (OPEN, OPEN), 10, 2, 6, rev=7)
    t2 = transfer(2, 1, 2, (OPEN, OPEN), 20, 2, 6, "compare_failed", rev=7)  # after t1
    before = audit([OPEN] * 5, 3, 4, 6)  # before t1 (concurrent with it)
    after = audit([("90", 7), ("110", 7), OPEN, OPEN, OPEN], 3.5, 5, 7)
    assert_accepted([opening(), t1, t2, before, after])
    # ... but not once the audit that saw t1 returned before the other one was called.
    assert_rejected([opening(), t1, t2, after, replace(before, call=5.5, ret=7)], culprit=4)


def test_an_unknown_transfer_may_apply_observed_unobserved_or_never() -> None:
    u = transfer(1, 0, 1, (OPEN, OPEN), 10, 2, None, "unknown")
    seen = [("90", 12), ("110", 12), OPEN, OPEN, OPEN]
    assert_accepted([opening(), u, audit(seen, 3, 4, 14)])  # applied, at r12
    assert_accepted([opening(), u, audit([OPEN] * 5, 3, 4, 14)])  # not (yet)
    # Applied at a revision nobody saw, and that is why a later compare failed.
    failed = transfer(2, 0, 4, (OPEN, OPEN), 1, 5, 6, "compare_failed", rev=20)
    assert_accepted([opening(), u, failed])
    # It may not apply after an audit that came after the compare failure saw the old state.
    later = audit([OPEN] * 5, 7, 8, 21)
    assert_rejected([opening(), u, failed, later], culprit=3)


def test_a_retried_opening_and_single_key_reads() -> None:
    first = opening(0, None, outcome="unknown")
    again = opening(2, 3, rev=9, outcome="compare_failed")
    read = R(3, [A[2]], [(A[2], "100", 4)], 4, 5, 10)
    assert_accepted([first, again, read])
    assert_rejected([first, again, R(3, [A[2]], [], 4, 5, 10)], culprit=2)  # absent again


def test_independent_keys_are_separate_partitions() -> None:
    h = [
        T(0, [("x", 0)], [("x", "1")], 0, 1, "ok", 3),
        T(1, [("y", 0), ("z", 0)], [("y", "1"), ("z", "1")], 0, 1, "ok", 4),
        R(2, ["x"], [("x", "1", 3)], 2, 3, 4),
        R(2, ["z"], [("z", "1", 4)], 4, 5, 4),
    ]
    res = check(h)
    assert res.ok and res.partitions == 2, res.explanation
    bad = check([*h, R(3, ["y"], [], 6, 7, 5)])
    assert not bad.ok and bad.keys == ("y", "z")


def test_malformed_ops_are_rejected() -> None:
    with pytest.raises(ValueError, match="needs its revision"):
        check([T(0, [], [("x", "1")], 0, 1, "ok")])
    with pytest.raises(ValueError, match="return time"):
        check([R(0, ["x"], [], 0, None, 1)])
    with pytest.raises(ValueError, match="not one of the keys read"):
        check([R(0, ["x"], [("y", "1", 1)], 0, 1, 1)])
    with pytest.raises(ValueError, match="outcome"):
        check([R(0, ["x"], [], 0, 1, 1, outcome="maybe")])  # type: ignore[arg-type]


# -- a sequential model with random overlaps ------------------------------------------------


@dataclass
class Sim:
    """A history generated by running the model sequentially (op i at time i, its interval
    drawn around it), and what the mutations need to know about it."""

    ops: list[TxnOp] = field(default_factory=list)
    # Per ok txn (index): the state of each key it put just before it applied.
    before: dict[int, dict[str, Entry]] = field(default_factory=dict)
    # Per ok txn (index): the ok txn whose write each of its compares expects, if any.
    wrote: dict[int, str] = field(default_factory=dict)


def simulate(rng: random.Random, n: int, nkeys: int, width: float, p_unknown: float) -> Sim:
    keys = [f"k{i}" for i in range(nkeys)]
    state: dict[str, tuple[str, int]] = {}
    versions: dict[str, list[tuple[str, int]]] = {k: [] for k in keys}
    writer: dict[int, int] = {}  # revision -> index of the ok txn that wrote it
    rev = 0
    sim = Sim()

    def span(i: int) -> tuple[float, float]:
        return i - rng.uniform(0, width), i + rng.uniform(0, width)

    for i in range(n):
        rev += rng.choice([0, 0, 1, 3])  # other workloads' writes
        call, ret = span(i)
        kind = "open" if i == 0 else rng.choice(["txn", "txn", "txn", "read", "audit"])
        if kind in ("read", "audit"):
            ks = keys if kind == "audit" else [rng.choice(keys)]
            got = [(k, *state[k]) for k in ks if k in state]
            sim.ops.append(R(i % 3, ks, got, call, ret, rev))
            continue
        if kind == "open":
            compares = [(k, 0) for k in keys]
            puts = [(k, "100") for k in keys]
        else:
            ks = rng.sample(keys, 2)
            compares = []
            for k in ks:
                m = state[k][1] if k in state else 0
                if rng.random() < 0.2 and versions[k]:
                    m = rng.choice(versions[k])[1]  # a stale read: the compare may fail
                compares.append((k, m))
            puts = [(k, rng.choice(["90", "100", "110", str(rng.randint(0, 200))])) for k in ks]
        holds = all((state[k][1] if k in state else 0) == m for k, m in compares)
        unknown = i > 0 and rng.random() < p_unknown
        applies = holds and not (unknown and rng.random() < 0.4)
        if applies:
            rev += 1
            if not unknown:
                sim.before[i] = {k: state.get(k) for k, _ in puts}
                sim.wrote[i] = ",".join(str(writer.get(m, -1)) for _, m in compares)
                writer[rev] = i
            for k, v in puts:
                state[k] = (v, rev)
                versions[k].append((v, rev))
        if unknown:
            sim.ops.append(T(i % 3, compares, puts, call, None, "unknown"))
        else:
            outcome: Outcome = "ok" if holds else "compare_failed"
            sim.ops.append(T(i % 3, compares, puts, call, ret, outcome, rev))
    rev += 1
    got = [(k, *state[k]) for k in keys if k in state]  # a final audit
    sim.ops.append(R(3, keys, got, n + width + 1, n + width + 2, rev))
    return sim


def mutations(sim: Sim) -> list[tuple[str, list[TxnOp]]]:
    """Single changes that make the history non-linearizable for certain."""
    ops = sim.ops
    out: list[tuple[str, list[TxnOp]]] = []
    reads = [i for i, op in enumerate(ops) if op.kind == "read" and op.result]
    for i in reads[-1:]:  # a value nobody wrote
        k, _, m = ops[i].result[0]
        out.append(("corrupt read", _with(ops, i, replace(ops[i], result=((k, "x", m),)))))
    for i in reads:  # a stale read: the state from before a txn that returned before it
        for w, before in sim.before.items():
            wop = ops[w]
            assert wop.ret is not None
            for k, old in before.items():
                if wop.ret < ops[i].call and k in ops[i].keys:
                    got = [r for r in ops[i].result if r[0] != k]
                    got += [(k, *old)] if old is not None else []
                    out.append(("stale read", _with(ops, i, replace(ops[i], result=tuple(got)))))
                    break
            else:
                continue
            break
        else:
            continue
        break
    for w2 in sim.before:  # succeeding on a compare an earlier ok txn already used
        for idx, w1 in enumerate(sim.wrote[w2].split(",")):
            if int(w1) in sim.before:
                k = ops[w2].compares[idx][0]
                prior = dict(ops[int(w1)].compares).get(k)
                if prior is None:
                    continue
                cmps = tuple((kk, prior if kk == k else m) for kk, m in ops[w2].compares)
                out.append(("double success", _with(ops, w2, replace(ops[w2], compares=cmps))))
                break
        else:
            continue
        break
    oks = [i for i, op in enumerate(ops) if op.kind == "txn" and op.outcome == "ok"]
    if len(oks) >= 2:  # one revision given to two txns
        a, b = oks[-2:]
        out.append(("revision reused", _with(ops, b, replace(ops[b], revision=ops[a].revision))))
    return out


def _with(ops: list[TxnOp], i: int, op: TxnOp) -> list[TxnOp]:
    return [*ops[:i], op, *ops[i + 1 :]]


sims = st.builds(
    simulate,
    st.randoms(use_true_random=False),
    st.integers(1, 30),
    st.integers(2, 4),
    st.sampled_from([0.3, 1.0, 3.0]),
    st.sampled_from([0.0, 0.15, 0.4]),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sim=sims)
def test_histories_of_the_sequential_model_are_linearizable(sim: Sim) -> None:
    res = check(sim.ops)
    assert res.ok and not res.unknown, res.explanation


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sim=sims, pick=st.integers(0, 3))
def test_one_mutation_makes_them_not_linearizable(sim: Sim, pick: int) -> None:
    options = mutations(sim)  # at least the corrupt read: the final audit sees the accounts
    what, ops = options[pick % len(options)]
    res = check(ops)
    assert not res.ok and not res.unknown, f"{what}: {res.explanation}"


# -- against a brute-force reference --------------------------------------------------------


def brute_force(history: list[TxnOp]) -> bool:
    """Every order consistent with real time, every subset of unknown txns, each at any
    revision up to the highest reported + 2 or at an unobserved one (FRESH: no read or
    compare matches it, the revision bound does not move), with no pruning. Keys no op
    couples are checked apart (each with its own revision bound: the model's relaxation)."""
    if not any(op.touched() == {"x", "y"} for op in history):
        return all(_brute([op for op in history if op.touched() == {k}]) for k in ("x", "y"))
    return _brute(history)


def _brute(history: list[TxnOp]) -> bool:
    ops = [
        op
        for op in history
        if op.outcome != "refused" and not (op.outcome == "unknown" and not op.puts)
    ]
    ops = [op for op in ops if not (op.kind == "read" and op.outcome == "unknown")]
    top = max((op.revision or 0 for op in ops), default=0) + 2
    choices: list[object] = [*range(1, top + 1), FRESH]

    def must_precede(x: TxnOp, y: TxnOp) -> bool:
        return x.outcome != "unknown" and x.ret is not None and x.ret < y.call

    def holds(op: TxnOp, s: dict[str, object]) -> bool:
        def ok(k: str, m: int) -> bool:
            e = s.get(k)
            return e is None if m == 0 else isinstance(e, tuple) and e[1] == m

        return all(ok(k, m) for k, m in op.compares)

    def go(done: frozenset[int], s: dict[str, object], low: int) -> bool:
        if all(i in done for i, op in enumerate(ops) if op.outcome != "unknown"):
            return True
        for i, op in enumerate(ops):
            if i in done or any(must_precede(x, op) for j, x in enumerate(ops) if j not in done):
                continue
            r = op.revision
            nexts: list[tuple[dict[str, object], int]] = []
            if op.kind == "read":
                got = {k: (v, m) for k, v, m in op.result}
                if all(s.get(k) == got.get(k) for k in op.keys) and (r is None or r >= low):
                    nexts.append((s, low if r is None else r))
            elif op.outcome == "compare_failed":
                if not holds(op, s) and (r is None or r >= low):
                    nexts.append((s, low if r is None else r))
            elif holds(op, s):
                revs = [r] if op.outcome == "ok" else choices
                for c in revs:
                    if c is FRESH:
                        nexts.append(({**s, **{k: FRESH for k, _ in op.puts}}, low))
                    elif isinstance(c, int) and c > low:
                        nexts.append(({**s, **{k: (v, c) for k, v in op.puts}}, c))
            if any(go(done | {i}, s2, low2) for s2, low2 in nexts):
                return True
        return False

    return go(frozenset(), {}, 0)


@st.composite
def small_histories(draw: st.DrawFn) -> list[TxnOp]:
    keys = ["x", "y"]
    ops = []
    for p in range(draw(st.integers(1, 5))):
        call = draw(st.integers(0, 8)) / 2
        ret = call + draw(st.integers(0, 4)) / 2
        rev = draw(st.integers(1, 4))
        ks = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=2, unique=True))
        if draw(st.integers(0, 2)) == 0:
            got = [(k, draw(st.sampled_from("ab")), draw(st.integers(1, 4))) for k in ks]
            got = [g for g in got if draw(st.booleans())]
            ops.append(R(p, ks, got, call, ret, rev))
            continue
        outcome: Outcome = draw(st.sampled_from(["ok", "ok", "compare_failed", "unknown"]))
        compares = [(k, draw(st.integers(0, 4))) for k in ks]
        if draw(st.booleans()):  # not always the keys it compares
            ks = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=2, unique=True))
        puts = [(k, draw(st.sampled_from("ab"))) for k in ks]
        if outcome == "unknown":
            ops.append(T(p, compares, puts, call, None, "unknown"))
        else:
            ops.append(T(p, compares, puts, call, ret, outcome, rev))
    return ops


@settings(max_examples=200, deadline=None)
@given(history=small_histories())
def test_agrees_with_brute_force(history: list[TxnOp]) -> None:
    res = check(history)
    assert not res.unknown
    assert res.ok == brute_force(history), res.explanation


# -- effort, recording, wiring ----------------------------------------------------------------


def test_a_long_concurrent_history_checks_quickly_and_a_bound_makes_it_inconclusive() -> None:
    sim = simulate(random.Random(7), 3000, 5, 3.0, 0.02)
    start = time.monotonic()
    res = check(sim.ops)
    assert res.ok, res.explanation
    assert time.monotonic() - start < 5
    bounded = check(sim.ops, max_states=100)
    assert not bounded.ok and bounded.unknown
    assert bounded.explanation.startswith("inconclusive: the search bound ran out")


def test_the_recorder_and_json_lines(tmp_path: Path) -> None:
    clock = iter(range(100))
    ops: list[object] = []
    h = TxnHistory(ops, clock=lambda: float(next(clock)))
    t1 = h.invoke(T(1, [(A[0], 0)], [(A[0], "1")], 0, None))
    r1 = h.invoke(R(2, ["bank/"], [], 0, None))
    h.complete(t1, "ok", 4)
    h.complete(r1, "ok", 4, [(A[0], "1", 4)], keys=[A[0], A[1]])
    pending = h.invoke(T(3, [(A[1], 0)], [(A[1], "2")], 0, None))
    with pytest.raises(ValueError, match="already completed"):
        h.complete(t1, "ok", 4)
    assert ops[0] == T(1, [(A[0], 0)], [(A[0], "1")], 0.0, 2.0, "ok", 4)
    assert ops[1] == R(2, [A[0], A[1]], [(A[0], "1", 4)], 1.0, 3.0, 4)
    assert ops[pending] == T(3, [(A[1], 0)], [(A[1], "2")], 4.0, None, "unknown")
    path = tmp_path / "h.jsonl"
    history = [op for op in ops if isinstance(op, TxnOp)]
    dump_jsonl(history, path)
    assert load_jsonl(path) == history
    assert main([str(path)]) == 0
    dump_jsonl([*history, R(4, [A[0]], [], 10, 11, 12)], path)
    assert main([str(path)]) == 1


def test_concurrent_recorders_share_one_list() -> None:
    ops: list[object] = []

    def worker(p: int) -> None:
        h = TxnHistory(ops)
        for _ in range(200):
            t = h.invoke(R(p, ["k"], [], 0, None))
            h.complete(t, "ok", 1)

    threads = [threading.Thread(target=worker, args=(p,)) for p in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(ops) == 800
    assert all(isinstance(op, TxnOp) and op.outcome == "ok" for op in ops)


def test_the_checker_in_check_all() -> None:
    t1 = transfer(1, 0, 1, (OPEN, OPEN), 10, 2, 3, rev=7)
    good: list[object] = [opening(), t1, audit([("90", 7), ("110", 7), OPEN, OPEN, OPEN], 4, 5, 7)]
    rec = RunRecord("t", 1, start=0.0, end=10.0, bank_history=good)
    assert bank_linearizable(rec) == []
    rec.bank_history = [*good[:2], audit([OPEN] * 5, 4, 5, 7)]
    [v] = bank_linearizable(rec)
    assert v.checker == "bank_linearizable"
    assert v.detail.startswith("the bank's history of 3 operations is not linearizable")
    assert "bank_linearizable" in [x.checker for x in check_all(rec, 5.0)]
    rec.bank_history = ["not an op"]
    [v] = bank_linearizable(rec)
    assert "the checker raised on 1 operations" in v.detail
    rec.bank_history = list(simulate(random.Random(3), 2000, 5, 3.0, 0.0).ops)
    [v] = bank_linearizable(rec, timeout_s=0.0)
    assert v.detail.startswith("inconclusive within 0 s")


# -- the second opinion: Porcupine (chaos/porcupine) ------------------------------------------

PORCUPINE = Path(__file__).resolve().parents[2] / "chaos" / "porcupine"


@pytest.mark.slow  # builds a Go program (seconds): not in the default run
def test_porcupine_agrees_on_small_histories(tmp_path: Path) -> None:
    """Builds chaos/porcupine offline (GOPROXY=off: the module must already be in the Go
    module cache, e.g. after ``cd chaos/porcupine && go mod download``) and checks a
    linearizable history and three non-linearizable ones with it. Skipped without Go or
    without the module."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("no go on PATH")
    binary = tmp_path / "porcupine"
    env = {**os.environ, "GOPROXY": "off", "GOFLAGS": "-mod=mod"}
    build = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        check=False,
        cwd=PORCUPINE,
        env=env,
        capture_output=True,
    )
    if build.returncode != 0:
        pytest.skip(f"chaos/porcupine does not build offline: {build.stderr.decode()[-300:]}")
    t1 = transfer(1, 0, 1, (OPEN, OPEN), 10, 2, 3, rev=7)
    u = transfer(2, 2, 3, (OPEN, OPEN), 10, 2, None, "unknown")
    seen = [("90", 7), ("110", 7), ("90", 9), ("110", 9), OPEN]
    cases = {
        "linearizable": ([opening(), t1, u, audit(seen, 4, 5, 9)], 0),
        "stale audit": ([opening(), t1, audit([OPEN] * 5, 4, 5, 7)], 1),
        "double success": (
            [
                opening(),
                t1,
                transfer(2, 1, 0, (OPEN, OPEN), 5, 2.5, 3.5, rev=8),
                audit([("105", 8), ("95", 8), OPEN, OPEN, OPEN], 4, 5, 8),
            ],
            1,
        ),
        "write nobody made": ([opening(), u, audit(seen[:2] + [OPEN] * 3, 4, 5, 7)], 1),
    }
    for name, (history, want) in cases.items():
        assert check(history).ok == (want == 0), name
        path = tmp_path / f"{name}.jsonl"
        dump_jsonl(history, path)
        run = subprocess.run(
            [str(binary), str(path)], check=False, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == want, f"{name}: {run.stdout} {run.stderr}"
