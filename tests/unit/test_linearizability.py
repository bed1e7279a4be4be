"""The chaos linearizability checker: planted violations, tricky valid histories, properties
against simulated registers and a brute-force reference, and a performance smoke test."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaos.linearizability import History, Op, Status, Value, check

W = Op.write
R = Op.read
CAS = Op.cas
DEL = Op.delete


def assert_violation(history: list[Op], key: str = "k", culprit: int | None = None) -> str:
    res = check(history)
    assert not res.ok, res.explanation
    assert not res.unknown
    assert res.key == key
    if culprit is not None:
        assert f"#{culprit} " in res.explanation.splitlines()[2], res.explanation
    return res.explanation


def assert_linearizable(history: list[Op], init: dict[str, Value] | None = None) -> None:
    res = check(history, init)
    assert res.ok, res.explanation
    assert res.key is None
    assert not res.unknown


# -- planted violations ----------------------------------------------------------------------


def test_a_stale_read_is_caught() -> None:
    explanation = assert_violation(
        [W(0, "k", b"a", 0, 1), W(1, "k", b"b", 2, 3), R(2, "k", b"a", 4, 5)], culprit=2
    )
    assert "b'b'" in explanation  # the value the read should have seen


def test_a_lost_write_is_caught() -> None:
    # b was acknowledged, but readers keep seeing a until c overwrites it.
    assert_violation(
        [
            W(0, "k", b"a", 0, 1),
            W(1, "k", b"b", 2, 3),
            R(2, "k", b"a", 4, 5),
            R(3, "k", b"a", 6, 7),
            W(0, "k", b"c", 8, 9),
            R(2, "k", b"c", 10, 11),
        ],
        culprit=2,
    )


def test_a_cas_succeeding_twice_from_the_same_value_is_caught() -> None:
    assert_violation(
        [
            W(0, "k", b"a", 0, 1),
            CAS(1, "k", b"a", b"b", True, 2, 3),
            CAS(2, "k", b"a", b"c", True, 4, 5),
        ],
        culprit=2,
    )


def test_concurrent_cas_both_succeeding_from_the_same_value_is_caught() -> None:
    assert_violation(
        [
            W(0, "k", b"a", 0, 1),
            CAS(1, "k", b"a", b"b", True, 2, 5),
            CAS(2, "k", b"a", b"c", True, 3, 6),
        ]
    )


def test_a_read_of_a_value_never_written_is_caught() -> None:
    explanation = assert_violation(
        [W(0, "k", b"a", 0, 1), R(1, "k", b"zzz", 2, 3), W(0, "k", b"b", 4, 5)], culprit=1
    )
    assert "b'zzz'" in explanation


def test_a_read_of_a_value_written_only_later_is_caught() -> None:
    assert_violation([R(1, "k", b"a", 0, 1), W(0, "k", b"a", 2, 3)], culprit=0)


def test_readers_disagreeing_on_the_order_of_concurrent_writes_are_caught() -> None:
    assert_violation(
        [
            W(0, "k", b"a", 0, 2),
            W(1, "k", b"b", 1, 3),
            R(2, "k", b"a", 4, 5),
            R(3, "k", b"b", 6, 7),
            R(2, "k", b"a", 8, 9),
        ],
        culprit=3,  # a-then-b makes #2 stale, b-then-a #3: the prefix up to #3 fails
    )


def test_a_failed_write_is_never_visible() -> None:
    history = [W(0, "k", b"a", 0, 1), W(1, "k", b"b", 2, 3, status="fail")]
    assert_linearizable([*history, R(2, "k", b"a", 4, 5)])
    assert_violation([*history, R(2, "k", b"b", 4, 5)])


def test_a_cas_precondition_failure_must_have_seen_another_value() -> None:
    history = [W(0, "k", b"a", 0, 1), CAS(1, "k", b"a", b"b", False, 2, 3)]
    assert_violation(history, culprit=1)
    # ... which a concurrent write explains.
    assert_linearizable([*history, W(2, "k", b"c", 1.5, 2.5), R(2, "k", b"c", 4, 5)])


def test_deletes() -> None:
    base = [W(0, "k", b"a", 0, 1), DEL(1, "k", 2, 3, existed=1)]
    assert_linearizable([*base, R(2, "k", None, 4, 5), DEL(1, "k", 6, 7, existed=False)])
    assert_violation([*base, R(2, "k", b"a", 4, 5)])
    assert_violation([*base, DEL(1, "k", 4, 5, existed=True)])
    # A CAS from "absent" succeeds only on an absent key.
    assert_linearizable([*base, CAS(2, "k", None, b"b", True, 4, 5), R(0, "k", b"b", 6, 7)])
    assert_violation([W(0, "k", b"a", 0, 1), CAS(2, "k", None, b"b", True, 2, 3)])


def test_initial_values() -> None:
    history = [R(0, "k", b"x", 0, 1)]
    assert_linearizable(history, init={"k": b"x"})
    assert_violation(history)
    assert_linearizable([R(0, "k", None, 0, 1)], init={"other": b"x"})


def test_keys_are_checked_independently_and_the_failing_key_is_named() -> None:
    history = [
        W(0, "x", b"a", 0, 1),
        W(1, "y", b"a", 0, 1),
        R(0, "x", b"a", 2, 3),
        W(1, "y", b"b", 2, 3),
        R(2, "y", b"a", 4, 5),
    ]
    assert_violation(history, key="y", culprit=4)


def test_an_unknown_cas_may_take_effect_but_not_before_its_call() -> None:
    history = [W(0, "k", b"a", 0, 1), CAS(1, "k", b"a", b"b", None, 2, None, status="info")]
    assert_linearizable([*history, R(2, "k", b"a", 3, 4), R(2, "k", b"b", 9, 10)])
    assert_linearizable([*history, R(2, "k", b"a", 9, 10)])
    assert_violation([*history, R(2, "k", b"b", 0.5, 1.5)])
    # Once taken effect it stays (until overwritten).
    assert_violation([*history, R(2, "k", b"b", 3, 4), R(2, "k", b"a", 5, 6)])


# -- valid tricky histories ------------------------------------------------------------------


@pytest.mark.parametrize("seen", [b"a", b"b"])
def test_concurrent_writes_may_be_observed_in_either_order(seen: bytes) -> None:
    assert_linearizable(
        [
            W(0, "k", b"a", 0, 2),
            W(1, "k", b"b", 1, 3),
            R(2, "k", seen, 4, 5),
            R(3, "k", seen, 6, 7),
        ]
    )


def test_an_info_write_may_take_effect_long_after_its_call() -> None:
    assert_linearizable(
        [
            W(0, "k", b"a", 0, 1),
            W(1, "k", b"b", 2, 2.5, status="info"),  # timed out at 2.5
            R(2, "k", b"a", 3, 4),
            R(3, "k", b"a", 5, 6),
            R(2, "k", b"b", 10, 11),
            R(3, "k", b"b", 12, 13),
        ]
    )


def test_an_info_write_may_never_take_effect() -> None:
    assert_linearizable(
        [
            W(0, "k", b"a", 0, 1),
            W(1, "k", b"b", 2, None, status="info"),
            *(R(2 + i % 2, "k", b"a", 3 + 2 * i, 4 + 2 * i) for i in range(10)),
        ]
    )


def test_info_reads_are_ignored() -> None:
    assert_linearizable([W(0, "k", b"a", 0, 1), R(1, "k", b"zzz", 2, None, status="info")])


@pytest.mark.parametrize("seen", [b"a", b"b"])
def test_a_read_concurrent_with_a_write_may_return_either_value(seen: bytes) -> None:
    assert_linearizable(
        [W(0, "k", b"a", 0, 1), W(1, "k", b"b", 2, 5), R(2, "k", seen, 3, 4), R(2, "k", b"b", 6, 7)]
    )


def test_many_unknown_writes_stay_cheap() -> None:
    # 30 never-observed info writes in flight at once over 200 reads: each may or may not have
    # happened, which without pruning dominated configurations would be 2^30 of them.
    history = [W(0, "k", b"a", 0, 1)]
    history += [W(100 + i, "k", b"x%d" % i, 2 + i * 0.01, None, status="info") for i in range(30)]
    history += [W(1, "k", b"b", 3, 4)]
    history += [R(2, "k", b"b", 5 + i, 5.5 + i) for i in range(200)]
    start = time.monotonic()
    assert_linearizable(history)
    # ... and the same holds when the history is not linearizable (the search is exhaustive).
    assert_violation([*history, R(2, "k", b"a", 300, 301)])
    assert time.monotonic() - start < 5


# -- simulated registers -----------------------------------------------------------------------


def simulate(
    rng: random.Random,
    n_ops: int,
    n_keys: int,
    n_procs: int,
    p_info: float = 0.03,
) -> list[Op]:
    """A history of correct registers: each op takes effect at a point inside its interval
    (an info op: at any time after its call, possibly after it timed out, or never)."""
    keys = [f"k{i}" for i in range(n_keys)]
    free = [0.0] * n_procs  # when each process slot may invoke again
    pid = list(range(n_procs))
    written: dict[str, list[bytes]] = {k: [] for k in keys}
    history: list[Op] = []
    effective: list[tuple[float, int]] = []  # (when it takes effect, index)
    for n in range(n_ops):
        slot = min(range(n_procs), key=free.__getitem__)
        call = free[slot] + rng.uniform(0, 0.2)
        ret = free[slot] = call + rng.expovariate(1.0) + 0.01
        key = rng.choice(keys)
        kind = rng.choices(["read", "write", "cas", "delete"], [4, 3, 2, 1])[0]
        op = Op(process=pid[slot], kind=kind, key=key, call=call, ret=ret)  # type: ignore[arg-type]
        if kind in ("write", "cas"):
            expected = rng.choice([None, *written[key][-3:]])
            op = replace(op, value=b"v%d" % n, expected=expected if kind == "cas" else None)
            written[key].append(b"v%d" % n)
        at = rng.uniform(call, ret)
        if rng.random() < p_info:
            op = replace(op, status="info")
            pid[slot] = n_procs + n  # the request may still be in flight: a new process
            if rng.random() < 0.5:
                history.append(op)
                continue  # never applied
            if rng.random() < 0.5:
                at = call + rng.uniform(0, 10 * (ret - call))  # maybe after it timed out
        history.append(op)
        effective.append((at, n))
    state: dict[str, Value] = {}
    for _, n in sorted(effective):
        op = history[n]
        s = state.get(op.key)
        result: object = None
        if op.kind == "read":
            result = s
        elif op.kind == "write":
            state[op.key] = op.value
        elif op.kind == "cas":
            result = s == op.expected
            if result:
                state[op.key] = op.value
        else:
            result = s is not None
            state[op.key] = None
        if op.status == "ok":
            history[n] = replace(op, result=result)
    return history


def test_a_large_history_of_a_correct_store_checks_quickly() -> None:
    history = simulate(random.Random(1), n_ops=2000, n_keys=10, n_procs=5, p_info=0.03)
    n_info = sum(op.status == "info" for op in history)
    start = time.monotonic()
    res = check(history)
    elapsed = time.monotonic() - start
    print(f"\n2000 ops, 10 keys, 5 processes, {n_info} info: linearizable in {elapsed:.3f}s")
    assert res.ok, res.explanation
    # A planted stale read: the search of that key has to be exhaustive.
    reads = [i for i, op in enumerate(history) if op.kind == "read" and op.status == "ok"]
    i = reads[len(reads) // 2]
    history[i] = replace(history[i], result=b"never written")
    start = time.monotonic()
    res = check(history)
    elapsed = time.monotonic() - start
    print(f"same with a planted bad read: violation found in {elapsed:.3f}s")
    assert not res.ok and not res.unknown
    assert res.key == history[i].key
    assert f"#{i} " in res.explanation.splitlines()[2]


def test_a_hot_key_with_many_unknown_outcomes_checks_quickly() -> None:
    history = simulate(random.Random(3), n_ops=2000, n_keys=1, n_procs=5, p_info=0.1)
    n_info = sum(op.status == "info" for op in history)
    res = check(history, timeout_s=20)
    print(f"\n2000 ops, 1 key, 5 processes, {n_info} info: linearizable in {res.elapsed_s:.3f}s")
    assert res.ok, res.explanation
    reads = [i for i, op in enumerate(history) if op.kind == "read" and op.status == "ok"]
    i = reads[len(reads) // 10]
    history[i] = replace(history[i], result=b"never written")
    res = check(history, timeout_s=20)
    print(f"same with a planted bad read early on: {res.elapsed_s:.3f}s")
    assert not res.ok and not res.unknown
    assert f"#{i} " in res.explanation.splitlines()[2]


def test_a_timeout_gives_an_unknown_result() -> None:
    history = simulate(random.Random(2), n_ops=100, n_keys=2, n_procs=3)
    res = check(history, timeout_s=0)
    assert res.unknown and not res.ok
    assert res.key == history[0].key


_sim_settings = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@_sim_settings
@given(
    seed=st.integers(0, 2**32 - 1),
    n_ops=st.integers(1, 60),
    n_keys=st.integers(1, 3),
    n_procs=st.integers(1, 5),
    p_info=st.sampled_from([0.0, 0.1, 0.3]),
)
def test_histories_of_correct_registers_are_linearizable(
    seed: int, n_ops: int, n_keys: int, n_procs: int, p_info: float
) -> None:
    history = simulate(random.Random(seed), n_ops, n_keys, n_procs, p_info)
    res = check(history, timeout_s=10)
    assert res.ok, res.explanation


@_sim_settings
@given(
    seed=st.integers(0, 2**32 - 1),
    n_ops=st.integers(2, 60),
    n_keys=st.integers(1, 3),
    n_procs=st.integers(1, 5),
    p_info=st.sampled_from([0.0, 0.1, 0.3]),
    from_the_future=st.booleans(),
    data=st.data(),
)
def test_a_read_of_an_unexplainable_value_is_caught(
    seed: int,
    n_ops: int,
    n_keys: int,
    n_procs: int,
    p_info: float,
    from_the_future: bool,
    data: st.DataObject,
) -> None:
    history = simulate(random.Random(seed), n_ops, n_keys, n_procs, p_info)
    reads = [i for i, op in enumerate(history) if op.kind == "read" and op.status == "ok"]
    if not reads:
        return
    i = data.draw(st.sampled_from(reads))
    read = history[i]
    bad: Value = b"never written"
    if from_the_future:
        # A value (written once: values are unique) whose write was invoked after the read
        # returned: no order consistent with real time lets the read see it.
        later = [
            op.value
            for op in history
            if op.key == read.key and op.kind in ("write", "cas") and op.call > read.ret  # type: ignore[operator]
        ]
        if not later:
            return
        bad = data.draw(st.sampled_from(later))
    history[i] = replace(read, result=bad)
    res = check(history, timeout_s=10)
    assert not res.ok and not res.unknown, res.explanation
    assert res.key == read.key


# -- against a brute-force reference -----------------------------------------------------------


def brute_force(history: list[Op], init: dict[str, Value]) -> bool:
    """Linearizable iff some order of the ops (info ones optional) respects real time and a
    sequential register; by trying every order."""
    for key in {op.key for op in history}:
        ops = [
            op
            for op in history
            if op.key == key
            and op.status != "fail"
            and not (op.status == "info" and op.kind == "read")
        ]
        if not _brute_key(ops, init.get(key)):
            return False
    return True


def _brute_key(ops: list[Op], state: Value) -> bool:
    if all(op.status == "info" for op in ops):
        return True
    for j, op in enumerate(ops):
        rest = ops[:j] + ops[j + 1 :]
        if any(o.status == "ok" and o.ret < op.call for o in rest):  # type: ignore[operator]
            continue  # something returned before this was called
        info = op.status == "info"
        if op.kind == "read":
            legal, after = op.result == state, state
        elif op.kind == "write":
            legal, after = True, op.value
        elif op.kind == "cas":
            matches = state == op.expected
            legal = info or op.result == matches
            after = op.value if matches else state
        else:
            legal = info or op.result is None or bool(op.result) == (state is not None)
            after = None
        if legal and _brute_key(rest, after):
            return True
    return False


_values = st.sampled_from([None, b"a", b"b"])


@st.composite
def small_histories(draw: st.DrawFn) -> list[Op]:
    ops = []
    for p in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(["read", "write", "cas", "delete"]))
        status: Status = draw(st.sampled_from(["ok", "ok", "ok", "info", "fail"]))
        call = draw(st.integers(0, 12)) / 2
        ret = call + draw(st.integers(0, 6)) / 2
        key = draw(st.sampled_from(["x", "y"]))
        if kind == "read":
            op = R(p, key, draw(_values), call, ret, status)
        elif kind == "write":
            op = W(p, key, draw(st.sampled_from([b"a", b"b"])), call, ret, status)
        elif kind == "cas":
            new = draw(st.sampled_from([b"a", b"b"]))
            op = CAS(p, key, draw(_values), new, draw(st.booleans()), call, ret, status)
        else:
            op = DEL(p, key, call, ret, status, draw(st.sampled_from([None, True, False])))
        if status == "info":
            op = replace(op, result=None)
        ops.append(op)
    return ops


@settings(max_examples=400, deadline=None)
@given(history=small_histories(), init=st.dictionaries(st.sampled_from(["x", "y"]), _values))
def test_agrees_with_brute_force(history: list[Op], init: dict[str, Value]) -> None:
    res = check(history, init)
    assert not res.unknown
    assert res.ok == brute_force(history, init), res.explanation


# -- recording ----------------------------------------------------------------------------------


def test_history_records_concurrent_clients() -> None:
    h = History()
    lock = threading.Lock()
    store: dict[str, bytes] = {}

    def client(p: int) -> None:
        for n in range(40):
            key = f"k{n % 3}"
            if n % 2:
                t = h.invoke(p, "write", key, value=b"%d-%d" % (p, n))
                with lock:
                    store[key] = b"%d-%d" % (p, n)
                h.ok(t, n)
            else:
                t = h.invoke(p, "read", key)
                with lock:
                    v = store.get(key)
                h.ok(t, v)

    threads = [threading.Thread(target=client, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ops = h.ops()
    assert len(ops) == len(h) == 160
    assert all(op.status == "ok" and op.ret is not None and op.ret >= op.call for op in ops)
    assert check(ops).ok


def test_history_statuses() -> None:
    clock = iter(range(100))
    h = History(clock=lambda: float(next(clock)))
    w = h.invoke(0, "write", "k", value=b"a")
    h.ok(w, 7)
    c = h.invoke(1, "cas", "k", expected=b"a", value=b"b")
    h.info(c)
    f = h.invoke(2, "write", "k", value=b"z")
    h.fail(f)
    pending = h.invoke(3, "delete", "k")
    ops = h.ops()
    assert ops[0] == W(0, "k", b"a", 0.0, 1.0, result=7)
    assert ops[1] == CAS(1, "k", b"a", b"b", None, 2.0, 3.0, status="info")
    assert ops[2].status == "fail"
    assert ops[pending].status == "info" and ops[pending].ret is None
    with pytest.raises(ValueError, match="already completed"):
        h.ok(w)
    assert check([*ops, R(4, "k", b"b", 10, 11)]).ok
    assert not check([*ops, R(4, "k", b"z", 10, 11)]).ok


def test_malformed_ops_are_rejected() -> None:
    with pytest.raises(ValueError, match="return time"):
        check([R(0, "k", None, 0, None)])
    with pytest.raises(ValueError, match="before its call"):
        check([R(0, "k", None, 2, 1)])
    with pytest.raises(ValueError, match="bool"):
        check([CAS(0, "k", None, b"a", None, 0, 1)])
    with pytest.raises(ValueError, match="kind"):
        check([Op(process=0, kind="scan", key="k", call=0, ret=1)])  # type: ignore[arg-type]
