"""chaos.run.states_differ, the post-heal check that every replica holds the same state:
it passes agreeing members, and catches a planted diverged member and a silent one."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from chaos.run import states_differ
from coord import errors
from coord.v1 import maintenance_pb2 as mp


def node(nid: str, digest: str = "", matches: bool = False, error: str = "") -> mp.NodeStateHash:
    return mp.NodeStateHash(node_id=nid, revision=42, hash=digest, matches=matches, error=error)


def answers(
    *responses: mp.CheckConsistencyResponse | Exception,
) -> Callable[[], mp.CheckConsistencyResponse]:
    it: Iterator[mp.CheckConsistencyResponse | Exception] = iter(responses)

    def check() -> mp.CheckConsistencyResponse:
        r = next(it)
        if isinstance(r, Exception):
            raise r
        return r

    return check


AGREE = mp.CheckConsistencyResponse(
    consistent=True, nodes=[node(n, "aa" * 32, True) for n in ("n1", "n2", "n3")]
)


def test_agreeing_members_pass() -> None:
    assert states_differ(answers(AGREE), pause_s=0) == []


def test_a_diverged_member_is_a_violation_at_once() -> None:
    planted = mp.CheckConsistencyResponse(
        nodes=[node("n1", "aa" * 32, True), node("n2", "bb" * 32), node("n3", "aa" * 32, True)]
    )
    got = states_differ(answers(planted, AGREE), pause_s=0)
    assert got == ["n2's state at revision 42 hashes to bbbbbbbbbbbbbbbb, not the majority's"]


def test_a_member_settling_after_the_heal_is_asked_again() -> None:
    settling = mp.CheckConsistencyResponse(
        nodes=[node("n1", "aa" * 32, True), node("n2", error="UNAVAILABLE: catching up")]
    )
    check = answers(errors.Unavailable("no leader yet"), settling, AGREE)
    assert states_differ(check, pause_s=0) == []


def test_a_member_silent_until_the_deadline_is_a_violation() -> None:
    silent = mp.CheckConsistencyResponse(
        nodes=[node("n1", "aa" * 32, True), node("n3", error="UNAVAILABLE: down")]
    )
    got = states_differ(answers(*[silent] * 1000), within_s=0.05, pause_s=0.01)
    assert got == ["no state hash from n3: UNAVAILABLE: down"]
    failing = answers(*[errors.Unavailable("no leader")] * 1000)
    got = states_differ(failing, within_s=0.05, pause_s=0.01)
    assert got == ["no consistency check after the heal: coord: no leader"]
