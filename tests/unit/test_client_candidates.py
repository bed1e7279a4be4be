"""The client's choice of endpoints (no network: Client opens channels lazily).

Regression (found by chaos isolate-leader, seed 37): the preferred leader was tried
first on every pass even right after it failed, so while an isolated old leader stayed
preferred every operation spent an attempt timeout on it first.
"""

from __future__ import annotations

import itertools

from coord.client import Client


def test_the_known_leader_is_tried_first() -> None:
    c = Client(["a:1", "b:2", "c:3"])
    c._preferred = "b:2"
    assert next(c._candidates(prefer_leader=True)) == "b:2"


def test_a_leader_that_just_failed_is_not_tried_first_again() -> None:
    c = Client(["a:1", "b:2", "c:3"])
    c._preferred = "b:2"
    c._suspect_endpoint("b:2")
    tried = list(itertools.islice(c._candidates(prefer_leader=True), 6))
    assert "b:2" not in tried  # skipped while suspect, as any other endpoint
    assert set(tried) == {"a:1", "c:3"}


def test_every_endpoint_suspect_still_yields_one() -> None:
    c = Client(["a:1", "b:2"])
    for ep in c.endpoints:
        c._suspect_endpoint(ep)
    assert next(c._candidates(prefer_leader=True)) in {"a:1", "b:2"}
