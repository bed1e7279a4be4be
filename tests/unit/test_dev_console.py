"""``coord dev``'s live-view commands name nodes as everything else does (n1..n3, or their
number), and an unknown command lists every command; ``create_group``'s policy comparison
(its ``exist_ok`` form) agrees with the cluster's defaults. No sockets, no threads."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from coord.cli.dev import COMMANDS, DevConsole
from coord.client.election import DEFAULT_SWITCHOVER_TIMEOUT_MS, policy_differences
from coord.state import limits
from coord.v1 import groups_pb2


@dataclass
class FakeNode:
    index: int
    node_id: str


@dataclass
class FakeCluster:
    """What DevConsole's node commands use of LocalCluster: the calls are recorded."""

    nodes: list[FakeNode] = field(
        default_factory=lambda: [FakeNode(i, f"n{i + 1}") for i in range(3)]
    )
    calls: list[tuple[str, int]] = field(default_factory=list)
    leader: int | None = 2

    def leader_index(self) -> int | None:
        return self.leader

    def __getattr__(self, name: str) -> object:
        if name in ("kill", "stop", "start", "restart", "pause", "resume"):
            return lambda i: self.calls.append((name, i))
        raise AttributeError(name)


def console() -> tuple[DevConsole, FakeCluster, list[str]]:
    cluster = FakeCluster()
    con = DevConsole(cluster)  # type: ignore[arg-type]
    notes: list[str] = []
    con.note = notes.append  # type: ignore[method-assign, assignment]
    return con, cluster, notes


@pytest.mark.parametrize(
    ("line", "call", "said"),
    [
        ("pause 1", ("pause", 0), "pause n1"),
        ("pause n1", ("pause", 0), "pause n1"),
        ("restart 2", ("restart", 1), "restart n2"),
        ("restart N2", ("restart", 1), "restart n2"),
        ("kill 3", ("kill", 2), "kill n3 (kill -9)"),
        ("resume n3", ("resume", 2), "resume n3"),
        ("stop leader", ("stop", 2), "stop n3"),
    ],
)
def test_node_commands_take_node_ids_and_numbers(
    line: str, call: tuple[str, int], said: str
) -> None:
    con, cluster, notes = console()
    assert con.handle(line)
    assert cluster.calls == [call]
    assert notes == [said]


@pytest.mark.parametrize("which", ["0", "4", "n0", "n4", "x"])
def test_a_node_that_does_not_exist_is_refused_and_the_nodes_are_named(which: str) -> None:
    con, cluster, notes = console()
    assert con.handle(f"pause {which}")
    assert cluster.calls == []
    assert len(notes) == 1 and notes[0].startswith("pause failed"), notes
    assert "n1, n2, n3" in notes[0], notes


def test_an_unknown_command_lists_every_command() -> None:
    con, cluster, notes = console()
    assert con.handle("frobnicate 2\n")
    assert cluster.calls == []
    (note,) = notes
    assert note.startswith("unknown command 'frobnicate 2'")
    # Every command the console handles is in the hint (and in the live view's footer).
    handled = ["kill", "start", "stop", "restart", "pause", "resume", "switchover", "put",
               "demo", "quit"]  # fmt: skip
    words = set(re.findall(r"[a-z]+", COMMANDS))
    assert set(handled) <= words, words
    assert COMMANDS in note
    assert not con.handle("quit")


def test_policy_defaults_agree_with_the_cluster() -> None:
    assert DEFAULT_SWITCHOVER_TIMEOUT_MS == limits.DEFAULT_SWITCHOVER_TIMEOUT_MS


def test_policy_differences_with_the_cluster_defaults() -> None:
    # What the cluster stores for a request that left failback and the timeout unset.
    stored = groups_pb2.GroupPolicy(
        slots=1,
        failback=groups_pb2.FAILBACK_OFF,
        switchover_timeout_ms=limits.DEFAULT_SWITCHOVER_TIMEOUT_MS,
    )
    assert policy_differences(groups_pb2.GroupPolicy(slots=1), stored) == []
    assert policy_differences(
        groups_pb2.GroupPolicy(slots=2, failback=groups_pb2.FAILBACK_AUTO), stored
    ) == ["slots: asked 2, it has 1", "failback: asked FAILBACK_AUTO, it has FAILBACK_OFF"]
    assert policy_differences(
        groups_pb2.GroupPolicy(slots=1, switchover_timeout_ms=5000), stored
    ) == [f"switchover_timeout_ms: asked 5000, it has {limits.DEFAULT_SWITCHOVER_TIMEOUT_MS}"]
