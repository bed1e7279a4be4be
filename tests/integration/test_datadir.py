"""Data dirs: a wiped node never becomes a blank voter; a node refuses a data dir that is
not its own (another node's, another cluster's, not a coord data dir)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from collections.abc import Callable

import pytest

from coord.cli.output import EXIT_REFUSED
from coord.testing import LocalCluster, wait_until
from coord.v1 import cluster_pb2

from .support import (
    ClusterFactory,
    describe,
    local_kvs,
    status_of,
    wait_all_acknowledging,
    wait_all_caught_up,
    wait_no_leader_for,
    write_keys,
)


def check_every_node_has(cluster: LocalCluster, expected: dict[bytes, bytes]) -> None:
    for node in cluster.nodes:
        if not node.running:
            continue
        kvs = local_kvs(cluster, node.index)
        got = {k: kvs[k].value for k in expected if k in kvs}
        assert got == expected, (
            f"{node.node_id} differs: missing {sorted(set(expected) - set(got))[:5]}, "
            f"wrong {[k for k in got if got[k] != expected[k]][:5]}"
        )


def check_linearizable_has(cluster: LocalCluster, expected: dict[bytes, bytes]) -> None:
    with cluster.client(timeout_s=20.0) as c:
        got = {k: (kv.value if (kv := c.get(k)) is not None else None) for k in expected}
    assert got == expected, "committed data was lost"


# -- a wiped node -------------------------------------------------------------


@pytest.mark.parametrize(
    ("victim", "state"), [("follower", "new"), ("leader", "new"), ("follower", "existing")]
)
def test_wiped_node_restarted_catches_up_without_disrupting(
    cluster_factory: ClusterFactory, victim: str, state: str
) -> None:
    cluster = cluster_factory(3)
    leader = cluster.wait_for_leader()
    before = write_keys(cluster, "before")
    i = leader if victim == "leader" else (leader + 1) % 3
    node = cluster.nodes[i]

    cluster.kill(i)
    shutil.rmtree(node.data_dir)
    during = write_keys(cluster, "during")  # entries the wiped node never saw
    leader = cluster.wait_for_leader()
    term = status_of(cluster, leader).term
    log_before = len(cluster.log(i))

    cluster.start(i, state=state)  # the same flags as at bootstrap (or "existing")
    wait_all_caught_up(cluster)
    check_every_node_has(cluster, {**before, **during})
    check_linearizable_has(cluster, {**before, **during})

    # It votes once its log reaches the commit index its leader last told it, on a
    # tick after the apply that wait_all_caught_up saw: the line may come a little later.
    wait_until(
        lambda: "caught up with the leader's log" in cluster.log(i)[log_before:],
        30,
        "the wiped node to say it caught up",
    )
    log = cluster.log(i)[log_before:]
    assert "catching up, no vote" in log or "no vote until caught up" in log, log
    assert "bootstrapping new cluster" not in log, log
    # It did not campaign while blank: the leader and its term are unchanged.
    assert cluster.wait_for_leader() == leader
    assert status_of(cluster, leader).term == term
    assert status_of(cluster, i).term == term
    assert os.path.exists(os.path.join(node.data_dir, "coord.id"))


def _wipe_scenario(
    cluster_factory: ClusterFactory,
) -> tuple[LocalCluster, int, int, int, dict[bytes, bytes]]:
    """L leads; X misses the last writes; L and Y go down; Y's data dir is wiped.

    The last writes live only on L (and did on Y): if wiped Y voted, X could win an
    election with {X, Y} and erase them.
    """
    cluster = cluster_factory(3)
    lead = cluster.wait_for_leader()
    wait_all_acknowledging(cluster)  # else the two left may not make a majority yet
    x, y = [i for i in range(3) if i != lead]
    base = write_keys(cluster, "base")
    cluster.kill(x)
    only_on_l_y = write_keys(cluster, "late")
    cluster.kill(lead)
    cluster.kill(y)
    shutil.rmtree(cluster.nodes[y].data_dir)
    return cluster, lead, x, y, {**base, **only_on_l_y}


def _finish_wipe_scenario(
    cluster: LocalCluster, lead: int, x: int, y: int, expected: dict[bytes, bytes]
) -> None:
    # {X, wiped Y} is a majority by count but must not elect: Y holds no log.
    wait_no_leader_for(cluster, 3.0, [x, y])
    cluster.start(lead)
    cluster.wait_for_leader(timeout=30)
    check_linearizable_has(cluster, expected)
    wait_all_caught_up(cluster)
    check_every_node_has(cluster, expected)


def test_wiped_node_does_not_vote_a_stale_node_in(cluster_factory: ClusterFactory) -> None:
    cluster, lead, x, y, expected = _wipe_scenario(cluster_factory)
    cluster.start(x)
    wait_until(lambda: cluster.status(x), 20, "the stale node's API")
    cluster.start(y)  # sees X's history at start-up: joins as a non-voter
    _finish_wipe_scenario(cluster, lead, x, y, expected)


def test_wiped_node_started_first_does_not_vote_a_stale_node_in(
    cluster_factory: ClusterFactory,
) -> None:
    cluster, lead, x, y, expected = _wipe_scenario(cluster_factory)
    cluster.start(y)  # nobody answers its start-up probe
    wait_until(lambda: cluster.status(y), 20, "the wiped node's API")
    cluster.start(x)
    _finish_wipe_scenario(cluster, lead, x, y, expected)


def test_partly_caught_up_wiped_node_does_not_vote_a_stale_node_in(
    cluster_factory: ClusterFactory,
) -> None:
    """As above, but the wiped node restarts while the leader is up and receives only the
    start of the log before the leader dies.

    While y restarts the leader hears from nobody; with the default 0.8 s fallback it would
    step down before y's process is up on a slow machine, and then nobody could lead (y
    rightly refuses to vote while blank). A long fallback keeps the leader replicating to y.
    """
    cluster = cluster_factory(
        3, extra_args=["--connection-timeout-s", "60", "--leader-fallback-timeout-s", "60"]
    )
    lead = cluster.wait_for_leader()
    x, y = [i for i in range(3) if i != lead]
    # A long log (several 8 MiB append-entries batches): the wiped node needs a while.
    filler = b"f" * 20_000
    with cluster.client(timeout_s=30.0) as c:
        for i in range(1200):
            c.put(f"base/{i:04d}", filler)
    cluster.kill(x)
    late = write_keys(cluster, "late")  # on the leader and y only
    total = status_of(cluster, lead).commit_index
    cluster.kill(y)
    shutil.rmtree(cluster.nodes[y].data_dir)
    y_log_from = len(cluster.log(y))
    cluster.start(y)

    def fetching() -> cluster_pb2.StatusResponse | None:
        st = cluster.status(y, timeout=0.2)
        return st if st is not None and st.raft_log_entries > 1 else None

    wait_until(fetching, 30, "the wiped node to receive its first entries", interval=0.002)
    cluster.pause(lead)  # freeze the leader at once: y keeps what already arrived
    cluster.kill(lead)
    cluster.start(x)
    wait_until(lambda: cluster.status(x), 20, "the stale node's API")
    # {x, y} may elect only if y turned voter, and y may turn voter only once its log
    # reached the commit index the leader announced (so it holds the "late" writes).

    def y_turned_voter_at() -> int | None:
        m = re.search(
            r"caught up with the leader's log \(index (\d+) >= commit \d+\)",
            cluster.log(y)[y_log_from:],
        )
        return int(m.group(1)) if m else None

    try:
        wait_no_leader_for(cluster, 3.0, [x, y])
    except AssertionError:
        if y_turned_voter_at() is None:
            raise  # a leader without y having caught up: the gate failed
    at = y_turned_voter_at()
    assert at is None or at >= total, f"y turned voter at index {at} < commit {total}"
    cluster.start(lead)
    cluster.wait_for_leader(timeout=30)
    check_linearizable_has(cluster, late)


# -- data dirs that are not this node's -----------------------------------------


@pytest.fixture(scope="module")
def cluster(module_cluster_factory: ClusterFactory) -> LocalCluster:
    c = module_cluster_factory(3)
    c.wait_for_leader()
    write_keys(c, "seed", 10)
    return c


def run_serve(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"coord serve kept running on a data dir it must refuse: {e}") from e


def with_flag(cmd: list[str], flag: str, value: str) -> list[str]:
    out = list(cmd)
    out[out.index(flag) + 1] = value
    return out


def refused_start(
    cluster: LocalCluster,
    make_cmd: Callable[[int], list[str]],
    expect: str,
) -> str:
    """Stop a follower, run ``make_cmd(follower)``; it must exit with ``expect`` in its output.

    The follower's own data dir is untouched by the refused start, the rest of the
    cluster is unaffected (same leader, term and data), and the follower restarts
    normally afterwards. Returns the output.
    """
    leader = cluster.wait_for_leader()
    victim = (leader + 1) % 3
    term = status_of(cluster, leader).term
    with cluster.client() as c:
        before = c.range("", prefix=True)
    cluster.kill(victim)
    own = dir_fingerprint(cluster.nodes[victim].data_dir)

    p = run_serve(make_cmd(victim))
    out = p.stdout + p.stderr
    assert p.returncode == EXIT_REFUSED, describe(p)
    assert expect in out, describe(p)
    assert "Traceback" not in out, describe(p)
    assert dir_fingerprint(cluster.nodes[victim].data_dir) == own

    assert cluster.wait_for_leader() == leader
    assert status_of(cluster, leader).term == term
    with cluster.client() as c:
        after = c.range("", prefix=True)
    assert list(after.kvs) == list(before.kvs)
    assert after.header.revision == before.header.revision

    cluster.start(victim)
    wait_all_caught_up(cluster)
    assert status_of(cluster, victim).leader_id == cluster.nodes[leader].node_id
    return out


def dir_fingerprint(path: str) -> dict[str, tuple[int, int]]:
    return {
        name: (st.st_size, st.st_mtime_ns)
        for name in sorted(os.listdir(path))
        for st in [os.stat(os.path.join(path, name))]
    }


def test_refuses_another_nodes_data_dir(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    other = cluster.nodes[leader]  # a live node's data dir: it must not be touched
    with open(os.path.join(other.data_dir, "coord.id"), "rb") as f:
        ident = f.read()

    out = refused_start(
        cluster,
        lambda i: with_flag(cluster.command(i), "--data-dir", other.data_dir),
        f"belongs to node '{other.node_id}'",
    )
    assert other.data_dir in out
    with open(os.path.join(other.data_dir, "coord.id"), "rb") as f:
        assert f.read() == ident


def test_refuses_another_clusters_data_dir(cluster: LocalCluster) -> None:
    # The node's own data dir, under another cluster token: another cluster's data dir.
    out = refused_start(
        cluster,
        lambda i: with_flag(cluster.command(i), "--cluster-token", "some-other-cluster"),
        "belongs to cluster",
    )
    assert "--cluster-token" in out  # says what to check


def test_refuses_a_directory_that_is_not_a_coord_data_dir(
    cluster: LocalCluster, tmp_path: os.PathLike[str]
) -> None:
    junk = os.path.join(tmp_path, "junk")
    os.makedirs(junk)
    rng = random.Random(7)
    for name in ("data.bin", "notes.txt", "raft.journal"):
        with open(os.path.join(junk, name), "wb") as f:
            f.write(rng.randbytes(4096))
    fingerprint = dir_fingerprint(junk)

    refused_start(
        cluster, lambda i: with_flag(cluster.command(i), "--data-dir", junk), "not a coord data dir"
    )
    assert dir_fingerprint(junk) == fingerprint, "coord wrote into a directory it refused"


def test_refuses_a_data_dir_that_is_a_file(
    cluster: LocalCluster, tmp_path: os.PathLike[str]
) -> None:
    path = os.path.join(tmp_path, "a-file")
    with open(path, "wb") as f:
        f.write(b"not a directory")
    refused_start(
        cluster, lambda i: with_flag(cluster.command(i), "--data-dir", path), "cannot use data dir"
    )


def test_refuses_a_log_applied_under_older_replication_rules(
    cluster: LocalCluster, tmp_path: os.PathLike[str]
) -> None:
    """A log written when group waits ran on wall-clock stamps would replay to another
    state: the node refuses it, says how to move the data, and changes nothing."""
    copy = os.path.join(tmp_path, "older")

    def older_copy(i: int) -> list[str]:
        shutil.copytree(cluster.nodes[i].data_dir, copy)
        ident_path = os.path.join(copy, "coord.id")
        with open(ident_path, encoding="utf-8") as f:
            ident = json.load(f)
        del ident["replication_rules"]  # as written before the rules were recorded
        with open(ident_path, "w", encoding="utf-8") as f:
            json.dump(ident, f)
        return with_flag(cluster.command(i), "--data-dir", copy)

    out = refused_start(cluster, older_copy, "replication rules 1")
    assert "coord restore" in out and "snapshot save" in out
